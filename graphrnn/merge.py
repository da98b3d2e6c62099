"""GEMM merging: MATMULs that share an operand become one GEMM over packed parameters.

Two rewrites, both on PARAM right-hand operands only (a user's weights), after ``simplify``:

1. **row split**: ``concat(a_1, .., a_k) @ W`` becomes ``a_1 @ W_1 + .. + a_k @ W_k`` where
   ``W_i`` are the row blocks of W (new PARAM leaves ``W__r<i>``). The lecture GRU's
   ``W · [r*h, x]`` keeps its h-part in the loop and its x-part goes out of the loop.
2. **column packing**: ``a @ W_1, .., a @ W_m`` (same left operand a) become slices of one
   ``a @ P`` where ``P = [W_1 | .. | W_m]`` is a new PARAM leaf ``__pack<k>``. The lecture LSTM's
   8 per-gate Linears become one 4H-wide GEMM on x and one on h.

A weight qualifies only when *all* its uses are such products (with the same left operand, or
concatenations of the same widths), so every user weight lives in exactly one place.

**Layout decision**: the Program stores parameters packed. ``layout[name]`` lists, for each
PARAM leaf of the rewritten cell, the ``Piece``\\ s of user parameters it holds: user
``name[urows, ucols]`` lives at ``[prows, pcols]`` of the leaf. The user keeps their parameters
(and gets their gradients) by their own names; a backend copies the pieces in (and the gradient
pieces out) once per call, which is O(parameters), not O(T).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from .ir import Cell, Node, apply, toposort
from .ops import Ops


@dataclass(frozen=True)
class Piece:
    user: str
    urows: tuple[int, int]
    ucols: tuple[int, int]
    prows: tuple[int, int]
    pcols: tuple[int, int]


Layout = dict[str, list[Piece]]


def identity_layout(cell: Cell) -> Layout:
    out: Layout = {}
    for p in cell.params:
        r, c = (int(d) for d in p.shape)
        out[p.arg] = [Piece(p.arg, (0, r), (0, c), (0, r), (0, c))]
    return out


def _consumers(roots: list[Node]) -> dict[Node, list[Node]]:
    cons: dict[Node, list[Node]] = defaultdict(list)
    for n in toposort(roots):
        for s in n.src:
            if n not in cons[s]:
                cons[s].append(n)
    return cons


def _rewrite(roots: list[Node], rule: Callable[[Node, Node], Node | None]) -> list[Node]:
    """Rebuild roots bottom-up; ``rule(old, rebuilt)`` may return a replacement, built from the
    rebuilt sources (so replacements nest: a replaced product inside another one is seen)."""
    memo: dict[Node, Node] = {}
    for n in toposort(roots):
        new_src = tuple(memo[s] for s in n.src)
        m = n if new_src == n.src else n.replace(src=new_src)
        r = rule(n, m)
        memo[n] = m if r is None else r
    return [memo[r] for r in roots]


def _fresh(base: str, taken: set[str]) -> str:
    k = 0
    while f"{base}{k}" in taken:
        k += 1
    name = f"{base}{k}"
    taken.add(name)
    return name


def _sub_param(p: Node, name: str, rows: tuple[int, int]) -> Node:
    return Node(Ops.PARAM, p.dtype, (rows[1] - rows[0], int(p.shape[1])), (), name)


def split_rows(roots: list[Node], layout: Layout) -> tuple[list[Node], Layout]:
    """``concat(a_i) @ W`` -> ``sum_i a_i @ W[rows_i]`` where W is used only that way."""
    cons = _consumers(roots)
    taken = {n.arg for n in toposort(roots) if n.op is Ops.PARAM}
    subs_of: dict[Node, list[Node]] = {}
    layout = dict(layout)
    for w in [n for n in toposort(roots) if n.op is Ops.PARAM]:
        uses = cons.get(w, [])
        if not uses or any(u.op is not Ops.MATMUL or u.arg != (False, False) or u.src[1] is not w
                           or u.src[0] is w or u.src[0].op is not Ops.CONCAT for u in uses):
            continue
        widths = {tuple(int(s.shape[1]) for s in u.src[0].src) for u in uses}
        if len(widths) != 1:
            continue
        (ws,) = widths
        blocks, off = [], 0
        for wd in ws:
            blocks.append((off, off + wd))
            off += wd
        subs = []
        for r in blocks:
            name = _fresh(f"{w.arg}__r", taken)
            subs.append(_sub_param(w, name, r))
            layout[name] = [Piece(pc.user, (pc.urows[0] + max(r[0], pc.prows[0]) - pc.prows[0],
                                            pc.urows[0] + min(r[1], pc.prows[1]) - pc.prows[0]),
                                  pc.ucols,
                                  (max(r[0], pc.prows[0]) - r[0], min(r[1], pc.prows[1]) - r[0]),
                                  pc.pcols)
                            for pc in layout[w.arg] if max(r[0], pc.prows[0]) <
                            min(r[1], pc.prows[1])]
        del layout[w.arg]
        for u in uses:
            subs_of[u] = subs
    if not subs_of:
        return roots, layout

    def rule(old: Node, new: Node) -> Node | None:
        if old not in subs_of:
            return None
        acc = None
        for a, sp in zip(new.src[0].src, subs_of[old], strict=True):
            term = apply(Ops.MATMUL, a, sp, arg=(False, False))
            acc = term if acc is None else acc + term
        return acc
    return _rewrite(roots, rule), layout


def pack_columns(roots: list[Node], layout: Layout) -> tuple[list[Node], Layout]:
    """``a @ W_1 .. a @ W_m`` -> slices of ``a @ [W_1 | .. | W_m]``."""
    cons = _consumers(roots)
    taken = {n.arg for n in toposort(roots) if n.op is Ops.PARAM}
    groups: dict[Node, list[Node]] = defaultdict(list)
    for w in [n for n in toposort(roots) if n.op is Ops.PARAM]:
        uses = cons.get(w, [])
        if not uses or any(u.op is not Ops.MATMUL or u.arg != (False, False) or u.src[1] is not w
                           or u.src[0] is w for u in uses):
            continue
        lefts = {u.src[0] for u in uses}
        if len(lefts) == 1:
            groups[next(iter(lefts))].append(w)
    slot: dict[Node, tuple[Node, int, int]] = {}   # a @ W -> (packed, c0, c1)
    layout = dict(layout)
    for a, ws in groups.items():
        if len(ws) < 2:
            continue
        total = sum(int(w.shape[1]) for w in ws)
        name = _fresh("__pack", taken)
        packed = Node(Ops.PARAM, ws[0].dtype, (int(ws[0].shape[0]), total), (), name)
        pieces: list[Piece] = []
        off = 0
        for w in ws:
            wd = int(w.shape[1])
            for pc in layout.pop(w.arg):
                pieces.append(Piece(pc.user, pc.urows, pc.ucols, pc.prows,
                                    (pc.pcols[0] + off, pc.pcols[1] + off)))
            slot[apply(Ops.MATMUL, a, w, arg=(False, False))] = (packed, off, off + wd)
            off += wd
        layout[name] = pieces
    if not slot:
        return roots, layout

    def rule(old: Node, new: Node) -> Node | None:
        if old not in slot:
            return None
        packed, c0, c1 = slot[old]
        prod = apply(Ops.MATMUL, new.src[0], packed, arg=(False, False))
        return apply(Ops.SLICE, prod, arg=(c0, c1))
    return _rewrite(roots, rule), layout


def merge_gemms(cell: Cell, layout: Layout | None = None) -> tuple[Cell, Layout]:
    """The cell with row-split and column-packed weights, and where each user weight lives."""
    from .simplify import simplify
    layout = identity_layout(cell) if layout is None else layout
    roots = list(cell.roots)
    roots, layout = split_rows(roots, layout)
    roots = simplify(roots)
    roots, layout = pack_columns(roots, layout)
    roots = simplify(roots)
    k = len(cell.outputs)
    params = tuple(p for p in toposort(roots) if p.op is Ops.PARAM)
    layout = {p.arg: layout[p.arg] for p in params}
    return (Cell(cell.inputs, cell.states, tuple(roots[:k]), tuple(roots[k:]), params,
                 cell.name, cell.output_names), layout)
