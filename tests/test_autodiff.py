"""Reverse-mode autodiff over the IR, op by op, against float64 central differences.

Each check is JAX's ``check_vjp``: for a random direction t and cotangent c, ``<J t, c>``
(central differences of the forward) equals ``<t, Jᵀ c>`` (the VJP graph, evaluated)."""

import dataclasses

import numpy as np
import pytest
import sympy

import graphrnn.autodiff as ad
from graphrnn.autodiff import backward_cell, from_sympy, vjp
from graphrnn.errors import GraphError
from graphrnn.interp import evaluate
from graphrnn.ir import B, Cell, Node, apply, call, input_, param, state, toposort
from graphrnn.ops import GroupOp, Ops
from graphrnn.scalar import TABLE, cmpgt, relu, sigmoid, step, where

BATCH = 3
F64 = "float64"


def dims(shape):
    return tuple(BATCH if d == B else int(d) for d in shape)


def cotangent_leaf(n: Node) -> Node:
    if n.shape[0] == B:
        return input_("ct", int(n.shape[1]), F64)
    return param("ct", n.shape, F64)


def check_vjp(root: Node, env: dict, wrt: list, seed=0, tol=1e-7):
    """<J t, c> by central differences == <t, J^T c> from the vjp graph."""
    rng = np.random.default_rng(seed)
    c_leaf = cotangent_leaf(root)
    c = rng.standard_normal(dims(root.shape))
    grads = vjp([root], [c_leaf], wrt)
    assert [g.shape for g in grads] == [w.shape for w in wrt]
    gv = evaluate(grads, {**env, c_leaf: c}, batch=BATCH)
    t = {w: rng.standard_normal(env[w].shape) for w in wrt}

    def f(s):
        shifted = {**env, **{w: env[w] + s * t[w] for w in wrt}}
        return float((evaluate([root], shifted, batch=BATCH)[0] * c).sum())

    eps = 1e-6
    fd = (f(eps) - f(-eps)) / (2 * eps)
    an = sum(float((g * t[w]).sum()) for g, w in zip(gv, wrt, strict=True))
    assert abs(fd - an) <= tol * max(1.0, abs(an)), (fd, an)
    return gv


def leaves(rng, *sizes, positive=False, apart=False):
    out, env = [], {}
    for k, n in enumerate(sizes):
        leaf = input_(f"v{k}", n, F64)
        v = rng.uniform(-2, 2, (BATCH, n))
        v = np.where(np.abs(v) < 0.2, 0.7, v)
        if positive:
            v = np.abs(v) + 0.3
        if apart and k == 1:  # keep b away from a (MAX, CMPGT kinks)
            v = env[out[0]] + np.where(rng.random((BATCH, n)) < 0.5, -1.0, 1.0)
        out.append(leaf)
        env[leaf] = v
    return out, env


# ---- elementwise ops, each through scalar.TABLE ----

@pytest.mark.parametrize("op", sorted(GroupOp.Unary | GroupOp.Binary, key=lambda o: o.name),
                         ids=lambda o: o.name)
def test_elementwise_vjp(op):
    rng = np.random.default_rng(op.value)
    xs, env = leaves(rng, *([4] * TABLE[op].arity), positive=op in (Ops.LOG, Ops.SQRT),
                     apart=True)
    gv = check_vjp(apply(op, *xs), env, xs)
    if op in GroupOp.NonDifferentiable:
        assert all(np.all(g == 0) for g in gv)


def test_where_vjp():
    rng = np.random.default_rng(0)
    (a, b), env = leaves(rng, 4, 4)
    c = input_("cond", 4, F64)
    env[c] = (rng.random((BATCH, 4)) < 0.5).astype(float)
    gv = check_vjp(apply(Ops.WHERE, c, a, b), env, [a, b])
    # and c gets an explicit zero (no gradient through a condition)
    (gc,) = vjp([apply(Ops.WHERE, c, a, b)], [input_("ct", 4, F64)], [c])
    assert gc.op is Ops.CONST and gc.arg == 0.0
    assert np.all((gv[0] == 0) == (env[c] == 0))


def test_softplus_vjp_is_sigmoid_and_finite():
    rng = np.random.default_rng(1)
    (x,), env = leaves(rng, 5)
    y = apply(Ops.SOFTPLUS, x)
    check_vjp(y, env, [x])
    (g,) = vjp([y], [input_("ct", 5, F64)], [x])
    ops = {n.op for n in toposort([g])}
    # g * sigmoid(x), not sympy's exp(x)/(1+exp(x)), which is inf/inf = NaN for x > 710
    assert Ops.SIGMOID in ops and Ops.EXP not in ops


def test_an_op_without_hand_rule_goes_through_sympy_diff(monkeypatch):
    calls = []
    real = ad.sympy_vjp
    monkeypatch.setattr(ad, "sympy_vjp", lambda op: calls.append(op) or real(op))
    monkeypatch.setitem(ad.TABLE, Ops.SOFTPLUS, dataclasses.replace(ad.TABLE[Ops.SOFTPLUS],
                                                                     vjp=None))
    rng = np.random.default_rng(1)
    (x,), env = leaves(rng, 5)
    check_vjp(apply(Ops.SOFTPLUS, x), env, [x])
    assert calls == [Ops.SOFTPLUS]


