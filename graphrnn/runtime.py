"""One executor of the Program contract (``graphrnn/program.py``), on any ``Device``.

The Program's docstring says what its bindings and steps mean; this module is the one place that
does it in Python: binding parameters into their packed pieces, inputs and ``S[0]``, turning a
``Ref`` into an array view, running each phase and step, collecting ``S[T]``, the outputs and
the gradient pieces, with ``None`` cotangents as zeros. A change to the contract is made here.

What differs between backends is a ``Device``: how arrays are allocated, and how a GEMM, a
reduction, a gather, a scatter and a kernel step run. ``Device`` itself is numpy (kernels by their
scalar programs' numpy meaning: the "program" backend, the executable spec); CUDA's devices
(``codegen/cuda_exec.py``, ``codegen/cuda.py``) launch rendered kernels instead, through an
``Executor`` subclass that also runs a diagonal time loop as one kernel. The llvm backend runs
the whole Program natively and binds its own pointers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .api import CompiledCell, Grads
from .api import Residuals as ResidualToken
from .errors import BackendError, RuntimeInputError
from .program import (
    Gather,
    Gemm,
    Kernel,
    ParamPiece,
    Program,
    Reduce,
    Ref,
    RowKernel,
    Scatter,
    Sweep,
    cols_of,
)
from .scalar import run_scalar_program

# ---- views of a Ref, by buffer kind (the llvm backend binds its arrays with these too) ----

def fixed_view(arr: Any, ref: Ref) -> Any:
    """A param-shaped buffer's Ref: its rows and columns."""
    v = arr
    if ref.rows is not None:
        v = v[ref.rows[0]:ref.rows[1]]
    if ref.cols is not None:
        v = v[:, ref.cols[0]:ref.cols[1]]
    return v


def seq_view(arr: Any, ref: Ref, T: int) -> Any:
    """A seq buffer's Ref seen over all T steps: (T, B, n)."""
    v = arr[ref.t:ref.t + T]
    return v[:, :, ref.cols[0]:ref.cols[1]] if ref.cols is not None else v


def batch_view(arr: Any, ref: Ref) -> Any:
    """A (B, n) buffer's Ref (a carry, a temp, one step of a seq buffer): its columns."""
    return arr[:, ref.cols[0]:ref.cols[1]] if ref.cols is not None else arr


def check_residual_buffers(arrays: Mapping[str, Any],
                           expected: Mapping[str, tuple[tuple[int, ...], np.dtype]], T: int,
                           B: int, contiguous: bool = False) -> None:
    """Compiled code trusts T, B and every buffer's size: check the residuals' arrays against
    them (``contiguous``: and that each is a C-contiguous numpy array, for native pointers)."""
    for name, (shape, dt) in expected.items():
        a = arrays.get(name)
        ok = hasattr(a, "shape") and tuple(a.shape) == shape and getattr(a, "dtype", None) == dt
        if contiguous:
            ok = ok and isinstance(a, np.ndarray) and a.flags.c_contiguous
        if not ok:
            got = "nothing" if a is None else (f"{tuple(a.shape)} {a.dtype}"
                                               if hasattr(a, "shape") else type(a).__name__)
            what = f"{shape} {dt}" + (" (C-contiguous)" if contiguous else "")
            raise RuntimeInputError(f"backward: residual buffer {name}: expected {what} for "
                                    f"T={T}, B={B}, got {got}")


def gradients(shapes: Mapping[str, tuple[int, int]], pieces: Sequence[ParamPiece],
              view: Callable[[Ref], Any], zeros: Callable[[tuple[int, int]], Any],
              whole: Callable[[Any], Any] | None = None) -> tuple[dict[str, Any], set[str]]:
    """Each parameter's gradient, the sum of its pieces (zeros where none: a parameter the
    outputs do not depend on). ``whole``: how to hand out a piece that is the whole parameter
    without a sum (llvm: its own buffer, made contiguous); None sums every piece into zeros.
    Returns the gradients and the buffers they may view."""
    by_name: dict[str, list[ParamPiece]] = {}
    for pc in pieces:
        by_name.setdefault(pc.name, []).append(pc)
    grads: dict[str, Any] = {}
    viewed: set[str] = set()
    for name, shape in shapes.items():
        mine = by_name.get(name, [])
        if whole is not None and len(mine) == 1 and mine[0].covers(shape):
            grads[name] = whole(view(mine[0].ref))
            viewed.add(mine[0].ref.buf)
            continue
        g = zeros(shape)
        for pc in mine:
            g[pc.region] += view(pc.ref)
        grads[name] = g
    return grads, viewed


