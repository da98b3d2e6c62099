"""The Trainer's iterator data path (lists, generators, PyTorch DataLoaders; (x, y),
(x, y, lengths), dicts; tensors or numpy) and frozen parameters end to end (untouched, out of
clipping, through a checkpoint and a resume)."""

from __future__ import annotations

import numpy as np
import pytest

from graphrnn.data import Batch, DataError, IterableData, lengths_mask, to_batch
from graphrnn.model import RNNModel, stack
from graphrnn.optim import SGD, AdamW
from graphrnn.train import TrainConfig, Trainer, train_step

V, C = 5, 3


def _model(batch_first=True, pool="last"):
    return RNNModel(stack("gru", 1, 3, 4, dtype="float64"), n_classes=C, vocab_size=V,
                    embed_size=3, backend="ref", dtype="float64", pool=pool,
                    batch_first=batch_first)


def _items(n=3, B=4, T=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        L = rng.integers(1, T + 1, B)
        x = rng.integers(0, V, (B, T))
        out.append((x, rng.integers(0, C, B), L))
    return out


def _cfg(**kw):
    return TrainConfig(progress=False, **kw)


def test_lengths_mask_and_to_batch_forms():
    np.testing.assert_array_equal(lengths_mask([2, 3], 3), [[1, 1], [1, 1], [0, 1]])
    np.testing.assert_array_equal(lengths_mask([2, 3], 3, batch_first=True),
                                  [[1, 1, 0], [1, 1, 1]])
    x, y, L = _items(1)[0]
    b = to_batch((x, y, L), batch_first=True)
    assert b.reset and b.ids is not None and b.mask.shape == x.shape
    np.testing.assert_array_equal(b.mask.sum(1), L)
    assert b.tokens == L.sum()
    d = to_batch({"x": x, "y": y, "lengths": L}, batch_first=True)
    np.testing.assert_array_equal(d.mask, b.mask)
    assert to_batch((x, y)).mask is None
    same = Batch(x, y)
    assert to_batch(same) is same
    with pytest.raises(DataError, match=r"lengths must be integers in \[1, 6\]"):
        to_batch((x, y, L + 6), batch_first=True)
    with pytest.raises(DataError, match="a batch must be a Batch, \\(x, y\\).*tuple of 4"):
        to_batch((x, y, L, L))
    with pytest.raises(DataError, match="needs keys x and y"):
        to_batch({"x": x, "target": y})
    with pytest.raises(DataError, match="batch x: cannot read list as an array"):
        to_batch(([[1, 2], [3]], y))


def test_iterable_data_cycles_epochs_and_one_shot_iterators_end():
    items = _items(3)
    data = IterableData(items, batch_first=True)
    seen = [data(k, None).ids for k in range(7)]
    for k, ids in enumerate(seen):
        np.testing.assert_array_equal(ids, items[k % 3][0])
    assert data.epoch == 2
    gen = IterableData((i for i in items), batch_first=True)
    for _ in range(3):
        gen()
    with pytest.raises(StopIteration):
        gen()
    with pytest.raises(DataError, match="no batch"):
        IterableData([])()


def _manual(model, params, opt, items, steps):
    for k in range(steps):
        train_step(model, params, opt, to_batch(items[k % len(items)], model.batch_first))


def test_trainer_on_a_list_equals_train_step_on_the_same_batches():
    model = _model()
    items = _items(3)
    p0 = model.init_params(seed=1, scale=0.3)
    t = Trainer(model, {k: v.copy() for k, v in p0.items()}, SGD(0.5), items, config=_cfg(),
                val_data=items[:1]).run(steps=7)
    want = {k: v.copy() for k, v in p0.items()}
    _manual(model, want, SGD(0.5), items, 7)
    for k in want:
        np.testing.assert_allclose(t.params[k], want[k], rtol=1e-13, atol=1e-15, err_msg=k)
    assert t.step == 7 and len(t.val_history) == 1 and np.isfinite(t.val_history[0][1])


def test_a_generator_that_runs_out_ends_the_run():
    model = _model()
    t = Trainer(model, model.init_params(), SGD(0.1), (i for i in _items(3)),
                config=_cfg()).run(steps=10)
    assert t.step == 3


def test_torch_dataloader_tensors_feed_the_trainer():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset
    items = _items(3)
    x = np.concatenate([i[0] for i in items])
    y = np.concatenate([i[1] for i in items])
    L = np.concatenate([i[2] for i in items])
    ds = TensorDataset(torch.tensor(x), torch.tensor(y), torch.tensor(L))
    loader = DataLoader(ds, batch_size=4, shuffle=False)
    model = _model()
    p0 = model.init_params(seed=2, scale=0.3)
    t = Trainer(model, {k: v.copy() for k, v in p0.items()}, AdamW(0.01), loader,
                val_data=loader, config=_cfg()).run(steps=5)
    want = {k: v.copy() for k, v in p0.items()}
    _manual(model, want, AdamW(0.01), items, 5)
    for k in want:
        np.testing.assert_allclose(t.params[k], want[k], rtol=1e-13, atol=1e-15, err_msg=k)
    assert t.val_history and np.isfinite(t.val_history[-1][1])


def test_frozen_group_untouched_out_of_clipping_and_through_resume(tmp_path):
    model = _model(batch_first=False, pool="step")
    rng = np.random.default_rng(0)
    batches = [Batch(rng.integers(0, V, (6, 2)), rng.integers(0, C, (6, 2)), reset=True)
               for _ in range(4)]

    def make():
        params = model.init_params(seed=3, scale=0.3)
        opt = AdamW(0.05, weight_decay=0.1, groups=[{"params": "embed", "frozen": True},
                                                    {"params": ["*.b*", "head.b"],
                                                     "weight_decay": 0.0}])
        return Trainer(model, params, opt, batches,
                       config=_cfg(max_norm=0.5, checkpoint=str(tmp_path / "c.npz")))
    embed0 = make().params["embed"].copy()
    a = make().run(steps=6)
    np.testing.assert_array_equal(a.params["embed"], embed0)
    b = make().run(steps=3)
    b.save()
    c = make().load(tmp_path / "c.npz")
    assert c.opt.groups == a.opt.groups
    c.run(steps=3)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k], err_msg=k)
    # the frozen embedding's (large) gradient takes no part in the global-norm clipping
    params = model.init_params(seed=3, scale=0.3)
    r = model.loss_and_grads(params, batches[0].ids, batches[0].targets)
    scaled = {k: g.copy() for k, g in r.grads.items() if k != "embed"}
    from graphrnn.optim import clip_global_norm
    assert clip_global_norm(scaled, 1e-3) > 1e-3  # clipping is active
    opt = AdamW(0.05, groups=[{"params": "embed", "frozen": True}])
    want = {k: v.copy() for k, v in params.items()}
    opt.step(want, scaled)
    t = Trainer(model, params, AdamW(0.05, groups=[{"params": "embed", "frozen": True}]),
                batches, config=_cfg(max_norm=1e-3)).run(steps=1)
    for k in want:
        np.testing.assert_allclose(t.params[k], want[k], rtol=1e-13, atol=1e-15, err_msg=k)