# ---- contraction and layout ----

@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_matmul_vjp_all_transpose_flags(ta, tb):
    rng = np.random.default_rng(int(ta) * 2 + int(tb))
    M, K, N = 3, 4, 5
    a = param("A", (K, M) if ta else (M, K), F64)
    b = param("Bm", (N, K) if tb else (K, N), F64)
    env = {a: rng.standard_normal(a.shape), b: rng.standard_normal(b.shape)}
    y = apply(Ops.MATMUL, a, b, arg=(ta, tb))
    assert y.shape == (M, N)
    check_vjp(y, env, [a, b])


def test_matmul_with_batch_rows():
    rng = np.random.default_rng(2)
    (x,), env = leaves(rng, 4)
    w = param("W", (6, 4), F64)
    env[w] = rng.standard_normal((6, 4))
    check_vjp(apply(Ops.MATMUL, x, w, arg=(False, True)), env, [x, w])
    # the weight-gradient form: x^T @ g contracts over the batch
    check_vjp(apply(Ops.MATMUL, x, x, arg=(True, False)), env, [x])


def test_slice_concat_expand_vjp():
    rng = np.random.default_rng(3)
    (x, y), env = leaves(rng, 5, 2)
    check_vjp(apply(Ops.SLICE, x, arg=(1, 4)), env, [x])
    check_vjp(apply(Ops.SLICE, x, arg=(0, 5)), env, [x])
    check_vjp(apply(Ops.CONCAT, x, y, x), env, [x, y])
    row = param("row", (1, 5), F64)
    env[row] = rng.standard_normal((1, 5))
    check_vjp(apply(Ops.EXPAND, row, arg=(B, 5)) * x, env, [row, x])
    col = input_("col", 1, F64)
    env[col] = rng.standard_normal((BATCH, 1))
    check_vjp(apply(Ops.EXPAND, col, arg=(B, 2)) * y, env, [col, y])


@pytest.mark.parametrize("kind", ["sum", "max"])
@pytest.mark.parametrize("axis", [0, 1])
def test_reduce_vjp(kind, axis):
    rng = np.random.default_rng(axis)
    (x,), env = leaves(rng, 4)
    env[x] = rng.permutation(np.arange(BATCH * 4, dtype=float)).reshape(BATCH, 4)  # no ties
    r = apply(Ops.REDUCE, x, arg=(kind, axis))
    gv = check_vjp(r, env, [x])
    if kind == "max":  # the cotangent goes only to the argmax
        assert np.count_nonzero(gv[0]) == (BATCH if axis == 1 else 4)


def test_gather_scatter_vjp():
    rng = np.random.default_rng(4)
    table = param("E", (6, 3), F64)
    ids = input_("ids", 1, "int64")
    env = {table: rng.standard_normal((6, 3)), ids: np.array([[1], [4], [1]])}
    check_vjp(apply(Ops.GATHER, table, ids), env, [table])
    vals = input_("vals", 3, F64)
    env[vals] = rng.standard_normal((BATCH, 3))
    check_vjp(apply(Ops.SCATTER, ids, vals, arg=6), env, [vals])
    # ids get no gradient and are skipped
    (g,) = vjp([apply(Ops.GATHER, table, ids)], [input_("ct", 3, F64)], [ids])
    assert g.op is Ops.CONST


# ---- accumulation and structure ----

def test_fan_out_accumulates():
    rng = np.random.default_rng(5)
    (x, y), env = leaves(rng, 3, 3)
    t = call(Ops.TANH, x)
    z = x * x + t * x + t * y - x
    gx, gy = check_vjp(z, env, [x, y])
    xv, yv = env[x], env[y]
    c = np.random.default_rng(0).standard_normal((BATCH, 3))
    th = np.tanh(xv)
    np.testing.assert_allclose(gx, c * (2 * xv + (1 - th ** 2) * (xv + yv) + th - 1), rtol=1e-12)
    np.testing.assert_allclose(gy, c * th, rtol=1e-12)


def test_vjp_of_several_roots_and_missing_cotangents():
    rng = np.random.default_rng(6)
    (x,), env = leaves(rng, 3)
    a, b = call(Ops.EXP, x), x * 2.0
    ca = input_("ca", 3, F64)
    (g,) = vjp([a, b], [ca, None], [x])
    env[ca] = np.ones((BATCH, 3))
    np.testing.assert_allclose(evaluate([g], env)[0], np.exp(env[x]))
    # wrt a leaf the roots do not reach: an explicit zero of its shape
    other = state("other", 2, F64)
    (z,) = vjp([a], [ca], [other])
    assert z.op is Ops.CONST and z.shape == (B, 2)
    # a root listed twice accumulates both cotangents
    (g2,) = vjp([a, a], [ca, ca], [x])
    np.testing.assert_allclose(evaluate([g2], env)[0], 2 * np.exp(env[x]))


