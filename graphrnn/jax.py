"""A compiled cell as a JAX function: ``jax.jit``, ``jax.grad``, ``jax.vmap`` and optax work on it.

    import graphrnn, graphrnn.jax
    cc = graphrnn.compile(cell, backend="llvm", dtype="float32")
    f = graphrnn.jax.rnn(cc)
    params = {k: jnp.asarray(v) for k, v in cc.init_params().items()}   # a pytree
    ys, hT = f(params, xs, h0)          # xs (T, B, I) or a list, h0 None / (B, H) / a list
    loss = lambda p: jnp.mean(f(p, xs)[0][0] ** 2)
    g = jax.jit(jax.grad(loss))(params)

A thin door (``/work/shared/DESIGN.md``: one engine, thin doors): the compiled cell does the
work; this module only checks shapes and dtypes while JAX traces, and calls the cell's
``forward`` / ``forward_train`` / ``backward`` from ``jax.pure_callback`` inside a
``jax.custom_vjp``. jax is optional: ``import graphrnn`` never imports this module, and this
module imports jax only when ``rnn`` is called.

Residuals across the callback boundary. The compiled cell's ``Residuals`` are an opaque host
object, and a callback can only return arrays. The training forward therefore keeps them in a
host-side table of the bridge, under a fresh int32 token it returns as an array; JAX saves the
token with the primal inputs as the ``custom_vjp`` residuals, and the backward callback takes
the entry out of the table (one use). When the entry is missing the backward recomputes it
with ``forward_train`` from the saved primal inputs, which JAX kept anyway, so the answer never
depends on the table:

- ``jax.vjp``'s pullback called twice, a forward JAX ran twice or merged (pure callbacks may be
  repeated, reordered or dropped), a backward never run: the first use finds the entry, a later
  one recomputes; a forward whose backward never comes leaves an entry behind, and the table
  keeps only the newest ``max_saved`` (default 32, per bridge), the oldest dropped first.
- A token names one forward call of one bridge (a counter), so it can only find residuals
  computed from the very primal values it travelled with.

Batching (``jax.vmap``). The callbacks use ``vmap_method="expand_dims"`` and handle the leading
(vmapped) axes themselves. Inference with parameters that are not vmapped folds every vmapped
example into the cell's batch axis: one native call for the whole batch (a per-example
function, ``xs`` of shape (T, I) and ``h0`` of shape (H,), vmapped over examples, is one call
with B = the number of examples). Training under ``vmap`` runs one ``forward_train`` and one
``backward`` per vmapped example: vmap of a VJP means per-example parameter gradients, and the
compiled backward sums them over its batch; for a training step, pass the batch in the B axis
(one native call each way). Vmapped parameters (an ensemble) run one call per example.

Only what is asked for crosses back: the ``custom_vjp`` uses symbolic zeros, so gradients of
arguments that are not differentiated (the data ``xs``, a zero ``h0``) are not copied out of
the backward callback, and outputs the loss does not read (often ``hT``) pass no cotangent.

Errors. Shapes, dtypes, names and counts are checked while JAX traces and raised as
``RuntimeInputError`` (a ``ValueError``) or ``TypeError`` naming the argument, since an exception
inside a pure callback is undefined behaviour in JAX. What only values can tell (a token id out
of range) raises inside the callback and reaches the caller as JAX's runtime error carrying the
cell's message.
"""

from __future__ import annotations

import collections
import functools
import itertools
import threading
from typing import Any, Sequence

import numpy as np

from .api import CompiledCell
from .errors import RuntimeInputError

# the core shape rank of each argument kind, after the batch-free form is given its B axis
_XS_RANK, _STATE_RANK, _PARAM_RANK = 3, 2, 2


def _jax() -> Any:
    try:
        import jax
    except ImportError as e:   # pragma: no cover - exercised where jax is absent
        raise ImportError("graphrnn.jax needs JAX: pip install 'graphrnn[jax]' "
                          "(or pip install jax)") from e
    return jax


