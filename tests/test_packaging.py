"""The three packages install as ours, and graphrnn keeps its import-time promises."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd="/", check=True)
    return out.stdout.strip()


def test_codegen_is_ours_not_pypis():
    # PyPI has an unrelated package named ``codegen``; after install ours must win
    path = _run("import codegen; print(codegen.__file__)")
    assert Path(path).resolve().parent == ROOT / "codegen"
    assert _run("import codegen; print(codegen.GRAPHRNN_CODEGEN)") == "True"


def test_frontends_and_graphrnn_resolve_to_this_checkout():
    for pkg in ("graphrnn", "frontends"):
        path = _run(f"import {pkg}; print({pkg}.__file__)")
        assert Path(path).resolve().parent == ROOT / pkg


def test_graphrnn_imports_no_backend_or_frontend_eagerly():
    loaded = _run("import sys, graphrnn; print(sorted(m for m in sys.modules "
                  "if m.split('.')[0] in ('codegen', 'frontends', 'cupy', 'llvmlite', 'torch')))")
    assert loaded == "[]"


def test_nn_is_reachable_lazily():
    assert _run("import graphrnn; from graphrnn import nn; print(nn.__name__)") \
        == "frontends.nngraph"
