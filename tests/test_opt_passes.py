"""Each pass on its own: simplify rules, GEMM merging, fusion convexity, validate()."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from frontends.trace import concat, sigmoid, tanh
from graphrnn.errors import BackendError
from graphrnn.fuse import group_nodes, is_convex
from graphrnn.interp import evaluate
from graphrnn.ir import Node, apply, const, input_, param, toposort
from graphrnn.merge import merge_gemms
from graphrnn.ops import Ops
from graphrnn.program import (
    Buffer,
    Gemm,
    Kernel,
    KernelDef,
    ParamPiece,
    Program,
    Ref,
    Sweep,
    identity_kernel,
    validate,
)
from graphrnn.scalar import ScalarProgram
from graphrnn.simplify import simplify

DT = "float64"
x = input_("x", 4, DT)
y = input_("y", 4, DT)


def one(n: Node) -> Node:
    (r,) = simplify([n])
    return r


def test_identities() -> None:
    assert one(x * 1.0) is x and one(1.0 * x) is x
    assert one(x + 0.0) is x and one(x - 0.0) is x and one(x / 1.0) is x
    assert one(apply(Ops.NEG, apply(Ops.NEG, x))) is x
    # x*0 folds only where x is provably finite: inf*0 is NaN, and ref shows it
    assert one(x * 0.0).op is Ops.MUL and one(0.0 * x).op is Ops.MUL
    assert one(apply(Ops.CMPGT, x, y) * 0.0).op is Ops.CONST
    assert one(0.0 * apply(Ops.TANH, apply(Ops.STEP, x))).op is Ops.CONST
    assert one(apply(Ops.SIGMOID, x) * 0.0).op is Ops.MUL      # sigmoid(NaN) is NaN
    assert one(apply(Ops.EXP, x) * 0.0).op is Ops.MUL          # exp overflows
    assert one(apply(Ops.SIGMOID, x + y) * 0.0).op is Ops.MUL  # x + y may be inf - inf
    assert one(0.0 - x).op is Ops.NEG
    assert one(x * -1.0).op is Ops.NEG


def test_constant_folding() -> None:
    n = one(const(2.0, (4, 4), DT) * const(3.0, (4, 4), DT) + 1.0)
    assert n.op is Ops.CONST and n.arg == 7.0


def test_canonical_order_makes_one_node() -> None:
    assert one(x * y) is one(y * x)
    assert one(x + y) is one(y + x)


def test_slice_rules() -> None:
    c = concat([x, y])
    assert one(c[:, 0:4]) is x and one(c[:, 4:8]) is y
    s = one(c[:, 2:6])
    assert s.op is Ops.CONCAT and [p.op for p in s.src] == [Ops.SLICE, Ops.SLICE]
    assert one(concat([x[:, 0:2], x[:, 2:4]])) is x
    assert one(x[:, 0:4]) is x
    assert one(x[:, 1:4][:, 1:2]) is one(x[:, 2:3])
    # slice of an elementwise op: the op of the slices
    e = one(tanh(x)[:, 0:2])
    assert e.op is Ops.TANH and e.src[0].op is Ops.SLICE


def test_sum_of_padded_concats_is_one_concat() -> None:
    z = const(0.0, ("B", 4), DT)
    g = one(concat([x, z]) + concat([z, y]))
    assert g.op is Ops.CONCAT and g.src == (x, y)


def test_reduce_of_slice_reads_one_reduction() -> None:
    a = apply(Ops.REDUCE, x[:, 0:2], arg=("sum", 0))
    b = apply(Ops.REDUCE, x[:, 2:4], arg=("sum", 0))
    ra, rb = simplify([a, b])
    assert ra.src[0] is rb.src[0] and ra.src[0].op is Ops.REDUCE


def test_simplify_preserves_values() -> None:
    W = param("W", (8, 3), DT)
    n = (concat([x * 1.0, apply(Ops.NEG, apply(Ops.NEG, y))]) @ W) + 0.0
    (m,) = simplify([n])
    rng = np.random.default_rng(0)
    env = {x: rng.standard_normal((2, 4)), y: rng.standard_normal((2, 4)),
           W: rng.standard_normal((8, 3))}
    np.testing.assert_allclose(evaluate([m], env)[0], evaluate([n], env)[0])
    assert len(toposort([m])) < len(toposort([n]))


def test_merge_packs_and_splits_rows() -> None:
    from frontends.trace import CellBuilder
    cb = CellBuilder("m", DT)
    xi, h = cb.input("x", 3), cb.state("h", 4)
    A, Bp = cb.param("A", (3, 4)), cb.param("Bp", (3, 4))
    W = cb.param("W", (7, 4))
    h2 = tanh(xi @ A) * sigmoid(xi @ Bp) + concat([h, xi]) @ W
    cell = cb.build([h2], {"h": h2})
    merged, layout = merge_gemms(cell)
    mats = [n for n in toposort(merged.roots) if n.op is Ops.MATMUL]
    # x @ [A | Bp | W_rows_x] and h @ W_rows_h
    assert len(mats) == 2
    pieces = {(pc.user, pc.urows) for ps in layout.values() for pc in ps}
    assert ("W", (0, 4)) in pieces and ("W", (4, 7)) in pieces
    rng = np.random.default_rng(1)
    vals = {"A": rng.standard_normal((3, 4)), "Bp": rng.standard_normal((3, 4)),
            "W": rng.standard_normal((7, 4))}
    env = {xi: rng.standard_normal((2, 3)), h: rng.standard_normal((2, 4))}
    want = evaluate([h2], {**env, A: vals["A"], Bp: vals["Bp"], W: vals["W"]})[0]
    penv = {}
    for p in merged.params:
        arr = np.zeros(tuple(int(d) for d in p.shape))
        for pc in layout[p.arg]:
            arr[pc.prows[0]:pc.prows[1], pc.pcols[0]:pc.pcols[1]] = \
                vals[pc.user][pc.urows[0]:pc.urows[1], pc.ucols[0]:pc.ucols[1]]
        penv[p] = arr
    got = evaluate(list(merged.outputs), {**env, **penv})[0]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_convexity_counter_example() -> None:
    # a = tanh(x); m = a @ W; b = a * m: {a, b} is not convex (a -> m -> b leaves the set)
    W = param("W", (4, 4), DT)
    a = tanh(x)
    m = a @ W
    b = a * m
    order = toposort([b])
    deps = nx.DiGraph()
    for n in order:
        if n.op not in (Ops.INPUT, Ops.PARAM):
            deps.add_node(n)
            for s in n.src:
                if s in deps:
                    deps.add_edge(s, n)
    assert not is_convex([a, b], deps)
    phase = {n: "step" for n in deps.nodes}
    groups = group_nodes([n for n in order if n in deps], phase, deps)
    assert sorted(len(g) for g in groups) == [1, 1]   # a and b stay apart
    assert all(is_convex(g, deps) for g in groups)


def _prog(steps: tuple, extra_buffers: tuple = ()) -> Program:
    bufs = (Buffer("x", "seq", DT, 4), Buffer("s", "seq", DT, 4, extra=1),
            Buffer("W", "param", DT, 4, rows=4), Buffer("tmp", "temp", DT, 4)) + extra_buffers
    pieces = (ParamPiece("W", (0, 4), (0, 4), Ref("W")),)
    return Program("t", DT, bufs, Sweep((), steps, ()), Sweep(reverse=True), (("x", "x"),),
                   (("h", "s"),), (("y", Ref("s", 1)),), pieces, (), (), (), (), ())


def test_validate_accepts_a_simple_recurrence() -> None:
    k = identity_kernel(DT)
    validate(_prog((Gemm(Ref("tmp"), Ref("s", 0), Ref("W")), Kernel(k, (Ref("tmp"),),
                                                                       (Ref("s", 1),)))))


@pytest.mark.parametrize("steps, msg", [
    ((Kernel(identity_kernel(DT), (Ref("tmp"),), (Ref("s", 1),)),), "before it is written"),
    ((Gemm(Ref("tmp"), Ref("s", 0), Ref("W", cols=(0, 5))),), "out of range"),
    ((Gemm(Ref("tmp", cols=(0, 2)), Ref("s", 0), Ref("W")),), "computes"),
    ((Kernel(identity_kernel(DT), (Ref("x", 1),), (Ref("s", 1),)),), "time offset"),
])
def test_validate_rejects(steps: tuple, msg: str) -> None:
    with pytest.raises(BackendError, match=msg):
        validate(_prog(steps))


# ---- bias gradients: adjacent reductions become one ----

def test_concat_of_reductions_is_one_reduction() -> None:
    a, b = tanh(x), sigmoid(y)
    ra, rb = (apply(Ops.REDUCE, v, arg=("sum", 0)) for v in (a, b))
    g = one(concat([ra, rb]))
    assert g.op is Ops.REDUCE and g.src[0].op is Ops.CONCAT and g.src[0].src == (a, b)
    # a reduction of another kind, or of a leaf, stays apart (a leaf would need a copy)
    mx = apply(Ops.REDUCE, b, arg=("max", 0))
    assert one(concat([ra, mx])).op is Ops.CONCAT
    rx = apply(Ops.REDUCE, x, arg=("sum", 0))
    assert one(concat([ra, rx])).op is Ops.CONCAT
    # a run inside a longer concat: only the run merges
    h = one(concat([rx, ra, rb]))
    assert h.op is Ops.CONCAT and len(h.src) == 2 and h.src[1].op is Ops.REDUCE
    rng = np.random.default_rng(0)
    env = {x: rng.standard_normal((3, 4)), y: rng.standard_normal((3, 4))}
    for n in (concat([ra, rb]), concat([rx, ra, rb])):
        np.testing.assert_allclose(evaluate([one(n)], env)[0], evaluate([n], env)[0])


def test_gemm_terms_last_moves_private_gemms_to_the_end() -> None:
    from graphrnn.schedule import gemm_terms_last
    W, U = param("W", (4, 4), DT), param("U", (4, 4), DT)
    g1, g2 = x @ W, y @ U
    e = tanh(x) * y
    root = (g1 + e) + (g2 + x)
    (r,) = gemm_terms_last([root], [0])
    # ((e + x) + g1) + g2, in some order of the non-GEMM terms
    assert r.op is Ops.ADD and r.src[1] is g2
    assert r.src[0].op is Ops.ADD and r.src[0].src[1] is g1
    # a GEMM someone else reads stays where it is (its value is needed on its own)
    (r2, keep) = gemm_terms_last([root, g1], [0])
    assert keep is g1 and r2.src[1] is g2
    rng = np.random.default_rng(1)
    env = {x: rng.standard_normal((2, 4)), y: rng.standard_normal((2, 4)),
           W: rng.standard_normal((4, 4)), U: rng.standard_normal((4, 4))}
    np.testing.assert_allclose(evaluate([r], env)[0], evaluate([root], env)[0])
    # other roots are untouched
    assert gemm_terms_last([root, g1], [1])[0] is root


# ---- validate: d(initial state) is read from its carry after the backward sweep ----

def _bwd_prog(d_states: tuple, post: tuple = ()) -> Program:
    """Forward h' = h W; backward d_h = d_h Wᵀ per step, d(h0) left in the carry."""
    bufs = (Buffer("x", "seq", DT, 4), Buffer("s", "seq", DT, 4, extra=1),
            Buffer("W", "param", DT, 4, rows=4), Buffer("dy", "seq", DT, 4),
            Buffer("dh", "carry", DT, 4), Buffer("tmp", "temp", DT, 4),
            Buffer("out", "seq", DT, 4))
    pieces = (ParamPiece("W", (0, 4), (0, 4), Ref("W")),)
    fwd = Sweep((), (Gemm(Ref("s", 1), Ref("s", 0), Ref("W")),), ())
    add = Kernel(KernelDef("add", ScalarProgram(2, ((Ops.ADD, (0, 1), None),), (2,)), DT,
                           ("full", "full")), (Ref("dy"), Ref("dh")), (Ref("tmp"),))
    bwd = Sweep((), (add, Gemm(Ref("dh"), Ref("tmp"), Ref("W"), trans_b=True)), post,
                reverse=True)
    return Program("t", DT, bufs, fwd, bwd, (("x", "x"),), (("h", "s"),),
                   (("y", Ref("s", 1)),), pieces, (("y", "dy"),), (("h", "dh"),), d_states,
                   (("x", None),), ())


