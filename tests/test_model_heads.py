"""RNNModel heads: sequence classification and regression (last / mean / max pooling over the
valid steps), per-step heads, batch_first and masks; gradients of the whole model against float64
finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from graphrnn.errors import GraphError, RuntimeInputError
from graphrnn.model import RNNModel, stack
from graphrnn.train import chunked_bptt

V, F, C = 6, 3, 4


def _model(head="classify", pool="last", bidir=False, inp="embedding", cell="lstm",
           batch_first=False, layers=2, n_out=C, dropout=0.0):
    in_size = F
    cells = stack(cell, layers, in_size, 4, bidirectional=bidir, dtype="float64")
    return RNNModel(cells, n_classes=n_out, vocab_size=V if inp != "dense" else None,
                    input=inp, embed_size=F, backend="ref", dtype="float64", head=head,
                    pool=pool, batch_first=batch_first, dropout=dropout)


def _inputs(model, T=5, Bn=3, seed=0):
    rng = np.random.default_rng(seed)
    if model.input == "dense":
        x = rng.standard_normal((T, Bn, F))
    else:
        x = rng.integers(0, V, (T, Bn))
    lengths = np.array([T, 2, 4])[:Bn]
    mask = (np.arange(T)[:, None] < lengths[None, :]).astype(float)
    if model.pool == "step":
        y = rng.integers(0, C, (T, Bn)) if model.head == "classify" \
            else rng.standard_normal((T, Bn, model.n_classes))
    else:
        y = rng.integers(0, C, Bn) if model.head == "classify" \
            else rng.standard_normal((Bn, model.n_classes))
    return x, y, mask


def _check_grads(params, loss_fn, grads, eps=1e-6, tol=1e-6):
    """Directional derivative per parameter: <g, t> vs central differences along t."""
    rng = np.random.default_rng(123)
    assert set(grads) == set(params)
    for name, p in params.items():
        t = rng.standard_normal(p.shape)
        old = p.copy()
        p[...] = old + eps * t
        lp = loss_fn()
        p[...] = old - eps * t
        lm = loss_fn()
        p[...] = old
        fd = (lp - lm) / (2 * eps)
        an = float(np.sum(grads[name] * t))
        assert abs(fd - an) <= tol * max(1.0, abs(fd)), (name, fd, an)


CASES = [
    ("classify", "last", False, "embedding"),
    ("classify", "last", True, "embedding"),
    ("classify", "mean", False, "dense"),
    ("classify", "mean", True, "embedding"),
    ("classify", "max", False, "embedding"),
    ("classify", "max", True, "dense"),
    ("regress", "last", False, "dense"),
    ("regress", "mean", True, "dense"),
    ("regress", "max", False, "embedding"),
    ("regress", "step", False, "dense"),
    ("regress", "step", True, "embedding"),
    ("classify", "step", True, "dense"),
]


@pytest.mark.parametrize("head,pool,bidir,inp", CASES)
@pytest.mark.parametrize("masked", [True, False])
def test_head_gradients_match_finite_differences(head, pool, bidir, inp, masked):
    model = _model(head, pool, bidir, inp)
    params = model.init_params(seed=2, scale=0.5)
    x, y, mask = _inputs(model)
    mask = mask if masked else None
    w = None
    if pool != "step" and masked:  # per-sequence weights on pooled heads
        w = np.array([1.0, 0.5, 2.0])
    r = model.loss_and_grads(params, x, y, mask=mask, weights=w)
    assert np.isfinite(r.loss) and r.loss > 0

    def loss():
        return model.loss_and_grads(params, x, y, mask=mask, weights=w).loss
    _check_grads(params, loss, r.grads)


@pytest.mark.parametrize("pool", ["last", "mean", "max", "step"])
@pytest.mark.parametrize("bidir", [False, True])
def test_pooled_outputs_of_a_padded_batch_equal_each_sequence_alone(pool, bidir):
    model = _model("regress", pool, bidir, "dense", n_out=2)
    params = model.init_params(seed=3, scale=0.5)
    x, _, mask = _inputs(model)
    out, _ = model.predict(params, x, mask=mask)
    lengths = mask.sum(0).astype(int)
    for b, L in enumerate(lengths):
        alone, _ = model.predict(params, x[:L, b:b + 1])
        if pool == "step":
            np.testing.assert_allclose(out[:L, b], alone[:, 0], rtol=1e-12, atol=1e-12)
        else:
            np.testing.assert_allclose(out[b], alone[0], rtol=1e-12, atol=1e-12)


def test_pooling_definitions_by_hand():
    """last / mean / max read the top layer's outputs exactly as documented."""
    x, _, mask = _inputs(_model(inp="dense"))
    tops = {}
    for pool in ("last", "mean", "max"):
        m = _model("regress", pool, True, "dense", layers=1, n_out=2)
        params = m.init_params(seed=4, scale=0.5)
        params["head.W"] = np.eye(8, 2)  # the head reads the first two features...
        params["head.W"][4, 1] = 1.0     # ...and the reverse direction's first in column 1
        params["head.W"][1, 1] = 0.0
        params["head.b"][:] = 0
        out, _, cache = m.forward(params, x, mask=mask)
        tops[pool] = (out, cache["top"])
    out, top = tops["last"]
    L = mask.sum(0).astype(int)
    for b in range(3):
        assert out[b, 0] == pytest.approx(top[L[b] - 1, b, 0])  # forward half at the end
        assert out[b, 1] == pytest.approx(top[0, b, 4])         # reverse half at step 0
    out, top = tops["mean"]
    for b in range(3):
        assert out[b, 0] == pytest.approx(top[:L[b], b, 0].mean())
    out, top = tops["max"]
    for b in range(3):
        assert out[b, 0] == pytest.approx(top[:L[b], b, 0].max())


