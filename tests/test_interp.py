"""The reference interpreter through ``graphrnn.compile(..., "ref")``: forward over sequences,
BPTT gradients w.r.t. params, inputs and initial states against float64 central differences, and
the argument errors of CompiledCell."""

import numpy as np
import pytest

import graphrnn
from frontends import trace as tr
from graphrnn.errors import BackendError, RuntimeInputError
from graphrnn.interp import evaluate
from graphrnn.ir import input_, param


def vanilla(I=3, H=4):
    cb = tr.CellBuilder("rnn", "float32")
    x, h = cb.input("x", I), cb.state("h", H)
    hn = tr.tanh(cb.linear(x, H, "W_x", bias=False) + cb.linear(h, H, "W_h"))
    y = cb.linear(hn, 2, "W_y")
    return cb.build([y, hn], {"h": hn}, output_names=["y", "h_out"])


def lstm(I=3, H=4):
    cb = tr.CellBuilder("lstm")
    x, h, c = cb.input("x", I), cb.state("h", H), cb.state("c", H)
    z = cb.linear(x, 4 * H, "W_x", bias=False) + cb.linear(h, 4 * H, "W_h")
    i, f = tr.sigmoid(z[:, 0:H]), tr.sigmoid(z[:, H:2 * H])
    o, g = tr.sigmoid(z[:, 2 * H:3 * H]), tr.tanh(z[:, 3 * H:])
    c2 = f * c + i * g
    h2 = o * tr.tanh(c2)
    return cb.build([h2], {"h": h2, "c": c2})


def setup(cell, T=5, batch=2, seed=0):
    cc = graphrnn.compile(cell, "ref", dtype="float64")
    rng = np.random.default_rng(seed)
    ps = cc.init_params(seed, scale=0.5)
    xs = [rng.standard_normal((T, batch, int(n.shape[1]))) for n in cc.cell.inputs]
    h0 = [0.5 * rng.standard_normal((batch, int(s.shape[1]))) for s in cc.cell.states]
    return cc, ps, xs, h0, rng


@pytest.mark.parametrize("make", [vanilla, lstm], ids=["vanilla", "lstm"])
def test_bptt_gradients_match_finite_differences(make):
    cc, ps, xs, h0, rng = setup(make())
    ys, hT, res = cc.forward_train(ps, xs, h0)
    cy = [rng.standard_normal(y.shape) for y in ys]
    ch = [rng.standard_normal(h.shape) for h in hT]
    g = cc.backward(ps, res, cy, ch)
    assert set(g.params) == set(ps) and all(g.params[k].shape == ps[k].shape for k in ps)
    assert [a.shape for a in g.inputs] == [x.shape for x in xs]
    assert [a.shape for a in g.states] == [h.shape for h in h0]

    def loss(p, x, h):
        ys, hT = cc.forward(p, x, h)
        return sum(float((a * b).sum()) for a, b in zip(ys + hT, cy + ch, strict=True))

    eps = 1e-6
    # each parameter separately, then inputs and initial states
    for k in ps:
        t = rng.standard_normal(ps[k].shape)
        fd = (loss({**ps, k: ps[k] + eps * t}, xs, h0)
              - loss({**ps, k: ps[k] - eps * t}, xs, h0)) / (2 * eps)
        assert fd == pytest.approx(float((g.params[k] * t).sum()), rel=1e-6, abs=1e-9), k
    tx = [rng.standard_normal(x.shape) for x in xs]
    fd = (loss(ps, [x + eps * t for x, t in zip(xs, tx, strict=True)], h0)
          - loss(ps, [x - eps * t for x, t in zip(xs, tx, strict=True)], h0)) / (2 * eps)
    an = sum(float((a * t).sum()) for a, t in zip(g.inputs, tx, strict=True))
    assert fd == pytest.approx(an, rel=1e-6, abs=1e-9)
    th = [rng.standard_normal(h.shape) for h in h0]
    fd = (loss(ps, xs, [h + eps * t for h, t in zip(h0, th, strict=True)])
          - loss(ps, xs, [h - eps * t for h, t in zip(h0, th, strict=True)])) / (2 * eps)
    an = sum(float((a * t).sum()) for a, t in zip(g.states, th, strict=True))
    assert fd == pytest.approx(an, rel=1e-6, abs=1e-9)


def test_forward_is_the_unrolled_step():
    cc, ps, xs, h0, _ = setup(vanilla(), T=4)
    ys, hT = cc.forward(ps, xs, h0)
    h = h0[0]
    for t in range(4):
        hn = np.tanh(xs[0][t] @ ps["W_x"] + h @ ps["W_h"] + ps["b_h"])
        np.testing.assert_allclose(ys[0][t], hn @ ps["W_y"] + ps["b_y"], rtol=1e-12)
        np.testing.assert_allclose(ys[1][t], hn, rtol=1e-12)
        h = hn
    np.testing.assert_allclose(hT[0], h, rtol=1e-12)
    # step() is one step of forward
    y1, h1 = cc.step(ps, xs[0][0], h0)
    np.testing.assert_allclose(y1[0], ys[0][0])
    np.testing.assert_allclose(h1[0], ys[1][0])


