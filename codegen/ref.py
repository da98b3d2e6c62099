"""The ``ref`` backend: the literally unrolled reference interpreter behind the compiled-cell API.

It is slow and obviously right; every other backend is tested against it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphrnn.api import CompiledCell, Grads, Residuals
from graphrnn.autodiff import backward_cell
from graphrnn.errors import RuntimeInputError
from graphrnn.interp import run_backward, run_sequence
from graphrnn.ir import Cell


class RefBackend(CompiledCell):
    backend_name = "ref"

    def __init__(self, cell: Cell, dtype: str) -> None:
        super().__init__(cell, dtype)
        self.bw = backward_cell(self.cell)

    def _forward(self, params: dict[str, np.ndarray], xs: list[np.ndarray],
                 h0: list[np.ndarray], save: bool) -> tuple[list[np.ndarray],
                                                            list[np.ndarray], Any]:
        if not save:
            ys, hT, _ = run_sequence(self.cell, params, xs, h0)
            return ys, hT, None
        # the residuals own what the backward reads: the caller may reuse xs, h0 and params
        xs = [x.copy() for x in xs]
        params = {k: v.copy() for k, v in params.items()}
        ys, hT, saved = run_sequence(self.cell, params, xs, [h.copy() for h in h0])
        return ys, hT, self._residuals(xs[0].shape[0], xs[0].shape[1], (xs, saved, params))

    def _backward(self, params: dict[str, np.ndarray], residuals: Residuals,
                  d_ys: Sequence[np.ndarray | None],
                  d_final: Sequence[np.ndarray | None]) -> Grads:
        xs, saved, fparams = residuals._payload
        self._check_params_unchanged(residuals, params,
                                     lambda: [(k, None, v) for k, v in fparams.items()])
        if len(saved) != residuals.T or any(x.shape[:2] != (residuals.T, residuals.B)
                                            for x in xs):
            raise RuntimeInputError(f"backward: residuals hold {len(saved)} steps of inputs "
                                    f"{[x.shape for x in xs]}, not T={residuals.T}, "
                                    f"B={residuals.B}")
        dp, dx, dh = run_backward(self.bw, fparams, xs, saved, d_ys, d_final)
        return Grads(dp, dx, dh)


# ---- the Program executor: the living spec of graphrnn/program.py, in numpy ----

class ProgramBackend(CompiledCell):
    """Runs the optimized Program (``graphrnn.pipeline.build_program``) step by step in numpy.

    Slow on purpose (no fusion of its own): it shows what each step means, and its results must
    equal ``RefBackend``'s."""

    backend_name = "program"
    runs_program = True

    # views
    def _view(self, mem: dict[str, np.ndarray], r: Any, t: int | None) -> np.ndarray:
        b = self.program.buffer(r.buf)
        a = mem[r.buf]
        if b.kind == "seq":
            T = a.shape[0] - b.extra
            a = a[t + r.t] if t is not None else a[r.t:r.t + T].reshape(-1, b.cols)
        if r.rows is not None:
            a = a[r.rows[0]:r.rows[1]]
        if r.cols is not None:
            a = a[:, r.cols[0]:r.cols[1]]
        return a

    def _run(self, mem: dict[str, np.ndarray], steps: Sequence[Any], t: int | None) -> None:
        from graphrnn.program import Gather, Gemm, Kernel, Reduce, Scatter
        from graphrnn.scalar import run_scalar_program
        for s in steps:
            if isinstance(s, Gemm):
                a = self._view(mem, s.a, t)
                b = self._view(mem, s.b, t)
                v = (a.T if s.trans_a else a) @ (b.T if s.trans_b else b)
                out = self._view(mem, s.out, t)
                if s.accumulate:
                    out += v
                else:
                    out[...] = v
            elif isinstance(s, Kernel):
                ins = [self._view(mem, r, t) for r in s.ins]
                outs = [self._view(mem, r, t) for r in s.outs]
                shape = outs[0].shape
                vals = run_scalar_program(s.kernel.program,
                                          [np.broadcast_to(x, shape) for x in ins], self.dtype)
                for o, v in zip(outs, vals, strict=True):
                    o[...] = np.broadcast_to(v, shape)
            elif isinstance(s, Reduce):
                fn = np.sum if s.op == "sum" else np.max
                v = fn(self._view(mem, s.src, t), axis=s.axis, keepdims=True)
                out = self._view(mem, s.out, t)
                if s.accumulate:
                    out += v
                else:
                    out[...] = v
            elif isinstance(s, Gather):
                ids = self._view(mem, s.ids, t)[:, 0]
                self._view(mem, s.out, t)[...] = self._view(mem, s.table, t)[ids]
            elif isinstance(s, Scatter):
                out = self._view(mem, s.out, t)
                if not s.accumulate:
                    out[...] = 0
                np.add.at(out, self._view(mem, s.ids, t)[:, 0], self._view(mem, s.src, t))
            else:
                raise TypeError(f"unknown step {s!r}")

    def _sweep(self, mem: dict[str, np.ndarray], sw: Any, T: int) -> None:
        self._run(mem, sw.pre, None)
        for t in (reversed(range(T)) if sw.reverse else range(T)):
            self._run(mem, sw.step, t)
        self._run(mem, sw.post, None)

    def _alloc(self, mem: dict[str, np.ndarray], T: int, B: int, kinds: tuple[str, ...]) -> None:
        for b in self.program.buffers:
            if b.kind in kinds and b.name not in mem:
                mem[b.name] = np.zeros(b.shape(T, B), dtype=b.dtype)

    def _forward(self, params: dict[str, np.ndarray], xs: list[np.ndarray],
                 h0: list[np.ndarray], save: bool) -> tuple[list[np.ndarray],
                                                            list[np.ndarray], Any]:
        p = self.program
        T, B = xs[0].shape[:2]
        mem: dict[str, np.ndarray] = {}
        for (_n, b), x in zip(p.inputs, xs, strict=True):   # a copy: the residuals own it
            mem[b] = np.array(x, dtype=p.buffer(b).dtype, order="C")
        self._alloc(mem, T, B, ("param", "mat", "seq", "temp"))
        for pc in p.param_pieces:
            self._view(mem, pc.ref, None)[...] = \
                params[pc.name][pc.rows[0]:pc.rows[1], pc.cols[0]:pc.cols[1]]
        for (_n, b), h in zip(p.states, h0, strict=True):
            mem[b][0] = h
        self._sweep(mem, p.forward, T)
        ys = [self._view(mem, r, None).reshape(T, B, -1).copy() for _n, r in p.outputs]
        hT = [mem[b][T].copy() for _n, b in p.states]
        return ys, hT, (self._residuals(T, B, mem) if save else None)

    def _backward(self, params: dict[str, np.ndarray], residuals: Residuals,
                  d_ys: Sequence[np.ndarray | None],
                  d_final: Sequence[np.ndarray | None]) -> Grads:
        p = self.program
        fmem, T, B = residuals._payload, residuals.T, residuals.B
        for b in p.buffers:
            if b.kind not in ("param", "mat", "seq", "temp"):   # the backward's own
                continue
            a = fmem.get(b.name)
            if a is None or a.shape != b.shape(T, B):
                raise RuntimeInputError(f"backward: residual buffer {b.name}: expected shape "
                                        f"{b.shape(T, B)} for T={T}, B={B}, got "
                                        f"{None if a is None else a.shape}")
        self._check_params_unchanged(residuals, params, lambda: [
            (pc.name, np.s_[pc.rows[0]:pc.rows[1], pc.cols[0]:pc.cols[1]],
             self._view(fmem, pc.ref, None)) for pc in p.param_pieces])
        mem = dict(fmem)
        self._alloc(mem, T, B, ("grad", "carry"))
        for b in p.buffers:   # backward scratch is fresh on every call
            if b.kind in ("grad", "carry", "temp"):
                mem[b.name] = np.zeros(b.shape(T, B), dtype=b.dtype)
        for (_n, b), d in zip(p.d_outputs, d_ys, strict=True):
            mem[b] = np.zeros(p.buffer(b).shape(T, B), self.dtype) if d is None else \
                np.ascontiguousarray(d, dtype=self.dtype)
        for (_n, b), d in zip(p.d_final, d_final, strict=True):
            if d is not None:
                mem[b][...] = d
        self._sweep(mem, p.backward, T)
        grads = {name: np.zeros(shape, self.dtype) for name, shape in p.param_shapes}
        for pc in p.grad_pieces:
            grads[pc.name][pc.rows[0]:pc.rows[1], pc.cols[0]:pc.cols[1]] += \
                self._view(mem, pc.ref, None)
        d_xs = []
        for (_n, r), x in zip(p.d_inputs, self.cell.inputs, strict=True):
            if r is None:
                d_xs.append(np.zeros((T, B, int(x.shape[1])), self.dtype))
            else:
                d_xs.append(self._view(mem, r, None).reshape(T, B, -1).copy())
        d_h = [self._view(mem, r, None).copy() for _n, r in p.d_states]
        return Grads(grads, d_xs, d_h)
