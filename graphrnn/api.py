"""The public compile entry point and the interface every backend's compiled cell offers.

``graphrnn.compile(cell, backend="ref"|"llvm"|"cuda", dtype=...)`` looks the backend up by name,
lazily, so graphrnn never imports ``codegen`` at module level. Every compiled cell speaks the same
sequence API:

    cc = graphrnn.compile(cell, backend="ref", dtype="float64")
    params = cc.init_params(seed=0)                    # dict name -> ndarray
    ys, hT = cc.forward(params, xs, h0)                # xs (T,B,I) or a list, one per input
    ys, hT, res = cc.forward_train(params, xs, h0)     # also the residuals backward needs
    g = cc.backward(params, res, d_ys, d_hT)           # Grads(params, inputs, states)
    y, h = cc.step(params, x_t, h)                     # one step, for sampling
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import BackendError, RuntimeInputError
from .ir import FLOATS, Cell, Node, toposort
from .ops import Ops

BACKENDS: dict[str, str] = {
    "ref": "codegen.ref:RefBackend",
    "program": "codegen.ref:ProgramBackend",
    "llvm": "codegen.llvm:LLVMBackend",
    "cuda": "codegen.cuda:CudaBackend",
}


@dataclass
class Grads:
    """Gradients of a loss: by parameter name, per input (T,B,n), per initial state (B,n)."""
    params: dict[str, np.ndarray]
    inputs: list[np.ndarray]
    states: list[np.ndarray]


def init_params(cell: Cell, seed: int = 0, scheme: str = "uniform", scale: float = 0.08,
                dtype: str | None = None,
                overrides: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Seeded parameters by name. Schemes: ``uniform`` (±scale, char-rnn's 0.08, Zaremba's 0.1),
    ``orthogonal`` (square blocks of 2-D weights; others uniform), ``zeros``. ``overrides`` sets
    a constant by parameter name, e.g. a forget-gate bias of 1."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype or cell.dtype)
    out: dict[str, np.ndarray] = {}
    for p in cell.params:
        shape = tuple(int(d) for d in p.shape)
        if scheme == "zeros":
            v = np.zeros(shape)
        elif scheme == "uniform":
            v = rng.uniform(-scale, scale, size=shape)
        elif scheme == "orthogonal":
            v = _orthogonal(rng, shape) if min(shape) > 1 else rng.uniform(-scale, scale, shape)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}; use uniform, orthogonal or zeros")
        if overrides and p.arg in overrides:
            v = np.full(shape, overrides[p.arg])
        out[p.arg] = v.astype(dt)
    return out


def _orthogonal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    rows, cols = shape
    out = np.empty(shape)
    # each (rows x rows) block of the columns is orthogonal (per-gate blocks of a fused weight)
    for c0 in range(0, cols, rows):
        w = min(rows, cols - c0)
        q, r = np.linalg.qr(rng.standard_normal((rows, rows)))
        q *= np.sign(np.diag(r))
        out[:, c0:c0 + w] = q[:, :w]
    return out


class CompiledCell:
    """Shared argument handling; backends implement ``_forward``, ``_backward``."""

    backend_name = "?"

    def __init__(self, cell: Cell, dtype: str) -> None:
        if dtype not in FLOATS:
            raise BackendError(f"dtype must be one of {FLOATS}, got {dtype!r}")
        self.cell = cell.with_dtype(dtype)
        self.dtype = dtype
        # input -> rows of the smallest table it indexes: ids outside would read or write
        # outside a table in native code, and numpy would wrap negative ids without a word
        self._id_rows: dict[Node, int] = {}
        for n in toposort(self.cell.roots):
            if n.op is Ops.GATHER and n.src[1].op is Ops.INPUT:
                rows = int(n.src[0].shape[0])
                self._id_rows[n.src[1]] = min(rows, self._id_rows.get(n.src[1], rows))

    # ---- argument checking, one place for every backend ----
    def _inputs(self, xs: Any) -> list[np.ndarray]:
        if isinstance(xs, np.ndarray) or hasattr(xs, "__array__") and not isinstance(xs, list):
            xs = [xs]
        xs = list(xs)
        if len(xs) != len(self.cell.inputs):
            names = [n.arg for n in self.cell.inputs]
            raise RuntimeInputError(f"cell {self.cell.name} takes {len(names)} inputs {names}, "
                                    f"got {len(xs)}")
        out = []
        for n, x in zip(self.cell.inputs, xs):
            dt = np.int64 if n.dtype == "int64" else self.dtype
            x = np.asarray(x, dtype=dt)
            if x.ndim != 3 or x.shape[2] != n.shape[1]:
                raise RuntimeInputError(f"input {n.arg!r}: expected (T, B, {n.shape[1]}), got "
                                        f"{x.shape}")
            rows = self._id_rows.get(n)
            if rows is not None and x.size and (x.min() < 0 or x.max() >= rows):
                raise RuntimeInputError(f"input {n.arg!r}: token ids must be in [0, {rows}), "
                                        f"got values in [{x.min()}, {x.max()}]")
            out.append(x)
        if len({x.shape[:2] for x in out}) > 1:
            raise RuntimeInputError("inputs disagree on (T, B): "
                                    + ", ".join(str(x.shape) for x in out))
        return out

    def _states(self, h: Any, batch: int) -> list[np.ndarray]:
        if h is None:
            return [np.zeros((batch, int(s.shape[1])), self.dtype) for s in self.cell.states]
        if isinstance(h, np.ndarray):
            h = [h]
        h = list(h)
        if len(h) != len(self.cell.states):
            raise RuntimeInputError(f"cell {self.cell.name} has {len(self.cell.states)} states, "
                                    f"got {len(h)}")
        out = []
        for s, v in zip(self.cell.states, h):
            v = np.asarray(v, dtype=self.dtype)
            if v.shape != (batch, s.shape[1]):
                raise RuntimeInputError(f"state {s.arg!r}: expected ({batch}, {s.shape[1]}), "
                                        f"got {v.shape}")
            out.append(v)
        return out

    def _params(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for p in self.cell.params:
            if p.arg not in params:
                raise RuntimeInputError(f"missing parameter {p.arg!r}; expected "
                                        f"{sorted(self.cell.param_shapes())}")
            v = np.asarray(params[p.arg], dtype=self.dtype)
            if v.shape != p.shape:
                raise RuntimeInputError(f"parameter {p.arg!r}: expected shape {p.shape}, got "
                                        f"{v.shape}")
            out[p.arg] = v
        return out

    def init_params(self, seed: int = 0, scheme: str = "uniform", scale: float = 0.08,
                    overrides: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        return init_params(self.cell, seed, scheme, scale, self.dtype, overrides)

    # ---- the public API ----
    def forward(self, params: dict[str, np.ndarray], xs: Any,
                h0: Any = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        ys, hT, _ = self.forward_train(params, xs, h0, save=False)
        return ys, hT

    def forward_train(self, params: dict[str, np.ndarray], xs: Any, h0: Any = None,
                      save: bool = True) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
        xs = self._inputs(xs)
        return self._forward(self._params(params), xs, self._states(h0, xs[0].shape[1]), save)

    def backward(self, params: dict[str, np.ndarray], residuals: Any, d_ys: Any,
                 d_final: Any = None) -> Grads:
        if isinstance(d_ys, np.ndarray):
            d_ys = [d_ys]
        d_ys = list(d_ys) if d_ys is not None else [None] * len(self.cell.outputs)
        if len(d_ys) != len(self.cell.outputs):
            raise RuntimeInputError(f"backward: {len(self.cell.outputs)} output cotangents "
                                    f"expected, got {len(d_ys)}")
        if d_final is None:
            d_final = [None] * len(self.cell.states)
        elif isinstance(d_final, np.ndarray):
            d_final = [d_final]
        d_ys = [None if d is None else np.asarray(d, self.dtype) for d in d_ys]
        d_final = [None if d is None else np.asarray(d, self.dtype) for d in d_final]
        return self._backward(self._params(params), residuals, d_ys, list(d_final))

    def explain(self, batch: int = 1, kernels: bool = False) -> str:
        """The optimized plan of this cell (``graphrnn.explain``), whatever the backend."""
        from .explain import explain
        return explain(self, batch=batch, kernels=kernels)

    def step(self, params: dict[str, np.ndarray], x: Any,
             h: Any = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if isinstance(x, np.ndarray) or not isinstance(x, (list, tuple)):
            x = [x]
        xs = [np.asarray(v)[None] for v in x]
        ys, hT = self.forward(params, xs, h)
        return [y[0] for y in ys], hT

    def _forward(self, params: dict[str, np.ndarray], xs: list[np.ndarray],
                 h0: list[np.ndarray], save: bool) -> tuple[list[np.ndarray],
                                                            list[np.ndarray], Any]:
        raise NotImplementedError

    def _backward(self, params: dict[str, np.ndarray], residuals: Any,
                  d_ys: Sequence[np.ndarray | None],
                  d_final: Sequence[np.ndarray | None]) -> Grads:
        raise NotImplementedError


def compile(cell: Cell, backend: str = "ref", dtype: str | None = None,  # noqa: A001
            **options: Any) -> CompiledCell:
    """Compile a Cell for a backend (``ref``, ``program``, ``llvm``, ``cuda``)."""
    if not isinstance(cell, Cell):
        to_cell = getattr(cell, "to_cell", None)
        if to_cell is None:
            raise TypeError(f"compile() takes a Cell, got {type(cell).__name__}; a gModule "
                            "becomes a Cell with gmodule.to_cell(inputs=..., states=...)")
        cell = to_cell()
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    mod_name, cls_name = BACKENDS[backend].split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise BackendError(f"backend {backend!r} is not available: {e}") from e
    cls = getattr(mod, cls_name)
    return cls(cell, dtype or cell.dtype, **options)  # type: ignore[no-any-return]
