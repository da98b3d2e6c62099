"""The elementwise op table: every hand-written VJP equals ``sympy.diff`` of the op's definition,
every numpy implementation equals the definition, and scalar programs run as specified.

A hand-written rule is compared against the derivative of the definition rewritten in elementary
functions (sigmoid -> 1/(1+exp(-x)), relu -> Max(x, 0), ...): differentiating the custom sympy
classes themselves would only replay their own ``fdiff`` and prove nothing."""

import numpy as np
import pytest
import sympy

from graphrnn.ops import GroupOp, Ops
from graphrnn.scalar import (
    TABLE,
    ScalarProgram,
    SympyF,
    cmpgt,
    relu,
    run_scalar_program,
    sigmoid,
    softplus,
    step,
    sympy_vjp,
    where,
)

X = sympy.symbols("a0:3", real=True)
G = sympy.Symbol("g", real=True)
KINKED = {Ops.RELU, Ops.STEP, Ops.MAX, Ops.CMPGT, Ops.WHERE}


def elementary(e):
    """Rewrite graphrnn's primitive sympy functions into plain sympy."""
    e = sympy.sympify(e)
    e = e.replace(sigmoid, lambda x: 1 / (1 + sympy.exp(-x)))
    e = e.replace(softplus, lambda x: sympy.log(1 + sympy.exp(x)))
    e = e.replace(relu, lambda x: sympy.Max(x, 0))
    e = e.replace(step, lambda x: sympy.Heaviside(x, 0))
    e = e.replace(cmpgt, lambda a, b: sympy.Heaviside(a - b, 0))
    e = e.replace(where, lambda c, a, b: sympy.Piecewise((a, sympy.Ne(c, 0)), (b, True)))
    return e


def sample(op, rng, n):
    """Random points in each op's domain, away from kinks (derivatives exist there)."""
    arity = TABLE[op].arity
    pts = rng.uniform(-3, 3, size=(n, arity))
    pts = np.where(np.abs(pts) < 0.1, 0.5, pts)
    if op in (Ops.LOG, Ops.SQRT):
        pts = np.abs(pts)
    if op in (Ops.MAX, Ops.CMPGT):  # keep a and b apart
        pts[:, 1] = np.where(np.abs(pts[:, 0] - pts[:, 1]) < 0.1, pts[:, 0] + 1, pts[:, 1])
    if op is Ops.WHERE:  # condition exactly zero half the time
        pts[:, 0] = np.where(np.arange(n) % 2 == 0, 0.0, pts[:, 0])
    return pts


def value(e, env):
    v = elementary(e).subs(env)
    v = v.replace(sympy.DiracDelta, lambda *a: sympy.Integer(0))  # away from kinks
    return float(v.evalf())


HAND_WRITTEN = [op for op, row in TABLE.items() if row.vjp is not None]


def test_table_covers_every_elementwise_op():
    assert set(TABLE) == set(GroupOp.Elementwise)
    assert all(TABLE[op].arity == (1 if op in GroupOp.Unary else 2 if op in GroupOp.Binary
                                   else 3) for op in TABLE)
    # softplus has a hand rule (sympy.diff of log(1 + exp(x)) is inf/inf for large x)
    assert TABLE[Ops.SOFTPLUS].vjp is not None


@pytest.mark.parametrize("op", HAND_WRITTEN, ids=lambda o: o.name)
def test_hand_written_vjp_equals_sympy_diff(op):
    row = TABLE[op]
    xs = X[:row.arity]
    definition = row.sym(*xs)
    # the rule may reuse the forward output y: substitute y = definition
    rule = row.vjp(SympyF, G, definition, *xs)
    assert len(rule) == row.arity
    truth_def = elementary(definition)
    rng = np.random.default_rng(op.value)
    for i, x in enumerate(xs):
        got = elementary(0 if rule[i] is None else rule[i])
        want = G * sympy.diff(truth_def, x)
        if op not in KINKED:
            assert sympy.simplify(got - want) == 0, (op, i, got, want)
        # and numerically, which also covers the kinked ops (away from their kinks)
        for pt in sample(op, rng, 12):
            env = {**dict(zip(xs, pt, strict=True)), G: 1.7}
            assert value(got, env) == pytest.approx(value(want, env), rel=1e-9, abs=1e-12), \
                (op, i, pt)


