"""A Cell as JSON and back, for checkpoints: data that describes a cell without being code.

``cell_to_json(cell)`` lists the cell's nodes in topological order, each as ``[op, dtype, shape,
[source indices], arg]``, and the indices of its inputs, states, outputs and next states.
``cell_from_json(doc)`` rebuilds the cell only through the IR's own constructors (the leaf
helpers and ``apply``, which infer and check shapes), after checking every field's type and
range: an op outside the IR's op set (or a kernel-only op: FUSED, GET, SINK), a source index that
does not point backwards, an argument of the wrong form, or a node whose inferred type differs
from the recorded one raises ``GraphError``. Nothing in the document is evaluated. ``meta``
(the zoo LSTMs' gate layout) is not stored; ``frozen`` (the untrained parameters' names) is, and
a document without it (written before it existed) freezes nothing.
"""

from __future__ import annotations

from typing import Any

from .errors import GraphError, GraphRNNError
from .ir import DTYPES, B, Cell, Dim, Node, apply, const, input_, param, state, toposort
from .ops import Ops

VERSION = 1
MAX_NODES = 100_000
MAX_DIM = 1 << 31
_NOT_STORED = frozenset({Ops.FUSED, Ops.GET, Ops.SINK})


def _arg_to_json(n: Node) -> Any:
    if n.op is Ops.CONST:
        return float(n.arg)
    if isinstance(n.arg, tuple):
        return list(n.arg)
    return n.arg


def cell_to_json(cell: Cell) -> dict[str, Any]:
    """The cell as a JSON-able document (see the module docstring)."""
    leaves = list(cell.inputs) + list(cell.states)
    order = toposort(leaves + list(cell.roots))
    index = {n: i for i, n in enumerate(order)}
    nodes = []
    for n in order:
        if n.op in _NOT_STORED:
            raise GraphError(f"cell {cell.name}: a {n.op.name} node cannot be stored")
        nodes.append([n.op.name, n.dtype, list(n.shape), [index[s] for s in n.src],
                      _arg_to_json(n)])
    return {"version": VERSION, "name": cell.name, "nodes": nodes,
            "inputs": [index[n] for n in cell.inputs],
            "states": [index[n] for n in cell.states],
            "outputs": [index[n] for n in cell.outputs],
            "next_states": [index[n] for n in cell.next_states],
            "output_names": list(cell.output_names),
            "frozen": sorted(cell.frozen)}


def _fail(where: str, what: str, got: Any) -> GraphError:
    shown = repr(got)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return GraphError(f"stored cell: {where} must be {what}, got {shown}")


def _int(where: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(where, f"an integer in [{lo}, {hi}]", v)
    return v


def _list(where: str, v: Any, n: int | None = None) -> list[Any]:
    if not isinstance(v, list) or (n is not None and len(v) != n):
        raise _fail(where, "a list" + (f" of {n} items" if n is not None else ""), v)
    return v


def _shape(where: str, v: Any) -> tuple[Dim, ...]:
    dims = _list(where, v, 2)
    return tuple(B if d == B else _int(where, d, 1, MAX_DIM) for d in dims)


def _arg(where: str, op: Ops, v: Any) -> Any:
    """The node argument of ``op`` from its JSON form, checked."""
    if op in (Ops.INPUT, Ops.STATE, Ops.PARAM):
        if not isinstance(v, str) or not v.isidentifier() or len(v) > 256:
            raise _fail(where, "an identifier", v)
        return v
    if op is Ops.CONST:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(where, "a number", v)
        return float(v)
    if op is Ops.MATMUL:
        flags = _list(where, v, 2)
        if not all(isinstance(f, bool) for f in flags):
            raise _fail(where, "two booleans", v)
        return tuple(flags)
    if op is Ops.REDUCE:
        kind, axis = _list(where, v, 2)
        if kind not in ("sum", "max"):
            raise _fail(where, '["sum" or "max", axis]', v)
        return kind, _int(where, axis, 0, 1)
    if op is Ops.SLICE:
        a, b = _list(where, v, 2)
        return _int(where, a, 0, MAX_DIM), _int(where, b, 0, MAX_DIM)
    if op is Ops.EXPAND:
        return _shape(where, v)
    if op is Ops.SCATTER:
        return _int(where, v, 1, MAX_DIM)
    if v is not None:
        raise _fail(where, "null", v)
    return None


def cell_from_json(doc: Any) -> Cell:
    """The cell ``cell_to_json`` described, rebuilt through the IR's constructors; any
    malformed field raises ``GraphError`` naming it."""
    if not isinstance(doc, dict):
        raise _fail("the document", "an object", doc)
    if doc.get("version") != VERSION:
        raise _fail("version", str(VERSION), doc.get("version"))
    name = doc.get("name")
    if not isinstance(name, str) or len(name) > 256:
        raise _fail("name", "a string", name)
    raw = _list("nodes", doc.get("nodes"))
    if len(raw) > MAX_NODES:
        raise _fail("nodes", f"at most {MAX_NODES} nodes", f"{len(raw)} nodes")
    built: list[Node] = []
    for i, entry in enumerate(raw):
        where = f"nodes[{i}]"
        op_name, dtype, shape_v, src_v, arg_v = _list(where, entry, 5)
        if not isinstance(op_name, str) or op_name not in Ops.__members__ \
                or Ops[op_name] in _NOT_STORED:
            raise _fail(f"{where} op", "an op of the IR", op_name)
        op = Ops[op_name]
        if dtype not in DTYPES:
            raise _fail(f"{where} dtype", f"one of {DTYPES}", dtype)
        shape = _shape(f"{where} shape", shape_v)
        src = tuple(built[_int(f"{where} sources", s, 0, i - 1)]
                    for s in _list(f"{where} sources", src_v))
        arg = _arg(f"{where} arg", op, arg_v)
        try:
            if op in (Ops.INPUT, Ops.STATE):
                if src or shape[0] != B or shape[1] == B:
                    raise _fail(where, "a leaf of shape [B, n]", entry)
                n = (input_ if op is Ops.INPUT else state)(arg, int(shape[1]), dtype)
            elif op is Ops.PARAM:
                if src:
                    raise _fail(where, "a leaf", entry)
                n = param(arg, shape, dtype)
            elif op is Ops.CONST:
                if src:
                    raise _fail(where, "a leaf", entry)
                n = const(arg, shape, dtype)
            else:
                n = apply(op, *src, arg=arg)
        except GraphError:
            raise
        except (GraphRNNError, TypeError, ValueError, IndexError) as e:
            raise GraphError(f"stored cell: {where} cannot be built: {e}") from None
        if n.dtype != dtype or n.shape != shape:
            raise _fail(where, f"of type {n.dtype}{list(n.shape)} (what its op gives)",
                        [dtype, list(shape)])
        built.append(n)

    def pick(field: str) -> list[Node]:
        return [built[_int(field, k, 0, len(built) - 1)] for k in _list(field, doc.get(field))]
    names = _list("output_names", doc.get("output_names", []))
    if not all(isinstance(x, str) for x in names):
        raise _fail("output_names", "a list of strings", names)
    # absent in documents written before frozen parameters existed: nothing frozen
    frozen = _list("frozen", doc.get("frozen", []))
    if not all(isinstance(x, str) for x in frozen):
        raise _fail("frozen", "a list of parameter names", frozen)
    return Cell.make(pick("inputs"), pick("states"), pick("outputs"), pick("next_states"),
                     name=name, output_names=names, frozen=frozen)
