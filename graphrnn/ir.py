"""The IR: immutable hash-consed nodes, shape and dtype inference, creation sites, the Cell.

A ``Node`` is ``(op, dtype, shape, src, arg)``. Building the same structure twice returns the same
object, so common subexpressions are shared for free and ``is`` is equality. Shapes are 2-D:
``(B, features)`` for per-example values, where ``B`` is the symbolic batch, and concrete
``(rows, cols)`` for parameters. Elementwise ops need equal shapes; the operator sugar inserts an
explicit EXPAND for size-1 axes so the IR itself never broadcasts implicitly.

Where a node was created (the user's file and line, which frontend) lives in a side table, not in
the hash: two identical expressions written on two lines are one node, reported at the first.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import weakref
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Container, Iterable, Sequence, Union

from .errors import GraphError, ShapeError
from .ops import GroupOp, Ops

B = "B"  # the symbolic batch dimension
Dim = Union[int, str]
Shape = tuple[Dim, ...]
DTYPES = ("float32", "float64", "int64")
FLOATS = ("float32", "float64")

_PKG_DIRS = tuple(os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + d
                  + os.sep for d in ("graphrnn", "frontends", "codegen"))


@dataclass(frozen=True)
class Site:
    """Where a node was created: the first frame outside graphrnn's own packages."""
    file: str
    line: int
    frontend: str = "ir"
    code: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


_sites: weakref.WeakKeyDictionary[Node, Site] = weakref.WeakKeyDictionary()
_annotations: weakref.WeakKeyDictionary[Node, dict[str, Any]] = weakref.WeakKeyDictionary()
_frontend_stack: list[str] = []


def _user_site() -> Site:
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_PKG_DIRS):
        f = f.f_back
    frontend = _frontend_stack[-1] if _frontend_stack else "ir"
    if f is None:
        return Site("<unknown>", 0, frontend)
    return Site(f.f_code.co_filename, f.f_lineno, frontend)


