"""The ``ref`` backend: the literally unrolled reference interpreter behind the compiled-cell API.

It is slow and obviously right; every other backend is tested against it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphrnn.api import CompiledCell, Grads
from graphrnn.autodiff import backward_cell
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
        ys, hT, saved = run_sequence(self.cell, params, xs, h0)
        return ys, hT, ((xs, saved) if save else None)

    def _backward(self, params: dict[str, np.ndarray], residuals: Any,
                  d_ys: Sequence[np.ndarray | None],
                  d_final: Sequence[np.ndarray | None]) -> Grads:
        xs, saved = residuals
        dp, dx, dh = run_backward(self.bw, params, xs, saved, d_ys, d_final)
        return Grads(dp, dx, dh)