def test_the_proof_can_fail():
    # a wrong rule (tanh' = 1 - y) must not simplify to zero
    x = X[0]
    y = sympy.tanh(x)
    assert sympy.simplify(G * (1 - y) - G * sympy.diff(y, x)) != 0
    # and differentiating the elementary form really differs from a wrong sigmoid rule
    s = elementary(sigmoid(x))
    assert sympy.simplify(G * s - G * sympy.diff(s, x)) != 0


def test_sympy_vjp_of_softplus_is_sigmoid():
    (d,) = sympy_vjp(Ops.SOFTPLUS)
    a0 = sympy.Symbol("a0", real=True)
    assert sympy.simplify(elementary(d) - 1 / (1 + sympy.exp(-a0))) == 0
    # and the definition really is log(1 + exp(x)), whose derivative that is
    assert sympy.simplify(sympy.diff(elementary(softplus(a0)), a0) - 1 / (1 + sympy.exp(-a0))) == 0


@pytest.mark.parametrize("op", sorted(TABLE, key=lambda o: o.name), ids=lambda o: o.name)
def test_numpy_matches_definition(op):
    row = TABLE[op]
    xs = X[:row.arity]
    definition = row.sym(*xs)
    pts = sample(op, np.random.default_rng(7), 20)
    got = row.np(*[pts[:, i].copy() for i in range(row.arity)])
    want = [value(definition, dict(zip(xs, p, strict=True))) for p in pts]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-6), ("float64", 1e-14)])
def test_sigmoid_and_softplus_tails(dtype, rtol):
    x = np.array([-50.0, -20.0, 0.0, 20.0, 50.0], dtype=dtype)
    with np.errstate(all="raise"):
        s = TABLE[Ops.SIGMOID].np(x)
        sp = TABLE[Ops.SOFTPLUS].np(x)
    assert s.dtype == np.dtype(dtype) and sp.dtype == np.dtype(dtype)
    exact = [1 / (1 + sympy.exp(-sympy.Integer(int(v)))) for v in x]
    exact_sp = [sympy.log(1 + sympy.exp(sympy.Integer(int(v)))) for v in x]
    # full relative precision in both tails (sigmoid(-50) ~ 2e-22 is not rounded to 0)
    np.testing.assert_allclose(s, [float(e.evalf(30)) for e in exact], rtol=rtol)
    np.testing.assert_allclose(sp, [float(e.evalf(30)) for e in exact_sp], rtol=rtol)
    assert s[0] > 0 and s[-1] == 1.0


def test_step_and_relu_at_zero():
    z = np.array([0.0, -0.0])
    assert list(TABLE[Ops.STEP].np(z)) == [0.0, 0.0]
    assert list(TABLE[Ops.RELU].np(z)) == [0.0, 0.0]
    assert step(sympy.Integer(0)) == 0 and relu(sympy.Integer(-2)) == 0
    assert cmpgt(sympy.Integer(2), sympy.Integer(1)) == 1
    assert where(sympy.Integer(0), X[0], X[1]) == X[1] and where(X[2], X[0], X[0]) == X[0]


# ---- scalar programs ----

def test_run_scalar_program():
    # v0=a, v1=b; v2 = a*b; v3 = 1; v4 = v2 + v3; v5 = sigmoid(v4); v6 = a - b
    prog = ScalarProgram(2, ((Ops.MUL, (0, 1), None), (Ops.CONST, (), 1.0),
                             (Ops.ADD, (2, 3), None), (Ops.SIGMOID, (4,), None),
                             (Ops.SUB, (0, 1), None)), (5, 6, 3))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    out = run_scalar_program(prog, [a, b], np.float64)
    np.testing.assert_allclose(out[0], 1 / (1 + np.exp(-(a * b + 1))), rtol=1e-14)
    np.testing.assert_allclose(out[1], a - b)
    assert out[2].shape == (3, 4) and np.all(out[2] == 1.0)  # a constant output is broadcast
    out32 = run_scalar_program(prog, [a.astype("f4"), b.astype("f4")], np.float32)
    assert all(o.dtype == np.float32 for o in out32)
    text = str(prog)
    assert "v2 = mul v0, v1" in text and "v3 = 1.0" in text and "out v5, v6, v3" in text


def test_scalar_program_validation():
    with pytest.raises(ValueError, match="MATMUL is not a scalar op"):
        ScalarProgram(2, ((Ops.MATMUL, (0, 1), None),), (2,))
    with pytest.raises(ValueError, match="instruction 0 reads an undefined value"):
        ScalarProgram(1, ((Ops.NEG, (1,), None),), (1,))
    with pytest.raises(ValueError, match="output names an undefined value"):
        ScalarProgram(1, ((Ops.NEG, (0,), None),), (2,))