def test_validate_accepts_d_states_reading_the_carry_after_the_loop() -> None:
    validate(_bwd_prog((("h", Ref("dh")),)))
    validate(_bwd_prog((("h", Ref("dh", cols=(0, 4))),)))


@pytest.mark.parametrize("d_states, post, msg", [
    # a step after the loop may not read a carry: it holds one (B, n) value, not T of them
    ((("h", Ref("dh")),), "copy", "carry buffer dh used outside the loop"),
    ((("h", Ref("dh", cols=(0, 2))),), None, "has 2 columns, the state 4"),
    ((("h", Ref("dh", cols=(0, 5))),), None, "out of range"),
    ((("h", Ref("dy")),), None, "d_states must name carry buffers"),
])
def test_validate_rejects_bad_carry_reads(d_states: tuple, post: str | None, msg: str) -> None:
    steps = (Kernel(identity_kernel(DT), (Ref("dh"),), (Ref("out"),)),) if post else ()
    with pytest.raises(BackendError, match=msg):
        validate(_bwd_prog(d_states, steps))


def _pack_values(merged: object, layout: dict, vals: dict) -> dict:
    penv = {}
    for p in merged.params:  # type: ignore[attr-defined]
        arr = np.full(tuple(int(d) for d in p.shape), np.nan)
        for pc in layout[p.arg]:
            arr[pc.prows[0]:pc.prows[1], pc.pcols[0]:pc.pcols[1]] = \
                vals[pc.user][pc.urows[0]:pc.urows[1], pc.ucols[0]:pc.ucols[1]]
        assert not np.isnan(arr).any(), p.arg        # every packed entry has a user value
        penv[p] = arr
    return penv


