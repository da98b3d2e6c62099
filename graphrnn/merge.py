"""GEMM merging: MATMULs that share an operand become one GEMM over packed parameters.

Three rewrites, on PARAM operands only (a user's weights and biases), after ``simplify``:

1. **row split**: ``concat(a_1, .., a_k) @ W`` becomes ``a_1 @ W_1 + .. + a_k @ W_k`` where
   ``W_i`` are the row blocks of W (new PARAM leaves ``W__r<i>``). The lecture GRU's
   ``W · [r*h, x]`` keeps its h-part in the loop and its x-part goes out of the loop.
2. **column packing**: ``a @ W_1, .., a @ W_m`` (same left operand a) become slices of one
   ``a @ P`` where ``P = [W_1 | .. | W_m]`` is a new PARAM leaf ``__pack<k>``. The lecture LSTM's
   8 per-gate Linears become one 4H-wide GEMM on x and one on h.
3. **bias packing**: separate (1, w) biases added to the column blocks of one packed GEMM
   (``slice(x @ P, a, b) + expand(b_k)``) become column blocks of one packed bias laid out like
   the GEMM's columns, when they cover all of them. The bias gradient is then one reduction of
   the cotangent the weight-gradient GEMM reads (``Σ_rows dZ``), not one per gate: the lecture's
   per-gate Linears (and the equations' per-gate ``W @ x + b``) end in the same plan as the
   fused 4H LSTM. A sum holding several GEMMs and several biases (``x W_xi + b_xi +
   h W_hi + b_hi``) pairs them in a fixed order (biases by name; column blocks of packed GEMMs
   first, then GEMMs by first use).

A weight qualifies only when *all* its uses are such products (with the same left operand, or
concatenations of the same widths), so every user weight lives in exactly one place. Weights
written on the left, ``W @ x`` as the equations frontend and the lectures write them, are
``x @ Wᵀ`` in the IR (W is (out, in)): for them the row split cuts W's columns and the packing
stacks rows, ``P = [W_1; ..; W_m]``, so ``x @ Pᵀ`` is one GEMM just the same.

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


def _sub_param(p: Node, name: str, rows: tuple[int, int], tb: bool = False) -> Node:
    """The block ``rows`` of p's rows (of its columns when ``tb``: p is used transposed)."""
    shape = (int(p.shape[0]), rows[1] - rows[0]) if tb else (rows[1] - rows[0], int(p.shape[1]))
    return Node(Ops.PARAM, p.dtype, shape, (), name)


def _products_of(w: Node, uses: list[Node]) -> bool | None:
    """If every use of w is ``a @ w`` or ``a @ wᵀ`` (one kind, a not w): whether transposed."""
    if not uses or any(u.op is not Ops.MATMUL or u.src[1] is not w or u.src[0] is w or
                       u.arg not in ((False, False), (False, True)) for u in uses):
        return None
    kinds = {u.arg[1] for u in uses}
    return next(iter(kinds)) if len(kinds) == 1 else None


def _cut(r: tuple[int, int], within: tuple[int, int], user: tuple[int, int]) -> \
        tuple[tuple[int, int], tuple[int, int]] | None:
    """A piece at ``within`` (user range ``user``) cut to the block r: (new user range, range
    inside the block), or None when they do not meet."""
    lo, hi = max(r[0], within[0]), min(r[1], within[1])
    if lo >= hi:
        return None
    return ((user[0] + lo - within[0], user[0] + hi - within[0]), (lo - r[0], hi - r[0]))


def split_rows(roots: list[Node], layout: Layout) -> tuple[list[Node], Layout]:
    """``concat(a_i) @ W`` -> ``sum_i a_i @ W[rows_i]`` where W is used only that way (and
    ``concat(a_i) @ Wᵀ`` -> ``sum_i a_i @ W[:, cols_i]ᵀ``)."""
    cons = _consumers(roots)
    taken = {n.arg for n in toposort(roots) if n.op is Ops.PARAM}
    subs_of: dict[Node, list[Node]] = {}
    layout = dict(layout)
    for w in [n for n in toposort(roots) if n.op is Ops.PARAM]:
        uses = cons.get(w, [])
        tb = _products_of(w, uses)
        if tb is None or any(u.src[0].op is not Ops.CONCAT for u in uses):
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
            subs.append(_sub_param(w, name, r, tb))
            pieces = []
            for pc in layout[w.arg]:
                if tb:
                    c = _cut(r, pc.pcols, pc.ucols)
                    if c is not None:
                        pieces.append(Piece(pc.user, pc.urows, c[0], pc.prows, c[1]))
                else:
                    c = _cut(r, pc.prows, pc.urows)
                    if c is not None:
                        pieces.append(Piece(pc.user, c[0], pc.ucols, c[1], pc.pcols))
            layout[name] = pieces
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
            term = apply(Ops.MATMUL, a, sp, arg=old.arg)
            acc = term if acc is None else acc + term
        return acc
    return _rewrite(roots, rule), layout


