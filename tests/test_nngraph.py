"""The nngraph frontend: every module against hand-written numpy, the three Torch LSTM forms
(lecture, char-rnn, Zaremba) agreeing once their weights are mapped, their gradients against
float64 finite differences, and every nngraph-style error message pinned."""

from __future__ import annotations

import inspect
import re
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import fd_and_backward

import graphrnn
from graphrnn import ir, nn
from graphrnn.errors import GraphError, ModuleUsageError, RuntimeInputError, ShapeError
from graphrnn.ops import Ops

HERE = __file__


def _line() -> int:
    """The caller's line number (to pin "reported at the user's line")."""
    return inspect.currentframe().f_back.f_lineno  # type: ignore[union-attr]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def run1(module: nn.Module, *arrays: np.ndarray) -> np.ndarray:
    """module applied to len(arrays) input nodes (a table if several), evaluated once."""
    ins = [nn.Identity()() for _ in arrays]
    out = module(ins if len(ins) > 1 else ins[0])
    return nn.gModule(ins, [out]).forward(list(arrays))


# ---------------------------------------------------------------------------------------------
# modules against numpy
# ---------------------------------------------------------------------------------------------

def test_linear_with_and_without_bias(rng):
    x = rng.standard_normal((5, 3))
    lin = nn.Linear(3, 4)
    W, b = lin.params["W"], lin.params["b"]
    assert W.shape == (3, 4) and b.shape == (1, 4)
    np.testing.assert_allclose(run1(lin, x), x @ W + b, rtol=1e-12)
    nob = nn.Linear(3, 2, bias=False)
    assert set(nob.params) == {"W"}
    np.testing.assert_allclose(run1(nob, x), x @ nob.params["W"], rtol=1e-12)


