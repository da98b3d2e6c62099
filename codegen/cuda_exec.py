"""Runs a ``graphrnn.program.Program`` with CUDA kernels, on any "device" that can launch them.

The same executor drives the real GPU (``codegen.cuda``: CuPy arrays, RawModule kernels,
cuBLAS) and the CPU proof (``CpuDevice`` here: numpy arrays, the kernels built as C++ through
``cuda_shim.h``, GEMMs and reductions in numpy, every launch checked by a ``FakeLauncher``).

What it does with a Program:

- every ``Kernel`` step becomes a ``KernelSpec``: the kernel's scalar program with the row
  strides of the buffers its views point into baked in (a view ``buf[:, c0:c1]`` is passed as a
  pointer to its first element; its row stride is the buffer's width);
- a diagonal sweep (only kernels in the step phase) becomes one ``LoopSpec`` kernel that runs
  the whole time loop, when every thread provably touches only its own elements (all stages
  share one domain width and each written buffer is always reached at one column offset);
  otherwise the step phase is launched step by step;
- the bindings of the Program's docstring move user arrays in and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from graphrnn.api import CompiledCell, Grads
from graphrnn.api import Residuals as ResidualToken
from graphrnn.errors import BackendError, RuntimeInputError
from graphrnn.ir import Cell
from graphrnn.program import Buffer, Gather, Gemm, Kernel, Program, Reduce, Ref, Scatter, Sweep

from .cuda_render import (
    DEFAULT_BLOCK,
    Access,
    KernelSpec,
    LoopSpec,
    LoopStage,
    Operand,
    RenderedKernel,
    grid_for,
    kernel_name,
    render,
    render_loop,
)


def _cols(r: Ref, b: Buffer) -> tuple[int, int]:
    return r.cols if r.cols is not None else (0, b.cols)


def _overlap(a: Ref, b: Ref, bufs: dict[str, Buffer], in_loop: bool) -> bool:
    """May two views share an element? Inside the loop two time offsets of a seq buffer are
    different slabs; before or after it they are overlapping ranges of T slabs."""
    if a.buf != b.buf:
        return False
    if in_loop and bufs[a.buf].kind == "seq" and a.t != b.t:
        return False
    (a0, a1), (b0, b1) = _cols(a, bufs[a.buf]), _cols(b, bufs[b.buf])
    return a0 < b1 and b0 < a1


def kernel_spec(step: Kernel, bufs: dict[str, Buffer], block: int = DEFAULT_BLOCK,
                in_loop: bool = False) -> KernelSpec:
    """The pointwise kernel for one Kernel step of a Program (``in_loop``: of the step phase).
    Its pointers are ``__restrict__`` unless an output may share elements with another view."""
    kd = step.kernel
    ins = []
    for r, f in zip(step.ins, kd.bcast):
        w = bufs[r.buf].cols
        ins.append(Operand(0 if f in ("row", "scalar") else w, 0 if f in ("col", "scalar") else 1))
    outs = tuple(Operand(bufs[r.buf].cols) for r in step.outs)
    c0, c1 = _cols(step.outs[0], bufs[step.outs[0].buf])
    refs = list(step.ins) + list(step.outs)
    restrict = not any(_overlap(o, r, bufs, in_loop) for i, o in enumerate(step.outs)
                       for j, r in enumerate(refs) if j != len(step.ins) + i)
    key = f"{kd.dtype}|{kd.program}|{ins}|{outs}|{c1 - c0}|{restrict}|{block}"
    return KernelSpec(kernel_name(kd.name, key), kd.program, kd.dtype, c1 - c0, tuple(ins),
                      outs, block, restrict)


def loop_spec(sweep: Sweep, bufs: dict[str, Buffer], dtype: str, label: str,
              block: int = DEFAULT_BLOCK) -> tuple[LoopSpec, list[str]] | None:
    """One kernel for a whole diagonal step phase, with the buffer names its parameters take,
    or None when some thread could read an element another thread writes."""
    if not sweep.diagonal:
        return None
    steps = [s for s in sweep.step if isinstance(s, Kernel)]
    widths = set()
    names: list[str] = []
    written: dict[str, set[int]] = {}   # buffer -> column offsets it is reached at
    for s in steps:
        ob = bufs[s.outs[0].buf]
        if ob.fixed:
            return None               # the domain must be the batch rows
        c0, c1 = _cols(s.outs[0], ob)
        widths.add(c1 - c0)
        for r in s.outs:
            if bufs[r.buf].fixed or r.t < 0:
                return None
            written.setdefault(r.buf, set())
    if len(widths) != 1:
        return None
    for s in steps:
        for r, f in list(zip(s.ins, s.kernel.bcast)) + [(o, "full") for o in s.outs]:
            if r.buf in written:
                if f != "full":
                    return None
                written[r.buf].add(_cols(r, bufs[r.buf])[0])
    if any(len(offs) != 1 for offs in written.values()):
        return None

    def access(r: Ref, f: str) -> Access:
        if r.buf not in names:
            names.append(r.buf)
        b = bufs[r.buf]
        c0 = _cols(r, b)[0]
        r0 = r.rows[0] if (b.fixed and r.rows is not None) else 0
        return Access(names.index(r.buf), b.cols, r0 * b.cols + c0,
                      r.t if b.kind == "seq" else None, f)

    stages = tuple(LoopStage(s.kernel.program,
                             tuple(access(r, f) for r, f in zip(s.ins, s.kernel.bcast)),
                             tuple(access(r, "full") for r in s.outs)) for s in steps)
    key = f"{dtype}|{stages}|{sweep.reverse}|{block}"
    spec = LoopSpec(kernel_name(f"{label}_loop", key), dtype, widths.pop(),
                    tuple(n in written for n in names), stages, sweep.reverse, block)
    return spec, names


# ---- devices: where arrays live and how steps run ----

class Device:
    """What the executor needs from a device. ``xp`` is numpy or cupy."""
    xp: Any = np

    def launch(self, kernel: RenderedKernel, rows: int, args: Sequence[Any]) -> None:
        raise NotImplementedError

    def gemm(self, out: Any, a: Any, b: Any, ta: bool, tb: bool, acc: bool) -> None:
        xp = self.xp
        prod = xp.matmul(a.T if ta else a, b.T if tb else b)
        if acc:
            out += prod
        else:
            out[...] = prod

    def reduce(self, out: Any, src: Any, op: str, axis: int, acc: bool) -> None:
        xp = self.xp
        v = (xp.sum if op == "sum" else xp.max)(src, axis=axis, keepdims=True)
        if acc:
            out += v
        else:
            out[...] = v

    def gather(self, out: Any, table: Any, ids: Any) -> None:
        out[...] = table[ids[:, 0]]

    def scatter(self, out: Any, ids: Any, src: Any, acc: bool) -> None:
        if not acc:
            out[...] = 0
        np.add.at(out, ids[:, 0], src)


class CpuDevice(Device):
    """numpy arrays; kernels built through the C shim, every launch checked by a FakeLauncher
    and run with the grid walked in ``order``. ``grid_scale`` < 1 launches fewer blocks than
    the domain needs, so the grid-stride loops do real work."""

    def __init__(self, kernels: Sequence[RenderedKernel], order: str = "forward", seed: int = 0,
                 cache_dir: Any = None, grid_scale: float = 1.0, lib: Any = None) -> None:
        from .cuda_cpu import FakeLauncher, ShimLauncher, ShimLibrary
        # a prebuilt library holding these kernels (and others) saves a C++ build
        if lib is None or any(k.name not in lib.kernels for k in kernels):
            lib = ShimLibrary(list(kernels), cache_dir)
        self.lib = lib
        self.launcher = FakeLauncher(ShimLauncher(self.lib, order, seed))
        self.grid_scale = grid_scale

    def launch(self, kernel: RenderedKernel, rows: int, args: Sequence[Any]) -> None:
        grid = grid_for(rows, kernel.spec.cols, kernel.block)
        grid = max(1, int(grid * self.grid_scale))
        self.launcher.launch(kernel, grid, kernel.block, args)


# ---- the executor ----

@dataclass
class Residuals:
    """What forward_train hands to backward: every buffer, by name, and the sizes."""
    buffers: dict[str, Any]
    T: int
    B: int


class ProgramExecutor:
    """Renders a Program's kernels once; runs its sweeps on a Device."""

    def __init__(self, program: Program, block: int = DEFAULT_BLOCK,
                 loop_kernels: bool = True) -> None:
        self.p = program
        self.bufs = program.buffer_map
        self.kernel_of: dict[int, RenderedKernel] = {}
        self.loop_of: dict[str, tuple[RenderedKernel, list[str]]] = {}
        for label, sw in (("forward", program.forward), ("backward", program.backward)):
            for ph, steps in sw.phases():
                for s in steps:
                    if isinstance(s, Kernel):
                        spec = kernel_spec(s, self.bufs, block, ph == "step")
                        self.kernel_of[id(s)] = render(spec)
            made = loop_spec(sw, self.bufs, program.dtype, f"{program.cell_name}_{label}",
                             block) if loop_kernels else None
            if made is not None:
                self.loop_of[label] = (render_loop(made[0]), made[1])

    def kernels(self) -> list[RenderedKernel]:
        """Every distinct kernel the Program needs (one module holds them all)."""
        seen: dict[str, RenderedKernel] = {}
        for k in list(self.kernel_of.values()) + [k for k, _ in self.loop_of.values()]:
            seen.setdefault(k.name, k)
        return list(seen.values())

    # ---- views ----
    def view(self, arrays: dict[str, Any], r: Ref, phase: str, t: int, T: int, B: int) -> Any:
        b = self.bufs[r.buf]
        a = arrays[r.buf]
        c0, c1 = _cols(r, b)
        if b.fixed:
            r0, r1 = r.rows if r.rows is not None else (0, b.rows)
            return a[r0:r1, c0:c1]
        if b.kind == "seq":
            if phase == "step":
                return a[t + r.t][:, c0:c1]
            return a[r.t:r.t + T].reshape(T * B, b.cols)[:, c0:c1]
        return a[:, c0:c1]

    def alloc(self, dev: Device, T: int, B: int) -> dict[str, Any]:
        xp = dev.xp
        out = {}
        for b in self.p.buffers:
            shape = b.shape(T, B)
            if int(np.prod(shape)) >= 2**31:
                # kernels index with 32-bit unsigned arithmetic (cheaper, and enough below this)
                raise BackendError(f"cuda: buffer {b.name} of shape {shape} has 2**31 elements "
                                   "or more; split the sequence into shorter chunks (T) or "
                                   "smaller batches")
            out[b.name] = xp.empty(shape, dtype=b.dtype)
        return out

    # ---- sweeps ----
    def run_sweep(self, dev: Device, label: str, sw: Sweep, arrays: dict[str, Any], T: int,
                  B: int) -> None:
        for phase, steps in sw.phases():
            if phase != "step":
                for s in steps:
                    self.run_step(dev, s, arrays, phase, 0, T, B)
                continue
            if T == 0 or not steps:
                continue
            if label in self.loop_of:
                k, names = self.loop_of[label]
                dev.launch(k, B, [arrays[n] for n in names] + [B, T])
                continue
            order = range(T - 1, -1, -1) if sw.reverse else range(T)
            for t in order:
                for s in steps:
                    self.run_step(dev, s, arrays, phase, t, T, B)

    def run_step(self, dev: Device, s: Any, arrays: dict[str, Any], phase: str, t: int, T: int,
                 B: int) -> None:
        def v(r: Ref) -> Any:
            return self.view(arrays, r, phase, t, T, B)

        if isinstance(s, Kernel):
            outs = [v(r) for r in s.outs]
            rows = int(outs[0].shape[0])
            if rows:
                dev.launch(self.kernel_of[id(s)], rows, [v(r) for r in s.ins] + outs + [rows])
        elif isinstance(s, Gemm):
            dev.gemm(v(s.out), v(s.a), v(s.b), s.trans_a, s.trans_b, s.accumulate)
        elif isinstance(s, Reduce):
            dev.reduce(v(s.out), v(s.src), s.op, s.axis, s.accumulate)
        elif isinstance(s, Gather):
            dev.gather(v(s.out), v(s.table), v(s.ids))
        elif isinstance(s, Scatter):
            dev.scatter(v(s.out), v(s.ids), v(s.src), s.accumulate)
        else:
            raise BackendError(f"cuda: unknown program step {s!r}")

    # ---- bindings (the Program docstring's) ----
    def bind_forward(self, arrays: dict[str, Any], params: dict[str, Any], xs: Sequence[Any],
                     h0: Sequence[Any], T: int, B: int) -> None:
        p = self.p
        for b in p.buffers:
            if b.kind == "mat":
                arrays[b.name][...] = 0
        for pc in p.param_pieces:
            (r0, r1), (c0, c1) = pc.rows, pc.cols
            self.view(arrays, pc.ref, "pre", 0, T, B)[...] = params[pc.name][r0:r1, c0:c1]
        for (_n, buf), x in zip(p.inputs, xs):
            arrays[buf][...] = x
        for (_n, buf), h in zip(p.states, h0):
            arrays[buf][0] = h

    def collect_forward(self, arrays: dict[str, Any], T: int) -> tuple[list[Any], list[Any]]:
        ys = [self._seq(arrays, r, T).copy() for _n, r in self.p.outputs]
        hT = [arrays[buf][T].copy() for _n, buf in self.p.states]
        return ys, hT

    def _seq(self, arrays: dict[str, Any], r: Ref, T: int) -> Any:
        c0, c1 = _cols(r, self.bufs[r.buf])
        return arrays[r.buf][r.t:r.t + T, :, c0:c1]

    def bind_backward(self, arrays: dict[str, Any], d_ys: Sequence[Any | None],
                      d_final: Sequence[Any | None]) -> None:
        p = self.p
        for b in p.buffers:
            if b.kind in ("grad", "carry"):
                arrays[b.name][...] = 0
        for (_n, buf), d in zip(p.d_outputs, d_ys):
            arrays[buf][...] = 0 if d is None else d
        for (_n, buf), d in zip(p.d_final, d_final):
            arrays[buf][...] = 0 if d is None else d

    def collect_backward(self, dev: Device, arrays: dict[str, Any], T: int, B: int,
                         param_shapes: dict[str, tuple[int, int]], cell: Any
                         ) -> tuple[dict[str, Any], list[Any], list[Any]]:
        p, xp = self.p, dev.xp
        grads = {name: xp.zeros(shape, dtype=p.dtype) for name, shape in param_shapes.items()}
        for pc in p.grad_pieces:
            (r0, r1), (c0, c1) = pc.rows, pc.cols
            grads[pc.name][r0:r1, c0:c1] += self.view(arrays, pc.ref, "post", 0, T, B)
        d_xs = []
        for (_n, r), x in zip(p.d_inputs, cell.inputs):
            if r is None:   # an unused or integer input: zero gradient
                d_xs.append(xp.zeros((T, B, int(x.shape[1])), dtype=p.dtype))
            else:
                d_xs.append(self._seq(arrays, r, T).copy())
        d_h = []
        for _n, r in p.d_states:
            b = self.bufs[r.buf]
            if b.kind == "seq":
                c0, c1 = _cols(r, b)
                d_h.append(arrays[r.buf][r.t][:, c0:c1].copy())
            else:
                d_h.append(self.view(arrays, r, "post", 0, T, B).copy())
        return grads, d_xs, d_h

    def forward(self, dev: Device, params: dict[str, Any], xs: Sequence[Any],
                h0: Sequence[Any]) -> tuple[list[Any], list[Any], Residuals]:
        T, B = int(xs[0].shape[0]), int(xs[0].shape[1])
        arrays = self.alloc(dev, T, B)
        self.bind_forward(arrays, params, xs, h0, T, B)
        self.run_sweep(dev, "forward", self.p.forward, arrays, T, B)
        ys, hT = self.collect_forward(arrays, T)
        return ys, hT, Residuals(arrays, T, B)

    def check_residuals(self, res: Residuals) -> None:
        """Kernels trust T, B and every buffer's size: check the arrays against them."""
        for b in self.p.buffers:
            a = res.buffers.get(b.name)
            shape = tuple(b.shape(res.T, res.B))
            if a is None or tuple(a.shape) != shape or a.dtype != np.dtype(b.dtype):
                got = "nothing" if a is None else f"{tuple(a.shape)} {a.dtype}"
                raise RuntimeInputError(f"backward: residual buffer {b.name}: expected {shape} "
                                        f"{b.dtype} for T={res.T}, B={res.B}, got {got}")

    def saved_params(self, res: Residuals) -> list[tuple[str, Any, Any]]:
        """(name, region, the forward's copy) per parameter piece, for
        ``CompiledCell._check_params_unchanged``."""
        return [(pc.name, np.s_[pc.rows[0]:pc.rows[1], pc.cols[0]:pc.cols[1]],
                 self.view(res.buffers, pc.ref, "pre", 0, res.T, res.B))
                for pc in self.p.param_pieces]

    def backward(self, dev: Device, res: Residuals, d_ys: Sequence[Any | None],
                 d_final: Sequence[Any | None], param_shapes: dict[str, tuple[int, int]],
                 cell: Any) -> tuple[dict[str, Any], list[Any], list[Any]]:
        self.bind_backward(res.buffers, d_ys, d_final)
        self.run_sweep(dev, "backward", self.p.backward, res.buffers, res.T, res.B)
        return self.collect_backward(dev, res.buffers, res.T, res.B, param_shapes, cell)


