"""The ``graphrnn`` command line: train, sample, explain, and one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import CORPUS_TEXT

from graphrnn import checkpoint as ckpt
from graphrnn.tools.cli import COMMANDS, build_parser, main

TINY = ["--steps", "3", "--hidden", "8", "--layers", "1", "--batch", "2", "--seq-len", "8",
        "--backend", "ref", "--no-progress", "--sample-length", "10", "--eval-every", "0"]


# a GRU without header lines: input x and state h by the CLI's convention, sized by the layer
GRU_EQ = """r = sigmoid(W_xr @ x + W_hr @ h + b_r)
z = sigmoid(W_xz @ x + W_hz @ h + b_z)
hc = tanh(W_c @ [r * h, x] + b_c)
h_next = (1 - z) * h + z * hc
"""
RAW_GMODULE = """from graphrnn import nn


def make(input_size, hidden_size):
    x, h = nn.Identity()(), nn.Identity()()
    y = nn.Tanh()(nn.CAddTable()([nn.Linear(input_size, hidden_size)(x),
                                   nn.Linear(hidden_size, hidden_size)(h)]))
    return nn.gModule([x, h], [y])


def cell(input_size, hidden_size):
    return make(input_size, hidden_size).to_cell(inputs=[0], states=[1], next_states=[0])
