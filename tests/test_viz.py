"""Pictures of cells, backward graphs and plans (graphrnn.viz): DOT content, rendering, debug mode.

DOT text needs only the graphviz Python package; SVG/PNG tests skip cleanly without the ``dot``
program."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from graphrnn import viz
from graphrnn.autodiff import backward_cell
from graphrnn.cells import zoo_cell
from graphrnn.errors import BackendError, RuntimeInputError
from graphrnn.ir import annotations
from graphrnn.ops import Ops
from graphrnn.program import (
    Buffer,
    Gemm,
    Kernel,
    KernelDef,
    ParamPiece,
    Program,
    Reduce,
    Ref,
    Sweep,
    validate,
)
from graphrnn.scalar import ScalarProgram

pytest.importorskip("graphviz")

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` program not installed")
THIS_FILE = Path(__file__).resolve()


def _nodes(src: str) -> dict[str, str]:
    """node id -> its attribute text, from DOT source."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s*(\w+) \[(.*)\]$", src, re.M)
            if m.group(1) not in ("node", "edge", "graph")}


def _edges(src: str) -> list[tuple[str, str, str]]:
    return [(m.group(1), m.group(2), m.group(3) or "")
            for m in re.finditer(r"^\s*(\w+) -> (\w+)(?: \[(.*)\])?$", src, re.M)]


def _clusters(src: str) -> list[str]:
    return re.findall(r"subgraph (cluster_\w+)", src)


def small_annotated_cell():
    from frontends.trace import CellBuilder, sigmoid, tanh
    cb = CellBuilder("toy", dtype="float64")
    x = cb.input("x", 3)
    h = cb.state("h", 2)
    gate = sigmoid(cb.linear(x, 2, "W_g"))  # line of the gate's creation site
    annotations(gate).update(name="gate", description="input gate",
                             graphAttributes={"color": "red", "style": "filled",
                                              "fillcolor": "yellow"})
    h2 = tanh(gate * h + cb.linear(h, 2, "W_h", bias=False))
    return cb.build([h2], {"h": h2}), gate


# ---- cell and backward graphs ----

def test_cell_dot_roles_labels_and_recurrent_edges():
    cell = zoo_cell("lstm", 3, 4, "float64")
    src = viz.cell_dot(cell).source
    nodes = _nodes(src)
    params = [a for a in nodes.values() if "shape=note" in a]
    inputs = [a for a in nodes.values() if "shape=invhouse" in a]
    states = [a for a in nodes.values() if "\\nstate\\n" in a]
    assert len(params) == len(cell.params) and all("param" in a for a in params)
    assert len(inputs) == 1 and "x\\ninput\\nf64[B,3]" in inputs[0]
    assert len(states) == 2 and {"h", "c"} == {re.search(r'label="(\w+)', a).group(1)
                                               for a in states}
    recurrent = [e for e in _edges(src) if "style=dashed" in e[2]]
    assert len(recurrent) == 2
    assert all("constraint=false" in e[2] for e in recurrent)
    # each recurrent edge ends at the state it feeds
    labels = {nid: re.search(r'label="?([^"\\ ]*)', a).group(1) for nid, a in nodes.items()}
    assert sorted(labels[e[1]] for e in recurrent) == ["c", "h"]
    assert "output h" in src or "output y" in src
    assert "f64[B,4]" in src


def test_annotations_and_creation_site_reach_the_picture():
    cell, gate = small_annotated_cell()
    src = viz.cell_dot(cell).source
    gate_attrs = next(a for a in _nodes(src).values() if "gate\\nsigmoid" in a)
    assert "input gate" in gate_attrs          # description
    assert "color=red" in gate_attrs and "fillcolor=yellow" in gate_attrs  # graphAttributes
    tip = re.search(r'tooltip="([^"]*)"', gate_attrs).group(1)
    assert tip.startswith(f"{THIS_FILE}:{_line_of('gate = sigmoid(')} (")