def test_no_rule_for_fused_nodes():
    x = input_("fx", 2, F64)
    fake = Node(Ops.FUSED, F64, (), (x,), "kernel")
    with pytest.raises(GraphError, match="autodiff: no rule for FUSED; differentiate before "
                                         "fusing"):
        vjp([fake], [x], [x])


def test_every_op_has_a_rule_or_is_excluded():
    assert set(ad.VJP) | ad.NO_RULE == set(Ops)
    assert not set(ad.VJP) & ad.NO_RULE


@pytest.mark.parametrize("n_cots", [1, 3])
def test_rule_with_the_wrong_number_of_cotangents_raises(monkeypatch, n_cots):
    # zip(n.src, cotangents) would drop b's gradient (1) or ignore the extra one (3) silently
    a, b = input_("a", 2, F64), param("W", (3, 2), F64)
    y = apply(Ops.MATMUL, a, b, arg=(False, True))
    monkeypatch.setitem(ad.VJP, Ops.MATMUL, lambda n, g: [g] * n_cots)
    with pytest.raises(GraphError, match=f"MATMUL rule returned {n_cots} cotangents for 2 "
                                         "sources"):
        vjp([y], [input_("ct", 3, F64)], [a, b])


def test_backward_cell_shapes_and_names():
    x, h = input_("x", 2, F64), state("h", 3, F64)
    w, u = param("W", (3, 2), F64), param("U", (3, 3), F64)
    hn = call(Ops.TANH, apply(Ops.MATMUL, x, w, arg=(False, True))
              + apply(Ops.MATMUL, h, u, arg=(False, True)))
    y = hn * 2.0
    cell = Cell.make([x], [h], [y], [hn], "bw")
    bw = backward_cell(cell)
    assert [n.arg for n in bw.d_outputs] == ["d_y"] and [n.arg for n in bw.d_next] == ["d_h"]
    assert [g.shape for g in bw.d_states] == [(B, 3)]
    assert [g.shape for g in bw.d_inputs] == [(B, 2)]
    assert [g.shape for g in bw.d_params] == [(3, 2), (3, 3)]
    assert bw.roots == bw.d_states + bw.d_inputs + bw.d_params
    # one step of it, against differences
    rng = np.random.default_rng(7)
    env = {x: rng.standard_normal((BATCH, 2)), h: rng.standard_normal((BATCH, 3)),
           w: rng.standard_normal((3, 2)), u: rng.standard_normal((3, 3))}
    dy, dh = rng.standard_normal((BATCH, 3)), rng.standard_normal((BATCH, 3))
    got = evaluate(bw.roots, {**env, bw.d_outputs[0]: dy, bw.d_next[0]: dh})
    for leaf, g in zip([h, x, w, u], got, strict=True):
        t = rng.standard_normal(env[leaf].shape)

        def f(s, leaf=leaf, t=t):
            ys = evaluate([y, hn], {**env, leaf: env[leaf] + s * t})
            return float((ys[0] * dy).sum() + (ys[1] * dh).sum())
        fd = (f(1e-6) - f(-1e-6)) / 2e-6
        assert fd == pytest.approx(float((g * t).sum()), rel=1e-7, abs=1e-9)


# ---- sympy -> IR lowering ----

def test_from_sympy_lowers_and_evaluates():
    a0, a1 = sympy.symbols("a0 a1", real=True)
    rng = np.random.default_rng(8)
    (x, y), env = leaves(rng, 3, 3, positive=True)
    exprs = [a0 ** -2, a0 ** 3, sympy.sqrt(a0), 1 / sympy.sqrt(a0), a0 ** 2 * a1 - 3 * a1,
             sympy.exp(a0) * sympy.log(a1) + sympy.tanh(a0), sigmoid(a0) + relu(a1 - 1),
             step(a0 - 1) + cmpgt(a0, a1) + where(step(a1 - 1), a0, a1),
             sympy.Heaviside(a0 - 1)]
    for e in exprs:
        node = from_sympy(e, {a0: x, a1: y}, x)
        got = evaluate([node], env)[0]
        fn = sympy.lambdify((a0, a1), elementary_np(e), "numpy")
        np.testing.assert_allclose(got, fn(env[x], env[y]) * np.ones_like(got), rtol=1e-12,
                                   err_msg=str(e))
    with pytest.raises(GraphError, match="cannot lower sin"):
        from_sympy(sympy.sin(a0), {a0: x}, x)
    with pytest.raises(GraphError, match="cannot lower"):
        from_sympy(a0 ** sympy.Rational(1, 3), {a0: x}, x)


def elementary_np(e):
    e = e.replace(sigmoid, lambda v: 1 / (1 + sympy.exp(-v)))
    e = e.replace(relu, lambda v: sympy.Max(v, 0))
    e = e.replace(step, lambda v: sympy.Heaviside(v, 0))
    e = e.replace(cmpgt, lambda a, b: sympy.Heaviside(a - b, 0))
    e = e.replace(where, lambda c, a, b: sympy.Piecewise((a, sympy.Ne(c, 0)), (b, True)))
    return e.replace(sympy.Heaviside, lambda v, *h: sympy.Piecewise((1, v > 0), (0, True)))