def pack_columns(roots: list[Node], layout: Layout,
                 frozen: frozenset[str] = frozenset()) -> tuple[list[Node], Layout]:
    """``a @ W_1 .. a @ W_m`` -> slices of ``a @ [W_1 | .. | W_m]`` (and ``a @ W_iᵀ`` ->
    slices of ``a @ [W_1; ..; W_m]ᵀ``). Frozen weights (``frozen``: user names) pack only with
    frozen ones, so a trained packed weight's gradient never computes a frozen block: a frozen
    W and a trained U on the same h are two GEMMs in the step (the same FLOPs as one packed
    GEMM, one more call forward and backward), and the gradient GEMM after the loop is U's
    alone (half the FLOPs of the packed one). Cutting the frozen columns out of a packed
    weight's gradient instead is possible (``Aᵀ dZ[:, trained]``) and not built."""
    cons = _consumers(roots)
    taken = {n.arg for n in toposort(roots) if n.op is Ops.PARAM}
    groups: dict[tuple[Node, bool, bool], list[Node]] = defaultdict(list)
    for w in [n for n in toposort(roots) if n.op is Ops.PARAM]:
        uses = cons.get(w, [])
        tb = _products_of(w, uses)
        if tb is None:
            continue
        lefts = {u.src[0] for u in uses}
        if len(lefts) == 1:
            groups[(next(iter(lefts)), tb, _is_frozen(w, layout, frozen))].append(w)
    slot: dict[Node, tuple[Node, int, int]] = {}   # a @ W -> (packed, c0, c1)
    layout = dict(layout)
    for (a, tb, _frozen), ws in groups.items():
        if len(ws) < 2:
            continue
        out_dim = 0 if tb else 1   # the dimension of W that becomes the product's columns
        total = sum(int(w.shape[out_dim]) for w in ws)
        name = _fresh("__pack", taken)
        shape = (total, int(ws[0].shape[1])) if tb else (int(ws[0].shape[0]), total)
        packed = Node(Ops.PARAM, ws[0].dtype, shape, (), name)
        pieces: list[Piece] = []
        off = 0
        for w in ws:
            wd = int(w.shape[out_dim])
            for pc in layout.pop(w.arg):
                if tb:
                    pieces.append(Piece(pc.user, pc.urows, pc.ucols,
                                        (pc.prows[0] + off, pc.prows[1] + off), pc.pcols))
                else:
                    pieces.append(Piece(pc.user, pc.urows, pc.ucols, pc.prows,
                                        (pc.pcols[0] + off, pc.pcols[1] + off)))
            slot[apply(Ops.MATMUL, a, w, arg=(False, tb))] = (packed, off, off + wd)
            off += wd
        layout[name] = pieces
    if not slot:
        return roots, layout

    def rule(old: Node, new: Node) -> Node | None:
        if old not in slot:
            return None
        packed, c0, c1 = slot[old]
        prod = apply(Ops.MATMUL, new.src[0], packed, arg=old.arg)
        return apply(Ops.SLICE, prod, arg=(c0, c1))
    return _rewrite(roots, rule), layout