class CudaCpuBackend(CompiledCell):
    """The CUDA backend's CPU proof as a compiled cell: the Program run by the executor above
    with every kernel built through the C shim (walked in ``order``), GEMMs and reductions in
    numpy. Slow; it exists so CI can check the generated CUDA against the reference."""

    backend_name = "cuda-cpu"
    runs_program = True

    def __init__(self, cell: Cell, dtype: str, order: str = "forward", seed: int = 0,
                 cache_dir: Any = None, grid_scale: float = 1.0, block: int = 64,
                 loop_kernels: bool = True, program: Program | None = None,
                 lib: Any = None) -> None:
        super().__init__(cell, dtype, program)
        self.executor = ProgramExecutor(self.program, block, loop_kernels)
        self.device = CpuDevice(self.executor.kernels(), order, seed, cache_dir, grid_scale, lib)

    def _forward(self, params: dict[str, np.ndarray], xs: list[np.ndarray],
                 h0: list[np.ndarray], save: bool) -> tuple[list[np.ndarray],
                                                            list[np.ndarray], Any]:
        # the executor copies xs, h0 and params into its own buffers and ys, hT out of them
        ys, hT, res = self.executor.forward(self.device, params, xs, h0)
        return ys, hT, (self._residuals(res.T, res.B, res) if save else None)

    def _backward(self, params: dict[str, np.ndarray], residuals: ResidualToken,
                  d_ys: Sequence[np.ndarray | None],
                  d_final: Sequence[np.ndarray | None]) -> Grads:
        res = residuals._payload
        if not isinstance(res, Residuals) or (res.T, res.B) != (residuals.T, residuals.B):
            raise RuntimeInputError("backward: residuals were tampered with: their buffers "
                                    f"are not for T={residuals.T}, B={residuals.B}")
        self.executor.check_residuals(res)
        self._check_params_unchanged(residuals, params, lambda: self.executor.saved_params(res))
        dp, dx, dh = self.executor.backward(self.device, res, d_ys, d_final,
                                            self.cell.param_shapes(), self.cell)
        return Grads(dp, dx, dh)
