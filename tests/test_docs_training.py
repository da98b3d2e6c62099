"""docs/training.md's Python examples run as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_docs_training_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    ns: dict[str, object] = {"__name__": "docs"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/training.md python block {i + 1}", "exec"), ns)  # noqa: S102
    out = capsys.readouterr().out
    assert "[[1. 1. 1. 1. 1.]\n [1. 1. 0. 0. 0.]\n [1. 1. 1. 0. 0.]]" in out, out
    assert "over 10 valid tokens" in out
    assert "['head.W', 'head.b', 'l0.W_h']" in out
