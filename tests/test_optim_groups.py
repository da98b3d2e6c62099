"""AdamW, weight decay and parameter groups against torch.optim (when installed) and by hand;
frozen parameters (no gradient, or an excluded group) are left untouched and checkpoint state
round-trips with them."""

from __future__ import annotations

import numpy as np
import pytest

from graphrnn.optim import (
    SGD,
    Adam,
    AdamW,
    StepDecay,
    make_optimizer,
    optimizer_from_json,
)

NAMES = ("w", "b", "emb")


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4),
            "emb": rng.standard_normal((5, 2))}


def _grads(n, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(v.shape) for k, v in _params().items()} for _ in range(n)]


def _torch_run(tcls, groups_of, grads, **kw):
    torch = pytest.importorskip("torch")
    p0 = _params()
    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in p0.items()}
    topt = tcls(groups_of(tp), **kw)
    for g in grads:
        for k, t in tp.items():
            t.grad = torch.tensor(g[k])
        topt.step()
    return {k: t.detach().numpy() for k, t in tp.items()}


@pytest.mark.parametrize("name,hyper", [
    ("adamw", {"weight_decay": 0.1}),
    ("adamw", {}),                                    # torch's default decay 0.01
    ("adam", {"weight_decay": 0.1}),
    ("sgd", {"weight_decay": 0.1, "momentum": 0.9}),
    ("sgd", {"weight_decay": 0.1, "momentum": 0.9, "nesterov": True}),
    ("rmsprop", {"weight_decay": 0.05, "alpha": 0.9}),
    ("adagrad", {"weight_decay": 0.05}),
])
def test_weight_decay_matches_torch(name, hyper):
    torch = pytest.importorskip("torch")
    tcls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
            "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[name]
    grads = _grads(6)
    want = _torch_run(tcls, lambda tp: list(tp.values()), grads, lr=0.05, **hyper)
    opt = make_optimizer(name, 0.05, **hyper)
    p = _params()
    for g in grads:
        opt.step(p, {k: v.copy() for k, v in g.items()})
    for k in NAMES:
        np.testing.assert_allclose(p[k], want[k], rtol=1e-10, atol=1e-12)


def test_adamw_is_decoupled_by_hand():
    # one step from p = 1, g = 0.5: decay first (p *= 1 - lr*wd), then Adam's unit step
    lr, wd = 0.1, 0.5
    p = {"w": np.array([1.0])}
    AdamW(lr, weight_decay=wd).step(p, {"w": np.array([0.5])})
    assert p["w"][0] == pytest.approx(1 * (1 - lr * wd) - lr * 1.0 / (1 + 1e-8))
    # Adam's L2 form differs: g + wd*p goes through the normalisation (a unit step again)
    p = {"w": np.array([1.0])}
    Adam(lr, weight_decay=wd).step(p, {"w": np.array([0.5])})
    assert p["w"][0] == pytest.approx(1 - lr)


