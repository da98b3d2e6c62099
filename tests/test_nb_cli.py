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


# ---- the command line: one spelling and one default per concept ----

def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    from graphrnn.tools.cli import main
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _sub(name: str) -> object:
    from graphrnn.tools.cli import build_parser
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[name]  # type: ignore


TRAIN = ["--steps", "2", "--layers", "1", "--batch", "2", "--seq-len", "8", "--backend", "ref",
         "--eval-every", "1"]


def test_train_spells_sizes_and_samples_as_the_other_commands(corpus: Path,
                                                               tmp_path: Path) -> None:
    p = _sub("train")
    new = p.parse_args(["--hidden-size", "8", "--length", "10"])  # type: ignore[attr-defined]
    old = p.parse_args(["--hidden", "8", "--sample-length", "10"])  # type: ignore[attr-defined]
    assert new.hidden == old.hidden == 8 and new.sample_length == old.sample_length == 10
    assert new.given_options == old.given_options == {"hidden"}   # --resume still sees them
    help_text = p.format_help()  # type: ignore[attr-defined]
    assert "--hidden-size" in help_text and "--length" in help_text
    assert "--hidden " not in help_text and "--sample-length" not in help_text  # hidden aliases


def test_sample_and_train_share_the_temperature_default() -> None:
    assert _sub("train").parse_args([]).temperature == \
        _sub("sample").parse_args(["x.npz"]).temperature  # type: ignore[attr-defined]


@pytest.mark.parametrize("command, args", [
    ("train", []), ("sample", ["x.npz"]), ("explain", ["lstm"]),
])
def test_backend_is_checked_against_the_backends_everywhere(command: str, args: list[str],
                                                            capsys: pytest.CaptureFixture[str],
                                                            corpus: Path) -> None:
    from graphrnn.api import BACKENDS
    help_text = _sub(command).format_help()  # type: ignore[attr-defined]
    assert "{" + ",".join(sorted(BACKENDS)) in help_text
    if command == "train":
        args = ["--data", str(corpus), "--steps", "1"]
    rc, _, err = _cli(capsys, command, *args, "--backend", "fast")
    assert rc == 1 and "unknown backend 'fast'; choose from cuda, llvm, program, ref" in err


@pytest.mark.parametrize("command", ["train", "sample", "explain", "viz", "compile", "bench"])
def test_help_shows_defaults(command: str) -> None:
    help_text = " ".join(_sub(command).format_help().split())  # type: ignore[attr-defined]
    assert "(default: " in help_text
    expected = {"train": "(default: 128)", "sample": "(default: 500)", "explain": "(default: llvm)",
                "viz": "(default: forward)", "compile": "(default: sm_80)",
                "bench": "(default: 32)"}[command]
    assert expected in help_text


def test_list_options_take_spaces_or_commas() -> None:
    from graphrnn.tools.cli_tools import split_list
    assert split_list(["ir", "so"]) == split_list(["ir,so"]) == split_list("ir, so") == ["ir", "so"]
    a = _sub("bench").parse_args(["lstm", "--backends", "ref", "program"])  # type: ignore
    b = _sub("bench").parse_args(["lstm", "--backends", "ref,program"])  # type: ignore
    assert split_list(a.backends) == split_list(b.backends) == ["ref", "program"]


def test_compile_emit_with_commas(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("llvmlite")
    rc, out, err = _cli(capsys, "compile", "rnn_tanh", "--emit", "ir,header", "-o", tmp_path,
                        "--input-size", 3, "--hidden-size", 4)
    assert rc == 0, err
    assert sorted(f.suffix for f in tmp_path.iterdir()) == [".h", ".ll"]


def test_viz_refuses_sweep_without_plan(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    rc, _, err = _cli(capsys, "viz", "gru", "--stage", "forward", "--sweep", "forward", "-o",
                      tmp_path / "f.dot", "--input-size", 3, "--hidden-size", 4)
    assert rc == 1 and "--sweep applies to --stage plan only, not --stage forward" in err
    assert not (tmp_path / "f.dot").exists()
    rc, _, err = _cli(capsys, "viz", "gru", "--stage", "forward", "-o", tmp_path / "f.dot",
                      "--input-size", 3, "--hidden-size", 4)
    assert rc == 0, err


def test_train_with_missing_data_leaves_no_run_folder(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    rc, _, err = _cli(capsys, "train", "--data", tmp_path / "missing.txt", "--out", out, *TRAIN)
    assert rc == 1 and "missing.txt" in err
    assert not out.exists()


def test_train_without_progress_prints_each_evaluation(capsys: pytest.CaptureFixture[str],
                                                       corpus: Path, tmp_path: Path) -> None:
    rc, out, err = _cli(capsys, "train", "--data", corpus, "--out", tmp_path / "run",
                        "--no-progress", "--hidden-size", 8, "--length", 5, *TRAIN)
    assert rc == 0, err
    lines = [ln for ln in out.splitlines() if "validation loss" in ln and ln.startswith("step")]
    assert [ln.split(":")[0] for ln in lines] == ["step 1", "step 2"]
    # printed as training goes, before the summary
    assert out.index("step 1: validation loss") < out.index("trained 2 steps")


def test_bench_does_not_time_the_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first call 50x slower than the others (a JIT, a cold cache) stays out of the timings."""
    import gc
    import time

    from graphrnn.cells import rnn_tanh
    from graphrnn.tools import cli_tools
    calls = {"infer": 0, "train": 0}
    gc_on: list[bool] = []

    def fake_impl(cell: object, backend: str, T: int, B: int, dtype: str) -> tuple:
        def timed(kind: str) -> object:
            def fn() -> None:
                calls[kind] += 1
                gc_on.append(gc.isenabled())
                time.sleep(0.1 if calls[kind] == 1 else 0.002)
            return fn
        return 0.0, timed("infer"), timed("train")

    monkeypatch.setattr(cli_tools, "_graphrnn_impl", fake_impl)
    (row,) = cli_tools.bench_cell(rnn_tanh(2, 3), ["ref"], 3, 2, 3)
    assert calls == {"infer": 4, "train": 4}               # one warm-up and 3 timed
    assert row["infer_ms"] < 50 and row["infer_spread_ms"] < row["infer_ms"] + 50
    assert row["train_ms"] < 50 and row["train_spread_ms"] < 50
    # no collection pauses inside the timed calls, and the collector is back on afterwards
    assert gc_on[2:] == [False] * 6 and gc.isenabled()


def test_resume_conflicts_name_the_spelling_typed(capsys: pytest.CaptureFixture[str],
                                                 corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    rc, _, err = _cli(capsys, "train", "--data", corpus, "--out", run, "--no-progress",
                      "--hidden-size", 8, "--length", 5, *TRAIN)
    assert rc == 0, err
    for flag in ("--hidden-size", "--hidden"):
        rc, _, err = _cli(capsys, "train", "--data", corpus, "--out", tmp_path / "r2",
                          "--resume", run / "checkpoint.npz", "--steps", 1, "--no-progress",
                          flag, 16)
        assert rc == 1 and f"{flag} 16 conflicts with the checkpoint" in err, err