class Device:
    """Where arrays live and how steps run; this base is numpy (``xp`` may be cupy)."""
    xp: Any = np

    def alloc(self, shape: tuple[int, ...], dtype: str) -> Any:
        # uninitialised: a Program writes before it reads, except what the bindings zero
        return self.xp.empty(shape, dtype=dtype)

    def launch(self, kernel: Any, rows: int, args: Sequence[Any]) -> None:
        """Launch a rendered kernel (CUDA's devices; their executor calls this)."""
        raise NotImplementedError

    def kernel(self, step: Kernel, ins: Sequence[Any], outs: Sequence[Any]) -> None:
        """A kernel step by its scalar program's numpy meaning."""
        shape = outs[0].shape
        vals = run_scalar_program(step.kernel.program,
                                  [np.broadcast_to(x, shape) for x in ins], step.kernel.dtype)
        for o, v in zip(outs, vals, strict=True):
            o[...] = np.broadcast_to(v, shape)

    def gemm(self, out: Any, a: Any, b: Any, ta: bool, tb: bool, acc: bool) -> None:
        prod = self.xp.matmul(a.T if ta else a, b.T if tb else b)
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


@dataclass
class Residuals:
    """What forward_train hands to backward: every buffer, by name, and the sizes."""
    buffers: dict[str, Any]
    T: int
    B: int