def test_a_parameter_the_model_gives_no_gradient_is_frozen_end_to_end(tmp_path, monkeypatch):
    """A cell parameter declared frozen has no gradient: training, weight decay, clipping,
    checkpoints and a resume all leave it as it was (no KeyError anywhere)."""
    model = _model(batch_first=False, pool="step")
    real = model.loss_and_grads

    def no_grad_for_w_g(*a, **k):
        r = real(*a, **k)
        del r.grads["l0.W_g"]
        return r
    monkeypatch.setattr(model, "loss_and_grads", no_grad_for_w_g)
    rng = np.random.default_rng(1)
    batches = [Batch(rng.integers(0, V, (6, 2)), rng.integers(0, C, (6, 2)), reset=True)
               for _ in range(3)]

    def make():
        return Trainer(model, model.init_params(seed=4, scale=0.3), AdamW(0.05), batches,
                       config=_cfg(max_norm=0.1, checkpoint=str(tmp_path / "c.npz")))
    w0 = make().params["l0.W_g"].copy()
    a = make().run(steps=4)
    np.testing.assert_array_equal(a.params["l0.W_g"], w0)
    make().run(steps=2)
    c = make().load(tmp_path / "c.npz").run(steps=2)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k], err_msg=k)
    # chunked_bptt passes on only the gradients the model gives
    from graphrnn.train import chunked_bptt
    ids, tg = rng.integers(0, V, (6, 2)), rng.integers(0, C, (6, 2))
    g = chunked_bptt(model, a.params, ids, tg, 4).grads
    assert "l0.W_g" not in g and "l0.W_c" in g