def test_merge_packs_transposed_weights_and_biases() -> None:
    # the equations' form: W (out, in) on the left, x @ Wᵀ in the IR, one bias per gate
    from frontends.trace import CellBuilder
    cb = CellBuilder("mt", DT)
    xi, h = cb.input("x", 3), cb.state("h", 4)
    A, Bq = cb.param("A", (4, 7)), cb.param("Bq", (4, 7))
    ba, bb = cb.param("ba", (1, 4)), cb.param("bb", (1, 4))
    hx = concat([h, xi])

    def lin(w: Node, b: Node) -> Node:
        return apply(Ops.MATMUL, hx, w, arg=(False, True)) + b
    h2 = tanh(lin(A, ba)) * sigmoid(lin(Bq, bb))
    cell = cb.build([h2], {"h": h2})
    merged, layout = merge_gemms(cell)
    mats = [n for n in toposort(merged.roots) if n.op is Ops.MATMUL]
    assert len(mats) == 2 and all(m.arg == (False, True) for m in mats)   # h @ Pᵀ, x @ Qᵀ
    assert sorted(int(m.src[1].shape[0]) for m in mats) == [8, 8]         # rows stacked
    assert any(n.startswith("__bias") for n in layout)                    # ba | bb packed
    rng = np.random.default_rng(2)
    vals = {n: rng.standard_normal(s) for n, s in
            (("A", (4, 7)), ("Bq", (4, 7)), ("ba", (1, 4)), ("bb", (1, 4)))}
    env = {xi: rng.standard_normal((2, 3)), h: rng.standard_normal((2, 4))}
    want = evaluate([h2], {**env, A: vals["A"], Bq: vals["Bq"], ba: vals["ba"],
                           bb: vals["bb"]})[0]
    got = evaluate(list(merged.outputs), {**env, **_pack_values(merged, layout, vals)})[0]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_biases_that_do_not_tile_a_gemm_stay_apart() -> None:
    # x @ [A | Bq] with a bias on A's block only: packing would leave a hole
    from frontends.trace import CellBuilder
    cb = CellBuilder("hole", DT)
    xi, h = cb.input("x", 3), cb.state("h", 4)
    A, Bq, ba = cb.param("A", (3, 4)), cb.param("Bq", (3, 4)), cb.param("ba", (1, 4))
    h2 = tanh(xi @ A + ba) * sigmoid(xi @ Bq) + h
    merged, layout = merge_gemms(cb.build([h2], {"h": h2}))
    assert not any(n.startswith("__bias") for n in layout) and "ba" in layout