"""


@pytest.fixture()
def cells_dir(tmp_path):
    d = tmp_path / "cells"
    d.mkdir()
    (d / "gru.eq").write_text(GRU_EQ)
    (d / "bad.eq").write_text(GRU_EQ.replace("hc = tanh(", "hc = tanhh("))
    (d / "h8.eq").write_text("state h: 8\n" + GRU_EQ)
    (d / "gm.py").write_text(RAW_GMODULE)
    return d


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
    assert "".join(meta["vocab"]["tokens"]) == "".join(sorted(set(CORPUS_TEXT)))
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


def test_train_equations_file_then_sample_after_the_file_moved(tmp_path, corpus, cells_dir,
                                                               capsys):
    out = tmp_path / "run"
    eq = cells_dir / "gru.eq"
    rc = main(["train", "--data", str(corpus), "--out", str(out), "--cell", str(eq), *TINY,
               "--steps", "2"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    V = len(set(CORPUS_TEXT))
    # the layer's real sizes: the one-hot vocabulary in, --hidden for the state; named after
    # the file
    assert f"model: 1 x gru (input {V}, hidden 8)" in text and "trained 2 steps" in text
    ck = out / "checkpoint.npz"
    arrays, meta = ckpt.load(ck)
    assert meta["options"]["equations"] == {"name": "gru.eq", "text": GRU_EQ}
    assert meta["options"]["cell"] == str(eq.resolve())  # information only
    params = ckpt.group(arrays, "param")
    assert params["l0.W_hr"].shape == (8, 8) and params["l0.W_xr"].shape == (8, V)
    # the checkpoint carries the equations: sampling does not need the file any more
    eq.rename(tmp_path / "elsewhere.eq")
    rc = main(["sample", str(ck), "--length", "20", "--prime", "the ", "--seed", "1"])
    s, err = capsys.readouterr()
    assert rc == 0, err
    assert s.startswith("the ") and len(s.rstrip("\n")) == 24


def test_sample_from_a_checkpoint_without_stored_equations(tmp_path, corpus, cells_dir,
                                                           capsys):
    # checkpoints written before the text was stored hold only the path, and their options'
    # hidden size is whatever --hidden said while the file's header decided the real one
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), "--cell",
                 str(cells_dir / "h8.eq"), *TINY, "--steps", "1"]) == 0
    arrays, meta = ckpt.load(out / "checkpoint.npz")
    del meta["options"]["equations"]
    meta["options"]["hidden"] = 128
    old = ckpt.save(tmp_path / "old.npz", arrays, meta)
    capsys.readouterr()
    assert main(["sample", str(old), "--length", "5", "--prime", "the "]) == 0
    assert capsys.readouterr().out.startswith("the ")
    (cells_dir / "h8.eq").unlink()
    assert main(["sample", str(old), "--length", "5"]) == 1
    err = capsys.readouterr().err
    assert f"needs the file {(cells_dir / 'h8.eq').resolve()}, which is missing" in err


def test_sample_names_the_missing_python_cell_file(tmp_path, corpus, cells_dir, capsys):
    out = tmp_path / "run"
    spec = f"{cells_dir / 'gm.py'}:cell"
    assert main(["train", "--data", str(corpus), "--out", str(out), "--cell", spec, *TINY,
                 "--steps", "1"]) == 0
    capsys.readouterr()
    shutil.move(cells_dir / "gm.py", tmp_path / "gm_moved.py")
    assert main(["sample", str(out / "checkpoint.npz"), "--length", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"needs the file {(cells_dir / 'gm.py').resolve()}, which is missing" in err


@pytest.mark.parametrize("argv,msg", [
    (["train", "--data", "/nonexistent/x.txt", "--steps", "1"], "does not exist"),
    (["train", "--lr", "-1", "--steps", "1", "--data", "{corpus}"], "--lr must be positive"),
    (["train", "--cell", "nosuchcell", "--steps", "1", "--data", "{corpus}",
      "--backend", "ref"], "unknown cell 'nosuchcell'; CELL is nngraph-lstm"),
    (["train", "--cell", "{d}/bad.eq", "--data", "{corpus}", *TINY],
     "bad.eq:3: unknown function 'tanhh'"),
    # a path under a regular file cannot be a directory, even for root
    (["train", "--out", "{corpus}/run", "--data", "{corpus}", *TINY],
     "cannot write to {corpus}/run: Not a directory"),
    (["train", "--cell", "{d}/h8.eq", "--data", "{corpus}", *TINY, "--hidden-size", "16"],
     "h8.eq:1: state h is declared with size 8, but --hidden-size gives 16"),
    (["train", "--cell", "{d}/gm.py:make", "--data", "{corpus}", *TINY],
     "make returned an nngraph gModule, whose every input is a per-step input: return "
     "g.to_cell(inputs=[...], states=[...], next_states=[...])"),
    (["sample", "/nonexistent.npz"], "does not exist"),
    (["sample", "{corpus}"], "text.txt"),
    (["explain", "lstm", "--hidden-size", "0"], "--hidden-size must be positive"),
    (["explain", "nosuchcell"], "unknown cell 'nosuchcell'; CELL is nngraph-lstm"),
    (["explain", "{d}/bad.eq"], "bad.eq:3: unknown function 'tanhh'"),
    (["explain", "lstm", "--backend", "fast"],
     "unknown backend 'fast'; choose from cuda, llvm, program, ref"),
])
def test_errors_are_one_line_without_traceback(argv, msg, corpus, cells_dir, capsys):
    def fill(a: str) -> str:
        return a.replace("{corpus}", str(corpus)).replace("{d}", str(cells_dir))
    assert main([fill(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphrnn: error:") and fill(msg) in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_explain_reports_the_sizes_it_used(cells_dir, capsys):
    assert main(["explain", str(cells_dir / "gru.eq"), "--input-size", "3", "--hidden-size",
                 "5", "--backend", "program"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "cell gru: input 3, hidden 5, float32"


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
    # --debug shows the traceback (the exception propagates), before or after the subcommand
    with pytest.raises(ckpt.CheckpointError):
        main(["--debug", "sample", str(foreign)])
    with pytest.raises(ckpt.CheckpointError):
        main(["sample", str(foreign), "--debug"])
    assert json.dumps(meta["rng"])  # the RNG state is plain JSON


def test_main_job_module_defaults_parse():
    from graphrnn.tools.train_charlm import DEFAULT_CELL
    a = build_parser().parse_args(["train"])
    assert a.cell == DEFAULT_CELL and a.data is None and a.minutes is None


def test_main_job_on_the_stdlib_corpus_with_the_nngraph_lstm(tmp_path, capsys):
    from graphrnn.data import stdlib_corpus
    from graphrnn.tools.train_charlm import main as job
    text = stdlib_corpus(20_000)
    assert text == stdlib_corpus(20_000) and len(text) == 20_000
    assert all(c == "\n" or " " <= c <= "~" for c in text)
    tiny = [a for a in TINY if a not in ("--layers", "1")]
    rc = job(["--max-chars", "20000", "--out", str(tmp_path / "job"), "--layers", "2", *tiny])
    out = capsys.readouterr().out
    assert rc == 0
    assert "standard library" in out and "charrnn_lstm" in out and "def " in out