def test_backward_dot_has_every_gradient_and_reversed_recurrence():
    cell = zoo_cell("gru", 3, 4, "float64")
    bw = backward_cell(cell)
    src = viz.backward_dot(cell).source
    for p in cell.params:
        assert f"d {p.arg}\\n" in src
    assert "d h (to t-1)" in src and "d x\\n" in src
    recurrent = [e for e in _edges(src) if "style=dashed" in e[2]]
    assert len(recurrent) == len(bw.d_next) == 1
    assert "d_h at t-1" in recurrent[0][2]
    assert viz.backward_dot(bw).source == src  # a BackwardCell draws the same


def test_mark_draws_the_node_in_red():
    cell, gate = small_annotated_cell()
    src = viz.cell_dot(cell, mark=gate).source
    marked = [a for a in _nodes(src).values() if "(failed here)" in a]
    assert len(marked) == 1 and viz.COLORS["failed"] in marked[0]


# ---- rendering ----

def test_render_dot_text_needs_no_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot here
    g = viz.cell_dot(zoo_cell("rnn_tanh", 2, 3))
    out = viz.render(g, tmp_path / "rnn.dot")
    assert out.read_text().startswith("digraph")


def test_missing_dot_writes_dot_and_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    g = viz.cell_dot(zoo_cell("rnn_tanh", 2, 3))
    with pytest.raises(viz.DotNotFoundError, match=r"apt-get install graphviz") as ei:
        viz.render(g, tmp_path / "rnn.svg")
    assert "rnn.dot" in str(ei.value)
    assert (tmp_path / "rnn.dot").read_text() == g.source
    assert not (tmp_path / "rnn.svg").exists()
    # Jupyter: no picture, no exception
    assert zoo_cell("rnn_tanh", 2, 3)._repr_svg_() is None