def test_defaults_zero_states_and_none_cotangents():
    cc, ps, xs, _, _ = setup(lstm(), T=3)
    ys, hT = cc.forward(ps, xs[0])  # a bare array is the one input; h0 defaults to zeros
    ys0, _ = cc.forward(ps, xs, [np.zeros((2, 4)), np.zeros((2, 4))])
    np.testing.assert_array_equal(ys[0], ys0[0])
    _, _, res = cc.forward_train(ps, xs)
    g = cc.backward(ps, res, None)
    assert all(np.all(v == 0) for v in g.params.values())
    g2 = cc.backward(ps, res, [np.ones_like(ys[0])], None)
    assert any(np.any(v != 0) for v in g2.params.values())


def test_float32_compiles_and_agrees_with_float64():
    cell = lstm()
    c32 = graphrnn.compile(cell, "ref", dtype="float32")
    c64 = graphrnn.compile(cell, "ref", dtype="float64")
    ps = c64.init_params(1)
    xs = np.random.default_rng(1).standard_normal((3, 2, 3))
    y32, _ = c32.forward(ps, xs)
    y64, _ = c64.forward(ps, xs)
    assert y32[0].dtype == np.float32 and y64[0].dtype == np.float64
    np.testing.assert_allclose(y32[0], y64[0], rtol=1e-4, atol=1e-6)


def test_compiled_cell_argument_errors():
    cc, ps, xs, h0, _ = setup(lstm(), T=3)
    with pytest.raises(RuntimeInputError, match=r"cell lstm takes 1 inputs \['x'\], got 2"):
        cc.forward(ps, [xs[0], xs[0]])
    with pytest.raises(RuntimeInputError, match=r"input 'x': expected \(T, B, 3\), got "
                                                r"\(3, 2, 5\)"):
        cc.forward(ps, np.zeros((3, 2, 5)))
    with pytest.raises(RuntimeInputError, match=r"input 'x': expected \(T, B, 3\), got \(2, 3\)"):
        cc.forward(ps, np.zeros((2, 3)))
    with pytest.raises(RuntimeInputError, match=r"cell lstm has 2 states, got 1"):
        cc.forward(ps, xs, h0[:1])
    with pytest.raises(RuntimeInputError, match=r"state 'c': expected \(2, 4\), got \(3, 4\)"):
        cc.forward(ps, xs, [h0[0], np.zeros((3, 4))])
    with pytest.raises(RuntimeInputError, match=r"missing parameter 'W_h'; expected"):
        cc.forward({k: v for k, v in ps.items() if k != "W_h"}, xs)
    with pytest.raises(RuntimeInputError, match=r"parameter 'W_x': expected shape \(3, 16\), "
                                                r"got \(16, 3\)"):
        cc.forward({**ps, "W_x": ps["W_x"].T}, xs)
    _, _, res = cc.forward_train(ps, xs, h0)
    with pytest.raises(RuntimeInputError, match=r"backward: 1 output cotangents expected, got 2"):
        cc.backward(ps, res, [None, None])
    with pytest.raises(BackendError, match=r"dtype must be one of"):
        graphrnn.compile(lstm(), "ref", dtype="float16")
    with pytest.raises(BackendError, match=r"unknown backend 'nope'"):
        graphrnn.compile(lstm(), "nope")
    with pytest.raises(TypeError, match=r"compile\(\) takes a Cell, got int"):
        graphrnn.compile(3)
    with pytest.raises(ValueError, match=r"unknown init scheme 'gauss'"):
        cc.init_params(scheme="gauss")


def test_inputs_disagreeing_on_time_or_batch():
    cb = tr.CellBuilder("two")
    a, b, h = cb.input("a", 2), cb.input("b", 2), cb.state("h", 2)
    cell = cb.build([h], {"h": tr.tanh(a + b + h)})
    cc = graphrnn.compile(cell, "ref", dtype="float64")
    with pytest.raises(RuntimeInputError, match=r"inputs disagree on \(T, B\)"):
        cc.forward({}, [np.zeros((3, 2, 2)), np.zeros((4, 2, 2))])


def test_init_params_schemes_are_seeded():
    cc = graphrnn.compile(lstm(), "ref", dtype="float64")
    a, b = cc.init_params(seed=3), cc.init_params(seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W_h"], cc.init_params(seed=4)["W_h"])
    assert max(float(np.abs(v).max()) for v in a.values()) <= 0.08
    z = cc.init_params(scheme="zeros", overrides={"b_h": 1.0})
    assert np.all(z["W_x"] == 0) and np.all(z["b_h"] == 1.0)
    o = cc.init_params(scheme="orthogonal")["W_h"]  # (4, 16): four orthogonal 4x4 blocks
    for k in range(4):
        blk = o[:, 4 * k:4 * k + 4]
        np.testing.assert_allclose(blk.T @ blk, np.eye(4), atol=1e-12)


def test_evaluate_errors_name_the_leaf():
    x = input_("ev_x", 3, "float64")
    w = param("ev_W", (3, 2), "float64")
    y = x @ w
    with pytest.raises(RuntimeInputError, match=r"no value given for param 'ev_W'"):
        evaluate([y], {x: np.zeros((2, 3))})
    with pytest.raises(RuntimeInputError, match=r"input 'ev_x': expected shape \(2, 3\)"):
        evaluate([y], {x: np.zeros((2, 4)), w: np.zeros((3, 2))}, batch=2)
