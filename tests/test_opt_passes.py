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
    ParamPiece,
    Program,
    Ref,
    Sweep,
    identity_kernel,
    validate,
)
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
    assert one(x * 0.0).op is Ops.CONST          # finite semantics (documented)
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