def test_linear_init_is_torchs_uniform_and_seeded():
    nn.manual_seed(7)
    a = nn.Linear(16, 5).params["W"].copy()
    nn.manual_seed(7)
    b = nn.Linear(16, 5).params["W"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() <= 1 / np.sqrt(16)


@pytest.mark.parametrize("module, fn", [
    (nn.CAddTable, lambda a, b, c: a + b + c),
    (nn.CMulTable, lambda a, b, c: a * b * c),
])
def test_ctables_of_three(rng, module, fn):
    a, b, c = (rng.standard_normal((4, 3)) for _ in range(3))
    np.testing.assert_allclose(run1(module(), a, b, c), fn(a, b, c), rtol=1e-12)


@pytest.mark.parametrize("module, fn", [
    (nn.CSubTable, lambda a, b: a - b),
    (nn.CDivTable, lambda a, b: a / b),
])
def test_ctables_of_two(rng, module, fn):
    a, b = rng.standard_normal((4, 3)), rng.uniform(1, 2, (4, 3))
    np.testing.assert_allclose(run1(module(), a, b), fn(a, b), rtol=1e-12)


@pytest.mark.parametrize("make, fn", [
    (nn.Identity, lambda x: x),
    (nn.Sigmoid, sigmoid),
    (nn.Tanh, np.tanh),
    (nn.ReLU, lambda x: np.maximum(x, 0)),
    (nn.Square, lambda x: x * x),
    (lambda: nn.MulConstant(-2.5), lambda x: -2.5 * x),
    (lambda: nn.AddConstant(0.75), lambda x: x + 0.75),
    (lambda: nn.Dropout(0.3), lambda x: x),          # the identity inside a cell
    (nn.LogSoftMax, lambda x: x - np.log(np.exp(x).sum(1, keepdims=True))),
])
def test_elementwise_modules(rng, make, fn):
    x = rng.standard_normal((5, 6)) * 3
    np.testing.assert_allclose(run1(make(), x), fn(x), rtol=1e-12, atol=1e-14)


def test_cmul_and_add_learned_diagonal_and_bias(rng):
    x = rng.standard_normal((4, 5))
    cmul = nn.CMul(5)
    np.testing.assert_allclose(run1(cmul, x), x * cmul.params["w"], rtol=1e-12)
    add = nn.Add(5)
    np.testing.assert_allclose(run1(add, x), x + add.params["b"], rtol=1e-12)
    sadd = nn.Add(5, scalar=True)
    assert sadd.params["b"].shape == (1, 1)
    np.testing.assert_allclose(run1(sadd, x), x + sadd.params["b"][0, 0], rtol=1e-12)


def test_reshape_splittable_split_selecttable_jointable(rng):
    x = rng.standard_normal((3, 12))
    inp = nn.Identity()()
    blocks = nn.SplitTable(2)(nn.Reshape(4, 3)(inp))
    a, b, c, d = blocks.split(4)
    last = nn.SelectTable(-1)(blocks)                  # same as d
    joined = nn.JoinTable(2)([d, a])
    total = nn.CAddTable()([b, c, last])
    g = nn.gModule([inp], [joined, total, blocks])
    j, t, table = g.forward(x)
    np.testing.assert_array_equal(j, np.concatenate([x[:, 9:12], x[:, 0:3]], axis=1))
    np.testing.assert_allclose(t, x[:, 3:6] + x[:, 6:9] + x[:, 9:12], rtol=1e-12)
    assert len(table) == 4
    for k in range(4):
        np.testing.assert_array_equal(table[k], x[:, 3 * k:3 * k + 3])


def test_reshape_output_and_elementwise_on_blocks(rng):
    x = rng.standard_normal((2, 6))
    np.testing.assert_allclose(run1(nn.Reshape(2, 3), x), x.reshape(2, 2, 3))
    inp = nn.Identity()()
    out = nn.Tanh()(nn.Reshape(2, 3)(inp))
    np.testing.assert_allclose(nn.gModule([inp], [out]).forward(x), np.tanh(x).reshape(2, 2, 3))
    np.testing.assert_array_equal(run1(nn.Reshape(6), x), x)


def test_narrow_counts_from_one_like_torch(rng):
    x = rng.standard_normal((3, 7))
    np.testing.assert_array_equal(run1(nn.Narrow(2, 2, 3), x), x[:, 1:4])


def test_lookup_table_gathers_rows_of_int64_ids(rng):
    lut = nn.LookupTable(10, 4)
    ids = np.array([[3], [0], [9], [3]])
    np.testing.assert_array_equal(run1(lut, ids), lut.params["W"][[3, 0, 9, 3]])


def test_class_nll_criterion_numpy_and_not_a_node(rng):
    lp = np.log(rng.dirichlet(np.ones(5), size=4))
    t = np.array([0, 4, 2, 2])
    crit = nn.ClassNLLCriterion()
    assert crit.forward(lp, t) == pytest.approx(-lp[np.arange(4), t].mean(), rel=1e-12)
    g = crit.backward(lp, t)
    want = np.zeros_like(lp)
    want[np.arange(4), t] = -0.25
    np.testing.assert_array_equal(g, want)
    with pytest.raises(RuntimeInputError, match=r"0-based in \[0, 5\)"):
        crit.forward(lp, np.array([0, 5, 1, 1]))
    x = nn.Identity()()
    with pytest.raises(ModuleUsageError, match="is a criterion .*cannot be a node of a cell"):
        crit([x, x])


def test_forward_single_input_single_output_and_lists(rng):
    x = rng.standard_normal((2, 3))
    inp = nn.Identity()()
    g = nn.gModule([inp], [nn.Tanh()(inp)])
    np.testing.assert_allclose(g.forward(x), np.tanh(x))            # one array in and out
    np.testing.assert_allclose(g.forward([x]), np.tanh(x))
    a, b = nn.Identity()(), nn.Identity()()
    g2 = nn.gModule([a, b], [nn.CAddTable()([a, b]), nn.CSubTable()([a, b])])
    s, d = g2.forward([x, 2 * x])
    np.testing.assert_allclose(s, 3 * x)
    np.testing.assert_allclose(d, -x)


def test_same_module_applied_twice_shares_its_parameters(rng):
    x = rng.standard_normal((2, 3))
    lin = nn.Linear(3, 3)
    inp = nn.Identity()()
    g = nn.gModule([inp], [lin(nn.Tanh()(lin(inp)))])
    assert sorted(g.parameters()) == ["Linear_1_W", "Linear_1_b"]
    W, b = lin.params["W"], lin.params["b"]
    np.testing.assert_allclose(g.forward(x), np.tanh(x @ W + b) @ W + b, rtol=1e-12)


def test_module_as_input_node_applies_the_module(rng):
    x = rng.standard_normal((2, 3))
    lin = nn.Linear(3, 2)
    inp = lin()                              # nngraph: module() is an input node running it
    g = nn.gModule([inp], [nn.Sigmoid()(inp)])
    np.testing.assert_allclose(g.forward(x), sigmoid(x @ lin.params["W"] + lin.params["b"]))
    cell = g.to_cell(inputs=[0])             # its size comes from the Linear
    assert cell.inputs[0].shape == (ir.B, 3)


# ---------------------------------------------------------------------------------------------
# parameter names, sizes, annotations, sites
# ---------------------------------------------------------------------------------------------

def test_param_names_follow_creation_order_and_annotations():
    a, b = nn.Linear(2, 3), nn.Linear(3, 3)           # created in this order: 1, 2
    c = nn.CMul(3)
    x = nn.Identity()()
    y = c(a(x))                                       # b applied after, but numbered by creation
    z = b(y).annotate(name="proj out")                # annotate names it (made an identifier)
    g = nn.gModule([x], [z])
    assert list(g.parameters()) == ["Linear_1_W", "Linear_1_b", "proj_out_W", "proj_out_b",
                                    "CMul_1_w"]
    cell = g.to_cell()
    assert [p.arg for p in cell.params] == list(g.parameters())   # creation order, stable


def test_duplicate_annotated_names_are_an_error():
    x = nn.Identity()()
    a = nn.Linear(2, 2)(x).annotate(name="i2h")
    b = nn.Linear(2, 2)(a).annotate(name="i2h")
    with pytest.raises(GraphError, match=r"two modules would both own the parameter 'i2h_W': "
                                         r"nn.Linear\(2 -> 2\) created at .*give them "
                                         r"different annotate\(name=...\)"):
        nn.gModule([x], [b])


def test_input_sizes_are_inferred_given_or_declared():
    # x from its Linear, h from its Linear, c from the CMulTable partner
    g = nn.lecture_lstm_gmodule(5, 4)
    cell = g.to_cell(inputs=["x"], states=["h", "c"], next_states=[0, 1])
    assert [n.shape for n in cell.inputs + cell.states] == [(ir.B, 5), (ir.B, 4), (ir.B, 4)]
    # nothing fixes the size of a lone tanh input: the error says how to give it
    x = nn.Identity()()
    g2 = nn.gModule([x], [nn.Tanh()(x)])
    with pytest.raises(ShapeError, match=r"cannot tell the size of inputs\[0\].*"
                                         r"to_cell\(sizes=\{0: n\}\) or make it with nn.Input"):
        g2.to_cell()
    assert g2.to_cell(sizes={0: 6}).inputs[0].shape == (ir.B, 6)
    x3 = nn.Input(6)
    assert nn.gModule([x3], [nn.Tanh()(x3)]).to_cell().inputs[0].shape == (ir.B, 6)
    # a LookupTable's ids are int64 of size 1
    ids = nn.Identity()()
    cell4 = nn.gModule([ids], [nn.LookupTable(7, 3)(ids)]).to_cell()
    assert ir.short_type(cell4.inputs[0]) == "i64[B,1]"


def test_annotations_reach_the_ir_node():
    x = nn.Identity()().annotate(name="x")
    y = nn.Linear(2, 3)(x).annotate(name="i2h", description="input to hidden",
                                     graphAttributes={"color": "red"})
    assert isinstance(y, nn.Node)
    cell = nn.gModule([x], [y]).to_cell()
    out = cell.outputs[0]
    assert ir.annotations(out) == {"name": "i2h", "description": "input to hidden",
                                   "graphAttributes": {"color": "red"}, "module": "nn.Linear"}
    assert cell.output_names == ("i2h",)
    assert cell.inputs[0].arg == "x"
    assert {"i2h_W", "i2h_b"} == {p.arg for p in cell.params}
    with pytest.raises(ModuleUsageError, match="graphAttributes must be a dict"):
        y.annotate(graphAttributes="red")


def test_ir_nodes_point_at_the_users_line():
    x = nn.Identity()()
    line = _line() + 1
    y = nn.Linear(2, 3)(x)
    cell = nn.gModule([x], [nn.Tanh()(y)]).to_cell()
    matmul = next(n for n in cell.nodes() if n.op is Ops.MATMUL)
    site = ir.site_of(matmul)
    assert (site.file, site.line, site.frontend) == (HERE, line, "nngraph")


# ---------------------------------------------------------------------------------------------
# the three LSTM forms
# ---------------------------------------------------------------------------------------------

def lecture_to_charrnn(p: dict) -> dict:
    """Lecture Linears (1,2 in; 3,4 forget; 5,6 g; 7,8 out) -> char-rnn blocks i, f, o, g."""
    cat = lambda ks, s: np.concatenate([p[f"Linear_{k}_{s}"] for k in ks], axis=1)
    return {"i2h_1_W": cat([1, 3, 7, 5], "W"), "i2h_1_b": cat([1, 3, 7, 5], "b"),
            "h2h_1_W": cat([2, 4, 8, 6], "W"), "h2h_1_b": cat([2, 4, 8, 6], "b")}


def lecture_to_zaremba(p: dict) -> dict:
    """Lecture Linears -> Zaremba's blocks i, g, f, o (Linear_1 = i2h, Linear_2 = h2h)."""
    cat = lambda ks, s: np.concatenate([p[f"Linear_{k}_{s}"] for k in ks], axis=1)
    return {"Linear_1_W": cat([1, 5, 3, 7], "W"), "Linear_1_b": cat([1, 5, 3, 7], "b"),
            "Linear_2_W": cat([2, 6, 4, 8], "W"), "Linear_2_b": cat([2, 6, 4, 8], "b")}


def test_lecture_step_line_for_line_matches_numpy(rng):
    I, H, Bn = 3, 4, 2
    x, prev_h, prev_c = nn.Identity()(), nn.Identity()(), nn.Identity()()
    next_h, next_c = nn.make_lstm_step(SimpleNamespace(rnn_size=H, input_size=I),
                                       x, prev_h, prev_c)
    g = nn.gModule([x, prev_h, prev_c], [next_h, next_c])
    xv, hv, cv = (rng.standard_normal((Bn, n)) for n in (I, H, H))
    p = g.parameters()
    s = lambda k: xv @ p[f"Linear_{k}_W"] + p[f"Linear_{k}_b"] \
        + hv @ p[f"Linear_{k + 1}_W"] + p[f"Linear_{k + 1}_b"]
    i, f, gg, o = sigmoid(s(1)), sigmoid(s(3)), np.tanh(s(5)), sigmoid(s(7))
    c2 = f * cv + i * gg
    h2 = o * np.tanh(c2)
    got_h, got_c = g.forward([xv, hv, cv])
    np.testing.assert_allclose(got_h, h2, rtol=1e-12)
    np.testing.assert_allclose(got_c, c2, rtol=1e-12)


def test_the_lecture_lstm_written_with_opt_rnn_size_only():
    # the lecture's own sizes: i2h reads opt.rnn_size inputs, and no input has a declared size
    x, prev_h, prev_c = nn.Identity()(), nn.Identity()(), nn.Identity()()
    next_h, next_c = nn.make_lstm_step(SimpleNamespace(rnn_size=4), x, prev_h, prev_c)
    g = nn.gModule([x, prev_h, prev_c], [next_h, next_c])
    cell = g.to_cell(inputs=[0], states=[1, 2], next_states=[0, 1], outputs=[0])
    assert [s.arg for s in cell.states] == ["h1", "h2"] and cell.inputs[0].arg == "x"
    assert len(cell.params) == 16


def test_three_lstm_forms_compute_the_same_function(rng):
    I, H, T, Bn = 3, 5, 7, 2
    lec = graphrnn.compile(nn.lecture_lstm(I, H), backend="ref", dtype="float64")
    chr_ = graphrnn.compile(nn.charrnn_lstm(I, H), backend="ref", dtype="float64")
    zar = graphrnn.compile(nn.zaremba_lstm(I, H), backend="ref", dtype="float64")
    p = lec.init_params(seed=3, scale=0.5)
    xs = rng.standard_normal((T, Bn, I))
    h0 = [rng.standard_normal((Bn, H)), rng.standard_normal((Bn, H))]
    y1, s1 = lec.forward(p, xs, h0)
    y2, s2 = chr_.forward(lecture_to_charrnn(p), xs, h0)
    y3, s3 = zar.forward(lecture_to_zaremba(p), xs, h0)
    for y, s in ((y2, s2), (y3, s3)):
        np.testing.assert_allclose(y[0], y1[0], rtol=1e-12, atol=1e-14)
        for a, b in zip(s, s1):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # and the gModules' own forward agrees, with weights loaded into the modules
    gl, gc, gz = (nn.lecture_lstm_gmodule(I, H), nn.charrnn_lstm_gmodule(I, H, decoder=False),
                  nn.zaremba_lstm_gmodule(I, H))
    gl.set_parameters(p)
    gc.set_parameters(lecture_to_charrnn(p))
    gz.set_parameters(lecture_to_zaremba(p))
    hl, cl = gl.forward([xs[0], h0[0], h0[1]])
    cc, hc = gc.forward([xs[0], h0[1], h0[0]])          # char-rnn: {x, prev_c, prev_h}
    cz, hz = gz.forward([xs[0], h0[1], h0[0]])          # Zaremba: {x, prev_c, prev_h}
    for h, c in ((hc, cc), (hz, cz)):
        np.testing.assert_allclose(h, hl, rtol=1e-12)
        np.testing.assert_allclose(c, cl, rtol=1e-12)
    np.testing.assert_allclose(y1[0][0], hl, rtol=1e-12)


def test_charrnn_dropout_is_the_identity_in_a_cell_and_float32_runs(rng):
    x = [rng.standard_normal((2, 4)), *(rng.standard_normal((2, 3)) for _ in range(4))]
    plain = nn.charrnn_lstm_gmodule(4, 3, num_layers=2, dropout=0.0)
    dropped = nn.charrnn_lstm_gmodule(4, 3, num_layers=2, dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in dropped.modules) == 2
    dropped.set_parameters(plain.parameters())
    for a, b in zip(plain.forward(x), dropped.forward(x)):
        np.testing.assert_array_equal(a, b)
    cell = nn.lecture_lstm(3, 4)                       # float32 by default
    c32 = graphrnn.compile(cell, backend="ref")
    c64 = graphrnn.compile(cell, backend="ref", dtype="float64")
    p = c64.init_params(seed=1)
    xs = rng.standard_normal((5, 2, 3))
    y32, _ = c32.forward(p, xs.astype(np.float32))
    y64, _ = c64.forward(p, xs)
    assert y32[0].dtype == np.float32
    np.testing.assert_allclose(y32[0], y64[0], rtol=1e-4, atol=1e-6)


def check_gradients(cell: ir.Cell, seed: int = 0, T: int = 7, batch: int = 3) -> float:
    """Max relative error of <grad, t> against central finite differences in random
    directions t, separately for params, inputs and initial states (float64)."""
    cc = graphrnn.compile(cell, backend="ref", dtype="float64")
    rng = np.random.default_rng(seed)
    params = cc.init_params(seed=seed, scale=0.5)
    xs = [rng.integers(0, 5, (T, batch, 1)) if n.dtype == "int64"
          else rng.standard_normal((T, batch, int(n.shape[1]))) for n in cell.inputs]
    h0 = [0.5 * rng.standard_normal((batch, int(s.shape[1]))) for s in cell.states]
    R = [rng.standard_normal((T, batch, int(o.shape[1]))) for o in cell.outputs]
    S = [rng.standard_normal((batch, int(s.shape[1]))) for s in cell.states]

    _, _, res = cc.forward_train(params, xs, h0)
    g = cc.backward(params, res, R, S)
    worst = 0.0
    tp = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    tx = [np.zeros(x.shape) if x.dtype == np.int64 else rng.standard_normal(x.shape) for x in xs]
    th = [rng.standard_normal(h.shape) for h in h0]
    for direction in (dict(dp=tp), dict(dx=tx), dict(dh=th)):
        fd, an = fd_and_backward(cc, params, xs, h0, R, S, g, **direction, eps=1e-5)
        if fd == 0 and an == 0:
            continue
        worst = max(worst, abs(fd - an) / max(abs(fd), abs(an)))
    return worst


@pytest.mark.parametrize("build", [
    lambda: nn.lecture_lstm(3, 4),
    lambda: nn.charrnn_lstm(3, 4),
    lambda: nn.zaremba_lstm(3, 4),
    lambda: nn.charrnn_lstm(4, 3, num_layers=2, decoder=True),   # + Linear + LogSoftMax head
], ids=["lecture", "charrnn", "zaremba", "charrnn-2-layers-decoder"])
def test_lstm_gradients_match_finite_differences(build):
    assert check_gradients(build()) < 1e-6


def test_every_lowering_differentiates_correctly():
    # an embedding, peepholes, learned bias, narrow/join, squares, division, log-softmax
    ids, h = nn.Identity()(), nn.Identity()().annotate(name="h")
    e = nn.LookupTable(5, 4)(ids)
    hh = nn.JoinTable(2)([nn.Narrow(2, 2, 2)(h), h, nn.Narrow(2, 1, 1)(h)])
    z = nn.CAddTable()([nn.Linear(4, 6)(e), nn.CMul(6)(hh)])
    a, b = nn.SplitTable(2)(nn.Reshape(2, 3)(nn.Add(6)(z))).split(2)
    denom = nn.AddConstant(1.5)(nn.Square()(b))
    h2 = nn.Tanh()(nn.CDivTable()([nn.ReLU()(a), denom]))
    h2 = nn.CSubTable()([nn.MulConstant(0.5)(h2), nn.Dropout(0.2)(nn.Sigmoid()(h))])
    out = nn.LogSoftMax()(h2).annotate(name="logprobs")
    g = nn.gModule([ids, h], [out, h2])
    with pytest.warns(UserWarning, match=r"to_cell: nn.Dropout\(0.2\) created at .*"
                                         r"test_nngraph.py:\d+ is the identity inside a cell"):
        cell = g.to_cell(inputs=[0], states=["h"], next_states=[1], outputs=["logprobs"],
                         sizes={"h": 3})
    assert ir.short_type(cell.inputs[0]) == "i64[B,1]" and cell.states[0].shape == (ir.B, 3)
    assert check_gradients(cell, seed=5) < 1e-6


# ---------------------------------------------------------------------------------------------
# nngraph's rules and checks, messages pinned
# ---------------------------------------------------------------------------------------------

def test_module_where_a_node_is_expected():
    x = nn.Identity()()
    lin = nn.Linear(2, 3)
    with pytest.raises(ModuleUsageError, match=r"nn.CAddTable: inputs\[1\] is a Module "
                       r"\(nn.Linear\(2 -> 3\), created at .*test_nngraph.py:\d+\).*"
                       r"Did you forget the second \(\)\?"):
        nn.CAddTable()([x, lin])
    with pytest.raises(ModuleUsageError, match=r"nn.Tanh: input is a Module .*second \(\)"):
        nn.Tanh()(lin)
    with pytest.raises(ModuleUsageError, match=r"gModule: outputs\[0\] is a Module "
                                               r"\(nn.Linear.*second \(\)"):
        nn.gModule([x], [lin])
    with pytest.raises(ModuleUsageError, match=r"gModule: inputs\[0\] is a Module .*second"):
        nn.gModule([nn.Identity()], [x])


def test_other_things_where_a_node_is_expected():
    x = nn.Identity()()
    with pytest.raises(ModuleUsageError, match=r"inputs\[1\] should be an nngraph Node but is "
                                               r"of type ndarray"):
        nn.CAddTable()([x, np.zeros(3)])
    with pytest.raises(ModuleUsageError, match=r"what is this in the input\? None"):
        nn.Tanh()(None)
    with pytest.raises(ModuleUsageError, match=r"outputs\[1\] is None \(typo / bad index\?\)"):
        nn.gModule([x], [x, None])
    with pytest.raises(ModuleUsageError, match=r"use \[input1, input2\] to pass several"):
        nn.CAddTable()(x, x)
    with pytest.raises(ModuleUsageError, match=r"must be a list of nodes .*got one Node; "
                                               r"write \[node\]"):
        nn.gModule(x, [x])


def test_empty_input_list():
    with pytest.raises(ModuleUsageError, match=r"nn.CAddTable: got an empty input list"):
        nn.CAddTable()([])
    x = nn.Identity()()
    with pytest.raises(ModuleUsageError, match=r"gModule: inputs is an empty list"):
        nn.gModule([], [nn.Tanh()(x)])


def test_same_input_twice():
    x = nn.Identity()()
    with pytest.raises(ModuleUsageError, match=r"inputs\[0\] and inputs\[1\] are the same node "
                                               r".*don't pass the same input twice"):
        nn.CAddTable()([x, x])
    y = nn.Tanh()(x)
    with pytest.raises(ModuleUsageError, match=r"gModule: inputs\[0\] and inputs\[1\] are the "
                                               r"same node .*don't pass the same input twice"):
        nn.gModule([x, x], [y])


def test_unused_outputs_of_split():
    x = nn.Identity()()
    line = _line() + 1
    a, b, c, d = nn.SplitTable(2)(nn.Reshape(4, 2)(x)).split(4)
    out = nn.CAddTable()([a, c])
    with pytest.raises(GraphError, match=re.escape(f"2 of split(4) outputs from the node "
                                                   f"declared at {HERE}:{line} are unused")):
        nn.gModule([x], [out])
    with pytest.raises(ModuleUsageError, match=r"split\(1\): splitting to fewer than two"):
        x.split(1)


def test_split_count_must_match_the_table():
    x = nn.Identity()()
    a, b, c = nn.SplitTable(2)(nn.Reshape(4, 2)(x)).split(3)
    g = nn.gModule([x], [nn.CAddTable()([a, b, c])])
    with pytest.raises(ModuleUsageError, match=r"split\(3\) cannot split 4 outputs"):
        g.forward(np.zeros((1, 8)))


def test_nodes_that_do_not_reach_an_output():
    x = nn.Identity()()
    y = nn.Tanh()(x)
    line = _line() + 1
    nn.Sigmoid()(x)                                     # dangling
    with pytest.raises(GraphError, match=re.escape(f"node declared at {HERE}:{line} "
                                                   "(nn.Sigmoid()) does not connect to gModule "
                                                   "output")):
        nn.gModule([x], [y])
    x2, unused = nn.Identity()(), nn.Identity()()
    with pytest.raises(GraphError, match=r"inputs\[1\] \(created at .*\) does not connect to "
                                         r"any gModule output"):
        nn.gModule([x2, unused], [nn.Tanh()(x2)])
    a, b = nn.Identity()(), nn.Identity()()
    with pytest.raises(GraphError, match=r"depend on the input node nn.Identity\(\) created at "
                                         r".*which is not in gModule's inputs"):
        nn.gModule([a], [nn.CAddTable()([a, b])])
    with pytest.raises(ModuleUsageError, match=r"inputs\[0\] is not an input node: it is the "
                                               r"output of nn.Tanh\(\)"):
        t = nn.Tanh()(nn.Identity()())
        nn.gModule([t], [nn.Sigmoid()(t)])


def test_wrong_number_of_inputs_at_run_time():
    g = nn.lecture_lstm_gmodule(3, 4)
    x = np.zeros((2, 3))
    with pytest.raises(RuntimeInputError, match=r"gModule: got 2 inputs instead of 3"):
        g.forward([x, np.zeros((2, 4))])
    with pytest.raises(RuntimeInputError, match=r"expecting a list of 3 inputs, got ndarray"):
        g.forward(x)
    with pytest.raises(RuntimeInputError, match=r"inputs disagree on the batch size"):
        g.forward([x, np.zeros((3, 4)), np.zeros((3, 4))])


def test_shape_mismatch_is_reported_at_the_users_line():
    x, h = nn.Identity()(), nn.Identity()()
    a, b = nn.Linear(3, 8)(x), nn.Linear(4, 6)(h)
    line = _line() + 1
    s = nn.CAddTable()([a, b])
    g = nn.gModule([x, h], [s])
    with pytest.raises(ShapeError, match=re.escape(f"nn.CAddTable() at {HERE}:{line}: input 1 "
                                                   "is f32[B,6] but input 0 is f32[B,8] "
                                                   f"(created at {HERE}:{line - 2})")):
        g.to_cell()
    # a size given that contradicts the Linear: reported at the Linear's line
    x2 = nn.Identity()()
    line2 = _line() + 1
    y2 = nn.Linear(3, 2)(x2)
    g2 = nn.gModule([x2], [y2])
    with pytest.raises(ShapeError, match=re.escape(f"nn.Linear(3 -> 2) at {HERE}:{line2}: "
                                                   "expects 3 input features, got f64[B,5]")):
        g2.forward(np.zeros((2, 5)))


def test_tables_and_tensors_mixed_up():
    x = nn.Identity()()
    with pytest.raises(ModuleUsageError, match=r"nn.Linear takes one node, got a list of 2.*"
                                               r"did you mean nn.CAddTable\(\)"):
        nn.Linear(2, 2)([x, nn.Tanh()(x)])
    x1 = nn.Identity()()
    table = nn.SplitTable(2)(nn.Reshape(2, 2)(x1))
    g = nn.gModule([x1], [nn.Linear(2, 2)(table)])
    with pytest.raises(ModuleUsageError, match=r"nn.Linear\(2 -> 2\) at .*test_nngraph.py:\d+: "
                                               r"expects one tensor, got a table of 2.*"
                                               r"split\(n\)"):
        g.to_cell(sizes={0: 4})
    y = nn.Identity()()
    g2 = nn.gModule([y], [nn.SplitTable(2)(y)])
    with pytest.raises(ShapeError, match=r"would give 1-D columns"):
        g2.forward(np.zeros((2, 3)))
    with pytest.raises(ModuleUsageError, match=r"Node is not iterable .*did you mean "
                                               r"node.split\(n\)\?"):
        a, b = nn.SplitTable(2)(nn.Reshape(2, 2)(nn.Identity()()))


def test_unsupported_things_say_so():
    with pytest.raises(AttributeError, match=r"nn.LSTM is not part of graphrnn's nngraph "
                                             r"frontend; supported modules: .*Linear"):
        nn.LSTM  # noqa: B018
    with pytest.raises(ValueError, match=r"nn.JoinTable: only dimension 2"):
        nn.JoinTable(1)
    with pytest.raises(ValueError, match=r"nn.Linear: input_size must be a positive int, got "
                                         r"0"):
        nn.Linear(0, 3)
    g = nn.lecture_lstm_gmodule(2, 2)
    with pytest.raises(ModuleUsageError, match="gModule as a module of another graph"):
        g(nn.Identity()())


def test_to_cell_checks_its_arguments():
    g = nn.lecture_lstm_gmodule(2, 3)
    with pytest.raises(ModuleUsageError, match=r"give next_states=\[\.\.\.\]"):
        g.to_cell(states=["h", "c"])
    with pytest.raises(ModuleUsageError, match=r"inputs\[2\] 'c' is neither a per-step input "
                                               r"nor a state"):
        g.to_cell(inputs=["x"], states=["h"], next_states=[0])
    with pytest.raises(ModuleUsageError, match=r"no gModule input is annotated 'hidden'; the "
                                               r"names are \['x', 'h', 'c'\]"):
        g.to_cell(states=["hidden"], next_states=[0])
    with pytest.raises(ModuleUsageError, match=r"2 states but 1 next_states"):
        g.to_cell(states=["h", "c"], next_states=[0])
    x, h = nn.Identity()(), nn.Input(3).annotate(name="h")
    g2 = nn.gModule([x, h], [nn.CAddTable()([nn.Linear(2, 2)(x), nn.Linear(3, 2)(h)])])
    with pytest.raises(GraphError, match=r"next state of h is f32\[B,2\] but the state is "
                                         r"f32\[B,3\]"):
        g2.to_cell(states=["h"], next_states=[0])


def test_the_gradient_check_can_fail(monkeypatch):
    # a gradient off by 1e-4 relative must be caught, or the checks above prove nothing
    from codegen.ref import RefBackend
    real = RefBackend._backward

    def off(self, *a, **kw):
        g = real(self, *a, **kw)
        g.params = {k: v * (1 + 1e-4) for k, v in g.params.items()}
        g.states = [s * (1 + 1e-4) for s in g.states]
        return g

    monkeypatch.setattr(RefBackend, "_backward", off)
    assert check_gradients(nn.zaremba_lstm(2, 3)) > 1e-6


def test_more_mistakes_get_a_hint():
    x = nn.Identity()()
    with pytest.raises(ModuleUsageError, match=r"nn.Tanh: input is the class nn.Sigmoid, not a "
                                               r"node; .* nn.Sigmoid\(...\)\(x\)"):
        nn.Tanh()(nn.Sigmoid)
    with pytest.raises(ModuleUsageError, match=r"outputs\[0\] is a Module .* only nngraph Nodes "
                                               r"can be outputs. Did you forget the second"):
        nn.gModule([x], [nn.Tanh()])
    a, b = nn.Identity()().annotate(name="a"), nn.Identity()().annotate(name="b")
    g = nn.gModule([a, b], [nn.CAddTable()([a, b])])
    with pytest.raises(RuntimeInputError, match=r"got 1 inputs instead of 2 \(nn.Identity\(\) "
                                                r"'a', nn.Identity\(\) 'b'\), in the order"):
        g.forward([np.ones((1, 2))])
    ids = nn.Identity()()
    lut = nn.gModule([ids], [nn.LookupTable(5, 3)(ids)])
    for bad in (-1, 5):   # numpy would wrap -1 to the last row
        with pytest.raises(RuntimeInputError, match=rf"gather \(created at .*test_nngraph.py:\d+"
                                                    rf"\): id {bad} is out of range: ids are "
                                                    r"0-based in \[0, 5\) \(Torch's"):
            lut.forward(np.array([[0], [bad]]))


def test_set_debug_draws_the_failing_node(tmp_path):
    x, h = nn.Identity()(), nn.Identity()()
    ratio = nn.CDivTable()([x, h])
    line = _line() - 1
    g = nn.gModule([x, h], [nn.Sigmoid()(nn.Tanh()(ratio))])
    ok = [np.ones((2, 3)), np.ones((2, 3))]
    svg = tmp_path / "dbg.svg"
    nn.setDebug(True, str(svg))
    try:
        np.testing.assert_allclose(g.forward(ok), 1 / (1 + np.exp(-np.tanh(1.0))))
        assert not svg.exists() and not svg.with_suffix(".dot").exists()
        with pytest.raises(graphrnn.BackendError, match=rf"failed at step t=0 in node div "
                                                        rf"f64\[B,3\] created at .*"
                                                        rf"test_nngraph.py:{line}: non-finite"):
            g.forward([np.zeros((2, 3)), np.zeros((2, 3))])          # 0 / 0
        assert svg.exists() or svg.with_suffix(".dot").exists()
    finally:
        nn.setDebug(False)
    with np.errstate(invalid="ignore"):                              # off: numpy's NaN, no file
        assert np.isnan(g.forward([np.zeros((2, 3)), np.zeros((2, 3))])).all()


@pytest.mark.parametrize("backend", ["ref", "program", "llvm"])
def test_every_backend_refuses_out_of_range_ids(backend):
    ids, h = nn.Identity()(), nn.Identity()()
    h2 = nn.Tanh()(nn.CAddTable()([nn.LookupTable(5, 3)(ids), nn.Linear(3, 3)(h)]))
    cell = nn.gModule([ids, h], [h2]).to_cell(inputs=[0], states=[1], next_states=[0])
    cc = graphrnn.compile(cell, backend=backend, dtype="float64")
    params = cc.init_params(seed=0)
    ok = np.array([[[0], [4]]])                       # (T=1, B=2, 1)
    cc.forward(params, ok)
    for bad in (-1, 5):                               # numpy would wrap -1 to the last row
        with pytest.raises(RuntimeInputError, match=rf"input 'x': token ids must be in "
                                                    rf"\[0, 5\), got values in \[{min(0, bad)}, "
                                                    rf"{max(4, bad)}\]"):
            cc.forward(params, np.array([[[0], [4]], [[bad], [1]]]))
