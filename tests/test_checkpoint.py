"""Checkpoint files: round trip, atomic writes, no pickles, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from graphrnn import checkpoint as ckpt


def test_round_trip_with_rng_state(tmp_path):
    rng = np.random.default_rng(7)
    rng.random(3)
    arrays = {"param/W": np.arange(6.0).reshape(2, 3), "opt/m/W": np.ones((2, 3), np.float32)}
    p = ckpt.save(tmp_path / "a.npz", arrays, {"rng": ckpt.rng_state(rng), "vocab": ["a", "b"]})
    back, meta = ckpt.load(p)
    assert set(back) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
        assert back[k].dtype == arrays[k].dtype
    assert meta["vocab"] == ["a", "b"]
    r2 = ckpt.rng_from_state(meta["rng"])
    np.testing.assert_array_equal(r2.random(5), rng.random(5))
    assert ckpt.group(back, "opt") == {"m/W": back["opt/m/W"]}


def test_write_is_atomic(tmp_path, monkeypatch):
    path = ckpt.save(tmp_path / "c.npz", {"x": np.zeros(2)}, {"step": 1})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(path, {"x": np.ones(2)}, {"step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_refuses_pickles_and_foreign_or_broken_files(tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, __meta__=np.frombuffer(b'{"format": "graphrnn-checkpoint", "version": 1}',
                                          np.uint8), obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ckpt.CheckpointError, match="cannot read checkpoint .*evil.npz"):
        ckpt.load(evil)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(1))
    with pytest.raises(ckpt.CheckpointError, match="not a graphrnn checkpoint"):
        ckpt.load(other)
    good = ckpt.save(tmp_path / "g.npz", {"x": np.zeros(1000)}, {})
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ckpt.CheckpointError, match="cannot read checkpoint"):
        ckpt.load(cut)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load(tmp_path / "missing.npz")
    assert isinstance(ckpt.CheckpointError("x"), ValueError)


def test_mismatched_model_is_reported(tmp_path):
    from graphrnn.model import RNNModel, stack
    from graphrnn.optim import SGD
    from graphrnn.train import TrainConfig, Trainer

    def trainer(hidden):
        m = RNNModel(stack("lstm", 1, 3, hidden), 4, 4, embed_size=3, backend="ref")
        return Trainer(m, m.init_params(0), SGD(0.1), lambda s, r: None, None,
                       TrainConfig(progress=False))
    path = trainer(5).save(tmp_path / "m.npz")
    with pytest.raises(ckpt.CheckpointError, match="does not fit this model"):
        trainer(6).load(path)
