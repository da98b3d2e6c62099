"""A readable text table of a Program: per phase the steps, GEMM shapes, kernels with their
inputs and outputs, FLOPs per step, and the residual bytes per step.

    print(graphrnn.explain(cell, batch=32))      # or compiled_cell.explain()

A row kernel (``program.RowKernel``: a layer norm's statistics and the elementwise work around
them, run as one kernel over rows) counts as one kernel; its parts are listed under it.

Sizes print symbolically: ``B`` rows per step, ``TB`` rows over the whole sequence; FLOPs are
counted for one time step (work before/after the loop is divided by T) at the given batch.
Each sweep ends with a total line: its FLOPs per step, the residual bytes per step the forward
writes for the backward (and the backward reads back), and the bytes per step the backward's
loop stores for the work after it (the gate cotangents the weight-gradient GEMMs read).
"""

from __future__ import annotations

from typing import Any

from .program import (
    Gather,
    Gemm,
    Kernel,
    Program,
    Reduce,
    Ref,
    RowKernel,
    Scatter,
    Step,
    Sweep,
    reads_writes,
    step_flops,
    sweep_flops,
    view_dims,
)


def _describe(p: Program, s: Step, in_loop: bool) -> str:
    def sh(r: Ref) -> str:
        a, b = view_dims(p, r, in_loop)
        return f"{a}x{b}"
    if isinstance(s, Gemm):
        acc = "+=" if s.accumulate else "="
        return (f"gemm    {s.out} {acc} {s.a}{'ᵀ' if s.trans_a else ''} @ "
                f"{s.b}{'ᵀ' if s.trans_b else ''}   [{sh(s.a)}{'ᵀ' if s.trans_a else ''} @ "
                f"{sh(s.b)}{'ᵀ' if s.trans_b else ''} -> {sh(s.out)}]")
    if isinstance(s, Kernel):
        k = s.kernel
        ins = ", ".join(f"{r}{'' if f == 'full' else '(' + f + ')'}"
                        for r, f in zip(s.ins, k.bcast, strict=True))
        return (f"kernel  {k.name}: ({ins}) -> ({', '.join(str(o) for o in s.outs)})   "
                f"[{sh(s.outs[0])}, {len(k.program.instrs)} ops]")
    if isinstance(s, Reduce):
        return f"reduce  {s.out} {'+=' if s.accumulate else '='} {s.op}(axis {s.axis}) {s.src}"
    if isinstance(s, Gather):
        return f"gather  {s.out} = {s.table}[{s.ids}]"
    if isinstance(s, Scatter):
        return f"scatter {s.out} {'+=' if s.accumulate else '='} scatter({s.ids}, {s.src})"
    if isinstance(s, RowKernel):
        first = s.parts[0]
        rows = view_dims(p, first.outs[0] if isinstance(first, Kernel) else first.out,
                         in_loop)[0]
        n_red = sum(isinstance(x, Reduce) for x in s.parts)
        head = (f"rowkernel {s.name}: one kernel over {rows} rows, {len(s.parts)} parts "
                f"({n_red} reductions over columns)")
        return "\n".join([head] + [f"      | {_describe(p, x, in_loop)}" for x in s.parts])
    return repr(s)


def loop_saved_values_per_row(p: Program, sw: Sweep) -> int:
    """Values per time step and batch row that the loop of ``sw`` writes to sequence buffers
    for its after-the-loop phase to read (the backward's gate cotangents for dW = Xᵀ dZ)."""
    bufs = p.buffer_map
    written = {r.buf for s in sw.step for r in reads_writes(s)[1]
               if bufs[r.buf].kind == "seq"}
    read = {r.buf for s in sw.post for r in reads_writes(s)[0]}
    return sum(bufs[b].cols for b in written & read)


def _size(p: Program) -> int:
    return 8 if p.dtype == "float64" else 4


def _sweep_lines(p: Program, name: str, sw: Sweep, batch: int) -> list[str]:
    lines = [f"{name} ({'t = T-1 .. 0' if sw.reverse else 't = 0 .. T-1'})"
             f"{'  [diagonal: the whole loop can run in one kernel]' if sw.diagonal else ''}"]
    res = p.residual_bytes_per_step(batch)
    kept = loop_saved_values_per_row(p, sw) * batch * _size(p)
    total = (f"  {name} total: {sweep_flops(p, sw, batch):,} FLOPs per step at B={batch}; ")
    if sw is p.backward:
        total += (f"reads {res:,} residual bytes per step; its loop stores {kept:,} bytes per "
                  "step for after the loop")
    else:
        total += f"writes {res:,} residual bytes per step for the backward"
    for ph, steps in sw.phases():
        label = {"pre": "before the loop (all T·B rows)", "step": "per time step",
                 "post": "after the loop (all T·B rows)"}[ph]
        g = sum(isinstance(s, Gemm) for s in steps)
        k = sum(isinstance(s, (Kernel, RowKernel)) for s in steps)   # a row kernel is one
        r = sum(isinstance(s, Reduce) for s in steps)
        fl = sum(step_flops(p, s, ph == "step", batch) for s in steps)
        lines.append(f"  {label}: {g} GEMM, {k} kernel, {r} reduce; "
                     f"{fl:,} FLOPs per step at B={batch}")
        for s in steps:
            lines.append(f"    {_describe(p, s, ph == 'step')}")
    lines.append(total)
    return lines


def explain_program(p: Program, batch: int = 1, kernels: bool = False) -> str:
    out = [f"program {p.cell_name} ({p.dtype})"]
    out += _sweep_lines(p, "forward", p.forward, batch)
    out += _sweep_lines(p, "backward", p.backward, batch)
    vals = p.residual_values_per_row()
    out.append(f"residuals: {', '.join(p.residuals) or '(none beyond states)'}; "
               f"{vals} values per row per step = {p.residual_bytes_per_step(batch):,} bytes "
               f"per step at B={batch}")
    no_grad = sorted({n for n, _ in p.param_shapes} - {pc.name for pc in p.grad_pieces})
    if no_grad:
        # frozen parameters (Cell.frozen), or ones no output depends on: no GEMM computes them
        out.append(f"no gradient (frozen or unused): {', '.join(no_grad)}")
    out.append("buffers: " + ", ".join(
        f"{b.name}:{b.kind}[{'T+1,' if b.extra else 'T,' if b.kind == 'seq' else ''}"
        f"{'B,' if not b.fixed else str(b.rows) + ','}{b.cols}]" for b in p.buffers))
    if kernels:
        for k in p.kernels():
            out.append(f"kernel {k.name} bcast={k.bcast}\n{k.program}")
    return "\n".join(out)


def explain(cell: Any, batch: int = 1, dtype: str | None = None, kernels: bool = False) -> str:
    """The explained plan of a Cell (or a compiled cell, or a Program)."""
    if isinstance(cell, Program):
        return explain_program(cell, batch, kernels)
    prog = getattr(cell, "program", None)
    if isinstance(prog, Program):
        return explain_program(prog, batch, kernels)
    c = getattr(cell, "cell", cell)
    from .pipeline import build_program  # the optimizer (networkx, sympy) loads on first use
    return explain_program(build_program(c, dtype), batch, kernels)
