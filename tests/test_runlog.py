"""Training logs: JSON lines by default (one line per logged step, flushed as written, kept
when the process dies), TensorBoard events readable by TensorBoard's own EventAccumulator,
and the CLI's --log-dir / --tensorboard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from graphrnn import runlog
from graphrnn.data import Batch
from graphrnn.model import RNNModel, stack
from graphrnn.optim import SGD, StepDecay
from graphrnn.runlog import JsonlLog, read_jsonl
from graphrnn.train import TrainConfig, Trainer, TrainingDivergedError

V = 5
ROOT = Path(__file__).resolve().parents[1]


def _trainer(tmp_path, lr=0.3, **cfg):
    model = RNNModel(stack("gru", 1, 3, 4, dtype="float64"), n_classes=V, vocab_size=V,
                     embed_size=3, backend="ref", dtype="float64")
    rng = np.random.default_rng(0)
    batches = [Batch(rng.integers(0, V, (5, 2)), rng.integers(0, V, (5, 2)), reset=True)
               for _ in range(4)]
    kw = {"progress": False, "log_dir": str(tmp_path / "logs"), "tensorboard": False, **cfg}
    return Trainer(model, model.init_params(seed=1), SGD(lr, schedule=StepDecay(10, 10, 0.5)),
                   batches, val_data=batches[:2], config=TrainConfig(**kw))


def test_jsonl_lines_per_logged_step_with_val_loss_grad_norm_tokens_lr(tmp_path):
    tr = _trainer(tmp_path, log_every=10, eval_every=20).run(steps=25)
    recs = read_jsonl(tmp_path / "logs" / "log.jsonl")
    assert [r["step"] for r in recs] == [10, 20, 25]
    losses = dict(tr.history)
    for r in recs[:2]:
        assert r["loss"] == losses[r["step"]]
        assert r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and r["time"] > 0
    # the lr the step used: step 10 (t = 9 before it) at the base, step 20 halved
    assert recs[0]["lr"] == 0.3 and recs[1]["lr"] == 0.15
    assert "val_loss" not in recs[0]
    assert recs[1]["val_loss"] == tr.val_history[0][1]
    assert recs[2] == {"step": 25, "val_loss": tr.val_history[-1][1], "time": recs[2]["time"]}
    # a second run appends
    tr.run(steps=10)
    assert [r["step"] for r in read_jsonl(tmp_path / "logs" / "log.jsonl")][-2:] == [30, 35]


def test_grad_norm_is_before_clipping(tmp_path):
    tr = _trainer(tmp_path, log_every=1, max_norm=1e-6)
    b = tr.data.source[0]
    r = tr.model.loss_and_grads(tr.params, b.ids, b.targets)
    from graphrnn.optim import global_norm
    want = global_norm(r.grads)
    tr = _trainer(tmp_path / "b", log_every=1, max_norm=1e-6).run(steps=1)
    rec = read_jsonl(tmp_path / "b" / "logs" / "log.jsonl")[0]
    assert rec["grad_norm"] == pytest.approx(want, rel=1e-12) and want > 1e-3


def test_divergence_is_logged_and_nan_is_null(tmp_path):
    tr = _trainer(tmp_path, lr=1e6, log_every=1)
    with pytest.raises(TrainingDivergedError):
        tr.run(steps=20)
    recs = read_jsonl(tmp_path / "logs" / "log.jsonl")
    assert "error" in recs[-1] and recs[-1]["step"] == tr.step
    log = JsonlLog(tmp_path / "n.jsonl")
    log.write({"step": 1, "loss": float("nan")})
    log.close()
    assert json.loads((tmp_path / "n.jsonl").read_text())["loss"] is None


def test_lines_survive_a_killed_process(tmp_path):
    """Each line is flushed as written: SIGKILL at step 17 keeps steps 5, 10 and 15."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from pathlib import Path
        import test_runlog as t
        tr = t._trainer(Path({str(tmp_path)!r}), log_every=5)
        inner = tr.data
        def data(step, rng):
            if step == 17:
                os.kill(os.getpid(), signal.SIGKILL)
            return inner(step, rng)
        tr.data = data
        tr.run(steps=30)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert p.returncode == -9, p.stderr
    recs = read_jsonl(tmp_path / "logs" / "log.jsonl")
    assert [r["step"] for r in recs] == [5, 10, 15]


def test_read_jsonl_skips_a_torn_last_line_only(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert read_jsonl(p) == [{"step": 1}, {"step": 2}]
    p.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match="l.jsonl:2: not a JSON line"):
        read_jsonl(p)


def test_tensorboard_events_are_readable_by_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tr = _trainer(tmp_path, log_every=5, eval_every=10, tensorboard=True).run(steps=20)
    ea = EventAccumulator(str(tmp_path / "logs"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train/loss", "val/loss", "train/grad_norm", "train/tokens_per_s",
            "train/lr"} <= tags
    loss = {e.step: e.value for e in ea.Scalars("train/loss")}
    hist = dict(tr.history)
    assert sorted(loss) == [5, 10, 15, 20]
    for s, v in loss.items():
        assert v == pytest.approx(hist[s], rel=1e-6)
    val = {e.step: e.value for e in ea.Scalars("val/loss")}
    assert val == pytest.approx(dict(tr.val_history), rel=1e-6)
    jl = read_jsonl(tmp_path / "logs" / "log.jsonl")
    assert [r["step"] for r in jl] == [5, 10, 15, 20]


def test_tensorboard_on_without_a_writer_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "tensorboard_available", lambda: None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        _trainer(tmp_path, tensorboard=True).run(steps=1)
    _trainer(tmp_path / "auto", tensorboard=None).run(steps=1)  # auto: JSON lines only
    assert [p.name for p in (tmp_path / "auto" / "logs").iterdir()] == ["log.jsonl"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cli_train_writes_jsonl_and_tensorboard(tmp_path, corpus, capsys):
    from graphrnn.tools.cli import main
    tiny = ["--steps", "4", "--hidden-size", "8", "--layers", "1", "--batch", "2",
            "--seq-len", "8", "--backend", "ref", "--no-progress", "--length", "5",
            "--eval-every", "2", "--log-every", "1", "--optimizer", "adamw",
            "--weight-decay", "0.1"]
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), *tiny,
                 "--tensorboard", "off"]) == 0
    text = capsys.readouterr().out
    recs = read_jsonl(out / "log.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert "val_loss" in recs[1] and "val_loss" in recs[3] and "val_loss" not in recs[0]
    assert f"log: {out / 'log.jsonl'}" in text
    assert not list(out.glob("events.out.tfevents.*"))
    from graphrnn import checkpoint as ckpt
    assert ckpt.load(out / "checkpoint.npz")[1]["optimizer"]["hyper"]["weight_decay"] == 0.1
    if runlog.tensorboard_available():
        logs = tmp_path / "logs"
        assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "r2"), *tiny,
                     "--log-dir", str(logs), "--tensorboard", "on"]) == 0
        assert list(logs.glob("events.out.tfevents.*")) and (logs / "log.jsonl").exists()


def test_cli_tensorboard_on_without_a_writer(tmp_path, corpus, capsys, monkeypatch):
    from graphrnn.tools import train_charlm
    from graphrnn.tools.cli import main
    monkeypatch.setattr(train_charlm, "tensorboard_available", lambda: None)
    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "r"), "--steps", "1",
                 "--tensorboard", "on"]) == 1
    assert "--tensorboard on: no TensorBoard writer is installed" in capsys.readouterr().err
