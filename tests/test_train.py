"""Training: truncated vs full BPTT, the Trainer, resume bit-identical, divergence guards,
sampling, batching."""

from __future__ import annotations

import numpy as np
import pytest

from graphrnn.data import Batch, StreamBatcher, Vocab, pad_batch
from graphrnn.model import RNNModel, stack
from graphrnn.optim import SGD, Adam, StepDecay
from graphrnn.sample import generate
from graphrnn.train import (
    Progress,
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    chunked_bptt,
    train_step,
)

V = 6


def _model(dtype="float64", dropout=0.0, layers=2, backend="ref"):
    cells = stack("lstm", layers, 3, 5, dtype=dtype)
    return RNNModel(cells, n_classes=V, vocab_size=V, embed_size=3, dropout=dropout,
                    backend=backend, dtype=dtype)


def _seq(T=8, Bn=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (T, Bn)), rng.integers(0, V, (T, Bn))


def test_chunked_bptt_with_carried_cotangent_equals_full_bptt():
    model = _model()
    params = model.init_params(seed=0, scale=0.4)
    ids, tg = _seq()
    full = model.loss_and_grads(params, ids, tg)
    for chunk in (1, 3, 8):
        r = chunked_bptt(model, params, ids, tg, chunk, detach=False)
        assert r.loss == pytest.approx(full.loss, rel=1e-13)
        for k in params:
            np.testing.assert_allclose(r.grads[k], full.grads[k], rtol=1e-10, atol=1e-13,
                                       err_msg=k)


def test_truncated_bptt_forward_equals_full_and_gradient_is_per_chunk():
    """Truncated BPTT (state carried, gradient detached) computes the same losses and final
    state as one long forward; its gradient is the sum of each chunk's gradient taken from
    that chunk's carried initial state, which drops the cross-chunk terms, so it equals full
    BPTT only when one chunk covers the sequence."""
    model = _model()
    params = model.init_params(seed=0, scale=0.4)
    ids, tg = _seq()
    full = model.loss_and_grads(params, ids, tg)
    one = chunked_bptt(model, params, ids, tg, 8, detach=True)
    for k in params:
        np.testing.assert_allclose(one.grads[k], full.grads[k], rtol=1e-12, atol=1e-14)
    tr = chunked_bptt(model, params, ids, tg, 3, detach=True)
    assert tr.loss == pytest.approx(full.loss, rel=1e-13)
    for a, b in zip(tr.state, full.state, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-13)
    # the per-chunk sum, built by hand from the carried states
    state, want = None, {k: np.zeros_like(v) for k, v in params.items()}
    for a in range(0, 8, 3):
        r = model.loss_and_grads(params, ids[a:a + 3], tg[a:a + 3], state,
                                 grad_scale=1.0 / ids.size)
        for k in want:
            want[k] += r.grads[k]
        state = r.state
    for k in params:
        np.testing.assert_allclose(tr.grads[k], want[k], rtol=1e-12, atol=1e-14)
    assert not np.allclose(tr.grads["l0.W_h"], full.grads["l0.W_h"], rtol=1e-6)


def _stream_trainer(tmp_path, dropout=0.3, opt=None, steps=None, backend="ref",
                    dtype="float32"):
    text = "abcde edcba abc de " * 20
    vocab = Vocab.from_text(text)
    sb = StreamBatcher(vocab.encode(text), 3, 7)
    model = _model(dtype, dropout=dropout, backend=backend)
    params = model.init_params(seed=1)
    return Trainer(model, params, opt or Adam(1e-2, schedule=StepDecay(2, 2, 0.5)),
                   lambda s, rng: sb.batch(s), lambda: iter(sb),
                   TrainConfig(steps=steps, clip=5.0, max_norm=1.0, progress=False, seed=3,
                               checkpoint=str(tmp_path / "ck.npz")),
                   meta={"vocab": vocab.to_json()})