class Executor:
    """Runs a Program's sweeps on a Device, and binds and collects what the contract says."""

    def __init__(self, program: Program) -> None:
        self.p = program
        self.bufs = program.buffer_map

    # ---- what a subclass may run differently (CUDA: rendered kernels, whole-loop kernels) ----
    def run_kernel(self, dev: Device, s: Kernel, ins: list[Any], outs: list[Any],
                   rows: int) -> None:
        dev.kernel(s, ins, outs)

    def run_loop(self, dev: Device, label: str, arrays: dict[str, Any], T: int, B: int) -> bool:
        """Run a sweep's whole step phase at once, if this executor can (then True)."""
        return False

    def run_row_kernel(self, dev: Device, s: RowKernel, view: Callable[[Ref], Any],
                       rows: int) -> None:
        """A row kernel run block by block of rows, as a native backend runs it: every part on
        rows r0:r1, then the next block (three blocks), so a part that read a row another block
        writes would differ from the reference."""
        edges = sorted({0, rows // 3, (2 * rows) // 3, rows})
        whole = {id(part): ([view(r) for r in part.ins], [view(r) for r in part.outs])
                 if isinstance(part, Kernel) else ([view(part.src)], [view(part.out)])
                 for part in s.parts}
        for r0, r1 in zip(edges, edges[1:]):
            for part in s.parts:
                ins, outs = whole[id(part)]
                if isinstance(part, Kernel):
                    ins = [x if f in ("row", "scalar") else x[r0:r1]
                           for x, f in zip(ins, part.kernel.bcast)]
                    outs = [o[r0:r1] for o in outs]
                    self.run_kernel(dev, part, ins, outs, r1 - r0)
                else:
                    dev.reduce(outs[0][r0:r1], ins[0][r0:r1], part.op, part.axis,
                               part.accumulate)

    # ---- views ----
    def view(self, arrays: dict[str, Any], r: Ref, phase: str, t: int, T: int, B: int) -> Any:
        b = self.bufs[r.buf]
        a = arrays[r.buf]
        c0, c1 = cols_of(r, b)
        if b.fixed:
            r0, r1 = r.rows if r.rows is not None else (0, b.rows)
            return a[r0:r1, c0:c1]
        if b.kind == "seq":
            if phase == "step":
                return a[t + r.t][:, c0:c1]
            return a[r.t:r.t + T].reshape(T * B, b.cols)[:, c0:c1]
        return a[:, c0:c1]

    def alloc(self, dev: Device, T: int, B: int) -> dict[str, Any]:
        return {b.name: dev.alloc(b.shape(T, B), b.dtype) for b in self.p.buffers}

    # ---- sweeps ----
    def run_sweep(self, dev: Device, label: str, sw: Sweep, arrays: dict[str, Any], T: int,
                  B: int) -> None:
        for phase, steps in sw.phases():
            if phase != "step":
                for s in steps:
                    self.run_step(dev, s, arrays, phase, 0, T, B)
                continue
            if T == 0 or not steps or self.run_loop(dev, label, arrays, T, B):
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
                self.run_kernel(dev, s, [v(r) for r in s.ins], outs, rows)
        elif isinstance(s, Gemm):
            dev.gemm(v(s.out), v(s.a), v(s.b), s.trans_a, s.trans_b, s.accumulate)
        elif isinstance(s, Reduce):
            dev.reduce(v(s.out), v(s.src), s.op, s.axis, s.accumulate)
        elif isinstance(s, Gather):
            dev.gather(v(s.out), v(s.table), v(s.ids))
        elif isinstance(s, Scatter):
            dev.scatter(v(s.out), v(s.ids), v(s.src), s.accumulate)
        elif isinstance(s, RowKernel):
            first = s.parts[0]
            rows = int(v(first.outs[0] if isinstance(first, Kernel) else first.out).shape[0])
            if rows:
                self.run_row_kernel(dev, s, v, rows)
        else:
            raise BackendError(f"unknown program step {s!r}")

    # ---- bindings (the Program docstring's) ----
    def bind_forward(self, arrays: dict[str, Any], params: dict[str, Any], xs: Sequence[Any],
                     h0: Sequence[Any], T: int, B: int) -> None:
        p = self.p
        for b in p.buffers:
            if b.kind == "mat":
                arrays[b.name][...] = 0
        for pc in p.param_pieces:
            self.view(arrays, pc.ref, "pre", 0, T, B)[...] = params[pc.name][pc.region]
        for (_n, buf), x in zip(p.inputs, xs):
            arrays[buf][...] = x
        for (_n, buf), h in zip(p.states, h0):
            arrays[buf][0] = h

    def collect_forward(self, arrays: dict[str, Any], T: int) -> tuple[list[Any], list[Any]]:
        ys = [self._seq(arrays, r, T).copy() for _n, r in self.p.outputs]
        hT = [arrays[buf][T].copy() for _n, buf in self.p.states]
        return ys, hT

    def _seq(self, arrays: dict[str, Any], r: Ref, T: int) -> Any:
        return seq_view(arrays[r.buf], r, T)

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
        # summed into arrays of their own: a second backward rewrites the residuals' buffers
        grads, _ = gradients(param_shapes, p.grad_pieces,
                             lambda r: self.view(arrays, r, "post", 0, T, B),
                             lambda shape: xp.zeros(shape, dtype=p.dtype))
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
                d_h.append(batch_view(arrays[r.buf][r.t], r).copy())
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
        check_residual_buffers(res.buffers, {b.name: (tuple(b.shape(res.T, res.B)),
                                                      np.dtype(b.dtype))
                                             for b in self.p.buffers}, res.T, res.B)

    def saved_params(self, res: Residuals) -> list[tuple[str, Any, Any]]:
        """(name, region, the forward's copy) per parameter piece, for
        ``CompiledCell._check_params_unchanged``."""
        return [(pc.name, pc.region, self.view(res.buffers, pc.ref, "pre", 0, res.T, res.B))
                for pc in self.p.param_pieces]

    def backward(self, dev: Device, res: Residuals, d_ys: Sequence[Any | None],
                 d_final: Sequence[Any | None], param_shapes: dict[str, tuple[int, int]],
                 cell: Any) -> tuple[dict[str, Any], list[Any], list[Any]]:
        self.bind_backward(res.buffers, d_ys, d_final)
        self.run_sweep(dev, "backward", self.p.backward, res.buffers, res.T, res.B)
        return self.collect_backward(dev, res.buffers, res.T, res.B, param_shapes, cell)


class ExecutedCell(CompiledCell):
    """A compiled cell whose Program an ``Executor`` runs on a ``Device`` in this process
    (``program``, ``cuda-cpu``); a subclass sets ``executor`` and ``device``."""

    runs_program = True
    executor: Executor
    device: Device

    def _forward(self, params: dict[str, np.ndarray], xs: list[np.ndarray],
                 h0: list[np.ndarray], save: bool) -> tuple[list[np.ndarray],
                                                            list[np.ndarray], Any]:
        # the executor copies xs, h0 and params into its own buffers and ys, hT out of them
        ys, hT, res = self.executor.forward(self.device, params, xs, h0)
        return ys, hT, (self._residuals(res.T, res.B, res) if save else None)

    def _backward(self, params: dict[str, np.ndarray], residuals: ResidualToken,
                  d_ys: Sequence[np.ndarray | None],
                  d_final: Sequence[np.ndarray | None]) -> Grads:
        res = self._checked(residuals, residuals._payload, params)
        dp, dx, dh = self.executor.backward(self.device, res, d_ys, d_final,
                                            self.cell.grad_shapes(), self.cell)
        return Grads(dp, dx, dh)

    def _checked(self, residuals: ResidualToken, res: Any,
                 params: dict[str, Any]) -> Residuals:
        """The token's buffers, once they are this Program's for its T and B and the params
        are the ones the forward was given."""
        if not isinstance(res, Residuals) or (res.T, res.B) != (residuals.T, residuals.B):
            raise RuntimeInputError("backward: residuals were tampered with: their buffers "
                                    f"are not for T={residuals.T}, B={residuals.B}")
        self.executor.check_residuals(res)
        self._check_params_unchanged(residuals, params, lambda: self.executor.saved_params(res))
        return res
