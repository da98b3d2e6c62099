"""The reference interpreter: what the IR means, in a few lines of numpy.

``evaluate`` runs a graph once. ``run_sequence`` and ``run_backward`` run a Cell over a whole
sequence by literally unrolling it: the forward loop calls the step T times; BPTT walks back from
T-1 to 0 through the backward cell, summing parameter contributions. Every optimized path and
every backend is tested against this file.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .autodiff import BackwardCell
from .errors import BackendError, RuntimeInputError
from .ir import B, Cell, Node, short_type, toposort, where
from .ops import GroupOp, Ops
from .scalar import TABLE, run_scalar_program


def _dims(shape: tuple[Any, ...], batch: int) -> tuple[int, ...]:
    return tuple(batch if d == B else int(d) for d in shape)


def _matmul(a: np.ndarray, b: np.ndarray, arg: tuple[bool, bool]) -> np.ndarray:
    ta, tb = arg
    return (a.T if ta else a) @ (b.T if tb else b)


def _eval_node(n: Node, vals: list[np.ndarray], batch: int) -> Any:
    op = n.op
    if op in GroupOp.Elementwise:
        return TABLE[op].np(*vals)
    if op is Ops.CONST:
        return np.full(_dims(n.shape, batch), n.arg, dtype=n.dtype)
    if op is Ops.MATMUL:
        return _matmul(vals[0], vals[1], n.arg)
    if op is Ops.REDUCE:
        fn = np.sum if n.arg[0] == "sum" else np.max
        return fn(vals[0], axis=n.arg[1], keepdims=True)
    if op is Ops.SLICE:
        return vals[0][:, n.arg[0]:n.arg[1]]
    if op is Ops.CONCAT:
        return np.concatenate(vals, axis=1)
    if op is Ops.EXPAND:
        return np.broadcast_to(vals[0], _dims(n.arg, batch))
    if op is Ops.GATHER:
        table, ids = vals
        bad = (ids[:, 0] < 0) | (ids[:, 0] >= table.shape[0])
        if bad.any():
            # numpy would wrap negative ids silently; Torch users expect 1-based ids
            raise RuntimeInputError(f"gather{where(n)}: id {int(ids[bad][0, 0])} is out of "
                                    f"range: ids are 0-based in [0, {table.shape[0]}) (Torch's "
                                    "LookupTable counts from 1: subtract 1)")
        return table[ids[:, 0]]
    if op is Ops.SCATTER:
        ids, v = vals
        out = np.zeros((int(n.arg), v.shape[1]), dtype=v.dtype)
        np.add.at(out, ids[:, 0], v)
        return out
    if op is Ops.FUSED:
        return run_scalar_program(n.arg.program, list(vals), n.arg.dtype)
    if op is Ops.GET:
        return vals[0][n.arg]
    if op is Ops.SINK:
        return None
    raise BackendError(f"interpreter: no rule for {op.name}")


def evaluate(roots: Sequence[Node], env: dict[Node, np.ndarray], batch: int | None = None,
             trace: Callable[[Node, Any], None] | None = None) -> list[np.ndarray]:
    """Values of roots given values for the leaves (INPUT, STATE, PARAM) in env."""
    if batch is None:
        batch = next((v.shape[0] for k, v in env.items() if k.shape and k.shape[0] == B), 1)
    vals: dict[Node, Any] = {}
    for n in toposort(roots):
        if n in env:
            v = env[n]
            want = _dims(n.shape, batch)
            if tuple(np.shape(v)) != want:
                raise RuntimeInputError(f"{n.op.name.lower()} {n.arg!r}: expected shape {want}"
                                        f" ({short_type(n)}), got {np.shape(v)}{where(n)}")
            vals[n] = v
            continue
        if n.op in (Ops.INPUT, Ops.STATE, Ops.PARAM):
            raise RuntimeInputError(f"no value given for {n.op.name.lower()} {n.arg!r}"
                                    f"{where(n)}")
        try:
            vals[n] = _eval_node(n, [vals[s] for s in n.src], batch)
        except RuntimeInputError:
            raise
        except (FloatingPointError, ValueError, IndexError) as e:
            from .printer import context
            raise BackendError(f"interpreter failed at {n.op.name.lower()}{where(n)}: {e}\n"
                               + context(roots, n)) from e
        if trace is not None:
            trace(n, vals[n])
    return [vals[r] for r in roots]


# ---- whole sequences, literally unrolled ----

def _leaf_env(leaves: Sequence[Node], values: Sequence[np.ndarray]) -> dict[Node, np.ndarray]:
    return dict(zip(leaves, values))


def run_sequence(cell: Cell, params: dict[str, np.ndarray], xs: Sequence[np.ndarray],
                 h0: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray],
                                                    list[list[np.ndarray]]]:
    """Forward over T steps. Returns (outputs (T,B,n) each, final states, the states entering
    each step: the residuals the reference backward needs)."""
    T = xs[0].shape[0] if xs else 0
    penv = {p: params[p.arg] for p in cell.params}
    hs = list(h0)
    ys: list[list[np.ndarray]] = [[] for _ in cell.outputs]
    saved: list[list[np.ndarray]] = []
    for t in range(T):
        env = {**penv, **_leaf_env(cell.inputs, [x[t] for x in xs]),
               **_leaf_env(cell.states, hs)}
        saved.append(hs)
        res = evaluate(cell.roots, env, batch=xs[0].shape[1])
        for i in range(len(cell.outputs)):
            ys[i].append(res[i])
        hs = res[len(cell.outputs):]
    outs = [np.stack(y) if y else np.zeros((0,), dtype=cell.dtype) for y in ys]
    return outs, hs, saved


def run_backward(bw: BackwardCell, params: dict[str, np.ndarray], xs: Sequence[np.ndarray],
                 saved: list[list[np.ndarray]], d_ys: Sequence[np.ndarray | None],
                 d_final: Sequence[np.ndarray | None]) -> tuple[dict[str, np.ndarray],
                                                               list[np.ndarray],
                                                               list[np.ndarray]]:
    """BPTT from T-1 down to 0. Returns (param grads, input grads (T,B,n), initial-state
    grads)."""
    cell = bw.cell
    T = len(saved)
    batch = xs[0].shape[1]
    dt = np.dtype(cell.dtype)
    penv = {p: params[p.arg] for p in cell.params}
    d_h = [np.zeros(_dims(s.shape, batch), dt) if d is None else np.asarray(d, dt)
           for s, d in zip(cell.states, d_final)]
    d_params = {p.arg: np.zeros(p.shape, dt) for p in cell.params if p.arg not in cell.frozen}
    d_xs = [np.zeros(x.shape, dt) if x.dtype != np.int64 else np.zeros(x.shape, dt)
            for x in xs]
    for t in reversed(range(T)):
        dy_t = [np.zeros(_dims(o.shape, batch), dt) if d is None else d[t]
                for o, d in zip(cell.outputs, d_ys)]
        env = {**penv, **_leaf_env(cell.inputs, [x[t] for x in xs]),
               **_leaf_env(cell.states, saved[t]), **_leaf_env(bw.d_outputs, dy_t),
               **_leaf_env(bw.d_next, d_h)}
        res = evaluate(bw.roots, env, batch=batch)
        ns, ni = len(bw.d_states), len(bw.d_inputs)
        d_h = res[:ns]
        for i in range(ni):
            d_xs[i][t] = res[ns + i]
        for p, g in zip(cell.params, res[ns + ni:]):
            if p.arg in d_params:   # a frozen parameter has no gradient
                d_params[p.arg] += g
    return d_params, d_xs, d_h