def _llvm_or_skip():
    """Skip where the llvm backend cannot compile (no llvmlite); elsewhere it must work."""
    pytest.importorskip("llvmlite")


@pytest.mark.parametrize("backend", ["ref", "llvm"])
@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_resume_is_bit_identical(tmp_path, opt, backend):
    if backend == "llvm":
        _llvm_or_skip()

    def make():
        o = Adam(1e-2, schedule=StepDecay(2, 2, 0.5)) if opt == "adam" else \
            SGD(0.5, momentum=0.9)
        return _stream_trainer(tmp_path, opt=o, backend=backend)
    a = make().run(steps=8)
    b = make().run(steps=4)
    path = b.save(tmp_path / "half.npz")
    c = make().load(path)
    assert c.step == 4 and c.state is not None
    c.run(steps=4)
    assert a.step == c.step == 8
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k], err_msg=k)
    assert [h[1] for h in a.history] == [h[1] for h in c.history]
    assert a.val_history[-1] == c.val_history[-1]


def test_divergence_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    tr = _stream_trainer(tmp_path, dropout=0.0, opt=SGD(0.1))
    tr.config.eval_every = 2
    tr.run(steps=2)
    good = {k: v.copy() for k, v in tr.params.items()}
    ck = tmp_path / "ck.npz"
    assert ck.exists()
    before = ck.read_bytes()
    tr.params["head.b"][0] = np.nan
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step 2; the last good "
                                                    r"checkpoint is .*ck\.npz"):
        tr.run(steps=2)
    assert ck.read_bytes() == before
    assert tr.step == 2
    tr2 = _stream_trainer(tmp_path).load(ck)
    for k in good:
        np.testing.assert_array_equal(tr2.params[k], good[k])


def _huge_lr_trainer(tmp_path, dtype):
    # no clipping: with lr 1e300 the first update overflows float32 parameters to inf and
    # sends float64 ones to ~1e298, whose validation loss explodes (or is inf/nan)
    tr = _stream_trainer(tmp_path, dropout=0.0, opt=SGD(1e300), dtype=dtype)
    tr.config.clip = tr.config.max_norm = None
    tr.config.eval_every = 1
    return tr


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_divergence_without_a_good_checkpoint_writes_none(tmp_path, dtype):
    tr = _huge_lr_trainer(tmp_path, dtype)
    ck = tmp_path / "ck.npz"
    with pytest.raises(TrainingDivergedError,
                       match=r"(parameters became non-finite|validation loss (became|exploded))"
                             r".*; no good checkpoint was written") as e:
        tr.run(steps=3)
    assert "ck.npz" not in str(e.value)
    assert not ck.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_divergence_after_a_good_checkpoint_leaves_it_untouched(tmp_path, dtype):
    tr = _stream_trainer(tmp_path, dropout=0.0, opt=SGD(0.1), dtype=dtype)
    tr.config.clip = tr.config.max_norm = None
    tr.config.eval_every = 2
    tr.run(steps=2)
    ck = tmp_path / "ck.npz"
    before = ck.read_bytes()
    good = {k: v.copy() for k, v in tr.params.items()}
    tr.opt.lr = 1e300
    tr.config.eval_every = 1
    with pytest.raises(TrainingDivergedError,
                       match=r"at step [23]\b.*; the last good checkpoint is .*ck\.npz"):
        tr.run(steps=3)
    assert ck.read_bytes() == before
    back = _stream_trainer(tmp_path, dtype=dtype).load(ck)
    assert back.step == 2
    for k in good:
        assert np.all(np.isfinite(back.params[k])), k
        np.testing.assert_array_equal(back.params[k], good[k], err_msg=k)
    assert all(np.isfinite(v) for _, v in back.val_history)