def pack_biases(roots: list[Node], layout: Layout,
                frozen: frozenset[str] = frozenset()) -> tuple[list[Node], Layout]:
    """``slice(G, a_k, b_k) + expand(bias_k)`` for k covering all of G's columns -> the biases
    become ``slice(P, a_k, b_k)`` of one packed (1, width(G)) parameter P (not when frozen and
    trained biases would share P)."""
    order = toposort(roots)
    rank = {n: i for i, n in enumerate(order)}
    cons = _consumers(roots)
    taken = {n.arg for n in order if n.op is Ops.PARAM}
    bias_of: dict[Node, Node] = {}   # expand(bias) -> bias
    for p in order:
        uses = cons.get(p, [])
        if p.op is Ops.PARAM and p.shape[0] == 1 and len(uses) == 1 and \
                uses[0].op is Ops.EXPAND and uses[0].shape[1] == p.shape[1]:
            bias_of[uses[0]] = p

    def private_add(n: Node) -> bool:
        return n.op is Ops.ADD and len(cons.get(n, [])) == 1

    def terms(n: Node, top: bool) -> list[Node]:
        if n.op is Ops.ADD and (top or private_add(n)):
            return terms(n.src[0], False) + terms(n.src[1], False)
        return [n]

    slots: dict[Node, list[tuple[int, int, Node, Node]]] = defaultdict(list)  # G -> blocks
    for n in order:
        if n.op is not Ops.ADD or (private_add(n) and cons[n][0].op is Ops.ADD):
            continue   # not the top of a sum
        ts = terms(n, True)
        biases = sorted((t for t in ts if t in bias_of), key=lambda e: bias_of[e].arg)
        anchors = []
        for t in ts:
            if t.op is Ops.MATMUL:
                anchors.append((t, 0, int(t.shape[1])))
            elif t.op is Ops.SLICE and t.src[0].op is Ops.MATMUL:
                anchors.append((t.src[0], *t.arg))
        # a GEMM the bias covers whole gains nothing: packed GEMMs first, then by first use
        anchors.sort(key=lambda a: (a[2] - a[1] == int(a[0].shape[1]), rank[a[0]], a[1]))
        for e, (g, c0, c1) in zip(biases, anchors):
            slots[g].append((c0, c1, e, bias_of[e]))
    replace: dict[Node, Node] = {}
    layout = dict(layout)
    for g, blocks in slots.items():
        blocks.sort(key=lambda b: b[0])
        ends = [0] + [b[1] for b in blocks]
        if len(blocks) < 2 or any(b[0] != e for b, e in zip(blocks, ends, strict=False)) or \
                ends[-1] != int(g.shape[1]):
            continue   # the biases must tile G's columns exactly (no holes, no overlaps)
        if len({_is_frozen(b[3], layout, frozen) for b in blocks}) > 1:
            continue   # a packed bias is trained or frozen as a whole
        name = _fresh("__bias", taken)
        packed = Node(Ops.PARAM, blocks[0][3].dtype, (1, int(g.shape[1])), (), name)
        pieces: list[Piece] = []
        for c0, c1, e, p in blocks:
            for pc in layout.pop(p.arg):
                pieces.append(Piece(pc.user, pc.urows, pc.ucols, pc.prows,
                                    (pc.pcols[0] + c0, pc.pcols[1] + c0)))
            replace[e] = apply(Ops.EXPAND, apply(Ops.SLICE, packed, arg=(c0, c1)), arg=e.arg)
        layout[name] = pieces
    if not replace:
        return roots, layout
    return _rewrite(roots, lambda old, new: replace.get(old)), layout


def _is_frozen(p: Node, layout: Layout, frozen: frozenset[str]) -> bool:
    """Whether the (possibly packed or row-split) leaf p holds frozen user parameters only."""
    return bool(frozen) and all(pc.user in frozen for pc in layout[p.arg])


def merge_gemms(cell: Cell, layout: Layout | None = None) -> tuple[Cell, Layout]:
    """The cell with row-split and column-packed weights, and where each user weight lives.
    A leaf of the merged cell is frozen when every user parameter it holds is (packing keeps
    frozen and trained parameters apart, so a leaf is one or the other)."""
    from .simplify import simplify
    layout = identity_layout(cell) if layout is None else layout
    roots = list(cell.roots)
    roots, layout = split_rows(roots, layout)
    roots = simplify(roots)
    roots, layout = pack_columns(roots, layout, cell.frozen)
    roots = simplify(roots)
    roots, layout = pack_biases(roots, layout, cell.frozen)
    roots = simplify(roots)
    k = len(cell.outputs)
    params = tuple(p for p in toposort(roots) if p.op is Ops.PARAM)
    layout = {p.arg: layout[p.arg] for p in params}
    frozen = {p.arg for p in params if _is_frozen(p, layout, cell.frozen)}
    return (Cell(cell.inputs, cell.states, tuple(roots[:k]), tuple(roots[k:]), params,
                 cell.name, cell.output_names, frozen=frozen), layout)
