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

The contract every backend keeps (``tests/test_hostile_runtime.py`` checks it on each):

- Ownership. What ``forward_train`` returns belongs to the caller: ``ys`` and ``hT`` are
  arrays no backend reads again, so writing into them changes nothing else. The residuals own
  (copies of) everything ``backward`` reads: after ``forward_train`` the caller may mutate or
  reuse ``xs``, ``h0``, the parameter arrays and ``ys``, and ``backward`` still returns the
  gradients of the computation ``forward_train`` ran. Likewise ``Grads`` are the caller's.
- Parameters. ``backward`` computes the gradients at the parameter values ``forward_train``
  ran with, read from the residuals' copies. Its ``params`` argument must be the arrays
  ``forward_train`` was given (whatever was written into them since: an optimizer step taken
  in place before ``backward`` changes no gradient) or arrays holding the same values (compared
  bit for bit); other values raise ``RuntimeInputError`` naming the parameter. (Using new
  values would give each backend a different answer: ``ref`` recomputes a step from the saved
  states, the compiled backends reuse the activations the forward saved.)
- Residuals are an opaque ``Residuals`` token: only the compiled cell whose ``forward_train``
  made it accepts it, its ``T`` and ``B`` are read-only, and the backends check the arrays it
  holds against them before any native code runs.
- Every argument is checked before any backend runs (``CompiledCell``): counts, shapes and
  dtype kinds of inputs, states, parameters and cotangents; ``None`` where an array is needed;
  complex, object or string arrays; token ids that are not integers. Each failure is a
  ``RuntimeInputError`` naming the argument, what was expected and what was received.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import importlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import BackendError, RuntimeInputError
from .ir import FLOATS, Cell, Node, toposort
from .ops import Ops
from .program import Program

BACKENDS: dict[str, str] = {
    "ref": "codegen.ref:RefBackend",
    "program": "codegen.ref:ProgramBackend",
    "llvm": "codegen.llvm:LLVMBackend",
    "cuda": "codegen.cuda:CudaBackend",
}


@dataclass
class Grads:
    """Gradients of a loss: by parameter name, per input (T,B,n), per initial state (B,n).
    ``params`` has no entry for a frozen parameter (``Cell.frozen``)."""
    params: dict[str, np.ndarray]
    inputs: list[np.ndarray]
    states: list[np.ndarray]


