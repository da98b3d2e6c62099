"""The viz, compile and bench commands end to end on tiny sizes, their bad-input paths, and
resolve_cell (the CELL argument shared with the training commands)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphrnn import cli
from graphrnn.ir import Cell
from graphrnn.tools.cli_tools import CellSpecError, bench_with_bench_cpu, format_table, resolve_cell

pytest.importorskip("graphviz")

HAS_DOT = shutil.which("dot") is not None
GRU_EQ = """# cell: mygru
input x: 3
state h: 4
r = sigmoid(W_xr @ x + W_hr @ h + b_r)
z = sigmoid(W_xz @ x + W_hz @ h + b_z)
hc = tanh(W_c @ [r * h, x] + b_c)
h_next = (1 - z) * h + z * hc
output h_next
"""
# the same cell without header lines: its input and state are x and h by the CLI's convention,
# their sizes come from --input-size / --hidden-size, its name from the file
GRU_NOHEAD = "\n".join(GRU_EQ.splitlines()[3:7]) + "\n"
PY_CELLS = '''
from frontends.trace import CellBuilder, tanh


def rnn(input_size, hidden_size, dtype="float32"):
    cb = CellBuilder("pyrnn", dtype)
    x, h = cb.input("x", input_size), cb.state("h", hidden_size)
    h2 = tanh(cb.linear(x, hidden_size, "W_x") + cb.linear(h, hidden_size, "W_h", bias=False))
    return cb.build([h2], {"h": h2})


def no_args():
    return rnn(2, 3)


def gmodule():
    from graphrnn import nn
    x = nn.Identity()()
    y = nn.Tanh()(nn.Linear(3, 5)(x))
    return nn.gModule([x], [y])


def broken(input_size):
    return {}["missing"]


def not_a_cell():
    return 42


def two_inputs(input_size, hidden_size):
    from graphrnn import nn
    x, h = nn.Identity()(), nn.Identity()()
    y = nn.Tanh()(nn.CAddTable()([nn.Linear(input_size, hidden_size)(x),
                                   nn.Linear(hidden_size, hidden_size)(h)]))
    return nn.gModule([x, h], [y])
'''


@pytest.fixture
def files(tmp_path):
    (tmp_path / "gru.eq").write_text(GRU_EQ)
    (tmp_path / "bad.eq").write_text(GRU_EQ.replace("hc = tanh(", "hc = tanhh("))
    (tmp_path / "cells.py").write_text(PY_CELLS)
    (tmp_path / "syntax.py").write_text("def f(:\n    pass\n")
    (tmp_path / "binary.eq").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "gru_nohead.eq").write_text(GRU_NOHEAD)
    # the names are not x/h and there is no header to say so
    (tmp_path / "renamed.eq").write_text(GRU_NOHEAD.replace("x", "inp"))
    return tmp_path


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err, *needles):
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("graphrnn")
    for n in needles:
        assert n in lines[0], lines[0]
    assert "Traceback" not in err


# ---- resolve_cell ----

def test_resolve_cell_from_zoo_equations_and_python(files):
    c = resolve_cell("lstm", 3, 5, "float64")
    assert isinstance(c, Cell) and c.name == "lstm" and c.dtype == "float64"
    assert c.states[0].shape == ("B", 5)
    e = resolve_cell(str(files / "gru.eq"), dtype="float64")
    assert e.name == "mygru" and e.inputs[0].shape == ("B", 3) and e.dtype == "float64"
    p = resolve_cell(f"{files / 'cells.py'}:rnn", 2, 7)
    assert p.name == "pyrnn" and p.states[0].shape == ("B", 7)
    assert resolve_cell(f"{files / 'cells.py'}:no_args").states[0].shape == ("B", 3)
    g = resolve_cell(f"{files / 'cells.py'}:gmodule", dtype="float64")
    assert g.outputs[0].shape == ("B", 5) and g.dtype == "float64"


@pytest.mark.parametrize("spec, message", [
    ("lstmm", "unknown cell 'lstmm'; CELL is nngraph-lstm (char-rnn's LSTM), a zoo cell "
     "(cifg_lstm"),
    ("missing/file.eq", "no such file: missing/file.eq"),
    ("{d}", "is a directory, not an equations file"),
    ("{d}/bad.eq", "bad.eq:6: unknown function 'tanhh'"),
    ("{d}/binary.eq", "not UTF-8 text"),
    ("{d}/cells.py", "name the function that returns the cell"),
    ("{d}/cells.py:nope", "has no function 'nope'; it defines broken, gmodule, no_args"),
    ("{d}/cells.py:broken", "cells.py:broken raised KeyError"),
    ("{d}/cells.py:not_a_cell", "returned int, expected a Cell or an nngraph gModule"),
    ("{d}/syntax.py:f", "syntax.py:1: syntax error"),
    ("{d}/absent.py:f", "no such file"),
])
def test_resolve_cell_errors(files, spec, message):
    with pytest.raises(CellSpecError) as ei:
        resolve_cell(spec.format(d=files))
    assert message in str(ei.value)
    assert "\n" not in str(ei.value)


def test_equations_file_gets_the_command_line_sizes(files):
    # no header lines: x and h by convention, sized by the arguments, named after the file
    c = resolve_cell(str(files / "gru_nohead.eq"), 3, 7)
    assert [n.arg for n in c.inputs] == ["x"] and [n.arg for n in c.states] == ["h"]
    assert c.inputs[0].shape == ("B", 3) and c.states[0].shape == ("B", 7)
    assert c.name == "gru_nohead"
    assert resolve_cell(str(files / "gru_nohead.eq")).states[0].shape == ("B", 32)
    # with header lines: sizes that agree are accepted, None keeps the file's
    e = resolve_cell(str(files / "gru.eq"), 3, 4)
    assert e.name == "mygru" and e.states[0].shape == ("B", 4)
    assert resolve_cell(str(files / "gru.eq"), None, 4).inputs[0].shape == ("B", 3)


@pytest.mark.parametrize("spec, sizes, message", [
    ("gru.eq", (3, 16), "gru.eq:3: state h is declared with size 4, but --hidden-size gives 16"),
    ("gru.eq", (5, None), "gru.eq:2: input x is declared with size 3, but --input-size gives 5"),
    ("renamed.eq", (3, 4), "needs 'input NAME: SIZE' / 'state NAME: SIZE' header lines"),
])
def test_equations_file_sizes_that_cannot_apply(files, spec, sizes, message):
    with pytest.raises(CellSpecError) as ei:
        resolve_cell(str(files / spec), *sizes)
    assert message in str(ei.value) and "\n" not in str(ei.value)


def test_layer_cell_from_a_raw_gmodule_hints_to_cell(files):
    spec = f"{files / 'cells.py'}:two_inputs"
    assert len(resolve_cell(spec, 3, 4).inputs) == 2  # fine to draw or compile
    with pytest.raises(CellSpecError) as ei:
        resolve_cell(spec, 3, 4, one_input=True)
    msg = str(ei.value)
    assert "exactly one float input" in msg and "returned an nngraph gModule" in msg
    assert "g.to_cell(inputs=[...], states=[...], next_states=[...])" in msg


def test_resolve_cell_wrong_size_for_a_square_zoo_cell():
    with pytest.raises(CellSpecError, match="zoo cell mut1: "):
        resolve_cell("mut1", 3, 4)


# ---- viz ----

def test_viz_forward_backward_plan_as_dot(capsys, tmp_path):
    for stage in ("forward", "backward", "plan"):
        out = tmp_path / f"lstm_{stage}.dot"
        rc, text, err = run(capsys, "viz", "lstm", "--stage", stage, "-o", out,
                            "--input-size", 3, "--hidden-size", 4)
        assert rc == 0, err
        assert text.strip() == f"wrote {out} ({stage} graph of cell lstm: input 3, hidden 4)"
        src = out.read_text()
        assert src.startswith("digraph")
        if stage == "plan":
            assert "cluster_kernel_" in src and "GEMM" in src
            assert "(T·B×3) @ (3×16) → (T·B×16)" in src
        else:
            assert "W_x\\nparam" in src


def test_viz_plan_one_sweep(capsys, tmp_path):
    rc, _, err = run(capsys, "viz", "gru", "--stage", "plan", "--sweep", "forward", "-o",
                     tmp_path / "p.dot", "--input-size", 3, "--hidden-size", 4)
    assert rc == 0, err
    src = (tmp_path / "p.dot").read_text()
    assert "cluster_forward" in src and "cluster_backward" not in src
    drawn = len(re.findall(r"subgraph cluster_kernel_", src))
    assert re.search(rf"\): {drawn} kernels? in the forward sweep", src)


def test_viz_sizes_reach_an_equations_file(capsys, files):
    rc, out, err = run(capsys, "viz", files / "gru_nohead.eq", "--input-size", 3,
                       "--hidden-size", 5, "-o", files / "n.dot")
    assert rc == 0, err
    assert out.strip() == f"wrote {files / 'n.dot'} (forward graph of cell gru_nohead: input 3, " \
        "hidden 5)"
    src = (files / "n.dot").read_text()
    assert "x\\ninput\\nf32[B,3]" in src and "h\\nstate\\nf32[B,5]" in src
    # a header's sizes are used when no flag is given, and a flag that disagrees is an error
    rc, out, err = run(capsys, "viz", files / "gru.eq", "-o", files / "g.dot")
    assert rc == 0 and "cell mygru: input 3, hidden 4" in out, err
    rc, _, err = run(capsys, "viz", files / "gru.eq", "--hidden-size", 16, "-o", files / "g.dot")
    one_line_error(rc, err, "gru.eq:3: state h is declared with size 4, but --hidden-size "
                   "gives 16")


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` program not installed")
def test_viz_renders_svg_and_png_from_every_kind_of_cell(capsys, files):
    for spec, out in ((files / "gru.eq", files / "g.svg"),
                      (f"{files / 'cells.py'}:rnn", files / "r.png")):
        rc, _, err = run(capsys, "viz", spec, "--stage", "backward", "-o", out)
        assert rc == 0, err
    assert b"<svg" in (files / "g.svg").read_bytes()
    assert (files / "r.png").read_bytes().startswith(b"\x89PNG")


def test_viz_without_dot_program_writes_dot_and_says_what_to_install(capsys, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    rc, _, err = run(capsys, "viz", "rnn_tanh", "-o", tmp_path / "x.svg")
    one_line_error(rc, err, "apt-get install graphviz", str(tmp_path / "x.dot"))
    assert (tmp_path / "x.dot").read_text().startswith("digraph")


@pytest.mark.parametrize("args, message", [
    (["viz", "lstmm"], "unknown cell 'lstmm'"),
    (["viz", "{d}/bad.eq", "-o", "{d}/x.dot"], "unknown function 'tanhh'"),
    (["viz", "{d}/nothere.eq", "-o", "{d}/x.dot"], "no such file"),
    (["viz", "lstm", "-o", "{d}/no/such/dir/x.svg"], "does not exist"),
    (["viz", "lstm", "-o", "{d}/x.jpg"], "unknown picture format '.jpg'"),
    (["viz", "lstm", "-o", "{d}"], "is a directory"),
    (["viz", "lstm", "--hidden-size", "0", "-o", "{d}/x.dot"], "--hidden-size must be"),
    (["viz", "{d}/renamed.eq", "-o", "{d}/x.dot"], "needs 'input NAME: SIZE' / 'state NAME"),
])
def test_viz_bad_input_one_line(capsys, files, args, message):
    rc, _, err = run(capsys, *[a.format(d=files) for a in args])
    one_line_error(rc, err, message)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_viz_unwritable_directory(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    rc, _, err = run(capsys, "viz", "lstm", "-o", ro / "x.dot")
    one_line_error(rc, err, "not writable")


def test_viz_read_only_target_file(capsys, tmp_path, monkeypatch):
    # os.replace onto a path whose directory refuses writes: simulated for root too
    def deny(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.dot"))
    monkeypatch.setattr("graphrnn.safefile.os.replace", deny)
    rc, _, err = run(capsys, "viz", "lstm", "-o", tmp_path / "x.dot")
    one_line_error(rc, err, "Permission denied")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---- compile ----

def test_compile_llvm_ir_and_header(capsys, tmp_path):
    rc, out, err = run(capsys, "compile", "rnn_tanh", "--emit", "ir", "header", "-o",
                       tmp_path / "build", "--input-size", 3, "--hidden-size", 4)
    assert rc == 0, err
    assert out.splitlines()[0] == "cell rnn_tanh: input 3, hidden 4, float32"
    written = re.findall(r"^wrote (\S+) \((\w+)\)$", out, re.M)
    assert [k for _, k in written] == ["ir", "header"]
    ll, h = (Path(p) for p, _ in written)
    assert "define" in ll.read_text() and "_forward" in ll.read_text()
    assert "#ifndef" in h.read_text() and "_forward" in h.read_text()


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
def test_compile_llvm_shared_library_loads(capsys, tmp_path):
    import ctypes
    rc, out, err = run(capsys, "compile", "gru", "--emit", "so", "-o", tmp_path,
                       "--input-size", 3, "--hidden-size", 4, "--dtype", "float64")
    assert rc == 0, err
    so = next(Path(p) for p, k in re.findall(r"^wrote (\S+) \((\w+)\)$", out, re.M)
              if k == "so")
    lib = ctypes.CDLL(str(so))
    assert hasattr(lib, f"{so.stem[3:]}_forward")


def test_compile_cuda_source(capsys, tmp_path):
    pytest.importorskip("codegen.cuda")
    rc, out, err = run(capsys, "compile", "lstm", "--backend", "cuda", "--emit", "cu", "-o",
                       tmp_path, "--input-size", 3, "--hidden-size", 4)
    assert rc == 0, err
    cu = tmp_path / "grnn_lstm_f32.cu"
    assert f"wrote {cu} (cu)" in out
    assert "__global__" in cu.read_text()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_compile_cuda_ptx(capsys, tmp_path):
    pytest.importorskip("codegen.cuda")
    rc, out, err = run(capsys, "compile", "rnn_tanh", "--backend", "cuda", "--emit", "ptx",
                       "--arch", "sm_90", "-o", tmp_path, "--input-size", 3, "--hidden-size", 4)
    assert rc == 0, err
    assert ".target sm_90" in (tmp_path / "grnn_rnn_tanh_f32_sm_90.ptx").read_text()


@pytest.mark.parametrize("args, message", [
    (["compile", "lstm", "--emit", "cu", "-o", "{d}/b"], "--backend llvm cannot emit cu"),
    (["compile", "lstm", "--backend", "cuda", "--emit", "so", "-o", "{d}/b"],
     "--backend cuda cannot emit so"),
    (["compile", "nope", "-o", "{d}/b"], "unknown cell 'nope'"),
    (["compile", "lstm", "-o", "{d}/gru.eq"], "it is a file, not a directory"),
    (["compile", "{d}/bad.eq", "-o", "{d}/b"], "unknown function 'tanhh'"),
    (["compile", "lstm", "--backend", "cuda", "--emit", "ptx", "--arch", "80", "-o", "{d}/b"],
     "--arch must look like sm_80"),
])
def test_compile_bad_input_one_line(capsys, files, args, message):
    rc, _, err = run(capsys, *[a.format(d=files) for a in args])
    one_line_error(rc, err, message)


# ---- bench ----

def test_bench_generic_path_prints_table_and_chart(capsys, tmp_path):
    plot = tmp_path / "bench.png"
    rc, out, err = run(capsys, "bench", "rnn_tanh", "--backends", "ref,program", "--input-size",
                       3, "--hidden-size", 4, "--batch", 2, "--seq-len", 3, "--repeat", 2,
                       "--plot", plot)
    assert rc == 0, err
    assert "cell rnn_tanh: T=3 B=2 I=3 H=4 float32, 2 repetitions" in out
    assert "<!--" not in out
    rows = [ln for ln in out.splitlines() if ln.startswith("graphrnn ")]
    assert [r.split()[1] for r in rows] == ["ref", "program"]
    for r in rows:  # compile s, inference ms ± spread, train ms ± spread, ratio
        nums = [float(x) for x in re.findall(r"\d+\.\d+", r)]
        assert len(nums) == 6 and all(v > 0 for v in nums[1:5:2])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no bar chart" in out
    else:
        assert f"wrote {plot}" in out and plot.read_bytes().startswith(b"\x89PNG")


def test_bench_reports_the_sizes_of_an_equations_file(capsys, files):
    # no size flags: the title shows the sizes the header gave the cell, not the defaults
    rc, out, err = run(capsys, "bench", files / "gru.eq", "--backends", "ref", "--batch", 2,
                       "--seq-len", 2, "--repeat", 1, "--no-plot")
    assert rc == 0, err
    assert "cell mygru: T=2 B=2 I=3 H=4 float32" in out
    rc, out, err = run(capsys, "bench", files / "gru_nohead.eq", "--backends", "ref",
                       "--input-size", 2, "--hidden-size", 3, "--batch", 2, "--seq-len", 2,
                       "--repeat", 1, "--no-plot")
    assert rc == 0, err
    assert "cell gru_nohead: T=2 B=2 I=2 H=3 float32" in out


def test_bench_rows_from_the_cpu_benchmark_script(capsys):
    class FakeBenchCpu:
        CELLS = ("lstm",)

        @staticmethod
        def bench_config(cell, T, B, H, rounds, budget, with_ref, modes):
            assert (cell, T, B, H, rounds, with_ref, modes) == ("lstm", 5, 2, 8, 3, False,
                                                                ["infer", "train"])
            rows = []
            for mode, scale in (("infer", 1.0), ("train", 3.0)):
                for impl, ms in (("graphrnn llvm", 2.0), ("torch.nn.LSTM", 4.0)):
                    rows.append({"mode": mode, "impl": impl, "ms": ms * scale,
                                 "min": ms * scale - 0.5, "max": ms * scale + 0.5})
            print("<!-- check torch.nn.LSTM vs graphrnn llvm: ok -->")
            return rows, {"cold": 0.25, "warm": 0.01}
    rows = bench_with_bench_cpu(FakeBenchCpu, "lstm", 5, 2, 8, 3, False)
    # the script's check lines are progress: stderr, so stdout is the table alone
    out, err = capsys.readouterr()
    assert "<!-- check" not in out and "<!-- check torch.nn.LSTM" in err
    assert [r["name"] for r in rows] == ["graphrnn llvm", "torch.nn.LSTM"]
    assert rows[0]["train_ms"] == 6.0 and rows[0]["infer_spread_ms"] == 1.0
    assert rows[0]["compile_s"] == 0.25 and rows[1]["compile_s"] is None
    table = format_table(rows, "t", "max - min")
    llvm_line = next(ln for ln in table.splitlines() if ln.startswith("graphrnn llvm"))
    assert llvm_line.endswith("2.00x")  # torch train 12 ms / llvm 6 ms


@pytest.mark.parametrize("args, message", [
    (["bench", "lstm", "--backends", "ref,fast"], "unknown backend 'fast'"),
    (["bench", "lstm", "--plot", "{d}/x.svg"], "the bar chart is a PNG"),
    (["bench", "lstm", "--plot", "{d}/no/dir/x.png"], "does not exist"),
    (["bench", "lstm", "--batch", "0"], "--batch must be positive"),
    (["bench", "{d}/bad.eq", "--no-plot"], "unknown function 'tanhh'"),
    (["bench", "lsmt", "--no-plot"], "unknown cell 'lsmt'"),
])
def test_bench_bad_input_one_line(capsys, files, args, message):
    rc, _, err = run(capsys, *[a.format(d=files) for a in args])
    one_line_error(rc, err, message)


# ---- the installed command ----

def test_console_script_runs_viz(tmp_path):
    exe = Path(sys.executable).with_name("graphrnn")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "graphrnn.cli"]
    r = subprocess.run(cmd + ["viz", "rnn_tanh", "-o", str(tmp_path / "r.dot")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r.dot").read_text().startswith("digraph")
    r = subprocess.run(cmd + ["viz", "nosuchcell"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_flag_shows_the_traceback(where):
    args = ["viz", "nosuchcell"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    r = subprocess.run([sys.executable, "-m", "graphrnn.cli", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr and "CellSpecError" in r.stderr


def test_numbers_in_this_file_are_not_reused():
    # guard: the tiny sizes above really reach the cell (not defaults)
    c = resolve_cell("rnn_tanh", 3, 4)
    assert np.prod(c.param_shapes()["W_x"]) == 12
