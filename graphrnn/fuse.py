"""Elementwise fusion: group elementwise nodes between GEMMs into kernels, build kernel bodies.

**Grouping** (``group_nodes``). Candidates are the elementwise nodes (and EXPANDs, which a kernel
reads as broadcast inputs) that ``split.place`` put in the same phase and that have the same
shape. GEMMs, reductions, gathers and concatenations are never fused. Every group is *convex*:
``descendants(S) ∩ ancestors(S) ⊆ S``, i.e. no path leaves the group and comes back. Counter-
example: in ``a = tanh(x); m = a @ W; b = a * m`` the set {a, b} is not convex (a -> m -> b
leaves through the GEMM m); as one kernel it would need m before it starts and produce a, which
m needs, before it ends: a cycle. Greedy merging on the quotient graph (networkx) keeps every
group convex and the graph of groups acyclic: two groups merge only when no path of length two
or more joins them (producer/consumer pairs first, then independent siblings).

**Kernel bodies** (``build_kernel``). A group becomes a ``ScalarProgram``: the sympy definitions
(``scalar.TABLE[op].sym``) of its nodes over input symbols, built unevaluated (``sympy.evaluate
(False)``: no automatic algebra, which assumes finite values, e.g. ``x*0 = 0``, ``(a-b)/(b-a) =
-1``, ``log(exp(x)) = x``), shared with ``sympy.cse`` and lowered to SSA over the closed scalar op
set (elementwise Ops + CONST); SIGMOID, TANH and SOFTPLUS stay primitive. Should sympy produce
something outside that set, or drop an operand the nodes read, the group is lowered directly from
the node DAG instead (hash-consing already shares common subexpressions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy

from . import graphs as nx  # networkx's names, without importing networkx (graphs.py)
from .ir import B, Node, short_type
from .ops import GroupOp, Ops
from .scalar import TABLE, ScalarProgram, cmpgt, relu, sigmoid, softplus, step, where

FUSABLE = GroupOp.Elementwise | {Ops.EXPAND}


def fusable(n: Node) -> bool:
    return n.op in FUSABLE


def group_nodes(nodes: Sequence[Node], phase: dict[Node, str],
                deps: nx.DiGraph) -> list[list[Node]]:
    """Groups of fusable nodes (each a list in topological order). ``deps`` is the dependency
    graph (edges src -> consumer) over every scheduled node, with views contracted."""
    cand = [n for n in nodes if fusable(n) and n in deps]
    gid: dict[Node, int] = {n: i for i, n in enumerate(cand)}
    q = nx.DiGraph()
    for u in deps.nodes:
        q.add_node(("g", gid[u]) if u in gid else ("n", u))
    for u, v in deps.edges:
        a = ("g", gid[u]) if u in gid else ("n", u)
        b = ("g", gid[v]) if v in gid else ("n", v)
        if a != b:
            q.add_edge(a, b)
    members: dict[int, list[Node]] = {i: [n] for i, n in enumerate(cand)}
    key = {i: (phase[n], n.shape) for i, n in enumerate(cand)}

    def merge(a: int, b: int) -> None:
        ga, gb = ("g", a), ("g", b)
        q.remove_edges_from([(ga, gb), (gb, ga)])
        for p in list(q.predecessors(gb)):
            q.add_edge(p, ga)
        for s in list(q.successors(gb)):
            q.add_edge(ga, s)
        q.remove_node(gb)
        members[a].extend(members.pop(b))
        for n in members[a]:
            gid[n] = a

    def joined(a: int, b: int) -> bool:
        """Is there a path a -> b other than a direct edge?"""
        ga, gb = ("g", a), ("g", b)
        direct = q.has_edge(ga, gb)
        if direct:
            q.remove_edge(ga, gb)
        try:
            return nx.has_path(q, ga, gb)
        finally:
            if direct:
                q.add_edge(ga, gb)

    # producer/consumer pairs, in topological order
    for u in cand:
        for v in list(deps.successors(u)):
            if v not in gid:
                continue
            a, b = gid[u], gid[v]
            if a == b or key[a] != key[b]:
                continue
            if not joined(a, b):
                merge(a, b)
    # independent siblings of the same phase and shape
    changed = True
    while changed:
        changed = False
        ids = sorted(members)
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                if a in members and b in members and key[a] == key[b] and \
                        not nx.has_path(q, ("g", a), ("g", b)) and \
                        not nx.has_path(q, ("g", b), ("g", a)):
                    merge(a, b)
                    changed = True
    order = {n: i for i, n in enumerate(nodes)}
    return [sorted(ms, key=order.__getitem__) for ms in members.values()]


def is_convex(group: Sequence[Node], deps: nx.DiGraph) -> bool:
    """``descendants(S) ∩ ancestors(S) ⊆ S`` over the dependency graph."""
    s = set(group)
    desc: set[Node] = set()
    anc: set[Node] = set()
    for n in s:
        desc |= nx.descendants(deps, n)
        anc |= nx.ancestors(deps, n)
    return (desc & anc) <= s


# ---- kernel bodies ----

@dataclass(frozen=True)
class KernelSpec:
    """A group's interface: external inputs (node, broadcast flag) and output nodes."""
    inputs: tuple[tuple[Node, str], ...]
    outputs: tuple[Node, ...]