def init_params(cell: Cell, seed: int = 0, scheme: str = "uniform", scale: float = 0.08,
                dtype: str | None = None,
                overrides: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Seeded parameters by name, in the shapes the cell declares. Schemes: ``uniform`` (±scale,
    char-rnn's 0.08, Zaremba's 0.1), ``orthogonal`` (square blocks of 2-D weights; others
    uniform), ``zeros``. ``overrides`` sets a constant by parameter name, e.g. a forget-gate
    bias of 1.

    Weight layouts differ by frontend: an equations cell's weights are (out, in), as PyTorch
    stores them (``W @ x``); the zoo's, ``frontends.trace``'s and ``graphrnn.nn``'s are
    (in, out) (``x @ W``). ``cell.weight_layouts()`` says which, per weight, and
    ``graphrnn.convert.relayout`` converts a dict between two cells. ``orthogonal`` makes the
    square blocks along the columns of the array as stored."""
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


class Residuals:
    """What ``forward_train`` hands to ``backward``: an opaque token. Only the compiled cell that
    made it opens it (``CompiledCell._open``); ``T`` and ``B`` are read-only, and the backends
    check the arrays it holds against them, so a tampered token is an error, not a crash."""

    # _origin: the parameter arrays the caller passed to forward_train (by identity), _same:
    # whether backward was given those very arrays (then no values need comparing)
    __slots__ = ("_owner", "_T", "_B", "_payload", "_origin", "_same", "__weakref__")

    def __init__(self, owner: CompiledCell, T: int, B: int, payload: Any) -> None:
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_T", int(T))
        object.__setattr__(self, "_B", int(B))
        object.__setattr__(self, "_payload", payload)
        object.__setattr__(self, "_origin", None)
        object.__setattr__(self, "_same", False)

    @property
    def T(self) -> int:   # noqa: N802 - the sequence length, named as everywhere else
        return self._T  # type: ignore[no-any-return]

    @property
    def B(self) -> int:   # noqa: N802
        return self._B  # type: ignore[no-any-return]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"residuals are read-only (tried to set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"residuals are read-only (tried to delete {name!r})")

    def __repr__(self) -> str:
        owner = self._owner
        return (f"<Residuals of {owner.backend_name} cell {owner.cell.name!r}, T={self._T}, "
                f"B={self._B}>")


def same_bits(a: Any, b: Any) -> bool:
    """Whether two arrays of one shape and dtype hold the same bits (NaNs compare equal to
    themselves, -0.0 differs from 0.0: "the values the forward ran with", exactly)."""
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.nbytes <= 1 << 16:   # small: two bytes objects compare in ~0.2 us
            return a.tobytes() == b.tobytes()
        if a.flags.c_contiguous and b.flags.c_contiguous:
            # memcmp: as fast as memory (~60 us a megabyte, cold) with no boolean temporary
            return bool(_memcmp(data_address(a), data_address(b), a.nbytes) == 0)
    u = np.dtype(f"u{a.dtype.itemsize}")
    return not bool((a.view(u) != b.view(u)).any())


def data_address(a: np.ndarray) -> int:
    """The data pointer of a C-contiguous array; ``c_char.from_buffer`` is 3x cheaper than
    ``a.ctypes.data`` but needs a writable buffer (inputs may be read-only views)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return int(a.ctypes.data)


def _load_memcmp() -> Callable[[int, int, int], int]:
    try:
        try:   # the process's own libc: find_library runs ldconfig (~15 ms at import)
            fn = ctypes.CDLL(None).memcmp
        except (OSError, AttributeError, TypeError):
            fn = ctypes.CDLL(ctypes.util.find_library("c") or None).memcmp
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        return fn  # type: ignore[no-any-return]
    except (OSError, AttributeError):   # no C library by that name: compare copies as bytes
        def cmp(pa: int, pb: int, n: int) -> int:
            ta = (ctypes.c_char * n).from_address(pa)
            tb = (ctypes.c_char * n).from_address(pb)
            return 0 if bytes(ta) == bytes(tb) else 1
        return cmp


_memcmp = _load_memcmp()

# dtype kinds accepted where a float array is expected (converted to the cell's dtype) and
# where token ids are: complex would lose its imaginary part, floats their fraction, silently
_REAL_KINDS = "fiub"
_ID_KINDS = "iu"


def _describe(x: Any) -> str:
    dt = getattr(x, "dtype", None)
    shape = getattr(x, "shape", None)
    if dt is not None and shape is not None:
        return f"{type(x).__name__} of dtype {dt} and shape {tuple(shape)}"
    return f"{type(x).__name__} {x!r}"[:120]


def checked_array(what: str, x: Any, expect: str, ids: bool = False) -> Any:
    """``x`` as an array (lists are read by numpy; arrays, CuPy arrays and tensors are returned
    as they are) after refusing what would be converted wrongly or not at all: None, ragged or
    object data, complex or string dtypes, and for token ids anything but integers."""
    if type(x) is np.ndarray and x.dtype.kind in (_ID_KINDS if ids else _REAL_KINDS):
        return x   # the common case, in ~0.1 us (sampling calls this per step)
    if x is None:
        raise RuntimeInputError(f"{what}: expected {expect}, got None")
    dt = getattr(x, "dtype", None)
    if dt is None or not hasattr(x, "shape"):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:   # ragged nested lists, unconvertible objects
            raise RuntimeInputError(f"{what}: expected {expect}, got a {type(x).__name__} "
                                    f"numpy cannot read as one array ({e})") from None
        dt = x.dtype
    try:
        kind = np.dtype(dt).kind
    except TypeError:   # a tensor's own dtype object: its DLPack conversion checks it
        return x
    if ids and kind not in _ID_KINDS:
        hint = (" (round and convert them with .astype(np.int64) if they are whole numbers)"
                if kind == "f" else "")
        raise RuntimeInputError(f"{what}: expected {expect} of an integer dtype (token ids), "
                                f"got {_describe(x)}{hint}")
    if not ids and kind not in _REAL_KINDS:
        raise RuntimeInputError(f"{what}: expected {expect} of a real number dtype, got "
                                f"{_describe(x)}")
    return x


def _one_per(value: Any, n: int) -> list[Any]:
    """Cotangents as given to backward: None (all zero), a list or tuple, or a single array."""
    if value is None:
        return [None] * n
    return list(value) if isinstance(value, (list, tuple)) else [value]


class CompiledCell:
    """Shared argument handling; backends implement ``_forward``, ``_backward``."""

    backend_name = "?"
    # whether this backend runs the optimizer's Program (``self.program``); compile() builds it
    runs_program = False
    # whether the backend's constructor takes compile()'s ``cache`` option (its own disk cache)
    cache_option = False
    program: Program

    @classmethod
    def prepare(cls, dtype: str, options: Mapping[str, Any]) -> None:
        """Start what can run while compile() runs the optimizer (llvm: loading LLVM)."""

    def __init__(self, cell: Cell, dtype: str, program: Program | None = None) -> None:
        if dtype not in FLOATS:
            raise BackendError(f"dtype must be one of {FLOATS}, got {dtype!r}")
        self.cell = cell.with_dtype(dtype)
        self.dtype = dtype
        self.program_seconds = 0.0   # time in the optimizer (compile() sets it)
        self.program_cache_hit = False   # whether compile() found the Program in a cache
        if self.runs_program:
            # program: compile()'s, or a hand-written one (tests); a backend constructed
            # directly gets the pipeline's (loaded here: it brings networkx and the passes)
            if program is None:
                t0 = time.perf_counter()
                from .pipeline import build_program
                program = build_program(self.cell)
                self.program_seconds = time.perf_counter() - t0
            if program.dtype != dtype:
                raise BackendError(f"{self.backend_name}: the optimizer produced a "
                                   f"{program.dtype} program for a {dtype} cell")
            self.program = program
        # input -> rows of the smallest table it indexes: ids outside would read or write
        # outside a table in native code, and numpy would wrap negative ids without a word
        self._id_rows: dict[Node, int] = {}
        for n in toposort(self.cell.roots):
            if n.op is Ops.GATHER and n.src[1].op is Ops.INPUT:
                rows = int(n.src[0].shape[0])
                self._id_rows[n.src[1]] = min(rows, self._id_rows.get(n.src[1], rows))

    # ---- argument checking, one place for every backend ----
    def _input_list(self, xs: Any) -> list[Any]:
        if xs is None:
            raise RuntimeInputError(f"xs: expected {len(self.cell.inputs)} input array(s) "
                                    f"{[n.arg for n in self.cell.inputs]}, got None")
        if isinstance(xs, (list, tuple)):
            xs = list(xs)
        elif isinstance(xs, np.ndarray) or hasattr(xs, "__array__") \
                or hasattr(xs, "__dlpack__"):
            xs = [xs]
        else:
            raise RuntimeInputError(f"xs: expected an array (T, B, n) or a list of them, one "
                                    f"per input {[n.arg for n in self.cell.inputs]}, got "
                                    f"{_describe(xs)}")
        if len(xs) != len(self.cell.inputs):
            names = [n.arg for n in self.cell.inputs]
            raise RuntimeInputError(f"cell {self.cell.name} takes {len(names)} inputs {names}, "
                                    f"got {len(xs)}")
        return [checked_array(f"input {n.arg!r}", x, f"an array (T, B, {n.shape[1]})",
                              ids=n.dtype == "int64")
                for n, x in zip(self.cell.inputs, xs)]

    def _inputs(self, xs: Any) -> list[np.ndarray]:
        out = []
        for n, x in zip(self.cell.inputs, self._input_list(xs)):
            dt = np.int64 if n.dtype == "int64" else self.dtype
            x = np.asarray(x, dtype=dt)
            if x.ndim != 3 or x.shape[2] != n.shape[1]:
                raise RuntimeInputError(f"input {n.arg!r}: expected (T, B, {n.shape[1]}), got "
                                        f"{x.shape}")
            self._check_id_range(n, x)
            out.append(x)
        if len({x.shape[:2] for x in out}) > 1:
            raise RuntimeInputError("inputs disagree on (T, B): "
                                    + ", ".join(str(x.shape) for x in out))
        return out

    def _check_id_range(self, n: Node, x: Any) -> None:
        rows = self._id_rows.get(n)
        if rows is not None and x.size and (x.min() < 0 or x.max() >= rows):
            raise RuntimeInputError(f"input {n.arg!r}: token ids must be in [0, {rows}), "
                                    f"got values in [{x.min()}, {x.max()}]")

    def _state_list(self, h: Any) -> list[Any] | None:
        if h is None:
            return None
        if isinstance(h, (list, tuple)):
            h = list(h)
        elif isinstance(h, np.ndarray) or hasattr(h, "__array__") or hasattr(h, "__dlpack__"):
            h = [h]
        else:
            raise RuntimeInputError(f"h0: expected None, an array (B, n) or a list of them, one "
                                    f"per state {[s.arg for s in self.cell.states]}, got "
                                    f"{_describe(h)}")
        if len(h) != len(self.cell.states):
            raise RuntimeInputError(f"cell {self.cell.name} has {len(self.cell.states)} states, "
                                    f"got {len(h)}")
        return [checked_array(f"state {s.arg!r}", v, f"an array (B, {s.shape[1]})")
                for s, v in zip(self.cell.states, h)]

    def _states(self, h: Any, batch: int) -> list[np.ndarray]:
        hs = self._state_list(h)
        if hs is None:
            return [np.zeros((batch, int(s.shape[1])), self.dtype) for s in self.cell.states]
        out = []
        for s, v in zip(self.cell.states, hs):
            v = np.asarray(v, dtype=self.dtype)
            if v.shape != (batch, s.shape[1]):
                raise RuntimeInputError(f"state {s.arg!r}: expected ({batch}, {s.shape[1]}), "
                                        f"got {v.shape}")
            out.append(v)
        return out

    def _param_items(self, params: Any) -> list[tuple[Node, Any]]:
        if not isinstance(params, (dict, Mapping)):   # dict first: the ABC check is slower
            raise RuntimeInputError(f"params: expected a dict name -> array "
                                    f"{sorted(self.cell.param_shapes())}, got "
                                    f"{_describe(params)}")
        out = []
        for p in self.cell.params:
            if p.arg not in params:
                raise RuntimeInputError(f"missing parameter {p.arg!r}; expected "
                                        f"{sorted(self.cell.param_shapes())}")
            out.append((p, checked_array(f"parameter {p.arg!r}", params[p.arg],
                                         f"an array {p.shape}")))
        return out

    def _layout_hint(self, name: str, got: tuple[int, ...]) -> str:
        """What to say when a weight comes transposed: which layout this cell stores."""
        shape = self.cell.param_shapes()[name]
        layout = self.cell.weight_layouts().get(name)
        if layout not in ("(in, out)", "(out, in)") or tuple(got) != tuple(shape)[::-1]:
            return ""
        if layout == "(in, out)":
            return (f": the transpose. This cell stores {name} as (in, out) and computes "
                    f"x @ {name} (the zoo, trace and nngraph layout); PyTorch and the equations "
                    f"frontend store (out, in): pass {name}.T, or convert a whole dict with "
                    "graphrnn.convert.relayout")
        return (f": the transpose. This cell stores {name} as (out, in) and computes "
                f"{name} @ x (the equations frontend's layout, PyTorch's); the zoo, trace and "
                f"nngraph store (in, out): pass {name}.T, or convert a whole dict with "
                "graphrnn.convert.relayout")

    def _params(self, params: Any) -> dict[str, np.ndarray]:
        out = {}
        for p, v in self._param_items(params):
            v = np.asarray(v, dtype=self.dtype)
            if v.shape != p.shape:
                raise RuntimeInputError(f"parameter {p.arg!r}: expected shape {p.shape}, got "
                                        f"{v.shape}{self._layout_hint(p.arg, v.shape)}")
            out[p.arg] = v
        return out

    # ---- residuals: an opaque token only this cell opens ----
    def _residuals(self, T: int, B: int, payload: Any) -> Residuals:
        return Residuals(self, T, B, payload)

    def _open(self, residuals: Any) -> Residuals:
        if residuals is None:
            raise RuntimeInputError("backward: residuals: expected what forward_train returned "
                                    "third, got None (forward and forward_train(save=False) "
                                    "keep none)")
        if not isinstance(residuals, Residuals):
            raise RuntimeInputError(f"backward: residuals must come from forward_train of "
                                    f"this cell: expected its Residuals, got "
                                    f"{_describe(residuals)}")
        if residuals._owner is not self:
            raise RuntimeInputError(f"backward: residuals must come from forward_train of "
                                    f"this {self.backend_name} cell {self.cell.name!r}, got "
                                    f"{residuals!r} (from another compiled cell)")
        return residuals

    def _stamp(self, out: tuple[Any, Any, Any], params: Any) -> tuple[Any, Any, Any]:
        """Remember which parameter arrays forward_train was given (their identity)."""
        if isinstance(out[2], Residuals):
            object.__setattr__(out[2], "_origin", tuple(params[p.arg] for p in self.cell.params))
        return out

    def _note_same_params(self, res: Residuals, params: Any) -> None:
        """Whether backward got the very arrays forward_train did: whatever was written into
        them since, the residuals' copies are the forward's values, so nothing to compare."""
        origin = res._origin
        same = origin is not None and isinstance(params, (dict, Mapping)) and all(
            params.get(p.arg) is o for p, o in zip(self.cell.params, origin))
        object.__setattr__(res, "_same", same)

    def _check_params_unchanged(self, res: Residuals, params: dict[str, Any],
                                saved: Callable[[], Sequence[tuple[str, Any, Any]]]) -> None:
        """``saved()``: (name, region of params[name] or None for all of it, the copy
        forward_train ran with). backward computes the gradients at those values: other arrays
        must hold them too (compared bit for bit, ~60 us a megabyte)."""
        if res._same:
            return
        for name, region, copy in saved():
            given = params[name] if region is None else params[name][region]
            if not same_bits(given, copy):
                raise RuntimeInputError(
                    f"backward: parameter {name!r}: expected the arrays forward_train was given "
                    "or arrays equal to them, got other values. backward computes the gradients "
                    "at the forward's parameters; run forward_train again with these")

    def _cotangents(self, res: Residuals, d_ys: Any, d_final: Any,
                    convert: Callable[[Any], Any]) -> tuple[list[Any], list[Any]]:
        """d_ys and d_final checked against the residuals' T and B, as arrays of this dtype
        (``convert``: to numpy, or to the device)."""
        T, B = res.T, res.B
        outs, states = self.cell.outputs, self.cell.states
        d_ys = _one_per(d_ys, len(outs))
        if len(d_ys) != len(outs):
            raise RuntimeInputError(f"backward: {len(outs)} output cotangents expected, got "
                                    f"{len(d_ys)} (d_ys: one per output, None for zero)")
        d_final = _one_per(d_final, len(states))
        if len(d_final) != len(states):
            raise RuntimeInputError(f"backward: {len(states)} final-state cotangents expected, "
                                    f"got {len(d_final)} (d_final: one per state "
                                    f"{[s.arg for s in states]}, None for zero)")
        out_ys = []
        for i, (o, d) in enumerate(zip(outs, d_ys)):
            if d is not None:
                want = (T, B, int(o.shape[1]))
                d = convert(checked_array(f"backward: d_ys[{i}]", d, f"an array {want}"))
                if tuple(d.shape) != want:
                    raise RuntimeInputError(f"backward: d_ys[{i}]: expected shape {want} "
                                            f"(T, B, n), got {tuple(d.shape)}")
            out_ys.append(d)
        out_final = []
        for s, d in zip(states, d_final):
            if d is not None:
                want = (B, int(s.shape[1]))
                d = convert(checked_array(f"backward: d_final for state {s.arg!r}", d,
                                          f"an array {want}"))
                if tuple(d.shape) != want:
                    raise RuntimeInputError(f"backward: d_final for state {s.arg!r}: expected "
                                            f"shape {want}, got {tuple(d.shape)}")
            out_final.append(d)
        return out_ys, out_final

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
        return self._stamp(self._forward(self._params(params), xs,
                                         self._states(h0, xs[0].shape[1]), save), params)

    def backward(self, params: dict[str, np.ndarray], residuals: Any, d_ys: Any,
                 d_final: Any = None) -> Grads:
        res = self._open(residuals)
        d_ys, d_final = self._cotangents(res, d_ys, d_final,
                                         lambda d: np.asarray(d, self.dtype))
        converted = self._params(params)
        self._note_same_params(res, params)
        grads = self._backward(converted, res, d_ys, d_final)
        for name in self.cell.frozen:   # the backends compute none; a third-party one might
            grads.params.pop(name, None)
        return grads

    def explain(self, batch: int = 1, kernels: bool = False) -> str:
        """The optimized plan of this cell (``graphrnn.explain``), whatever the backend."""
        from .explain import explain
        return explain(self, batch=batch, kernels=kernels)

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` for work next to the cell (a model's softmax head) on the cores this backend
        runs on: numpy's here, a backend with its own threads overrides it."""
        return a @ b  # type: ignore[no-any-return]

    def generator(self, model: Any) -> Any:
        """A native generation loop for ``model`` (a ``graphrnn.model.RNNModel`` whose layers are
        cells of this backend), which ``graphrnn.sample.generate`` uses instead of stepping each
        layer from Python; None when this backend has none (the llvm backend has one:
        ``codegen.llvm_generate``)."""
        return None

    def step(self, params: dict[str, np.ndarray], x: Any,
             h: Any = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        xs = [np.asarray(v)[None] for v in self._step_inputs(x)]
        ys, hT = self.forward(params, xs, h)
        return [y[0] for y in ys], hT

    def _step_inputs(self, x: Any) -> list[Any]:
        """``step``'s inputs, one array or a list, checked before they are indexed (so a ragged
        list is a RuntimeInputError naming the input, not numpy's ValueError)."""
        if isinstance(x, np.ndarray) or not isinstance(x, (list, tuple)):
            x = [x]
        names = [n.arg for n in self.cell.inputs] + [str(i) for i in range(len(x))]
        return [checked_array(f"step: input {names[i]!r}", v, "an array (B, n)")
                for i, v in enumerate(x)]

    def _forward(self, params: dict[str, np.ndarray], xs: list[np.ndarray],
                 h0: list[np.ndarray], save: bool) -> tuple[list[np.ndarray],
                                                            list[np.ndarray], Any]:
        raise NotImplementedError

    def _backward(self, params: dict[str, np.ndarray], residuals: Residuals,
                  d_ys: Sequence[np.ndarray | None],
                  d_final: Sequence[np.ndarray | None]) -> Grads:
        """``residuals`` is opened (this cell's); d_ys and d_final are checked."""
        raise NotImplementedError


def compile(cell: Cell, backend: str = "ref", dtype: str | None = None,  # noqa: A001
            **options: Any) -> CompiledCell:
    """Compile a Cell for a backend (``ref``, ``program``, ``llvm``, ``cuda``). The backends that
    run the optimizer's Program are handed it built here (``graphrnn.pipeline``); for them
    ``use_sympy=False`` builds kernel bodies without ``sympy.cse``. The Program is cached by the
    cell's IR, dtype and the compiler's source, in memory and on disk
    (``graphrnn.program_json``); ``cache=False`` builds it afresh and stores nothing (and
    turns off the backend's own cache where it has one), as does ``GRAPHRNN_DEBUG``."""
    # the optimizer (sympy) and the IR builders make ~10^5 short-lived objects: the cyclic
    # collector ran ~90 times in a cold LSTM compile, 10-15% of its time, and freed nothing
    # that could not wait until compile() returns
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compile(cell, backend, dtype, options)
    finally:
        if enabled:
            gc.enable()


def _compile(cell: Cell, backend: str, dtype: str | None,
             options: dict[str, Any]) -> CompiledCell:
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
    dtype = dtype or cell.dtype
    if not cls.runs_program or options.get("program") is not None:
        return cls(cell, dtype, **options)  # type: ignore[no-any-return]
    # the Program is built here, once, in the core; backends only run it. What a backend can
    # do meanwhile starts first (llvm: loading LLVM overlaps the optimizer and its imports)
    cls.prepare(dtype, options)
    t0 = time.perf_counter()
    use_sympy = options.pop("use_sympy", True)

    def build() -> Program:
        from .pipeline import build_program  # brings networkx and the passes: only on a miss
        return build_program(cell, dtype, use_sympy=use_sympy)

    cache = bool(options.pop("cache", True))
    if cls.cache_option:
        options["cache"] = cache
    if cache and not os.environ.get("GRAPHRNN_DEBUG"):
        # the Program as data, keyed by the cell's IR and the compiler's source: a hit runs
        # no pass of the optimizer (graphrnn/program_json.py); GRAPHRNN_DEBUG shows the passes
        from .program_json import cached_program
        options["program"], hit = cached_program(cell, dtype, bool(use_sympy), build)
    else:
        options["program"], hit = build(), False
    seconds = time.perf_counter() - t0
    cc = cls(cell, dtype, **options)
    cc.program_seconds = seconds
    cc.program_cache_hit = hit
    return cc  # type: ignore[no-any-return]