@pytest.mark.parametrize("pool", ["step", "last", "mean"])
def test_batch_first_equals_time_major(pool):
    tm = _model("classify", pool, True, "embedding")
    bf = _model("classify", pool, True, "embedding", batch_first=True)
    params = tm.init_params(seed=5, scale=0.5)
    x, y, mask = _inputs(tm)
    a = tm.loss_and_grads(params, x, y, mask=mask)
    yb = y.T if pool == "step" else y
    b = bf.loss_and_grads(params, x.T, yb, mask=mask.T)
    assert a.loss == pytest.approx(b.loss, rel=1e-13)
    for k in a.grads:
        np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-12, atol=1e-14)
    want = np.swapaxes(a.logits, 0, 1) if pool == "step" else a.logits
    np.testing.assert_allclose(b.logits, want, rtol=1e-12)


def test_chunked_bptt_batch_first_equals_time_major():
    tm = _model("classify", "step", layers=1)
    bf = _model("classify", "step", layers=1, batch_first=True)
    params = tm.init_params(seed=6, scale=0.5)
    rng = np.random.default_rng(0)
    ids, tg = rng.integers(0, V, (7, 2)), rng.integers(0, C, (7, 2))
    for detach in (True, False):
        a = chunked_bptt(tm, params, ids, tg, 3, detach=detach)
        b = chunked_bptt(bf, params, ids.T, tg.T, 3, detach=detach)
        assert a.loss == pytest.approx(b.loss, rel=1e-13)
        for k in a.grads:
            np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-12, atol=1e-14)


def test_regression_loss_is_torch_mse_mean():
    m = _model("regress", "mean", inp="dense", n_out=2)
    params = m.init_params(seed=7)
    x, y, mask = _inputs(m)
    out, _ = m.predict(params, x, mask=mask)
    r = m.loss_and_grads(params, x, y, mask=mask)
    assert r.loss == pytest.approx(np.mean((out - y) ** 2), rel=1e-12)
    # one output: targets (B,) are accepted as (B, 1)
    m1 = _model("regress", "last", inp="dense", n_out=1)
    p1 = m1.init_params(seed=7)
    out1, _ = m1.predict(p1, x)
    t1 = np.arange(3.0)
    assert m1.loss_and_grads(p1, x, t1).loss == pytest.approx(np.mean((out1[:, 0] - t1) ** 2))


def test_bad_head_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="pool must be one of"):
        _model(pool="first")
    with pytest.raises(ValueError, match="head must be one of"):
        _model(head="ctc")
    m = _model("classify", "last")
    params = m.init_params()
    x, y, mask = _inputs(m)
    holes = mask.copy()
    holes[0, 1] = 0
    with pytest.raises(RuntimeInputError, match="sequence 1 is not 1s followed by 0s"):
        m.loss_and_grads(params, x, y, mask=holes)
    empty = mask.copy()
    empty[:, 2] = 0
    with pytest.raises(RuntimeInputError, match="sequence 2 has no valid step"):
        m.loss_and_grads(params, x, y, mask=empty)
    with pytest.raises(RuntimeInputError, match=r"expected integers of shape \(3,\)"):
        m.loss_and_grads(params, x, np.zeros((5, 3), int), mask=mask)
    with pytest.raises(RuntimeInputError, match=r"weights: expected shape \(3,\)"):
        m.loss_and_grads(params, x, y, mask=mask, weights=mask)
    with pytest.raises(RuntimeInputError, match="regression targets"):
        r = _model("regress", "mean", n_out=2)
        r.loss_and_grads(r.init_params(), x, np.zeros(3), mask=mask)
    with pytest.raises(GraphError, match="max-pooled head reads the whole sequence"):
        _model("classify", "max").step(params, x[0])
    with pytest.raises(ValueError, match="per-step head"):
        chunked_bptt(m, params, x, y, 2)