def bcast_flag(src: Node, domain: tuple) -> str:
    r, c = src.shape
    full_r = r == domain[0]
    full_c = c == domain[1]
    if full_r and full_c:
        return "full"
    if full_c:
        return "row"
    if full_r:
        return "col"
    if r == 1 and c == 1:
        return "scalar"
    raise ValueError(f"cannot broadcast {short_type(src)} to {domain}")


def kernel_spec(group: Sequence[Node], outputs: Sequence[Node]) -> KernelSpec:
    gs = set(group)
    domain = group[0].shape
    ins: dict[Node, str] = {}
    for n in group:
        if n.shape != domain:
            raise ValueError(f"group mixes shapes {short_type(n)} and {domain}")
        for s in n.src:
            if s in gs or s.op is Ops.CONST:
                continue
            ins.setdefault(s, bcast_flag(s, domain) if n.op is Ops.EXPAND else "full")
    return KernelSpec(tuple(ins.items()), tuple(outputs))


def _sym_const(v: float) -> sympy.Expr:
    if float(v).is_integer() and abs(v) < 2 ** 53:
        return sympy.Integer(int(v))
    return sympy.Float(v, 17)


def _direct(group: Sequence[Node], spec: KernelSpec) -> ScalarProgram:
    idx: dict[Node, int] = {n: i for i, (n, _f) in enumerate(spec.inputs)}
    instrs: list[tuple[Ops, tuple[int, ...], float | None]] = []
    nin = len(spec.inputs)
    consts: dict[float, int] = {}

    def val(s: Node) -> int:
        if s.op is Ops.CONST:
            if s.arg not in consts:
                instrs.append((Ops.CONST, (), float(s.arg)))
                consts[s.arg] = nin + len(instrs) - 1
            return consts[s.arg]
        return idx[s]

    for n in group:
        if n.op is Ops.EXPAND:
            idx[n] = val(n.src[0])
            continue
        args = tuple(val(s) for s in n.src)
        instrs.append((n.op, args, None))
        idx[n] = nin + len(instrs) - 1
    return ScalarProgram(nin, tuple(instrs), tuple(idx[o] for o in spec.outputs))


