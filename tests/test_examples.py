"""Every example runs end to end with tiny settings."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
QUIET = ["--no-progress", "--backend", "ref"]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_char_rnn(tmp_path, corpus, capsys):
    mod = _load("char_rnn")
    assert mod.main(["--data", str(corpus), "--steps", "3", "--hidden", "8", "--batch", "2",
                     "--seq-len", "8", "--sample-length", "10", "--out", str(tmp_path),
                     *QUIET]) == 0
    out = capsys.readouterr().out
    assert "trained 3 steps" in out and "charrnn_lstm" in out


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_char_rnn_default_data_is_tinyshakespeare(tmp_path, capsys):
    if not (SHARED / "tinyshakespeare" / "input.txt").exists():
        pytest.skip("tinyshakespeare not present")
    mod = _load("char_rnn")
    assert mod.main(["--steps", "1", "--hidden", "8", "--layers", "1", "--batch", "2",
                     "--seq-len", "8", "--sample-length", "5", "--out", str(tmp_path),
                     "--val-batches", "2", *QUIET]) == 0
    assert "input.txt" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_word_lm(tmp_path, capsys):
    words = " ".join(f"w{i % 7}" for i in range(60))
    train = tmp_path / "train.txt"
    train.write_text("\n".join([words] * 10))
    mod = _load("word_lm")
    assert mod.main(["--train", str(train), "--valid", str(train), "--steps", "3",
                     "--hidden", "8", "--batch", "2", "--seq-len", "5", "--dropout", "0.5",
                     "--max-valid-batches", "2", *QUIET]) == 0
    assert "final validation perplexity" in capsys.readouterr().out


def test_learning_to_execute_generator_is_right():
    mod = _load("learning_to_execute")
    rng = np.random.default_rng(0)
    for ops in [(o,) for o in mod.OPS] + [mod.OPS]:
        for _ in range(20):
            prog, target = mod.example(ops, 2, 2, rng)
            # check the generated value with a tiny interpreter of our own statements
            env: dict[str, int] = {}
            for line in prog.splitlines()[:-1]:
                if line.startswith("for x in range("):
                    k = int(line[len("for x in range("):line.index(")")])
                    v, inc = line.split(":")[1].split("+=")
                    env[v] += k * _ev(inc, env)
                else:
                    v, e = line.split("=", 1)
                    env[v] = _ev(e, env)
            assert _ev(prog.splitlines()[-1][len("print("):-1], env) == int(target[:-1])
            assert set(prog + target) <= set(mod.VOCAB.tokens)
    ids, tg, w = mod.encode("print(1+2)", "3.")
    assert mod.VOCAB.decode(tg[w == 1]) == "3."


def _ev(e: str, env: dict[str, int]) -> int:
    """Evaluate the generator's expressions: numbers, variables, (a+b), (a-b), (a*k),
    (a if b<c else d). Recursive descent, no eval."""
    e = e.strip()
    if e.isdigit():
        return int(e)
    if e.isidentifier():
        return env[e]
    assert e[0] == "(" and e[-1] == ")"
    inner, depth = e[1:-1], 0
    for i, ch in enumerate(inner):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and inner[i:i + 4] == " if ":
            a = inner[:i]
            cond, d = inner[i + 4:].split(" else ")
            b, c = cond.split("<")
            return _ev(a, env) if _ev(b, env) < _ev(c, env) else _ev(d, env)
    depth = 0
    for i in range(len(inner) - 1, -1, -1):
        ch = inner[i]
        depth += ch == ")"
        depth -= ch == "("
        if depth == 0 and ch in "+-*" and i > 0:
            a, b = _ev(inner[:i], env), _ev(inner[i + 1:], env)
            return a + b if ch == "+" else a - b if ch == "-" else a * b
    raise AssertionError(f"cannot read {e!r}")


def test_learning_to_execute_curriculum():
    mod = _load("learning_to_execute")
    c = mod.Curriculum("naive", 3, 2)
    assert c.cur == (1, 1)
    c.update(0.5)
    assert c.cur == (1, 1)
    for want in [(2, 1), (3, 1), (1, 2), (2, 2)]:
        c.update(0.95)
        assert c.cur == want
    m = mod.Curriculum("mix", 3, 2)
    rng = np.random.default_rng(0)
    seen = {m.sample(rng) for _ in range(200)}
    assert seen == {(ln, ns) for ln in (1, 2, 3) for ns in (1, 2)}
    assert mod.Curriculum("baseline", 3, 2).sample(rng) == (3, 2)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_learning_to_execute_runs(capsys):
    mod = _load("learning_to_execute")
    assert mod.main(["--steps", "3", "--eval-every", "3", "--hidden", "8", "--layers", "1",
                     "--batch", "4", "--val-size", "8", "--ops", "all", "--nesting", "2",
                     *QUIET]) == 0
    out = capsys.readouterr().out
    assert "final character accuracy" in out and "print(" in out


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_new_cell(corpus, capsys):
    mod = _load("new_cell")
    for cell in ("mut1", "gru"):
        assert mod.main(["--cell", cell, "--data", str(corpus), "--steps", "2", "--hidden",
                         "8", "--batch", "2", "--seq-len", "8", "--val-batches", "2",
                         *QUIET]) == 0
        out = capsys.readouterr().out
        assert f"{cell} (equations)" in out and "lstm (zoo)" in out
    c = mod.equation_cell("mut1", 5)
    assert sorted(c.param_shapes()) == ["W_hh", "W_hr", "W_xr", "W_xz", "b_h", "b_r", "b_z"]


def test_lecture_lstm_gradient_check_passes(capsys):
    mod = _load("lecture_lstm")
    assert mod.main() == 0  # no arguments: it exits non-zero when a gradient check fails
    out = capsys.readouterr().out
    assert "# forward IR" in out and "# backward IR" in out
    # every parameter of the lecture's 8 Linear modules, the inputs and both initial states
    # are checked, each well inside the tolerance
    errs = {m[0]: float(m[1]) for m in re.findall(r"^  (\S+(?: \(all steps\))?)\s+rel err "
                                                   r"(\S+)$", out, re.M)}
    assert {f"Linear_{i}_{p}" for i in range(1, 9) for p in "Wb"} <= set(errs)
    assert {"x (all steps)", "h0", "c0"} <= set(errs)
    assert max(errs.values()) < mod.TOLERANCE
    assert re.search(r"^max relative error \S+ \(tolerance 1e-06\): PASS$", out, re.M)


@pytest.mark.parametrize("args", [[], ["--pool", "last", "--cell", "lstm"]])
def test_classify_learns_well_above_chance(capsys, args):
    mod = _load("classify")
    assert mod.main(["--steps", "100", "--train-size", "512", "--val-size", "256", *args,
                     *QUIET]) == 0
    out = capsys.readouterr().out
    m = re.search(r"validation accuracy (\S+) \(before training (\S+), chance 0.500\)", out)
    assert m, out
    assert float(m[1]) >= 0.9 and float(m[2]) < 0.7, out
    # the generator is right: class 1 exactly when the pattern occurs, lengths in range
    rng = np.random.default_rng(0)
    for label in (0, 1) * 50:
        ids, y = mod.example(rng, "ab", 9, label)
        s = "".join(mod.ALPHABET[i] for i in ids)
        assert y == label and ("ab" in s) == bool(label) and 4 <= len(s) <= 9


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_jax_optax(corpus, capsys):
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    mod = _load("jax_optax")
    assert mod.main(["--data", str(corpus), "--steps", "25", "--hidden", "16", "--batch", "4",
                     "--seq-len", "8", "--val-batches", "2", "--lr", "1e-2", "--no-progress",
                     "--backend", "ref"]) == 0
    out = capsys.readouterr().out
    assert "ln_mgu" in out and "optax.adamw" in out
    before, after = map(float, re.search(r"validation loss (\S+) -> (\S+) nats", out).groups())
    assert after < before   # the jitted optax steps trained the cell
