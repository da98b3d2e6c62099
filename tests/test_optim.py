"""Optimizers against hand-computed steps (and torch.optim when installed), schedules,
clipping, state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphrnn.optim import (
    SGD,
    Adagrad,
    Adam,
    RMSprop,
    StepDecay,
    clip_elementwise,
    clip_global_norm,
    make_optimizer,
    optimizer_from_json,
)


def _run(opt, gs, p0=1.0):
    p = {"w": np.array([p0])}
    out = []
    for g in gs:
        opt.step(p, {"w": np.array([g])})
        out.append(float(p["w"][0]))
    return out


def test_sgd_plain_and_momentum_by_hand():
    assert _run(SGD(0.1), [0.5, -1.0]) == pytest.approx([0.95, 1.05])
    # v1 = 0.5, p = 1 - 0.05; v2 = 0.9*0.5 - 1 = -0.55, p = 0.95 + 0.055
    assert _run(SGD(0.1, momentum=0.9), [0.5, -1.0]) == pytest.approx([0.95, 1.005])
    # nesterov: p -= lr * (g + mu * v)
    assert _run(SGD(0.1, momentum=0.9, nesterov=True), [0.5]) == \
        pytest.approx([1 - 0.1 * (0.5 + 0.9 * 0.5)])


def test_rmsprop_by_hand():
    m1 = 0.1 * 0.25
    p1 = 1 - 0.01 * 0.5 / (math.sqrt(m1) + 1e-8)
    m2 = 0.9 * m1 + 0.1 * 4.0
    p2 = p1 - 0.01 * (-2.0) / (math.sqrt(m2) + 1e-8)
    assert _run(RMSprop(0.01, alpha=0.9, eps=1e-8), [0.5, -2.0]) == pytest.approx([p1, p2])


def test_adagrad_by_hand():
    p1 = 1 - 0.1 * 0.5 / (0.5 + 1e-10)
    p2 = p1 - 0.1 * 1.0 / (math.sqrt(0.25 + 1.0) + 1e-10)
    assert _run(Adagrad(0.1), [0.5, 1.0]) == pytest.approx([p1, p2])


def test_adam_by_hand():
    b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-8
    m = v = 0.0
    p = 1.0
    want = []
    for t, g in enumerate([0.5, -2.0, 0.1], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
        want.append(p)
    assert _run(Adam(lr), [0.5, -2.0, 0.1]) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("name,hyper,tkw", [
    ("sgd", {"momentum": 0.9}, {"momentum": 0.9}),
    ("rmsprop", {"alpha": 0.95, "eps": 1e-8}, {"alpha": 0.95, "eps": 1e-8}),
    ("adagrad", {"eps": 1e-10}, {"eps": 1e-10}),
    ("adam", {}, {}),
])
def test_matches_torch_optim(name, hyper, tkw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    opt = make_optimizer(name, 0.05, **hyper)
    p = {"w": w0.copy()}
    tw = torch.tensor(w0.copy(), requires_grad=True)
    tcls = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
            "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}[name]
    topt = tcls([tw], lr=0.05, **tkw)
    for g in grads:
        opt.step(p, {"w": g.copy()})
        tw.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p["w"], tw.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_step_decay_schedule():
    s = StepDecay(start=4, every=2, gamma=0.5)
    assert [s.factor(t) for t in range(9)] == [1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125]
    opt = SGD(1.0, schedule=s)
    p = {"w": np.zeros(1)}
    for _ in range(5):
        opt.step(p, {"w": np.ones(1)})
    assert p["w"][0] == pytest.approx(-(4 + 0.5))


def test_clipping():
    g = {"a": np.array([3.0, -7.0]), "b": np.array([[0.5]])}
    clip_elementwise(g, 1.0)
    np.testing.assert_array_equal(g["a"], [1.0, -1.0])
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_global_norm(g, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(g["a"], [0.6, 0.0])
    np.testing.assert_allclose(g["b"], [[0.8]])
    g = {"a": np.array([0.3])}
    clip_global_norm(g, 1.0)
    assert g["a"][0] == 0.3


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adagrad", "adam"])
def test_state_round_trip_continues_identically(name):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(4) for _ in range(6)]
    hyper = {"momentum": 0.9} if name == "sgd" else {}
    a = make_optimizer(name, 0.1, StepDecay(2, 1, 0.7), **hyper)
    pa = {"w": np.ones(4)}
    for g in grads[:3]:
        a.step(pa, {"w": g.copy()})
    b = optimizer_from_json(a.to_json())
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()}, a.to_json())
    pb = {"w": pa["w"].copy()}
    for g in grads[3:]:
        a.step(pa, {"w": g.copy()})
        b.step(pb, {"w": g.copy()})
    np.testing.assert_array_equal(pa["w"], pb["w"])


def test_bad_options():
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
        make_optimizer("sgdd", 0.1)
    with pytest.raises(ValueError, match="learning rate must be positive"):
        SGD(0.0)
    # a parameter without a gradient is frozen (left as it is); an unknown gradient is an error
    with pytest.raises(KeyError, match="unknown parameters"):
        SGD(0.1).step({"w": np.zeros(1)}, {"v": np.zeros(1)})
