"""The README's Python examples run as written (with training shortened), in order, in one
namespace: a broken example in the README is a failing test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# the training example's sizes, shrunk so the test takes seconds
SHRINK = {"stdlib_corpus(200_000)": "stdlib_corpus(20_000)", "steps=500": "steps=3",
          "eval_every=100": "eval_every=2", "range(10)": "range(2)", "progress=True": ""}


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_examples() -> None:
    assert len(blocks()) >= 4


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    ns: dict[str, object] = {"__name__": "readme"}
    for i, code in enumerate(blocks()):
        for a, b in SHRINK.items():
            code = code.replace(a, b)
        exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)  # noqa: S102
    out = capsys.readouterr().out
    assert "'W_c'" in out or "W_c" in out, out[-2000:]   # the GRU's gradients were listed
    assert (tmp_path / "lm.npz").exists()                 # the training example checkpointed