class _Lower:
    """sympy expressions -> SSA instructions over the closed scalar op set."""

    def __init__(self, n_inputs: int, env: dict[sympy.Basic, int]) -> None:
        self.n_inputs = n_inputs
        self.env = dict(env)
        self.instrs: list[tuple[Ops, tuple[int, ...], float | None]] = []
        self.memo: dict[tuple, int] = {}

    def emit(self, op: Ops, args: tuple[int, ...], c: float | None = None) -> int:
        k = (op, args, c)
        if k not in self.memo:
            self.instrs.append(k)
            self.memo[k] = self.n_inputs + len(self.instrs) - 1
        return self.memo[k]

    def const(self, v: float) -> int:
        return self.emit(Ops.CONST, (), float(v))

    def go(self, e: sympy.Basic) -> int:
        if e in self.env:
            return self.env[e]
        v = self._go(e)
        self.env[e] = v
        return v

    def _go(self, e: sympy.Basic) -> int:
        if e.is_Number:
            return self.const(float(e))
        if isinstance(e, sympy.Add):
            pos = [a for a in e.args if not _is_negative(a)]
            neg = [a for a in e.args if _is_negative(a)]
            acc = self.go(pos[0]) if pos else None
            for a in pos[1:]:
                acc = self.emit(Ops.ADD, (acc, self.go(a)))
            for a in neg:
                m = self.go(-a)
                acc = self.emit(Ops.NEG, (m,)) if acc is None else self.emit(Ops.SUB, (acc, m))
            assert acc is not None
            return acc
        if isinstance(e, sympy.Mul):
            coeff, rest = e.as_coeff_Mul()
            if coeff == -1:
                return self.emit(Ops.NEG, (self.go(rest),))
            num = [a for a in e.args if not (a.is_Pow and a.exp.is_Number and a.exp < 0)]
            den = [1 / a for a in e.args if a.is_Pow and a.exp.is_Number and a.exp < 0]
            acc = self.go(num[0]) if num else self.const(1.0)
            for a in num[1:]:
                acc = self.emit(Ops.MUL, (acc, self.go(a)))
            for a in den:
                acc = self.emit(Ops.DIV, (acc, self.go(a)))
            return acc
        if isinstance(e, sympy.Pow):
            base, ex = e.args
            if ex == sympy.Rational(1, 2):
                return self.emit(Ops.SQRT, (self.go(base),))
            if ex.is_Integer and int(ex) > 0:
                b = self.go(base)
                acc = b
                for _ in range(int(ex) - 1):
                    acc = self.emit(Ops.MUL, (acc, b))
                return acc
            if ex.is_Number and ex < 0:
                return self.emit(Ops.DIV, (self.const(1.0), self.go(base ** (-ex))))
            if base == sympy.E:
                return self.emit(Ops.EXP, (self.go(ex),))
            raise NotImplementedError(str(e))
        if isinstance(e, sympy.exp):
            return self.emit(Ops.EXP, (self.go(e.args[0]),))
        fn = {sympy.log: Ops.LOG, sympy.tanh: Ops.TANH, sigmoid: Ops.SIGMOID, relu: Ops.RELU,
              softplus: Ops.SOFTPLUS, step: Ops.STEP, sympy.Heaviside: Ops.STEP}.get(type(e))  # type: ignore[call-overload]
        if fn is not None and len(e.args) >= 1:
            if fn is Ops.STEP and isinstance(e, sympy.Heaviside) and len(e.args) == 2 \
                    and e.args[1] != 0:
                raise NotImplementedError(str(e))
            return self.emit(fn, (self.go(e.args[0]),))
        if isinstance(e, cmpgt):
            return self.emit(Ops.CMPGT, (self.go(e.args[0]), self.go(e.args[1])))
        if isinstance(e, where):
            return self.emit(Ops.WHERE, tuple(self.go(a) for a in e.args))
        if isinstance(e, sympy.Max) and len(e.args) >= 2:
            acc = self.go(e.args[0])
            for a in e.args[1:]:
                acc = self.emit(Ops.MAX, (acc, self.go(a)))
            return acc
        if isinstance(e, sympy.Abs):
            x = self.go(e.args[0])
            return self.emit(Ops.MAX, (x, self.emit(Ops.NEG, (x,))))
        raise NotImplementedError(f"{type(e).__name__}: {e}")


def _is_negative(a: sympy.Basic) -> bool:
    c, _ = a.as_coeff_Mul()
    return bool(c.is_Number and c < 0)


def _sympy_program(group: Sequence[Node], spec: KernelSpec) -> ScalarProgram:
    syms = sympy.symbols(f"in0:{len(spec.inputs)}", real=True)
    ex: dict[Node, sympy.Expr] = {n: s for (n, _f), s in zip(spec.inputs, syms, strict=True)}
    # the inputs each value reads in the group as written
    reads: dict[Node, frozenset] = {n: frozenset([s]) for n, s in zip(ex, syms, strict=True)}
    for n in group:
        if n.op is Ops.EXPAND:
            ex[n] = ex[n.src[0]] if n.src[0].op is not Ops.CONST else _sym_const(n.src[0].arg)
            reads[n] = reads.get(n.src[0], frozenset())
            continue
        args = [ex[s] if s in ex else _sym_const(s.arg) for s in n.src]
        ex[n] = TABLE[n.op].sym(*args)
        reads[n] = frozenset().union(*[reads.get(s, frozenset()) for s in n.src])
        # sympy folds x*0, x - x, x/x as if x were finite; IEEE (and ref) give NaN for inf or
        # NaN x, so a group where sympy drops an operand is lowered from the nodes instead
        if ex[n].free_symbols != reads[n]:
            raise ValueError(f"sympy dropped an operand of {n.op.name}")
    outs = [ex[o] for o in spec.outputs]
    repl, reduced = sympy.cse(outs, optimizations=None)
    low = _Lower(len(spec.inputs), {s: i for i, s in enumerate(syms)})
    for sym, e in repl:
        low.env[sym] = low.go(e)
    out_ids = []
    for e in reduced:
        out_ids.append(low.go(e))   # may name an input directly (a copy)
    return ScalarProgram(len(spec.inputs), tuple(low.instrs), tuple(out_ids))


def build_program(group: Sequence[Node], spec: KernelSpec, use_sympy: bool = True) -> ScalarProgram:
    if use_sympy:
        try:
            # unevaluated: sympy's automatic algebra (x*0 = 0, x - x = 0, log(exp(x)) = x, and
            # the cancellations cse's substitutions trigger) assumes finite values; IEEE and ref
            # do not, so sympy only shares subexpressions here
            with sympy.evaluate(False):
                return _sympy_program(group, spec)
        except (NotImplementedError, TypeError, ValueError, RecursionError):
            pass
    return _direct(group, spec)


def is_batch(n: Node) -> bool:
    return n.shape[0] == B