def test_nonfinite_validation_loss_or_params_are_never_saved(tmp_path):
    tr = _stream_trainer(tmp_path, dropout=0.0, opt=SGD(0.1))
    tr.config.eval_every = 1
    tr.evaluate = lambda: float("nan")  # finite parameters, but a NaN validation loss
    ck = tmp_path / "ck.npz"
    with pytest.raises(TrainingDivergedError, match="validation loss became nan at step 1; no "
                                                    "good checkpoint"):
        tr.run(steps=2)
    assert not ck.exists()
    tr.params["head.b"][0] = np.inf
    with pytest.raises(TrainingDivergedError, match=r"not saving .*x\.npz: parameters "
                                                    r"\['head\.b'\] are not finite"):
        tr.save(tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []


def test_loss_explosion_guard(tmp_path):
    tr = _stream_trainer(tmp_path, dropout=0.0, opt=SGD(0.1))
    tr.config.explode_factor = 1.0
    tr.first_loss = 1e-3
    with pytest.raises(TrainingDivergedError, match="loss exploded at step 0"):
        tr.run(steps=1)


def test_train_step_reduces_loss_and_sampling():
    text = "abab abab abab " * 30
    vocab = Vocab.from_text(text)
    sb = StreamBatcher(vocab.encode(text), 2, 10)
    cells = stack("lstm", 1, 4, 16, dtype="float32")
    model = RNNModel(cells, len(vocab), len(vocab), embed_size=4, backend="ref").train()
    params = model.init_params(seed=0)
    opt = Adam(3e-2)
    state, losses = None, []
    for s in range(40):
        r = train_step(model, params, opt, sb.batch(s), state, np.random.default_rng(s),
                       max_norm=5.0)
        state = r.state
        losses.append(r.loss)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    out = generate(model, params, vocab, 12, prime="ab", argmax=True)
    assert len(out) == 12 and set(out) <= set("ab ")
    s1 = generate(model, params, vocab, 20, prime="a", temperature=1.5, seed=4)
    assert s1 == generate(model, params, vocab, 20, prime="a", temperature=1.5, seed=4)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, params, vocab, 5, temperature=0)


def test_stream_batcher_and_padding():
    ids = np.arange(50)
    sb = StreamBatcher(ids, 2, 4)
    b0, b1 = sb.batch(0), sb.batch(1)
    assert b0.reset and not b1.reset
    np.testing.assert_array_equal(b0.ids[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(b0.targets[:, 1], [26, 27, 28, 29])
    np.testing.assert_array_equal(b1.ids[0], [4, 29])
    assert sb.batch(len(sb)).reset
    pb = pad_batch([np.array([1, 2, 3]), np.array([4])], [np.array([2, 3, 4]), np.array([5])])
    assert pb.ids.shape == (3, 2) and pb.tokens == 4
    np.testing.assert_array_equal(pb.mask[:, 1], [1, 0, 0])


def test_masked_batches_train(tmp_path):
    model = _model("float64", layers=1)
    params = model.init_params(seed=0)
    rng = np.random.default_rng(0)

    def data(step, rng):
        seqs = [rng.integers(0, V, rng.integers(1, 6)) for _ in range(3)]
        return pad_batch(seqs, [np.roll(s, -1) for s in seqs])
    tr = Trainer(model, params, Adam(1e-2), data, None,
                 TrainConfig(steps=3, progress=False, carry_state=False), rng=rng)
    tr.run()
    assert len(tr.history) == 3 and all(np.isfinite(h[1]) for h in tr.history)
    assert isinstance(data(0, rng), Batch)


def test_builtin_progress_bar_writes_loss_and_eta(monkeypatch):
    import builtins
    import io
    real_import = builtins.__import__

    def no_tqdm(name, *a, **k):
        if name == "tqdm":
            raise ImportError("no tqdm")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    buf = io.StringIO()
    p = Progress(total=2, stream=buf)
    p.update(1.25, 100)
    p.update(1.0, 100)
    p.close()
    out = buf.getvalue()
    assert "2/2" in out and "loss 1.0000" in out and "tok/s" in out and "ETA" in out