def test_groups_match_torch_param_groups():
    torch = pytest.importorskip("torch")
    grads = _grads(5)
    want = _torch_run(torch.optim.AdamW, lambda tp: [
        {"params": [tp["b"]], "weight_decay": 0.0},
        {"params": [tp["emb"]], "lr": 0.01},
        {"params": [tp["w"]]}], grads, lr=0.05, weight_decay=0.2)
    opt = AdamW(0.05, weight_decay=0.2, groups=[{"params": "b", "weight_decay": 0.0},
                                                {"params": ["em*"], "lr": 0.01}])
    p = _params()
    for g in grads:
        opt.step(p, g)
    for k in NAMES:
        np.testing.assert_allclose(p[k], want[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("how", ["missing_grad", "frozen_group", "lr_zero_group"])
def test_frozen_parameters_are_untouched_and_get_no_state(how):
    p = _params()
    before = p["emb"].copy()
    groups = {"frozen_group": [{"params": "emb", "frozen": True}],
              "lr_zero_group": [{"params": "emb", "lr": 0}]}.get(how)
    opt = AdamW(0.05, weight_decay=0.3, groups=groups)
    for g in _grads(3):
        if how == "missing_grad":
            del g["emb"]
        opt.step(p, g)
    np.testing.assert_array_equal(p["emb"], before)
    assert not any(k.endswith("/emb") for k in opt.state_dict())
    assert not np.array_equal(p["w"], _params()["w"])
    assert opt.trainable("emb") == (how == "missing_grad")


def test_group_state_round_trips_through_json_and_arrays():
    groups = [{"params": ["b"], "weight_decay": 0.0}, {"params": "emb", "frozen": True}]
    a = AdamW(0.05, weight_decay=0.1, schedule=StepDecay(2, 1, 0.5), groups=groups)
    pa = _params()
    grads = _grads(6)
    for g in grads[:3]:
        a.step(pa, g)
    meta = a.to_json()
    b = optimizer_from_json(meta)
    assert isinstance(b, AdamW) and b.groups == a.groups and b.weight_decay == 0.1
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()}, meta)
    pb = {k: v.copy() for k, v in pa.items()}
    for g in grads[3:]:
        a.step(pa, g)
        b.step(pb, g)
    for k in NAMES:
        np.testing.assert_array_equal(pa[k], pb[k])
    # AdamW with decay 0 must stay 0 after a round trip (its default is 0.01)
    z = optimizer_from_json(AdamW(0.1, weight_decay=0.0).to_json())
    assert z.weight_decay == 0.0


def test_group_errors_are_clear():
    p = _params()
    with pytest.raises(ValueError, match=r"group 0 \['bias'\] matches no parameter"):
        SGD(0.1, groups=[{"params": "bias"}]).step(p, _grads(1)[0])
    with pytest.raises(ValueError, match="unknown keys.*'wd'"):
        SGD(0.1, groups=[{"params": "b", "wd": 0}])
    with pytest.raises(ValueError, match="lr must be >= 0"):
        SGD(0.1, groups=[{"params": "b", "lr": -1}])
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        AdamW(0.1, weight_decay=-1)
    with pytest.raises(KeyError, match="unknown parameters \\['nope'\\]"):
        SGD(0.1).step(p, {"nope": np.zeros(1)})


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_unfrozen_later_matches_torch_per_parameter_steps(name):
    """emb has no gradient for 3 steps (torch: grad None), then trains: its bias correction
    starts at 1 as torch's per-parameter step does, and decay skips it while frozen."""
    torch = pytest.importorskip("torch")
    tcls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    grads = _grads(7)
    p0 = _params()
    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in p0.items()}
    topt = tcls(list(tp.values()), lr=0.05, weight_decay=0.1)
    opt = make_optimizer(name, 0.05, weight_decay=0.1)
    p = _params()
    for i, g in enumerate(grads):
        gi = {k: v for k, v in g.items() if not (k == "emb" and i < 3)}
        for k, t in tp.items():
            t.grad = torch.tensor(gi[k]) if k in gi else None
        topt.step()
        opt.step(p, gi)
    for k in NAMES:
        np.testing.assert_allclose(p[k], tp[k].detach().numpy(), rtol=1e-10, atol=1e-12)


def test_adam_state_saved_without_step_counts_still_loads():
    """An Adam state from before per-parameter counts (slots m and v only) resumes with the
    optimizer's count, as it was written."""
    a = Adam(0.05)
    pa = {"w": np.ones(3)}
    grads = [np.array([0.5, -1.0, 2.0]) * (i + 1) for i in range(5)]
    for g in grads[:2]:
        a.step(pa, {"w": g})
    old = {k: v for k, v in a.state_dict().items() if not k.startswith("step/")}
    b = optimizer_from_json(a.to_json())
    b.load_state_dict(old, a.to_json())
    pb = {"w": pa["w"].copy()}
    for g in grads[2:]:
        a.step(pa, {"w": g})
        b.step(pb, {"w": g})
    np.testing.assert_array_equal(pa["w"], pb["w"])
