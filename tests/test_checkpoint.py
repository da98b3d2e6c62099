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


NOT_CKPT = r"is not a graphrnn checkpoint \(\.npz with JSON metadata\): "


def _refused(path, reason):
    """load(path) raises the one foreign-file error with ``reason``, and never advises
    allow_pickle (numpy's own message does, for pickles and for text files)."""
    with pytest.raises(ckpt.CheckpointError, match=NOT_CKPT + reason) as e:
        ckpt.load(path)
    assert str(path) in str(e.value)
    assert "allow_pickle" not in str(e.value) and "pickle.load" not in str(e.value)


def test_refuses_pickles_and_foreign_or_broken_files(tmp_path):
    import pickle
    evil = tmp_path / "evil.npz"
    np.savez(evil, __meta__=np.frombuffer(b'{"format": "graphrnn-checkpoint", "version": 1}',
                                          np.uint8), obj=np.array([{"a": 1}], dtype=object))
    _refused(evil, "it holds Python object arrays")
    pkl = tmp_path / "model.npz"
    pkl.write_bytes(pickle.dumps({"param/W": np.zeros(3)}))
    _refused(pkl, "it is a Python pickle")
    txt = tmp_path / "notes.txt"
    txt.write_text("step 100: loss 1.23\n")
    _refused(txt, "it is a text file")
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros(3))
    _refused(npy, r"it is a single \.npy array")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _refused(empty, "the file is empty")
    _refused(tmp_path, "it is a directory")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(1))
    _refused(other, "it has no __meta__ entry")
    notjson = tmp_path / "notjson.npz"
    np.savez(notjson, __meta__=np.frombuffer(b"{oops", np.uint8))
    _refused(notjson, "its __meta__ entry is not UTF-8 JSON")
    fmt = tmp_path / "fmt.npz"
    np.savez(fmt, __meta__=np.frombuffer(b'{"format": "other"}', np.uint8))
    _refused(fmt, "its metadata names the format 'other'")
    good = ckpt.save(tmp_path / "g.npz", {"x": np.zeros(1000)}, {})
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:200])
    _refused(cut, "it is a truncated or corrupt zip archive")
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