class _Saved:
    """Residuals of training forwards not yet consumed by a backward, by token (bounded)."""

    def __init__(self, max_saved: int) -> None:
        self.max_saved = max_saved
        self._lock = threading.Lock()
        self._table: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._counter = itertools.count(1)

    def put(self, entry: Any) -> int:
        with self._lock:
            token = next(self._counter) % (2 ** 31 - 1) + 1   # int32, never 0
            self._table[token] = entry
            while len(self._table) > self.max_saved:
                self._table.popitem(last=False)
            return token

    def take(self, token: int) -> Any:
        with self._lock:
            return self._table.pop(int(token), None)

    def __len__(self) -> int:
        return len(self._table)


def _lead(a: np.ndarray, rank: int) -> tuple[int, ...]:
    return tuple(a.shape[:a.ndim - rank])


class CellFunction:
    """``f(params, xs, h0=None) -> (ys, hT)`` over a compiled cell, differentiable in JAX.

    ``params``: a dict name -> array (a pytree; other keys are ignored and get no gradient);
    ``xs``: one array (T, B, n) or a list, one per cell input; ``h0``: None (zeros), one array
    (B, n) or a list, one per state. The batch-free form, ``xs`` (T, n) and ``h0`` (n,), is
    one sequence and gives ``ys`` (T, n) and ``hT`` (n,): the function to ``vmap`` over
    examples. ``ys`` and ``hT`` are lists, one per cell output and state. Float arrays must have
    the compiled cell's dtype (float64 needs ``jax.config.update("jax_enable_x64", True)``);
    integer inputs (token ids) any integer dtype, and they get no gradient.
    """

    def __init__(self, cc: CompiledCell, max_saved: int = 32) -> None:
        if not isinstance(cc, CompiledCell):
            raise TypeError(f"graphrnn.jax.rnn takes a compiled cell (graphrnn.compile(cell, "
                            f"...)), got {type(cc).__name__}")
        if not isinstance(max_saved, int) or max_saved < 0:
            raise ValueError(f"max_saved: expected an int >= 0, got {max_saved!r}")
        jax = _jax()
        self.cc = cc
        self.saved = _Saved(max_saved)
        cell = cc.cell
        self._pnames = [p.arg for p in cell.params]
        self._pshapes = [tuple(int(d) for d in p.shape) for p in cell.params]
        self._in_ids = [n.dtype == "int64" for n in cell.inputs]
        self._in_width = [int(n.shape[1]) for n in cell.inputs]
        self._out_width = [int(n.shape[1]) for n in cell.outputs]
        self._st_width = [int(s.shape[1]) for s in cell.states]
        self.dtype = np.dtype(cc.dtype)
        self._core = self._build(jax)

    def __repr__(self) -> str:
        return f"<graphrnn.jax function of {self.cc.backend_name} cell {self.cc.cell.name!r}>"

    # ---- checks while tracing ----
    def _check_dtype(self, what: str, a: Any, ids: bool = False) -> None:
        dt = np.dtype(a.dtype)
        if ids:
            if dt.kind not in "iu":
                raise TypeError(f"{what}: expected integer token ids, got dtype {dt}")
            return
        if dt != self.dtype:
            hint = ""
            if self.dtype == np.float64:
                import jax
                if not jax.config.jax_enable_x64:
                    hint = ("; this cell is float64 and JAX's 64-bit mode is off: "
                            "jax.config.update('jax_enable_x64', True) first")
            raise TypeError(f"{what}: expected dtype {self.dtype} (the compiled cell's), got "
                            f"{dt}{hint}; compile the cell with dtype={dt.name!r} or cast")

    @staticmethod
    def _as_list(v: Any, n: int, what: str, names: list[str]) -> list[Any]:
        if isinstance(v, (list, tuple)):
            v = list(v)
        elif hasattr(v, "shape") and hasattr(v, "dtype"):
            v = [v]
        else:
            raise RuntimeInputError(f"{what}: expected an array or a list of {n}, one per "
                                    f"{names}, got {type(v).__name__}")
        if len(v) != n:
            raise RuntimeInputError(f"{what}: expected {n} array(s), one per {names}, got "
                                    f"{len(v)}")
        return v

    def __call__(self, params: Any, xs: Any, h0: Any = None) -> tuple[list[Any], list[Any]]:
        jax = _jax()
        jnp = jax.numpy
        cell = self.cc.cell
        if not isinstance(params, dict):
            raise RuntimeInputError(f"params: expected a dict name -> array {self._pnames}, "
                                    f"got {type(params).__name__}")
        pvals = []
        for name, shape in zip(self._pnames, self._pshapes):
            if name not in params:
                raise RuntimeInputError(f"params: missing parameter {name!r}; expected "
                                        f"{sorted(self._pnames)}")
            v = jnp.asarray(params[name])
            if tuple(v.shape) != shape:
                raise RuntimeInputError(f"parameter {name!r}: expected shape {shape}, got "
                                        f"{tuple(v.shape)}")
            self._check_dtype(f"parameter {name!r}", v)
            pvals.append(v)
        in_names = [n.arg for n in cell.inputs]
        xl = [jnp.asarray(x) for x in self._as_list(xs, len(in_names), "xs", in_names)]
        ranks = {x.ndim for x in xl}
        if len(ranks) != 1 or ranks.pop() not in (2, 3):
            raise RuntimeInputError(f"xs: expected (T, B, n) arrays, or (T, n) for one "
                                    f"sequence, all of one rank; got shapes "
                                    f"{[tuple(x.shape) for x in xl]}")
        single = xl[0].ndim == 2
        for name, x, w, ids in zip(in_names, xl, self._in_width, self._in_ids):
            if x.shape[-1] != w:
                want = "(T, n)" if single else "(T, B, n)"
                raise RuntimeInputError(f"input {name!r}: expected {want} with n = {w}, got "
                                        f"{tuple(x.shape)}")
            self._check_dtype(f"input {name!r}", x, ids)
        if single:
            xl = [x[:, None, :] for x in xl]
        if len({tuple(x.shape[:2]) for x in xl}) > 1:
            raise RuntimeInputError("xs: inputs disagree on (T, B): "
                                    + ", ".join(str(tuple(x.shape)) for x in xl))
        T, B = int(xl[0].shape[0]), int(xl[0].shape[1])
        if T < 1:
            raise RuntimeInputError(f"xs: expected at least one time step, got T = {T}")
        st_names = [s.arg for s in cell.states]
        if h0 is None:
            hl = [jnp.zeros((B, w), self.dtype) for w in self._st_width]
        else:
            hl = [jnp.asarray(h) for h in self._as_list(h0, len(st_names), "h0", st_names)]
            want = [(w,) if single else (B, w) for w in self._st_width]
            for name, h, shape in zip(st_names, hl, want):
                if tuple(h.shape) != shape:
                    raise RuntimeInputError(f"state {name!r}: expected shape {shape}, got "
                                            f"{tuple(h.shape)}")
                self._check_dtype(f"state {name!r}", h)
            if single:
                hl = [h[None, :] for h in hl]
        ys, hT = self._core(tuple(pvals), tuple(xl), tuple(hl))
        if single:
            return [y[:, 0, :] for y in ys], [h[0] for h in hT]
        return list(ys), list(hT)

    # ---- the custom_vjp over three callbacks ----
    def _build(self, jax: Any) -> Any:
        jnp = jax.numpy
        from jax.custom_derivatives import SymbolicZero

        def shapes(xs: Sequence[Any]) -> tuple[Any, Any]:
            T, B = xs[0].shape[:2]
            ys = tuple(jax.ShapeDtypeStruct((T, B, w), self.dtype) for w in self._out_width)
            hT = tuple(jax.ShapeDtypeStruct((B, w), self.dtype) for w in self._st_width)
            return ys, hT

        @jax.custom_vjp
        def core(pvals: tuple, xs: tuple, h0: tuple) -> Any:
            return jax.pure_callback(self._host_infer, shapes(xs), pvals, xs, h0,
                                     vmap_method="expand_dims")

        def fwd(pvals: tuple, xs: tuple, h0: tuple) -> Any:
            # symbolic zeros: each primal says whether it is differentiated (perturbed), so the
            # backward returns (and copies out of the callback) only the gradients asked for
            wants = tuple(tuple(bool(a.perturbed) for a in group) for group in (pvals, xs, h0))
            pvals, xs, h0 = (tuple(a.value for a in group) for group in (pvals, xs, h0))
            ys, hT = shapes(xs)
            out = jax.pure_callback(self._host_train,
                                    (ys, hT, jax.ShapeDtypeStruct((), jnp.int32)),
                                    pvals, xs, h0, vmap_method="expand_dims")
            return (out[0], out[1]), (pvals, xs, h0, out[2], wants)

        def bwd(res: Any, cts: Any) -> Any:
            pvals, xs, h0, token, (wp, wx, wh) = res
            wx = tuple(w and not ids for w, ids in zip(wx, self._in_ids))
            d_ys, d_hT = cts
            # a cotangent that is a symbolic zero (an output the loss does not read) stays
            # behind: the cell's backward takes None for it
            has = (tuple(not isinstance(d, SymbolicZero) for d in d_ys),
                   tuple(not isinstance(d, SymbolicZero) for d in d_hT))
            d_ys = tuple(d for d, h in zip(d_ys, has[0]) if h)
            d_hT = tuple(d for d, h in zip(d_hT, has[1]) if h)
            want = tuple(tuple(jax.ShapeDtypeStruct(a.shape, self.dtype)
                               for a, w in zip(group, ws) if w)
                         for group, ws in ((pvals, wp), (xs, wx), (h0, wh)))
            if not any(want):
                gp, gx, gh = (), (), ()
            else:
                gp, gx, gh = jax.pure_callback(
                    functools.partial(self._host_backward, (wp, wx, wh), has), want, token,
                    pvals, xs, h0, d_ys, d_hT, vmap_method="expand_dims")

            def spread(got: tuple, ws: tuple) -> tuple:
                it = iter(got)
                return tuple(next(it) if w else None for w in ws)
            return spread(gp, wp), spread(gx, wx), spread(gh, wh)

        core.defvjp(fwd, bwd, symbolic_zeros=True)
        return core

    # ---- host side: plain numpy, one native call per (folded) batch ----
    def _params(self, pvals: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._pnames, pvals))

    def _split(self, pvals: Any, xs: Any, h0: Any) -> tuple[tuple[int, ...], list, list, list]:
        """numpy views, and the leading (vmapped) axes they share."""
        pv = [np.asarray(p) for p in pvals]
        xv = [np.asarray(x) for x in xs]
        hv = [np.asarray(h) for h in h0]
        lead = np.broadcast_shapes(*[_lead(p, _PARAM_RANK) for p in pv],
                                   *[_lead(x, _XS_RANK) for x in xv],
                                   *[_lead(h, _STATE_RANK) for h in hv])
        return tuple(lead), pv, xv, hv

    @staticmethod
    def _at(a: np.ndarray, rank: int, lead: tuple[int, ...], idx: tuple[int, ...]
            ) -> np.ndarray:
        """One vmapped example of ``a`` (whose leading axes broadcast to ``lead``)."""
        return np.broadcast_to(a, lead + a.shape[a.ndim - rank:])[idx]

    def _host_infer(self, pvals: Any, xs: Any, h0: Any) -> Any:
        lead, pv, xv, hv = self._split(pvals, xs, h0)
        cc = self.cc
        if not lead:
            ys, hT = cc.forward(self._params(pv), xv, hv)
            return tuple(ys), tuple(hT)
        if all(p.ndim == _PARAM_RANK or p.size == int(np.prod(p.shape[-2:])) for p in pv):
            # parameters shared by every example: fold the vmapped axes into the batch
            n = int(np.prod(lead))
            params = self._params([p.reshape(p.shape[-2:]) for p in pv])
            T, B = xv[0].shape[-3], xv[0].shape[-2]
            fx = [np.broadcast_to(x, lead + x.shape[-3:]).reshape(n, T, B, x.shape[-1])
                  .transpose(1, 0, 2, 3).reshape(T, n * B, x.shape[-1]) for x in xv]
            fh = [np.broadcast_to(h, lead + h.shape[-2:]).reshape(n * B, h.shape[-1])
                  for h in hv]
            ys, hT = cc.forward(params, fx, fh)
            return (tuple(y.reshape(T, n, B, y.shape[-1]).transpose(1, 0, 2, 3)
                          .reshape(lead + (T, B, y.shape[-1])) for y in ys),
                    tuple(h.reshape(lead + (B, h.shape[-1])) for h in hT))
        return self._per_example(lead, pv, xv, hv, lambda p, x, h: cc.forward(p, x, h))

    def _host_train(self, pvals: Any, xs: Any, h0: Any) -> Any:
        lead, pv, xv, hv = self._split(pvals, xs, h0)

        def one(params: dict, x: list, h: list) -> tuple:
            ys, hT, res = self.cc.forward_train(params, x, h)
            token = self.saved.put((res, params)) if self.saved.max_saved else 0
            return ys, hT, [np.int32(token)]

        if not lead:
            ys, hT, tok = one(self._params(pv), xv, hv)
            return tuple(ys), tuple(hT), np.asarray(tok[0], np.int32)
        ys, hT, tok = self._per_example(lead, pv, xv, hv, one)
        return ys, hT, tok[0]

    def _host_backward(self, wants: tuple, has: tuple, token: Any, pvals: Any, xs: Any,
                       h0: Any, d_ys: Any, d_hT: Any) -> Any:
        """Gradients for the primals ``wants`` flags; ``has``: which cotangents were given
        (the others are zeros, None to the cell)."""
        lead, pv, xv, hv = self._split(pvals, xs, h0)
        dy_it, dh_it = iter([np.asarray(d) for d in d_ys]), iter([np.asarray(d) for d in d_hT])
        dy = [next(dy_it) if h else None for h in has[0]]
        dh = [next(dh_it) if h else None for h in has[1]]
        tok = np.asarray(token)
        lead = tuple(np.broadcast_shapes(lead, tok.shape,
                                         *[_lead(d, _XS_RANK) for d in dy if d is not None],
                                         *[_lead(d, _STATE_RANK) for d in dh if d is not None]))
        wp, wx, wh = wants

        def one(params: dict, x: list, h: list, t: int, d_y: list, d_h: list) -> tuple:
            entry = self.saved.take(t)
            if entry is None:   # used already, dropped, or never stored: recompute it
                res = self.cc.forward_train(params, x, h)[2]
            else:
                res, params = entry   # the very arrays forward_train had: no comparison
            g = self.cc.backward(params, res, d_y, d_h)
            return ([g.params[n] for n, w in zip(self._pnames, wp) if w],
                    [gx for gx, w in zip(g.inputs, wx) if w],
                    [gh for gh, w in zip(g.states, wh) if w])

        def at(d: np.ndarray | None, rank: int, idx: tuple[int, ...]) -> np.ndarray | None:
            return None if d is None else self._at(d, rank, lead, idx)

        if not lead:
            gp, gx, gh = one(self._params(pv), xv, hv, int(tok), dy, dh)
            return tuple(gp), tuple(gx), tuple(gh)
        outs: list[tuple] = []
        for idx in np.ndindex(*lead):
            outs.append(one(self._params([self._at(p, _PARAM_RANK, lead, idx) for p in pv]),
                            [self._at(x, _XS_RANK, lead, idx) for x in xv],
                            [self._at(h, _STATE_RANK, lead, idx) for h in hv],
                            int(np.broadcast_to(tok, lead)[idx]),
                            [at(d, _XS_RANK, idx) for d in dy],
                            [at(d, _STATE_RANK, idx) for d in dh]))
        return tuple(tuple(np.stack([o[k][i] for o in outs]).reshape(
            lead + np.shape(outs[0][k][i])) for i in range(len(outs[0][k]))) for k in range(3))

    def _per_example(self, lead: tuple[int, ...], pv: list, xv: list, hv: list,
                     fn: Any) -> tuple:
        """``fn(params, xs, h0)`` once per vmapped example; its results stacked on ``lead``."""
        outs = []
        for idx in np.ndindex(*lead):
            outs.append(fn(self._params([self._at(p, _PARAM_RANK, lead, idx) for p in pv]),
                           [self._at(x, _XS_RANK, lead, idx) for x in xv],
                           [self._at(h, _STATE_RANK, lead, idx) for h in hv]))
        return tuple(tuple(np.stack([o[k][i] for o in outs]).reshape(
            lead + np.shape(outs[0][k][i])) for i in range(len(outs[0][k])))
            for k in range(len(outs[0])))


def rnn(cc: CompiledCell, max_saved: int = 32) -> CellFunction:
    """The compiled cell ``cc`` as a JAX function ``f(params, xs, h0=None) -> (ys, hT)``
    (``CellFunction``): usable under ``jax.jit``, ``jax.grad`` / ``jax.vjp`` and ``jax.vmap``.
    ``max_saved``: how many training forwards' residuals wait for their backward in the
    host-side table (0: none; every backward recomputes its forward)."""
    return CellFunction(cc, max_saved)


__all__ = ["CellFunction", "rnn"]
