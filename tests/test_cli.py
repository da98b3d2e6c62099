"""The ``graphrnn`` command line: train, sample, explain, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphrnn import checkpoint as ckpt
from graphrnn.cli import COMMANDS, build_parser, main

TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 40
TINY = ["--steps", "3", "--hidden", "8", "--layers", "1", "--batch", "2", "--seq-len", "8",
        "--backend", "ref", "--no-progress", "--sample-length", "10", "--eval-every", "0"]


@pytest.fixture()
def corpus(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(TEXT)
    return p


def test_table_of_subcommands():
    names = [c[0] for c in COMMANDS]
    assert names[:3] == ["train", "sample", "explain"]
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"train", "sample", "explain"} <= set(choices)


def test_train_then_sample(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", str(corpus), "--out", str(out), "--cell", "gru",
               "--embed", "4", *TINY])
    text = capsys.readouterr().out
    assert rc == 0
    assert "trained 3 steps" in text and "checkpoint:" in text and "sample" in text
    ck = out / "checkpoint.npz"
    arrays, meta = ckpt.load(ck)
    assert meta["options"]["cell"] == "gru" and meta["step"] == 3
    assert "".join(meta["vocab"]["tokens"]) == "".join(sorted(set(TEXT)))
    assert (out / "loss.png").exists() or "matplotlib" in text
    rc = main(["sample", str(ck), "--length", "30", "--prime", "the ", "--seed", "1"])
    s1 = capsys.readouterr().out
    assert rc == 0 and s1.startswith("the ") and len(s1.rstrip("\n")) >= 4
    main(["sample", str(ck), "--length", "30", "--prime", "the ", "--seed", "1"])
    assert capsys.readouterr().out == s1
    main(["sample", str(ck), "--length", "5", "--argmax"])
    assert len(capsys.readouterr().out) >= 5
    # resume continues the step count from the checkpoint
    rc = main(["train", "--data", str(corpus), "--out", str(out), "--resume", str(ck), *TINY])
    assert rc == 0 and "resumed from" in capsys.readouterr().out
    assert ckpt.load(ck)[1]["step"] == 6


def test_train_cell_from_python_file(tmp_path, corpus, capsys):
    f = tmp_path / "mycell.py"
    f.write_text("from graphrnn.cells import gru\n"
                 "def make(input_size, hidden_size, dtype):\n"
                 "    return gru(input_size, hidden_size, dtype)\n")
    rc = main(["train", "--data", str(corpus), "--out", str(tmp_path / "r"),
               "--cell", f"{f}:make", *TINY])
    assert rc == 0, capsys.readouterr().err


def test_explain_prints_the_cell(capsys):
    assert main(["explain", "lstm", "--input-size", "3", "--hidden-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "lstm" in out and "matmul" in out.lower()


@pytest.mark.parametrize("argv,msg", [
    (["train", "--data", "/nonexistent/x.txt", "--steps", "1"], "does not exist"),
    (["train", "--lr", "-1", "--steps", "1", "--data", "{corpus}"], "--lr must be positive"),
    (["train", "--cell", "nosuchcell", "--steps", "1", "--data", "{corpus}",
      "--backend", "ref"], "unknown cell 'nosuchcell'"),
    (["sample", "/nonexistent.npz"], "does not exist"),
    (["explain", "lstm", "--hidden-size", "0"], "--hidden-size must be positive"),
])
def test_errors_are_one_line_without_traceback(argv, msg, corpus, capsys):
    argv = [a.replace("{corpus}", str(corpus)) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphrnn: error:") and msg in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_mismatched_checkpoint(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), *TINY]) == 0
    ck = out / "checkpoint.npz"
    arrays, meta = ckpt.load(ck)
    meta["options"]["hidden"] = 9
    bad = ckpt.save(tmp_path / "bad.npz", arrays, meta)
    capsys.readouterr()
    assert main(["sample", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.npz" in err and "parameter" in err and "Traceback" not in err
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(2))
    assert main(["sample", str(foreign)]) == 1
    assert "not a graphrnn checkpoint" in capsys.readouterr().err
    # --debug shows the traceback (the exception propagates)
    with pytest.raises(ckpt.CheckpointError):
        main(["--debug", "sample", str(foreign)])
    assert json.dumps(meta["rng"])  # the RNG state is plain JSON


def test_main_job_module_defaults_parse():
    from graphrnn.train_charlm import DEFAULT_CELL
    a = build_parser().parse_args(["train"])
    assert a.cell == DEFAULT_CELL and a.data is None and a.minutes is None


def test_main_job_on_the_stdlib_corpus_with_the_nngraph_lstm(tmp_path, capsys):
    from graphrnn.data import stdlib_corpus
    from graphrnn.train_charlm import main as job
    text = stdlib_corpus(20_000)
    assert text == stdlib_corpus(20_000) and len(text) == 20_000
    assert all(c == "\n" or " " <= c <= "~" for c in text)
    tiny = [a for a in TINY if a not in ("--layers", "1")]
    rc = job(["--max-chars", "20000", "--out", str(tmp_path / "job"), "--layers", "2", *tiny])
    out = capsys.readouterr().out
    assert rc == 0
    assert "standard library" in out and "charrnn_lstm" in out and "def " in out
