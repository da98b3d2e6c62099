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


# ---- notebooks: DOT without the graphviz package, text views without ``dot`` ----

class _Printer:
    """IPython's pretty printer, as far as ``_repr_pretty_`` uses it."""

    def __init__(self) -> None:
        self.out = ""

    def text(self, s: str) -> None:
        self.out += s


def _pretty(obj: object) -> str:
    p = _Printer()
    obj._repr_pretty_(p, False)  # type: ignore[attr-defined]
    return p.out


@pytest.fixture
def no_graphviz(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the graphviz package nor the ``dot`` program."""
    import shutil

    from graphrnn import viz
    monkeypatch.setitem(sys.modules, "graphviz", None)   # import graphviz raises ImportError
    monkeypatch.setattr(viz, "graphviz", None)           # as if viz had been imported so
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)


def test_dot_text_needs_no_graphviz_package(no_graphviz: None, tmp_path: Path) -> None:
    from graphrnn import viz
    from graphrnn.cells import lstm
    from graphrnn.pipeline import build_program
    cell = lstm(2, 3)
    src = viz.dot_source(viz.dot(cell))
    assert src.startswith('digraph "cell lstm" {') and src.rstrip().endswith("}")
    assert "->" in src and 'label="x\\ninput' in src
    plan = viz.dot_source(viz.plan_dot(build_program(cell)))
    assert "subgraph cluster_forward {" in plan
    out = viz.render(viz.dot(cell), tmp_path / "c.dot")
    assert out.read_text() == src
    with pytest.raises(viz.DotNotFoundError, match="apt-get install graphviz"):
        viz.render(viz.dot(cell), tmp_path / "c.svg")
    assert (tmp_path / "c.dot").exists() and viz.svg(viz.dot(cell)) is None


def test_plain_dot_is_what_dot_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback's text renders with the real ``dot`` (where installed)."""
    import shutil

    from graphrnn import viz
    from graphrnn.cells import gru
    if shutil.which("dot") is None:
        pytest.skip("no dot program")
    g = viz.PlainDigraph("g")
    g.attr(label='a "quoted" title')
    with g.subgraph(name="cluster_x") as sg:
        sg.node("n0", label="x\\ny")
    g.edge("n0", "n1", label="")
    r = subprocess.run(["dot", "-Tsvg"], input=g.source, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    monkeypatch.setattr(viz, "graphviz", None)   # render through the dot program directly
    assert (viz.svg(viz.dot(gru(2, 3))) or "").lstrip().startswith("<?xml")


def test_notebook_views_without_dot_are_text(no_graphviz: None) -> None:
    import graphrnn
    from graphrnn.cells import lstm
    from graphrnn.pipeline import build_program
    cell = lstm(2, 3)
    prog = build_program(cell)
    cc = graphrnn.compile(cell, backend="ref")
    assert cell._repr_svg_() is None and prog._repr_svg_() is None  # type: ignore[attr-defined]
    assert cc._repr_svg_() is None  # type: ignore[attr-defined]
    assert _pretty(cell) == str(cell) and _pretty(prog) == str(prog)
    assert _pretty(cc).startswith("ref float32 cell 'lstm'\n") and "Cell(" not in _pretty(cc)


def test_gmodule_notebook_views(no_graphviz: None) -> None:
    from graphrnn import nn
    x = nn.Identity()()
    h = nn.Identity()()
    y = nn.Tanh()(nn.CAddTable()([nn.Linear(2, 3)(x), nn.Linear(3, 3)(h)]))
    g = nn.gModule([x, h], [y])
    assert g._repr_svg_() is None
    text = _pretty(g)
    assert text.startswith("nn.gModule(2 inputs") and "tanh" in text


def test_notebook_svgs_with_dot() -> None:
    import shutil

    import graphrnn
    from graphrnn.cells import lstm
    if shutil.which("dot") is None:
        pytest.skip("no dot program")
    cc = graphrnn.compile(lstm(2, 3), backend="ref")
    svg = cc._repr_svg_()  # type: ignore[attr-defined]
    assert svg is not None and "<svg" in svg
