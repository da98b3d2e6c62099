"""Simplification: constant folding, algebraic identities, canonical forms, layout identities.

``simplify(roots)`` rewrites a graph bottom-up until nothing changes and returns the new roots;
``simplify_cell`` does the same for a Cell. Dead code disappears for free: only what the roots
reach is rebuilt. Rules (each is a plain local rewrite of one node whose sources are already
simplified):

* constant folding of elementwise ops, EXPAND, SLICE, CONCAT of equal constants;
* ``x*1``, ``x+0``, ``x-0``, ``x/1``, ``0-x -> -x``, ``-(-x) -> x``, ``matmul(x, 0) -> 0``;
* ``x*0 -> 0`` only where x is provably finite (``_finite``: a finite constant, a step or
  comparison, tanh/sigmoid/relu/max/neg/where of finite values), since IEEE says inf*0 = NaN and
  ``ref`` evaluates the graph as written: an input holding inf or NaN must give the same NaN
  pattern in every output and gradient on every backend. Every other rule here is exact in IEEE
  arithmetic (up to the sign of a zero);
* commutative ops (ADD, MUL, MAX) get a canonical operand order (constants last, then by a
  structural key), so ``a*b`` and ``b*a`` are one hash-consed node;
* EXPAND to the same shape is dropped, EXPAND of EXPAND collapses, SLICE over the full width is
  dropped, SLICE of SLICE composes, SLICE of CONCAT reads the part(s) it covers, a CONCAT of one
  part is the part, nested CONCATs flatten, CONCATs of adjacent slices of one node merge;
* elementwise ops of CONCATs (and constants) split along the common block boundaries: autodiff
  turns the cotangent of a slice into ``concat(0, g, 0)``, and the sum of four such concats
  becomes ``concat(g_i, g_f, g_o, g_g)``;
* SLICE of an elementwise op becomes the op of the slices (and SLICE of EXPAND the EXPAND of the
  slice), so a 4H-wide ``x@W + b + h@U`` followed by gate slices fuses like four per-gate sums;
* REDUCE over rows of a SLICE becomes the SLICE of the REDUCE, so all bias gradients read one
  reduction of the gate cotangents;
* a CONCAT of adjacent REDUCEs over rows (same op) becomes one REDUCE of the CONCAT of their
  sources: a packed bias gets its gradient per gate block, ``concat(Σ d_i, Σ d_f, Σ d_g, Σ d_o)``,
  and the cotangents' CONCAT is the very node the weight-gradient GEMMs read (hash-consing), so
  the schedule runs one reduction over the contiguous packed block instead of one per gate.
  Sources that are leaves are left alone (concatenating them would cost a copy).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from .ir import Cell, Node, apply, const, set_site, site_of, toposort
from .ops import GroupOp, Ops
from .scalar import TABLE

MAX_ROUNDS = 20


def _is_const(n: Node, v: float | None = None) -> bool:
    return n.op is Ops.CONST and (v is None or n.arg == v)


# ops whose result is finite whenever their operands are (bounded, or selecting an operand)
_KEEPS_FINITE = frozenset({Ops.NEG, Ops.TANH, Ops.SIGMOID, Ops.RELU, Ops.MAX})


def _finite(n: Node) -> bool:
    """Is every element of n finite whatever the leaves hold (inf and NaN included)?"""
    if n.op is Ops.CONST:
        return bool(np.isfinite(n.arg))
    if n.op in (Ops.STEP, Ops.CMPGT):   # 0 or 1, also for NaN operands
        return True
    if n.op is Ops.WHERE:
        return _finite(n.src[1]) and _finite(n.src[2])
    if n.op in _KEEPS_FINITE or n.op in (Ops.EXPAND, Ops.SLICE):
        return all(_finite(s) for s in n.src)
    return False


class _Keys:
    """A structural key per node, stable across runs (unlike id()), for canonical order."""

    def __init__(self) -> None:
        self.memo: dict[Node, str] = {}

    def __call__(self, n: Node) -> str:
        k = self.memo.get(n)
        if k is None:
            h = hashlib.sha1(repr((n.op.name, n.dtype, n.shape, n.arg)).encode())
            for s in n.src:
                h.update(self(s).encode())
            k = self.memo[n] = h.hexdigest()
        return k


def _parts(n: Node) -> list[Node]:
    return list(n.src) if n.op is Ops.CONCAT else [n]


def _slice(n: Node, a: int, b: int) -> Node:
    return apply(Ops.SLICE, n, arg=(a, b)) if (a, b) != (0, n.shape[1]) else n


def _bounds(n: Node) -> list[int]:
    out, off = [0], 0
    for p in _parts(n):
        off += int(p.shape[1])
        out.append(off)
    return out


def _fold(n: Node) -> Node | None:
    """Constant folding; None when n is not foldable."""
    op, src = n.op, n.src
    if op in GroupOp.Elementwise and src and all(_is_const(s) for s in src):
        with np.errstate(all="ignore"):
            v = TABLE[op].np(*[np.asarray(s.arg, dtype=n.dtype) for s in src])
        return const(float(v), n.shape, n.dtype)
    if op in (Ops.EXPAND, Ops.SLICE) and _is_const(src[0]):
        return const(src[0].arg, n.shape, n.dtype)
    if op is Ops.CONCAT and all(_is_const(s, src[0].arg) for s in src):
        return const(src[0].arg, n.shape, n.dtype)
    if op is Ops.MATMUL and any(_is_const(s, 0.0) for s in src):
        return const(0.0, n.shape, n.dtype)
    if op is Ops.REDUCE and _is_const(src[0]) and (n.arg[0] == "max" or src[0].arg == 0.0):
        return const(src[0].arg, n.shape, n.dtype)
    return None


def _rewrite(n: Node, key: _Keys) -> Node:
    """One local rewrite of n (its sources already simplified); n itself when none applies."""
    f = _fold(n)
    if f is not None:
        return f
    op, src = n.op, n.src
    zero = lambda i: _is_const(src[i], 0.0)  # noqa: E731
    one = lambda i: _is_const(src[i], 1.0)  # noqa: E731
    if op is Ops.ADD:
        if zero(1):
            return src[0]
        if zero(0):
            return src[1]
    if op is Ops.SUB:
        if zero(1):
            return src[0]
        if zero(0):
            return apply(Ops.NEG, src[1])
    if op is Ops.MUL:
        if one(1):
            return src[0]
        if one(0):
            return src[1]
        if (zero(0) and _finite(src[1])) or (zero(1) and _finite(src[0])):
            return const(0.0, n.shape, n.dtype)   # inf*0 = NaN: see the module docstring
        if _is_const(src[1], -1.0):
            return apply(Ops.NEG, src[0])
        if _is_const(src[0], -1.0):
            return apply(Ops.NEG, src[1])
    if op is Ops.DIV and one(1):
        return src[0]
    if op is Ops.NEG and src[0].op is Ops.NEG:
        return src[0].src[0]
    if op in GroupOp.Commutative and len(src) == 2:
        a, b = src
        ka = (_is_const(a), key(a))
        kb = (_is_const(b), key(b))
        if kb < ka:
            return n.replace(src=(b, a))
    # elementwise over concats: split along the common block boundaries
    if op in GroupOp.Elementwise and any(s.op is Ops.CONCAT for s in src) and \
            all(s.op is Ops.CONCAT or _is_const(s) for s in src):
        cuts = sorted({c for s in src if s.op is Ops.CONCAT for c in _bounds(s)})
        pieces = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            pieces.append(apply(op, *[_slice(s, a, b) for s in src]))
        return apply(Ops.CONCAT, *pieces)
    if op is Ops.EXPAND:
        x = src[0]
        if x.shape == n.shape:
            return x
        if x.op is Ops.EXPAND:
            return apply(Ops.EXPAND, x.src[0], arg=n.arg)
    if op is Ops.SLICE:
        x = src[0]
        a, b = n.arg
        if (a, b) == (0, x.shape[1]):
            return x
        if x.op is Ops.SLICE:
            return _slice(x.src[0], x.arg[0] + a, x.arg[0] + b)
        if x.op is Ops.CONCAT:
            out, off = [], 0
            for p in x.src:
                w = int(p.shape[1])
                lo, hi = max(a, off), min(b, off + w)
                if lo < hi:
                    out.append(_slice(p, lo - off, hi - off))
                off += w
            return out[0] if len(out) == 1 else apply(Ops.CONCAT, *out)
        if x.op in GroupOp.Elementwise:
            return apply(x.op, *[_slice(s, a, b) for s in x.src])
        if x.op is Ops.EXPAND:
            inner = x.src[0] if x.src[0].shape[1] == 1 else _slice(x.src[0], a, b)
            return apply(Ops.EXPAND, inner, arg=(x.shape[0], b - a))
    if op is Ops.CONCAT:
        flat: list[Node] = []
        for p in src:
            flat.extend(_parts(p))
        merged: list[Node] = []
        for p in flat:   # adjacent slices of one node merge
            q = merged[-1] if merged else None
            if q is not None and q.op is Ops.SLICE and p.op is Ops.SLICE and \
                    q.src[0] is p.src[0] and q.arg[1] == p.arg[0]:
                merged[-1] = _slice(p.src[0], q.arg[0], p.arg[1])
            else:
                merged.append(p)
        merged = _merge_reductions(merged)
        if len(merged) == 1:
            return merged[0]
        if tuple(merged) != src:
            return apply(Ops.CONCAT, *merged)
    if op is Ops.REDUCE and n.arg[1] == 0 and src[0].op is Ops.SLICE:
        x = src[0]
        return _slice(apply(Ops.REDUCE, x.src[0], arg=n.arg), *x.arg)
    return n


def _merge_reductions(parts: list[Node]) -> list[Node]:
    """Runs of adjacent ``REDUCE(s_k, axis 0)`` parts (same op, same source rows, sources not
    leaves) become ``REDUCE(CONCAT(s_k))``."""
    def ok(p: Node) -> bool:
        return p.op is Ops.REDUCE and p.arg[1] == 0 and p.src[0].op not in GroupOp.Leaf

    out: list[Node] = []
    i = 0
    while i < len(parts):
        j = i + 1
        if ok(parts[i]):
            while j < len(parts) and ok(parts[j]) and parts[j].arg == parts[i].arg and \
                    parts[j].src[0].shape[0] == parts[i].src[0].shape[0]:
                j += 1
        if j - i >= 2:
            inner = apply(Ops.CONCAT, *[p.src[0] for p in parts[i:j]])
            out.append(apply(Ops.REDUCE, inner, arg=parts[i].arg))
        else:
            out.append(parts[i])
        i = j
    return out


def simplify(roots: Sequence[Node]) -> list[Node]:
    """Rewrite the graph under roots until no rule applies; returns the new roots."""
    key = _Keys()
    roots = list(roots)
    for _ in range(MAX_ROUNDS):
        memo: dict[Node, Node] = {}
        for n in toposort(roots):
            new_src = tuple(memo[s] for s in n.src)
            m = n if new_src == n.src else Node(n.op, n.dtype, n.shape, new_src, n.arg)
            # rewrite to a local fixpoint: each rewrite returns simplified nodes' combinations
            for _k in range(MAX_ROUNDS):
                r = _rewrite(m, key)
                if r is m:
                    break
                m = r
            if m is not n:
                s = site_of(n)
                if s is not None and site_of(m) is None:
                    set_site(m, s)
            memo[n] = m
        new_roots = [memo[r] for r in roots]
        if new_roots == roots:
            return new_roots
        roots = new_roots
    return roots


def simplify_cell(cell: Cell) -> Cell:
    new = simplify(list(cell.roots))
    k = len(cell.outputs)
    params = [p for p in toposort(new) if p.op is Ops.PARAM]
    return Cell(cell.inputs, cell.states, tuple(new[:k]), tuple(new[k:]), tuple(params),
                cell.name, cell.output_names,
                frozen=cell.frozen & {p.arg for p in params})


def count_ops(roots: Sequence[Node]) -> dict[Ops, int]:
    out: dict[Ops, int] = {}
    for n in toposort(roots):
        out[n.op] = out.get(n.op, 0) + 1
    return out

