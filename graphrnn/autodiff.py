"""Reverse-mode autodiff over the IR: one rule per op in one table (``VJP``), fan-out accumulated.

Elementwise rules come from ``scalar.TABLE`` (hand-written, reusing the output) or, where an op
has none, from ``sympy.diff`` of its definition turned back into IR; the contraction, reduction
and layout ops have a rule each in ``VJP``, and a rule must return one cotangent per source.
The result is IR again, so the backward cell is simplified, split in time and fused exactly like
the forward one.

``backward_cell`` builds the per-step backward of a Cell: given the step's inputs and states and
the cotangents of its outputs and next states, it yields the cotangents of the states (carried to
step t-1), of the inputs, and this step's contribution to each parameter gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import sympy

from .errors import GraphError
from .ir import Cell, IrF, Node, apply, const, input_, state, toposort
from .ops import GroupOp, Ops
from .scalar import TABLE, cmpgt, relu, sigmoid, softplus, step, sympy_vjp, where


def from_sympy(expr: sympy.Expr, env: dict[sympy.Symbol, Node], like: Node) -> Node:
    """Turn a sympy expression over symbols bound in env back into IR nodes."""
    def go(e: sympy.Expr) -> Node:
        if e in env:
            return env[e]
        if e.is_Number:
            return const(float(e), like.shape, like.dtype)
        if isinstance(e, sympy.Add):
            acc = go(e.args[0])
            for a in e.args[1:]:
                acc = acc + go(a)
            return acc
        if isinstance(e, sympy.Mul):
            acc = go(e.args[0])
            for a in e.args[1:]:
                acc = acc * go(a)
            return acc
        if isinstance(e, sympy.Pow):
            base, ex = e.args
            if ex == -1:
                return 1.0 / go(base)
            if ex == 2:
                return go(base) * go(base)
            if ex == sympy.Rational(1, 2):
                return apply(Ops.SQRT, go(base))
            if ex == sympy.Rational(-1, 2):
                return 1.0 / apply(Ops.SQRT, go(base))
            if ex.is_Integer and ex > 0:
                b = go(base)
                acc = b
                for _ in range(int(ex) - 1):
                    acc = acc * b
                return acc
            if ex.is_Integer and ex < 0:
                return 1.0 / go(base ** (-ex))
            raise GraphError(f"cannot lower {e} to the IR")
        fn = {sympy.exp: IrF.exp, sympy.log: IrF.log, sympy.tanh: IrF.tanh,
              sigmoid: IrF.sigmoid, step: IrF.step, relu: IrF.relu,
              softplus: lambda x: apply(Ops.SOFTPLUS, x)}.get(type(e))  # type: ignore
        if fn is not None:
            return fn(go(e.args[0]))
        if isinstance(e, cmpgt):
            return IrF.cmpgt(go(e.args[0]), go(e.args[1]))
        if isinstance(e, where):
            return IrF.where(*[go(a) for a in e.args])
        if isinstance(e, sympy.Heaviside):
            return IrF.step(go(e.args[0]))
        raise GraphError(f"cannot lower {e} to the IR")
    return go(expr)


def _elementwise_vjp(n: Node, g: Node) -> list[Node | None]:
    row = TABLE[n.op]
    if row.vjp is not None:
        return list(row.vjp(IrF, g, n, *n.src))
    syms = sympy.symbols(f"a0:{row.arity}", real=True)
    env = dict(zip(syms, n.src))
    return [g * from_sympy(d, env, g) if d != 0 else None for d in sympy_vjp(n.op)]


def _zeros(like: Node) -> Node:
    return const(0.0, like.shape, like.dtype)


def _matmul_vjp(n: Node, g: Node) -> list[Node | None]:
    a, b = n.src
    ta, tb = n.arg
    da = apply(Ops.MATMUL, b, g, arg=(tb, True)) if ta else \
        apply(Ops.MATMUL, g, b, arg=(False, not tb))
    db = apply(Ops.MATMUL, g, a, arg=(True, ta)) if tb else \
        apply(Ops.MATMUL, a, g, arg=(not ta, False))
    return [da, db]


def _reduce_vjp(n: Node, g: Node) -> list[Node | None]:
    (x,) = n.src
    kind, axis = n.arg
    ge = apply(Ops.EXPAND, g, arg=x.shape)
    if kind == "sum":
        return [ge]
    # max: the cotangent goes where x equals the max (x <= max everywhere), split evenly
    # between tied elements as the elementwise max does (scalar.py's convention, PyTorch's
    # and JAX's): giving each tie the whole of g would not be a subgradient
    hit = 1.0 - IrF.cmpgt(apply(Ops.EXPAND, n, arg=x.shape), x)
    ties = apply(Ops.EXPAND, apply(Ops.REDUCE, hit, arg=("sum", axis)), arg=x.shape)
    return [ge * hit / ties]


def _expand_vjp(n: Node, g: Node) -> list[Node | None]:
    (x,) = n.src
    out = g
    for axis, (d, e) in enumerate(zip(x.shape, n.shape)):
        if d != e:
            out = apply(Ops.REDUCE, out, arg=("sum", axis))
    return [out]


def _slice_vjp(n: Node, g: Node) -> list[Node | None]:
    (x,) = n.src
    start, stop = n.arg
    parts = []
    if start > 0:
        parts.append(const(0.0, (x.shape[0], start), x.dtype))
    parts.append(g)
    if stop < x.shape[1]:
        parts.append(const(0.0, (x.shape[0], int(x.shape[1]) - stop), x.dtype))
    return [apply(Ops.CONCAT, *parts) if len(parts) > 1 else g]


def _concat_vjp(n: Node, g: Node) -> list[Node | None]:
    out: list[Node | None] = []
    off = 0
    for s in n.src:
        w = int(s.shape[1])
        out.append(apply(Ops.SLICE, g, arg=(off, off + w)))
        off += w
    return out


def _gather_vjp(n: Node, g: Node) -> list[Node | None]:
    table, ids = n.src
    return [apply(Ops.SCATTER, ids, g, arg=int(table.shape[0])), None]


def _scatter_vjp(n: Node, g: Node) -> list[Node | None]:
    ids, _vals = n.src
    return [None, apply(Ops.GATHER, g, ids)]


# op -> rule(node, cotangent of the node) -> one cotangent per source (None = zero), in the
# order of ``node.src``; elementwise ops share one rule that reads ``scalar.TABLE``
Rule = Callable[[Node, Node], list[Node | None]]
VJP: dict[Ops, Rule] = {
    **{op: _elementwise_vjp for op in GroupOp.Elementwise},
    Ops.MATMUL: _matmul_vjp,
    Ops.REDUCE: _reduce_vjp,
    Ops.EXPAND: _expand_vjp,
    Ops.SLICE: _slice_vjp,
    Ops.CONCAT: _concat_vjp,
    Ops.GATHER: _gather_vjp,
    Ops.SCATTER: _scatter_vjp,
}
# leaves end the walk; FUSED/GET/SINK only exist after fusion, and autodiff runs before it
NO_RULE = GroupOp.Leaf | {Ops.FUSED, Ops.GET, Ops.SINK}
assert set(VJP) == set(Ops) - NO_RULE, "every op needs a VJP rule or a place in NO_RULE"


def _vjp(n: Node, g: Node) -> list[Node | None]:
    """Cotangents of n.src given the cotangent g of n: one per source, or an error (a rule
    returning too few would otherwise drop the gradient of the sources past its end)."""
    rule = VJP.get(n.op)
    if rule is None:
        raise GraphError(f"autodiff: no rule for {n.op.name}; differentiate before fusing")
    cots = rule(n, g)
    if len(cots) != len(n.src):
        raise GraphError(f"autodiff: the {n.op.name} rule returned {len(cots)} cotangents for "
                         f"{len(n.src)} sources")
    return cots


def vjp(roots: Sequence[Node], cotangents: Sequence[Node | None],
        wrt: Sequence[Node]) -> list[Node]:
    """Cotangents of ``wrt`` given the cotangents of ``roots`` (None = zero). Nodes in ``wrt``
    that the roots do not depend on get explicit zeros."""
    if len(roots) != len(cotangents):
        raise GraphError(f"autodiff: {len(roots)} roots but {len(cotangents)} cotangents")
    grads: dict[Node, Node] = {}
    for r, c in zip(roots, cotangents):
        if c is not None:
            grads[r] = grads[r] + c if r in grads else c
    wanted = set(wrt)
    # only walk nodes on a path to something in wrt
    order = toposort(roots)
    needed: set[Node] = set()
    for n in order:
        if n in wanted or any(s in needed for s in n.src):
            needed.add(n)
    for n in reversed(order):
        g = grads.get(n)
        if g is None or n.op in GroupOp.Leaf or n not in needed:
            continue
        if n.op in GroupOp.NonDifferentiable:
            continue
        for s, gs in zip(n.src, _vjp(n, g)):
            if gs is None or s not in needed or s.dtype == "int64":
                continue
            grads[s] = grads[s] + gs if s in grads else gs
    return [grads.get(w, _zeros(w)) for w in wrt]


@dataclass(frozen=True)
class BackwardCell:
    """The per-step backward of ``cell``.

    Leaves: the forward cell's inputs, states and params (the states are read as this step's
    saved h_{t-1}), ``d_outputs`` (INPUT leaves ``d_<output>``) and ``d_next`` (STATE leaves
    ``d_<state>``: the cotangent flowing into ``next_states[i]`` from step t+1 and the loss).
    Results: ``d_states`` (carried to step t-1), ``d_inputs`` and ``d_params`` (this step's
    contribution, summed over time by the runtime)."""
    cell: Cell
    d_outputs: tuple[Node, ...]
    d_next: tuple[Node, ...]
    d_states: tuple[Node, ...]
    d_inputs: tuple[Node, ...]
    d_params: tuple[Node, ...]

    @property
    def roots(self) -> tuple[Node, ...]:
        return self.d_states + self.d_inputs + self.d_params


def output_name(cell: Cell, i: int) -> str:
    if i < len(cell.output_names):
        return cell.output_names[i]
    return f"y{i}" if len(cell.outputs) > 1 else "y"


def backward_cell(cell: Cell) -> BackwardCell:
    d_outputs = tuple(input_(f"d_{output_name(cell, i)}", int(o.shape[1]), o.dtype)
                      for i, o in enumerate(cell.outputs))
    d_next = tuple(state(f"d_{s.arg}", int(s.shape[1]), s.dtype) for s in cell.states)
    # a frozen parameter is not differentiated at all: no path is walked for it alone, and its
    # d_param is a zero constant, which the schedule turns into no gradient (no GEMM)
    trained = [p for p in cell.params if p.arg not in cell.frozen]
    wrt = list(cell.states) + list(cell.inputs) + trained
    grads = vjp(list(cell.outputs) + list(cell.next_states),
                list(d_outputs) + list(d_next), wrt)
    ns, ni = len(cell.states), len(cell.inputs)
    float_inputs = [g if x.dtype != "int64" else _zeros(g) for x, g in
                    zip(cell.inputs, grads[ns:ns + ni])]
    of = dict(zip(trained, grads[ns + ni:]))
    d_params = tuple(of[p] if p in of else _zeros(p) for p in cell.params)
    return BackwardCell(cell, d_outputs, d_next, tuple(grads[:ns]), tuple(float_inputs),
                        d_params)