class frontend_scope:  # noqa: N801 - used as a lowercase context manager
    """Marks nodes created inside as coming from a frontend (for messages and pictures)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        _frontend_stack.append(self.name)

    def __exit__(self, *exc: Any) -> None:
        _frontend_stack.pop()


def site_of(node: Node) -> Site | None:
    return _sites.get(node)


def set_site(node: Node, site: Site) -> None:
    _sites[node] = site


def annotations(node: Node) -> dict[str, Any]:
    """The nngraph-style annotations of a node (name, description, graphAttributes)."""
    return _annotations.setdefault(node, {})


def where(node: Node) -> str:
    s = _sites.get(node)
    return f" (created at {s})" if s else ""


class Node:
    """An immutable, hash-consed IR node. Build nodes with ``apply`` or the leaf helpers."""

    __slots__ = ("op", "dtype", "shape", "src", "arg", "__weakref__")
    _cache: weakref.WeakValueDictionary[tuple, Node] = weakref.WeakValueDictionary()

    op: Ops
    dtype: str
    shape: Shape
    src: tuple[Node, ...]
    arg: Any

    def __new__(cls, op: Ops, dtype: str, shape: Shape, src: tuple[Node, ...] = (),
                arg: Any = None) -> Node:
        key = (op, dtype, shape, src, arg)
        try:
            n = cls._cache.get(key)
        except TypeError as e:
            raise TypeError(f"node arg must be hashable, got {arg!r}") from e
        if n is None:
            n = object.__new__(cls)
            for k, v in zip(cls.__slots__[:5], key):
                object.__setattr__(n, k, v)
            cls._cache[key] = n
            _sites.setdefault(n, _user_site())
        return n

    def __setattr__(self, k: str, v: Any) -> None:
        raise AttributeError("Node is immutable; use replace()")

    def __reduce__(self) -> Any:
        raise TypeError("nodes are not pickled; save a cell as equations or parameters as npz")

    def replace(self, **kw: Any) -> Node:
        d = {k: getattr(self, k) for k in ("op", "dtype", "shape", "src", "arg")}
        d.update(kw)
        return Node(d["op"], d["dtype"], d["shape"], tuple(d["src"]), d["arg"])

    @property
    def name(self) -> str | None:
        if self.op in (Ops.INPUT, Ops.STATE, Ops.PARAM):
            return self.arg
        return annotations(self).get("name") if self in _annotations else None

    def __repr__(self) -> str:
        extra = f" {self.arg!r}" if self.arg is not None and self.op is not Ops.FUSED else ""
        return f"<{self.op.name}{extra} {short_type(self)}>"

    # ---- operator sugar (the trace frontend and VJP rules use it) ----
    def __add__(self, o: Any) -> Node: return binary(Ops.ADD, self, o)
    def __radd__(self, o: Any) -> Node: return binary(Ops.ADD, o, self)
    def __sub__(self, o: Any) -> Node: return binary(Ops.SUB, self, o)
    def __rsub__(self, o: Any) -> Node: return binary(Ops.SUB, o, self)
    def __mul__(self, o: Any) -> Node: return binary(Ops.MUL, self, o)
    def __rmul__(self, o: Any) -> Node: return binary(Ops.MUL, o, self)
    def __truediv__(self, o: Any) -> Node: return binary(Ops.DIV, self, o)
    def __rtruediv__(self, o: Any) -> Node: return binary(Ops.DIV, o, self)
    def __neg__(self) -> Node: return apply(Ops.NEG, self)
    def __pos__(self) -> Node: return self

    def __matmul__(self, o: Node) -> Node:
        return apply(Ops.MATMUL, self, _as_node(o, self), arg=(False, False))

    def __pow__(self, k: Any) -> Node:
        if k == 2:
            return self * self
        if k == 1:
            return self
        if k == 0.5:
            return apply(Ops.SQRT, self)
        raise ShapeError(f"x ** {k!r}: only the powers 0.5, 1 and 2 are supported{where(self)}")

    def __getitem__(self, idx: Any) -> Node:
        """``x[:, a:b]`` (or ``x[a:b]`` on the features) is a SLICE."""
        if isinstance(idx, tuple) and len(idx) == 2 and idx[0] == slice(None):
            idx = idx[1]
        if not isinstance(idx, slice) or idx.step not in (None, 1):
            raise ShapeError(f"only feature slices x[:, a:b] are supported, got {idx!r}")
        n = self.shape[1]
        assert isinstance(n, int)
        start, stop, _ = idx.indices(n)
        return apply(Ops.SLICE, self, arg=(start, stop))

    @property
    def T(self) -> Node:  # noqa: N802
        raise ShapeError("transposes are not values in the IR; write a @ W with W (in, out) "
                         "(the equations frontend reads W @ x with W (out, in), PyTorch's "
                         "layout)")

    def __bool__(self) -> bool:
        return True

    def __iter__(self) -> Any:
        raise TypeError(f"a Node is not iterable{where(self)}; did you mean node.split(n)?")


def short_type(n: Node) -> str:
    dt = {"float32": "f32", "float64": "f64", "int64": "i64"}[n.dtype]
    return f"{dt}[{','.join(str(d) for d in n.shape)}]"


def _as_node(v: Any, like: Node) -> Node:
    if isinstance(v, Node):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return const(float(v), like.shape, like.dtype)
    raise ShapeError(f"expected a Node or a number, got {type(v).__name__}: {v!r}{where(like)}")


def _broadcast(a: Node, b: Node) -> tuple[Node, Node]:
    if a.shape == b.shape:
        return a, b
    if len(a.shape) != len(b.shape):
        raise ShapeError(f"cannot combine {short_type(a)} with {short_type(b)}{where(a)}")
    out: list[Dim] = []
    for da, db in zip(a.shape, b.shape):
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(f"shape mismatch: {short_type(a)} vs {short_type(b)}"
                             f"{where(a)}{where(b) and ' and' + where(b)}")
    shape = tuple(out)
    if a.shape != shape:
        a = apply(Ops.EXPAND, a, arg=shape)
    if b.shape != shape:
        b = apply(Ops.EXPAND, b, arg=shape)
    return a, b


def binary(op: Ops, a: Any, b: Any) -> Node:
    if not isinstance(a, Node):
        a = _as_node(a, b)
    b = _as_node(b, a)
    a, b = _broadcast(a, b)
    return apply(op, a, b)


def call(op: Ops, *xs: Any) -> Node:
    """An elementwise op on nodes or numbers, broadcasting size-1 axes."""
    nodes = [x for x in xs if isinstance(x, Node)]
    if not nodes:
        got = ", ".join(type(x).__name__ for x in xs)
        hint = ("; a list is not a concatenation here: write concat([a, b])"
                if any(isinstance(x, (list, tuple)) for x in xs) else "")
        raise ShapeError(f"{op.name.lower()} needs at least one Node operand, got ({got}){hint}")
    srcs = [_as_node(x, nodes[0]) for x in xs]
    for i in range(1, len(srcs)):
        srcs[0], srcs[i] = _broadcast(srcs[0], srcs[i])
    for i in range(1, len(srcs)):
        srcs[0], srcs[i] = _broadcast(srcs[0], srcs[i])
    return apply(op, *srcs)


class IrF:
    """The namespace VJP rules use, over IR nodes."""
    exp = staticmethod(lambda x: apply(Ops.EXP, x))
    log = staticmethod(lambda x: apply(Ops.LOG, x))
    tanh = staticmethod(lambda x: apply(Ops.TANH, x))
    sqrt = staticmethod(lambda x: apply(Ops.SQRT, x))
    sigmoid = staticmethod(lambda x: apply(Ops.SIGMOID, x))
    step = staticmethod(lambda x: apply(Ops.STEP, x))
    relu = staticmethod(lambda x: apply(Ops.RELU, x))
    cmpgt = staticmethod(lambda a, b: call(Ops.CMPGT, a, b))
    where = staticmethod(lambda c, a, b: call(Ops.WHERE, c, a, b))
    zeros_like = staticmethod(lambda x: const(0.0, x.shape, x.dtype))


# ---- construction with inference ----

def _fail(msg: str, *srcs: Node) -> ShapeError:
    sites = "".join(where(s) for s in srcs[:1])
    return ShapeError(msg + sites)


def infer(op: Ops, src: tuple[Node, ...], arg: Any) -> tuple[str, Shape]:
    """The dtype and shape of ``op(*src)``, or a ShapeError naming what did not fit."""
    name = op.name.lower()
    for s in src:
        if not isinstance(s, Node):
            raise ShapeError(f"{name}: expected Node operands, got {type(s).__name__}: {s!r}")
    if op in GroupOp.Elementwise:
        arity = {**dict.fromkeys(GroupOp.Unary, 1), **dict.fromkeys(GroupOp.Binary, 2),
                 Ops.WHERE: 3}[op]
        if len(src) != arity:
            raise _fail(f"{name}: expected {arity} operands, got {len(src)}", *src)
        shapes = {s.shape for s in src}
        if len(shapes) != 1:
            raise _fail(f"{name}: operands must have one shape, got "
                        + ", ".join(short_type(s) for s in src), *src)
        dtypes = {s.dtype for s in src}
        if len(dtypes) != 1 or src[0].dtype not in FLOATS:
            raise _fail(f"{name}: operands must share one float dtype, got "
                        + ", ".join(short_type(s) for s in src), *src)
        return src[0].dtype, src[0].shape
    if op is Ops.MATMUL:
        if len(src) != 2:
            raise _fail(f"matmul: expected 2 operands, got {len(src)}", *src)
        a, b = src
        ta, tb = arg
        (m, ka) = a.shape[::-1] if ta else a.shape
        (kb, n) = b.shape[::-1] if tb else b.shape
        if ka != kb:
            hint = ""
            if kb is B and a.shape[0] is not B and not tb:
                # W @ x written as in the math (column vectors); the IR's rows are examples
                hint = ("; rows are examples here: write x @ W with W of shape (in, out) (the "
                        "equations frontend reads W @ x with W (out, in), as PyTorch stores it)")
            raise _fail(f"matmul: inner sizes differ: {short_type(a)}{'ᵀ' if ta else ''} @ "
                        f"{short_type(b)}{'ᵀ' if tb else ''} ({ka} vs {kb}){hint}", a, b)
        if a.dtype != b.dtype:
            raise _fail(f"matmul: dtypes differ: {short_type(a)} @ {short_type(b)}", a, b)
        return a.dtype, (m, n)
    if op is Ops.REDUCE:
        (x,) = src
        kind, axis = arg
        if kind not in ("sum", "max") or axis not in (0, 1):
            raise _fail(f"reduce: bad arg {arg!r}", x)
        shape = list(x.shape)
        shape[axis] = 1
        return x.dtype, tuple(shape)
    if op is Ops.SLICE:
        (x,) = src
        start, stop = arg
        n = x.shape[1]
        if not (isinstance(n, int) and 0 <= start < stop <= n):
            raise _fail(f"slice [{start}:{stop}] out of range for {short_type(x)}", x)
        return x.dtype, (x.shape[0], stop - start)
    if op is Ops.CONCAT:
        if not src:
            raise ShapeError("concat: nothing to concatenate")
        rows = {s.shape[0] for s in src}
        if len(rows) != 1 or len({s.dtype for s in src}) != 1:
            raise _fail("concat: operands need the same rows and dtype, got "
                        + ", ".join(short_type(s) for s in src), *src)
        return src[0].dtype, (src[0].shape[0], sum(int(s.shape[1]) for s in src))
    if op is Ops.EXPAND:
        (x,) = src
        shape = tuple(arg)
        if len(shape) != 2 or any(d != e and d != 1 for d, e in zip(x.shape, shape)):
            raise _fail(f"expand: cannot broadcast {short_type(x)} to {shape}", x)
        return x.dtype, shape
    if op is Ops.GATHER:
        table, ids = src
        if ids.dtype != "int64" or ids.shape[1] != 1:
            raise _fail(f"gather: ids must be i64[B,1], got {short_type(ids)}", ids)
        return table.dtype, (ids.shape[0], table.shape[1])
    if op is Ops.SCATTER:
        ids, vals = src
        return vals.dtype, (int(arg), vals.shape[1])
    if op is Ops.GET:
        (x,) = src
        if x.op is not Ops.FUSED:
            raise _fail("get: source must be a multi-output node", x)
        dt, shp = x.arg.out_types[arg]
        return dt, shp
    if op is Ops.FUSED:
        return src[0].dtype if src else "float32", ()
    if op is Ops.SINK:
        return "float32", ()
    raise ShapeError(f"{name}: not an op that apply() builds")


def apply(op: Ops, *src: Node, arg: Any = None) -> Node:
    dtype, shape = infer(op, tuple(src), arg)
    return Node(op, dtype, shape, tuple(src), arg)


def _check_leaf(kind: str, name: str, shape: Shape, dtype: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ShapeError(f"{kind} name must be an identifier, got {name!r}")
    if dtype not in DTYPES:
        raise ShapeError(f"{kind} {name}: dtype must be one of {DTYPES}, got {dtype!r}")
    if len(shape) != 2 or not all((isinstance(d, int) and d > 0) or d == B for d in shape):
        raise ShapeError(f"{kind} {name}: shape must be 2-D of positive sizes or 'B', "
                         f"got {shape!r}")


def input_(name: str, features: int, dtype: str = "float32") -> Node:
    _check_leaf("input", name, (B, features), dtype)
    return Node(Ops.INPUT, dtype, (B, features), (), name)


def state(name: str, features: int, dtype: str = "float32") -> Node:
    _check_leaf("state", name, (B, features), dtype)
    return Node(Ops.STATE, dtype, (B, features), (), name)


def param(name: str, shape: Shape, dtype: str = "float32") -> Node:
    shape = tuple(shape)
    _check_leaf("param", name, shape, dtype)
    if B in shape:
        raise ShapeError(f"param {name}: parameters cannot have the batch dimension")
    return Node(Ops.PARAM, dtype, shape, (), name)


def const(value: float, shape: Shape, dtype: str = "float32") -> Node:
    return Node(Ops.CONST, dtype, tuple(shape), (), float(value))


# ---- graph walks ----

def toposort(roots: Iterable[Node], stop: Container[Node] = ()) -> list[Node]:
    """Every node reachable from roots, each after its sources (iterative, no recursion limit).
    Nodes in ``stop`` are listed but not looked below."""
    order: list[Node] = []
    seen: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(r, False) for r in reversed(list(roots))]
    while stack:
        n, done = stack.pop()
        if done:
            order.append(n)
            continue
        if n in seen:
            continue
        seen.add(n)
        stack.append((n, True))
        if n not in stop:
            stack.extend((s, False) for s in reversed(n.src) if s not in seen)
    return order


def _rebuild(n: Node, dtype: str, src: tuple[Node, ...]) -> Node:
    """``n`` with a new dtype/sources. A node made here inherits n's creation site (the user's
    line), not the line that called the rewrite; an existing node keeps its own."""
    key = (n.op, dtype, n.shape, src, n.arg)
    new = Node._cache.get(key)
    if new is None:
        new = Node(*key)
        if n in _sites:
            _sites[new] = _sites[n]
    return new


def substitute(roots: Sequence[Node], mapping: dict[Node, Node]) -> list[Node]:
    """Rebuild roots with some nodes replaced (sources are rebuilt, sharing is kept)."""
    memo: dict[Node, Node] = dict(mapping)
    for n in toposort(roots):
        if n in memo:
            continue
        new_src = tuple(memo[s] for s in n.src)
        memo[n] = n if new_src == n.src else _rebuild(n, n.dtype, new_src)
    return [memo[r] for r in roots]


def retype(roots: Sequence[Node], dtype: str) -> list[Node]:
    """The same graph with every float node in ``dtype`` (a cell is declared once, compiled at
    float32 or float64)."""
    memo: dict[Node, Node] = {}
    for n in toposort(roots):
        new_src = tuple(memo[s] for s in n.src)
        dt = dtype if n.dtype in FLOATS else n.dtype
        memo[n] = _rebuild(n, dt, new_src)
        if n in _annotations:
            _annotations.setdefault(memo[n], dict(_annotations[n]))
    return [memo[r] for r in roots]


# ---- the cell ----

@dataclass(frozen=True)
class Cell:
    """One time step. ``next_states[i]`` feeds ``states[i]`` at t+1. ``params`` is every PARAM
    leaf reachable from the outputs, in first-use order unless given.

    ``meta`` holds facts about the cell that its graph does not spell out for tools, read-only:
    the zoo's LSTMs record ``gates`` (the letters of the gate blocks of the fused
    pre-activation, in column order, e.g. "ifgo") and ``gate_biases`` (the (1, k*H) parameters
    laid out in that order whose sum is each gate's bias), which ``forget_bias_overrides``
    reads. It is not part of equality or the hash: the graph alone is the function.

    ``frozen`` names parameters that are not trained (an echo-state network's reservoir): the
    forward reads them as any other parameter, but autodiff computes no gradient for them (the
    weight-gradient GEMM after the loop is not built), ``Grads.params`` has no entry for them
    and the optimizers expect none. It is a fact about the cell, not the node, because one
    hash-consed PARAM leaf may be trained in one cell and frozen in another; it is part of
    equality (it changes the backward). GEMM merging never packs a frozen parameter with a
    trained one."""
    inputs: tuple[Node, ...]
    states: tuple[Node, ...]
    outputs: tuple[Node, ...]
    next_states: tuple[Node, ...]
    params: tuple[Node, ...] = ()
    name: str = "cell"
    output_names: tuple[str, ...] = field(default=())
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    frozen: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for f in ("inputs", "states", "outputs", "next_states", "params"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        if isinstance(self.frozen, str):
            raise GraphError(f"cell {self.name}: frozen must be a collection of parameter "
                             f"names, got the string {self.frozen!r}")
        object.__setattr__(self, "frozen", frozenset(self.frozen))
        # a private copy behind a read-only view: a frozen cell must not change under its users
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        self._validate()

    def with_meta(self, **entries: Any) -> Cell:
        """The same cell with ``entries`` added to (or replacing keys of) ``meta``."""
        return dataclasses.replace(self, meta={**self.meta, **entries})

    @classmethod
    def make(cls, inputs: Sequence[Node], states: Sequence[Node], outputs: Sequence[Node],
             next_states: Sequence[Node], name: str = "cell",
             output_names: Sequence[str] | None = None,
             meta: Mapping[str, Any] | None = None,
             frozen: Iterable[str] = ()) -> Cell:
        return cls(tuple(inputs), tuple(states), tuple(outputs), tuple(next_states), (), name,
                   tuple(output_names or ()), meta or {}, frozenset(frozen))

    def _validate(self) -> None:
        for kind, leaves, op in (("input", self.inputs, Ops.INPUT),
                                 ("state", self.states, Ops.STATE)):
            for n in leaves:
                if not isinstance(n, Node) or n.op is not op:
                    raise GraphError(f"cell {self.name}: {kind}s must be {op.name} nodes, got "
                                     f"{n!r}")
        names = [n.arg for n in self.inputs + self.states]
        # Counter, not list.count: a generated cell may have thousands of names (quadratic)
        dup = {x for x, k in Counter(names).items() if k > 1}
        if dup:
            raise GraphError(f"cell {self.name}: duplicate input/state names {sorted(dup)}")
        if not self.outputs and not self.next_states:
            raise GraphError(f"cell {self.name}: no outputs")
        if len(self.next_states) != len(self.states):
            raise GraphError(f"cell {self.name}: {len(self.states)} states but "
                             f"{len(self.next_states)} next states")
        for s, ns in zip(self.states, self.next_states):
            if not isinstance(ns, Node):
                raise GraphError(f"cell {self.name}: next state for {s.arg} is {ns!r}")
            if ns.shape != s.shape or ns.dtype != s.dtype:
                raise GraphError(f"cell {self.name}: next state of {s.arg} is {short_type(ns)}"
                                 f" but the state is {short_type(s)}{where(ns)}")
        order = toposort(self.roots)
        declared = set(self.inputs) | set(self.states)
        for n in order:
            if n.op in (Ops.INPUT, Ops.STATE) and n not in declared:
                raise GraphError(f"cell {self.name}: {n.op.name.lower()} {n.arg!r} is used but "
                                 f"not declared as one of the cell's {n.op.name.lower()}s"
                                 f"{where(n)}")
        found = tuple(n for n in order if n.op is Ops.PARAM)
        if not self.params:
            object.__setattr__(self, "params", found)
        elif set(self.params) != set(found):
            raise GraphError(f"cell {self.name}: declared params differ from the params used")
        pnames = [p.arg for p in self.params]
        dup = {x for x, k in Counter(pnames).items() if k > 1}
        if dup:
            raise GraphError(f"cell {self.name}: two parameters share the names {sorted(dup)} "
                             "with different shapes")
        unknown = sorted(self.frozen - set(pnames))
        if unknown:
            raise GraphError(f"cell {self.name}: frozen names {unknown} are not parameters of "
                             f"the cell; its parameters are {sorted(pnames)}")
        if len({n.dtype for n in order if n.dtype in FLOATS}) > 1:
            raise GraphError(f"cell {self.name}: mixes float32 and float64 nodes")

    @property
    def roots(self) -> tuple[Node, ...]:
        return self.outputs + self.next_states

    @property
    def dtype(self) -> str:
        for n in self.roots:
            if n.dtype in FLOATS:
                return n.dtype
        return "float32"

    def nodes(self) -> list[Node]:
        return toposort(self.roots)

    def with_dtype(self, dtype: str) -> Cell:
        if dtype not in FLOATS:
            raise ShapeError(f"dtype must be one of {FLOATS}, got {dtype!r}")
        if dtype == self.dtype:
            return self
        leaves = self.inputs + self.states
        new = retype(list(leaves) + list(self.roots), dtype)
        k = len(leaves)
        ins, sts = new[:len(self.inputs)], new[len(self.inputs):k]
        outs = new[k:k + len(self.outputs)]
        nxt = new[k + len(self.outputs):]
        return Cell(tuple(ins), tuple(sts), tuple(outs), tuple(nxt), (), self.name,
                    self.output_names, self.meta, self.frozen)

    def param_shapes(self) -> dict[str, tuple[int, int]]:
        return {p.arg: p.shape for p in self.params}

    def weight_layouts(self) -> dict[str, str]:
        """How each weight is stored, read from the graph: ``"(in, out)"`` for a parameter
        used as ``x @ W`` (the zoo, ``frontends.trace`` and ``graphrnn.nn`` store weights so),
        ``"(out, in)"`` for one used as ``W @ x`` (the equations frontend's layout, and
        PyTorch's). Parameters no product reads (biases, gains, embedding tables) are not
        listed; one read both ways is ``"mixed"``."""
        seen: dict[str, set[str]] = {}
        for n in self.nodes():
            if n.op is Ops.MATMUL and n.src[1].op is Ops.PARAM and not n.arg[0]:
                kind = "(out, in)" if n.arg[1] else "(in, out)"
                seen.setdefault(n.src[1].arg, set()).add(kind)
        return {p.arg: (next(iter(seen[p.arg])) if len(seen[p.arg]) == 1 else "mixed")
                for p in self.params if p.arg in seen}

    def grad_shapes(self) -> dict[str, tuple[int, int]]:
        """The shapes of the parameters that get gradients: all but the frozen ones."""
        return {p.arg: p.shape for p in self.params if p.arg not in self.frozen}

    def with_frozen(self, names: Iterable[str]) -> Cell:
        """The same cell with exactly ``names`` frozen (``()`` trains every parameter)."""
        return dataclasses.replace(self, frozen=names)  # type: ignore[arg-type]

    # str(cell) (the printer's SSA text) and Jupyter's _repr_svg_ are attached by
    # graphrnn/display.py: ir.py imports neither the printer nor viz, which import it
