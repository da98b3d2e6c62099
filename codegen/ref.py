"""The ``ref`` backend: the literally unrolled reference interpreter behind the compiled-cell API,
and ``program``: the optimizer's Program run by ``graphrnn.runtime`` in numpy.

``ref`` is slow and obviously right; every other backend is tested against it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphrnn.api import CompiledCell, Grads, Residuals
from graphrnn.autodiff import backward_cell
from graphrnn.errors import RuntimeInputError
from graphrnn.interp import run_backward, run_sequence
from graphrnn.ir import Cell
from graphrnn.program import Program
from graphrnn.runtime import Device, ExecutedCell, Executor


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

class ProgramBackend(ExecutedCell):
    """Runs the optimized Program (``graphrnn.pipeline.build_program``) step by step in numpy:
    ``graphrnn.runtime``'s executor on its numpy ``Device``.

    Slow on purpose (no fusion of its own): it shows what each step means, and its results must
    equal ``RefBackend``'s."""

    backend_name = "program"

    def __init__(self, cell: Cell, dtype: str, program: Program | None = None) -> None:
        super().__init__(cell, dtype, program)
        self.executor = Executor(self.program)
        self.device = Device()