def test_render_rejects_bad_paths(tmp_path):
    g = viz.cell_dot(zoo_cell("rnn_tanh", 2, 3))
    with pytest.raises(ValueError, match=r"unknown picture format '\.jpg'"):
        viz.render(g, tmp_path / "x.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        viz.render(g, tmp_path / "nope" / "x.dot")


@needs_dot
@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_render_svg_and_png(tmp_path, fmt):
    out = viz.render(viz.backward_dot(zoo_cell("lstm", 3, 4)), tmp_path / f"lstm.{fmt}")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") if fmt == "png" else b"<svg" in data
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write


@needs_dot
def test_jupyter_svg_of_a_cell():
    svg = zoo_cell("lstm", 3, 4)._repr_svg_()
    assert svg is not None and "<svg" in svg and "W_x" in svg


@needs_dot
def test_graph_dot_convenience_writes_dot_and_svg(tmp_path):
    cell = zoo_cell("rnn_tanh", 2, 3)
    viz.dot(cell, "my rnn", tmp_path / "g")
    assert "my rnn" in (tmp_path / "g.dot").read_text()
    assert b"<svg" in (tmp_path / "g.svg").read_bytes()
    viz.dot(cell, "", tmp_path / "gb", stage="backward")
    assert "backward of cell rnn_tanh" in (tmp_path / "gb.dot").read_text()


def test_graph_dot_accepts_a_gmodule_like_object(tmp_path):
    cell = zoo_cell("rnn_tanh", 2, 3)

    class FakeGModule:
        def to_cell(self):
            return cell
    g = viz.dot(FakeGModule(), "from gModule")
    assert "from gModule" in g.source
    with pytest.raises(TypeError, match="expected a Cell or an nngraph gModule, got int"):
        viz.dot(3)


# ---- debug mode ----

def log_cell():
    from frontends.trace import CellBuilder, log, tanh
    cb = CellBuilder("logcell", dtype="float64")
    x = cb.input("x", 2)
    h = cb.state("h", 2)
    bad = log(x)  # NaN for negative inputs: the node the debug picture must mark
    h2 = tanh(bad + h)
    return cb.build([h2], {"h": h2}), bad


def test_debug_forward_marks_the_nan_node(tmp_path):
    cell, bad = log_cell()
    line = bad and _line_of("bad = log(x)")
    xs = np.ones((3, 2, 2))
    xs[2, 1, 0] = -1.0  # goes wrong at step 2
    out = tmp_path / "dbg.svg" if HAS_DOT else tmp_path / "dbg.svg"
    with np.errstate(invalid="ignore"), pytest.raises(BackendError) as ei:
        viz.debug_forward(cell, {}, xs, svg_path=out)
    msg = str(ei.value)
    assert "step t=2" in msg and "node log f64[B,2]" in msg
    assert f"created at {THIS_FILE}:{line}" in msg
    assert ei.value.node is bad
    if HAS_DOT:
        assert str(out) in msg
        assert viz.COLORS["failed"] in out.read_text()
    else:
        assert "(failed here)" in out.with_suffix(".dot").read_text()


def test_debug_forward_matches_reference_when_nothing_fails(tmp_path):
    import graphrnn
    cell = zoo_cell("gru", 3, 4, "float64")
    cc = graphrnn.compile(cell, backend="ref")
    params = cc.init_params(seed=1)
    xs = np.random.default_rng(0).standard_normal((4, 2, 3))
    ys, hT = viz.debug_forward(cell, params, xs, svg_path=tmp_path / "never.svg")
    ys_ref, hT_ref = cc.forward(params, xs)
    np.testing.assert_array_equal(ys[0], ys_ref[0])
    np.testing.assert_array_equal(hT[0], hT_ref[0])
    assert not (tmp_path / "never.svg").exists()


def test_debug_forward_marks_a_parameter_of_the_wrong_shape(tmp_path):
    cell = zoo_cell("rnn_tanh", 2, 3, "float64")
    params = {"W_x": np.zeros((2, 3)), "W_h": np.zeros((3, 4)), "b": np.zeros((1, 3))}
    with pytest.raises(RuntimeInputError) as ei:
        viz.debug_forward(cell, params, np.zeros((2, 1, 2)), svg_path=tmp_path / "d.svg")
    assert "step t=0 in node W_h f32[3,3]" in str(ei.value).replace("f64", "f32")
    assert ei.value.node.arg == "W_h"


def _line_of(text: str) -> int:
    for i, ln in enumerate(THIS_FILE.read_text().splitlines(), 1):
        if ln.strip().startswith(text):
            return i
    raise AssertionError(text)


# ---- the plan ----

def rnn_program(I: int = 3, H: int = 4, dtype: str = "float64") -> Program:
    """A hand-written Program of the tanh RNN h' = tanh(x W_x + h W_h + b): 1 GEMM before the
    loop, 1 GEMM + 1 kernel in it; backward 1 kernel + 1 GEMM per step, 3 GEMMs and 1 reduction
    after."""
    bufs = (Buffer("W_x", "param", dtype, H, I), Buffer("W_h", "param", dtype, H, H),
            Buffer("b", "param", dtype, H, 1), Buffer("X", "seq", dtype, I),
            Buffer("XW", "seq", dtype, H), Buffer("S", "seq", dtype, H, extra=1),
            Buffer("Z", "temp", dtype, H), Buffer("DY", "seq", dtype, H),
            Buffer("DH", "carry", dtype, H), Buffer("DZ", "seq", dtype, H),
            Buffer("DX", "seq", dtype, I), Buffer("dW_x", "grad", dtype, H, I),
            Buffer("dW_h", "grad", dtype, H, H), Buffer("db", "grad", dtype, H, 1))
    fwd = KernelDef("rnn_fwd", ScalarProgram(3, ((Ops.ADD, (0, 1), None),
                                                 (Ops.ADD, (3, 2), None),
                                                 (Ops.TANH, (4,), None)), (5,)),
                    dtype, ("full", "full", "row"))
    bwd = KernelDef("rnn_bwd", ScalarProgram(3, ((Ops.ADD, (0, 1), None),
                                                 (Ops.MUL, (2, 2), None),
                                                 (Ops.CONST, (), 1.0),
                                                 (Ops.SUB, (5, 4), None),
                                                 (Ops.MUL, (3, 6), None)), (7,)),
                    dtype, ("full", "full", "full"))
    forward = Sweep(pre=(Gemm(Ref("XW"), Ref("X"), Ref("W_x")),),
                    step=(Gemm(Ref("Z"), Ref("S"), Ref("W_h")),
                          Kernel(fwd, (Ref("XW"), Ref("Z"), Ref("b")), (Ref("S", 1),))))
    backward = Sweep(step=(Kernel(bwd, (Ref("DY"), Ref("DH"), Ref("S", 1)), (Ref("DZ"),)),
                           Gemm(Ref("DH"), Ref("DZ"), Ref("W_h"), trans_b=True)),
                     post=(Gemm(Ref("dW_x"), Ref("X"), Ref("DZ"), trans_a=True),
                           Gemm(Ref("dW_h"), Ref("S"), Ref("DZ"), trans_a=True),
                           Reduce(Ref("db"), Ref("DZ")),
                           Gemm(Ref("DX"), Ref("DZ"), Ref("W_x"), trans_b=True)),
                     reverse=True)
    p = Program("rnn", dtype, bufs, forward, backward, inputs=(("x", "X"),),
                states=(("h", "S"),), outputs=(("y", Ref("S", 1)),),
                param_pieces=(ParamPiece("W_x", (0, I), (0, H), Ref("W_x")),
                              ParamPiece("W_h", (0, H), (0, H), Ref("W_h")),
                              ParamPiece("b", (0, 1), (0, H), Ref("b"))),
                d_outputs=(("y", "DY"),), d_final=(("h", "DH"),), d_states=(),
                d_inputs=(("x", Ref("DX")),),
                grad_pieces=(ParamPiece("W_x", (0, I), (0, H), Ref("dW_x")),
                             ParamPiece("W_h", (0, H), (0, H), Ref("dW_h")),
                             ParamPiece("b", (0, 1), (0, H), Ref("db"))),
                param_shapes=(("W_x", (I, H)), ("W_h", (H, H)), ("b", (1, H))))
    validate(p)
    return p


def test_plan_dot_of_a_hand_written_program():
    src = viz.plan_dot(rnn_program()).source
    clusters = _clusters(src)
    kernels = [c for c in clusters if c.startswith("cluster_kernel_")]
    assert len(kernels) == 2
    for sweep in ("forward", "backward"):
        assert f"cluster_{sweep}" in clusters
    assert {"cluster_forward_pre", "cluster_forward_step", "cluster_backward_step",
            "cluster_backward_post"} <= set(clusters)
    assert "cluster_forward_post" not in clusters  # empty phases are not drawn
    gemms = [a for a in _nodes(src).values() if 'label="GEMM' in a]
    assert len(gemms) == 6
    assert any("XW = X @ W_x\\n(T·B×3) @ (3×4) → (T·B×4)" in a for a in gemms)
    assert any("Z = S @ W_h\\n(B×4) @ (4×4) → (B×4)" in a for a in gemms)
    assert any("dW_h = Sᵀ @ DZ\\n(T·B×4)ᵀ @ (T·B×4) → (4×4)" in a for a in gemms)
    # the fused ops sit inside their kernel's cluster
    body = src.split("subgraph cluster_kernel_")[1]
    assert body.count('label=add') == 2 and "label=tanh" in body
    # the state written for t+1 feeds the next step: one recurrent edge per sweep
    recurrent = [e for e in _edges(src) if "style=dashed" in e[2]]
    assert len(recurrent) == 2
    for name in ("output y", "d W_x", "d W_h", "d b", "d x"):
        assert f'label="{name}"' in src


def test_plan_title_counts_the_kernels_of_the_sweeps_drawn():
    # rnn_program has one kernel per sweep; a one-sweep picture must not claim both
    p = rnn_program()
    both = viz.plan_dot(p).source
    fwd = viz.plan_dot(p, sweeps=("forward",)).source
    bwd = viz.plan_dot(p, sweeps=("backward",)).source
    assert "plan of cell rnn (float64): 2 kernels\"" in both
    assert "plan of cell rnn (float64): 1 kernel in the forward sweep" in fwd
    assert "plan of cell rnn (float64): 1 kernel in the backward sweep" in bwd
    # the number in the title is the number of kernel clusters drawn
    for src in (both, fwd, bwd):
        drawn = len([c for c in _clusters(src) if c.startswith("cluster_kernel_")])
        assert re.search(rf": {drawn} kernels?\b", src), src[:200]


@needs_dot
def test_plan_renders(tmp_path):
    out = viz.render(viz.plan_dot(rnn_program()), tmp_path / "plan.svg")
    assert b"kernel rnn_fwd" in out.read_bytes()


def test_lstm_plan_from_the_optimizer():
    pipeline = pytest.importorskip("graphrnn.pipeline")
    p = pipeline.build_program(zoo_cell("lstm", 8, 16))
    src = viz.plan_dot(p).source
    kernel_steps = [s for sw in (p.forward, p.backward) for _ph, st in sw.phases() for s in st
                    if isinstance(s, Kernel)]
    gemm_steps = [s for sw in (p.forward, p.backward) for _ph, st in sw.phases() for s in st
                  if isinstance(s, Gemm)]
    kernels = [c for c in _clusters(src) if c.startswith("cluster_kernel_")]
    assert len(kernels) == len(kernel_steps) >= 2
    gemms = [a for a in _nodes(src).values() if 'label="GEMM' in a]
    assert len(gemms) == len(gemm_steps)
    # the LSTM's input projection: one GEMM over T·B rows before the loop, 4H wide
    assert any("(T·B×8) @ (8×64) → (T·B×64)" in a for a in gemms)
    # its recurrent GEMM in the loop
    assert any("(B×16) @ (16×64) → (B×64)" in a for a in gemms)


# ---- nngraph: graph.dot of a gModule, debug mode at the module level ----

def tiny_gmodule():
    from graphrnn import nn
    x, prev_h = nn.Identity()(), nn.Identity()()
    i2h = nn.Linear(3, 4)(x).annotate(name="i2h", description="input to hidden",
                                      graphAttributes={"color": "red"})
    h2h = nn.Linear(4, 4)(prev_h).annotate(name="h2h")
    next_h = nn.Tanh()(nn.CAddTable()([i2h, h2h]))
    return nn.gModule([x, prev_h], [next_h]), i2h


def test_gmodule_dot_forward_and_backward_like_nngraph():
    pytest.importorskip("frontends.nngraph")
    gm, i2h = tiny_gmodule()
    fg = viz.dot(gm, "lstm fg").source
    nodes = _nodes(fg)
    assert len(nodes) == 7  # 2 inputs, 2 Linear, CAddTable, Tanh, output 1
    lin = next(a for a in nodes.values() if "i2h" in a)
    assert "module = nn.Linear(3 -> 4)" in lin and "input to hidden" in lin
    assert "color=red" in lin and f"{THIS_FILE}:" in lin
    assert 'label="output 1"' in fg and "input 1" in fg and "input 2" in fg
    cadd = next(k for k, a in nodes.items() if "CAddTable" in a)
    assert sorted(e[2] for e in _edges(fg) if e[1] == cadd) == ["label=1", "label=2"]
    # g.bg: the same nodes, every edge reversed
    bg = viz.dot(gm, "lstm bg", stage="backward").source
    fwd = {(a, b) for a, b, _ in _edges(fg)}
    bwd = {(a, b) for a, b, _ in _edges(bg)}
    assert {(b, a) for a, b in fwd if not b.startswith("output")} <= bwd


def test_debug_forward_marks_the_failing_gmodule_node(tmp_path):
    pytest.importorskip("frontends.nngraph")
    gm, i2h = tiny_gmodule()
    cell = gm.to_cell(inputs=[0], states=[1], next_states=[0], dtype="float64")
    params = {p.arg: np.full(p.shape, 1e3) for p in cell.params}
    xs = np.full((2, 1, 3), 1e306)  # x @ W overflows in the i2h Linear
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(BackendError) as ei:
        viz.debug_forward(cell, params, xs, svg_path=tmp_path / "dbg.svg", gmodule=gm)
    assert f"created at {i2h.site}" in str(ei.value)
    written = (tmp_path / "dbg.svg") if HAS_DOT else (tmp_path / "dbg.dot")
    text = written.read_text()
    assert "module = nn.Linear(3" in text  # the module-level picture
    assert text.count("failed here") == 1


def test_nngraph_cell_nodes_are_labelled_by_their_module():
    from graphrnn import nn
    src = viz.dot_source(viz.cell_dot(nn.lecture_lstm(3, 4)))
    labels = re.findall(r'label="([^"\\]*)\\n', src)
    for module, count in (("nn.Linear", 8), ("nn.CAddTable", 5), ("nn.Sigmoid", 3),
                          ("nn.CMulTable", 3), ("nn.Tanh", 2)):
        assert labels.count(module) == count, (module, labels)
