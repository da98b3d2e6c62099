"""Issue 15: real ``graphrnn.nn``/``.equations``/``.trace`` modules, notebook views without
Graphviz, and one spelling and one default per concept across the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter (imports are cached per process); its stdout."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


LOADED = ("import json, sys\n"
          "print(json.dumps(sorted(m for m in sys.modules if m.startswith('frontends'))))")


def test_import_graphrnn_loads_no_frontend() -> None:
    assert json.loads(_fresh("import graphrnn\n" + LOADED)) == []


@pytest.mark.parametrize("door, frontend, name", [
    ("equations", "frontends.equations", "cell_from_equations"),
    ("nn", "frontends.nngraph", "gModule"),
    ("trace", "frontends.trace", None),
])
def test_the_four_import_forms_give_one_module(door: str, frontend: str, name: str | None) -> None:
    forms = [f"import graphrnn.{door}\nm = graphrnn.{door}",
             f"from graphrnn import {door} as m",
             f"import graphrnn\nm = graphrnn.{door}",
             f"import graphrnn.{door} as m"]
    for form in forms:
        code = f"{form}\nimport {frontend} as f\nprint(m is f)"
        assert _fresh(code) == "True", form
    if name is not None:
        assert _fresh(f"from graphrnn.{door} import {name}\n"
                      f"from {frontend} import {name} as f\nprint({name} is f)") == "True"
