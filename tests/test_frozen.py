"""Frozen parameters end to end: declared in every frontend (``param W: .. frozen``, nngraph's
``freeze()``, ``CellBuilder.param(frozen=True)``), kept by ``Cell.frozen`` through dtype changes,
masking and JSON, never differentiated (the Program loses the weight-gradient GEMM), absent from
``Grads`` on every backend, skipped by the optimizers, and never packed with a trained weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import fd_and_backward

import graphrnn
from graphrnn import nn
from graphrnn.builder import CellBuilder, tanh
from graphrnn.equations import cell_from_equations, parse_file
from graphrnn.errors import EquationError, GraphError
from graphrnn.ir_json import cell_from_json, cell_to_json
from graphrnn.optim import SGD, Adam
from graphrnn.pipeline import build_program
from graphrnn.program import Gemm

ESN = Path(__file__).resolve().parent.parent / "examples" / "cells" / "esn.eq"
BACKENDS = ["ref", "program", "llvm"]


def esn(dtype: str = "float64") -> graphrnn.Cell:
    return parse_file(ESN, dtype=dtype)


def gemms(program: object) -> int:
    return sum(isinstance(s, Gemm) for sw in (program.forward, program.backward)  # type: ignore
               for _ph, steps in sw.phases() for s in steps)


def data(cc: graphrnn.CompiledCell, T: int = 6, B: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((T, B, int(x.shape[1]))) for x in cc.cell.inputs]
    h0 = [rng.standard_normal((B, int(s.shape[1]))) * 0.5 for s in cc.cell.states]
    dys = [rng.standard_normal((T, B, int(o.shape[1]))) for o in cc.cell.outputs]
    dhT = [rng.standard_normal((B, int(s.shape[1]))) for s in cc.cell.states]
    return xs, h0, dys, dhT


def test_equations_frozen_header_marks_the_reservoir() -> None:
    cell = esn()
    assert cell.frozen == {"W_in", "W", "b"}
    assert set(cell.grad_shapes()) == {"W_out", "b_out"}
    assert "W: f64[32,32] frozen" in str(cell)
    # the same through the argument, and a shape left to inference: 'param W: frozen'
    text = "input x: 3\nstate h: 4\nparam W: frozen\nh_next = tanh(W @ h + U @ x)\n"
    assert cell_from_equations(text).frozen == {"W"}
    text2 = "input x: 3\nstate h: 4\nh_next = tanh(W @ h + U @ x)\n"
    assert cell_from_equations(text2, frozen=["U"]).frozen == {"U"}
    assert cell_from_equations(text2).frozen == frozenset()


@pytest.mark.parametrize("line, what", [
    ("param x: frozen", "an input"),
    ("param h: frozen", "a state"),
    ("param V: frozen", "used by no equation"),
])
def test_equations_frozen_must_name_a_parameter(line: str, what: str) -> None:
    text = f"input x: 3\nstate h: 4\n{line}\nh_next = tanh(W @ h + U @ x)\n"
    with pytest.raises(EquationError, match=f"marked frozen but is {what}") as e:
        cell_from_equations(text)
    assert e.value.lineno == 3


def test_equations_frozen_argument_is_a_list() -> None:
    with pytest.raises(EquationError, match="a list of parameter names"):
        cell_from_equations("state h: 4\nh_next = tanh(W @ h)\n", frozen="W")  # type: ignore


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_gradient_for_frozen_params_and_equal_to_ref(backend: str) -> None:
    cell = esn()
    ref = graphrnn.compile(cell, backend="ref", dtype="float64")
    cc = graphrnn.compile(cell, backend=backend, dtype="float64")
    params = ref.init_params(seed=3, scale=0.3)
    xs, h0, dys, dhT = data(cc)
    ys, hT, res = cc.forward_train(params, xs, h0)
    g = cc.backward(params, res, dys, dhT)
    assert set(g.params) == {"W_out", "b_out"}
    y1, h1, r1 = ref.forward_train(params, xs, h0)
    g1 = ref.backward(params, r1, dys, dhT)
    for k in g1.params:
        np.testing.assert_allclose(g.params[k], g1.params[k], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(g.inputs[0], g1.inputs[0], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(g.states[0], g1.states[0], rtol=1e-9, atol=1e-10)


def test_program_has_one_fewer_gemm_per_frozen_weight() -> None:
    cell = esn()
    trained = build_program(cell.with_frozen([]))
    frozen = build_program(cell)
    # W_in (Xᵀ dZ) and W (Hᵀ dZ) lose their weight-gradient GEMMs after the backward loop
    assert gemms(trained) - gemms(frozen) == 2
    assert gemms(build_program(cell.with_frozen(["W"]))) == gemms(trained) - 1
    assert {pc.name for pc in frozen.grad_pieces} == {"W_out", "b_out"}
    assert {pc.name for pc in trained.grad_pieces} == {"W_in", "W", "b", "W_out", "b_out"}
    # the forward reads every parameter all the same
    assert {pc.name for pc in frozen.param_pieces} == set(cell.param_shapes())
    text = graphrnn.explain(cell, batch=4)
    assert "no gradient (frozen or unused): W, W_in, b\n" in text
    assert "no gradient" not in graphrnn.explain(cell.with_frozen([]), batch=4)


@pytest.mark.parametrize("backend", ["ref", "program"])
def test_finite_differences_of_the_trained_params(backend: str) -> None:
    cell = esn()
    cc = graphrnn.compile(cell, backend=backend, dtype="float64")
    params = cc.init_params(seed=5, scale=0.3)
    xs, h0, dys, dhT = data(cc, seed=1)
    ys, hT, res = cc.forward_train(params, xs, h0)
    g = cc.backward(params, res, dys, dhT)
    rng = np.random.default_rng(2)
    for keys in (["W_out"], ["b_out"], ["W_out", "b_out"]):
        dp = {k: rng.standard_normal(params[k].shape) for k in keys}
        fd, an = fd_and_backward(cc, params, xs, h0, dys, dhT, g, dp, eps=1e-6)
        assert abs(an) > 1e-3
        assert abs(fd - an) <= 1e-7 * max(abs(fd), abs(an)), (keys, fd, an)
    # the initial state's gradient flows through the frozen reservoir
    dh = [rng.standard_normal(h.shape) for h in h0]
    fd, an = fd_and_backward(cc, params, xs, h0, dys, dhT, g, None, None, dh, eps=1e-6)
    assert abs(fd - an) <= 1e-7 * max(abs(fd), abs(an))


@pytest.mark.parametrize("opt", [lambda: SGD(0.002, momentum=0.9), lambda: Adam(0.01)])
def test_training_changes_only_the_readout(opt) -> None:  # type: ignore[no-untyped-def]
    cell = esn()
    cc = graphrnn.compile(cell, backend="program", dtype="float64")
    params = cc.init_params(seed=7, scale=0.3)
    before = {k: v.copy() for k, v in params.items()}
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((8, 4, 16))]
    target = rng.standard_normal((8, 4, 4)) * 0.1
    o = opt()
    losses = []
    for _ in range(30):
        ys, _hT, res = cc.forward_train(params, xs)
        err = ys[0] - target
        losses.append(float(np.sum(err ** 2)))
        g = cc.backward(params, res, [2 * err])
        o.step(params, g.params, frozen=cell.frozen)
    assert losses[-1] < 0.5 * losses[0]
    for k in cell.frozen:
        assert np.array_equal(params[k], before[k]), k
    for k in ("W_out", "b_out"):
        assert not np.array_equal(params[k], before[k]), k
    # without being told, a parameter with no gradient is left alone too (the optimizer's
    # rule for frozen parameters), and a gradient for an unknown name is an error
    o1, kept = opt(), {k: params[k].copy() for k in cell.frozen}
    o1.step(params, g.params)
    assert all(np.array_equal(params[k], v) for k, v in kept.items())
    with pytest.raises(KeyError, match="unknown parameters"):
        o1.step(params, {**g.params, "nope": np.zeros(1)})
    # a gradient given for a frozen parameter anyway is ignored, and gets no optimizer state
    o2 = opt()
    w = params["W"].copy()
    o2.step(params, {**g.params, "W": np.ones_like(w)}, frozen=cell.frozen)
    assert np.array_equal(params["W"], w)
    assert not any(k.endswith("/W") for k in o2.state_dict())


def test_a_frozen_weight_is_never_packed_with_a_trained_one() -> None:
    # W (frozen) and U (trained) both multiply h: packed, they would share one gradient GEMM
    # that computes W's block too. Kept apart, the step has two GEMMs on h (forward, and two
    # for d_h in the backward) and the gradient GEMM after the loop computes U's block only:
    # the same FLOPs in the loop, half of them after it (merge.pack_columns' docstring)
    text = ("input x: 3\nstate h: 5\nparam W: frozen\n"
            "h_next = tanh(W @ h + V @ x) * sigmoid(U @ h + b)\n")
    cell = cell_from_equations(text, dtype="float64")
    both = build_program(cell.with_frozen([]))
    frozen = build_program(cell)
    # packed: [W;U] in the loop (fwd, bwd) + one gradient GEMM [W;U]; apart: two each way + U's
    assert gemms(frozen) == gemms(both) + 2
    assert "W" not in {pc.name for pc in frozen.grad_pieces}
    grad_bufs = {pc.ref.buf for pc in frozen.grad_pieces if pc.name == "U"}
    (buf,) = grad_bufs
    shape = next((b.rows, b.cols) for b in frozen.buffers if b.name == buf)
    assert shape == (5, 5)               # U's gradient alone, not a packed [W; U] one
    for backend in BACKENDS:
        cc = graphrnn.compile(cell, backend=backend, dtype="float64")
        params = cc.init_params(seed=1, scale=0.5)
        xs, h0, dys, dhT = data(cc)
        ys, hT, res = cc.forward_train(params, xs, h0)
        g = cc.backward(params, res, dys, dhT)
        assert set(g.params) == {"U", "V", "b"}
        dp = {k: np.random.default_rng(3).standard_normal(params[k].shape) for k in g.params}
        if backend != "llvm":
            fd, an = fd_and_backward(cc, params, xs, h0, dys, dhT, g, dp)
            assert abs(fd - an) <= 1e-7 * max(abs(fd), abs(an))


def test_frozen_survives_dtype_masking_and_json() -> None:
    cell = esn("float32")
    assert cell.with_dtype("float64").frozen == cell.frozen
    from graphrnn.model import masked_cell
    assert masked_cell(cell).frozen == cell.frozen
    doc = cell_to_json(cell)
    assert doc["frozen"] == ["W", "W_in", "b"]
    back = cell_from_json(doc)
    assert back.frozen == cell.frozen and back == cell
    # a document written before frozen parameters existed trains everything
    old = {k: v for k, v in doc.items() if k != "frozen"}
    assert cell_from_json(old).frozen == frozenset()
    with pytest.raises(GraphError, match="not parameters of the cell"):
        cell_from_json({**doc, "frozen": ["nope"]})
    with pytest.raises(GraphError, match="frozen must be a list"):
        cell_from_json({**doc, "frozen": "W"})
    # frozen is part of equality: it changes the backward
    assert cell.with_frozen([]) != cell


def test_cell_rejects_unknown_frozen_names() -> None:
    cell = esn()
    with pytest.raises(GraphError, match=r"frozen names \['Q'\] are not parameters"):
        cell.with_frozen(["Q"])
    with pytest.raises(GraphError, match="collection of parameter names"):
        cell.with_frozen("W")  # type: ignore[arg-type]


def test_trace_builder_frozen() -> None:
    cb = CellBuilder("esn", "float64")
    x, h = cb.input("x", 3), cb.state("h", 4)
    w = cb.param("W", (4, 4), frozen=True)
    h2 = tanh(h @ w + cb.linear(x, 4, "W_in", frozen=True))
    y = cb.linear(h2, 2, "W_out")
    cb.param("unused", (2, 2), frozen=True)   # not reached: not part of the cell
    cell = cb.build([y], {"h": h2})
    assert cell.frozen == {"W", "W_in", "b_in"}
    cc = graphrnn.compile(cell, backend="program", dtype="float64")
    params = cc.init_params(seed=0)
    xs, h0, dys, dhT = data(cc)
    _, _, res = cc.forward_train(params, xs, h0)
    assert set(cc.backward(params, res, dys, dhT).params) == {"W_out", "b_out"}


def test_nngraph_freeze() -> None:
    x, h = nn.Identity()(), nn.Identity()()
    reservoir = nn.Linear(4, 4, bias=False).freeze()
    h2 = nn.Tanh()(nn.CAddTable()([nn.Linear(3, 4, frozen=True)(x), reservoir(h)]))
    y = nn.Linear(4, 2)(h2)
    g = nn.gModule([x, h], [y, h2])
    cell = g.to_cell(inputs=[0], states=[1], next_states=[1], outputs=[0], sizes={0: 3, 1: 4},
                     dtype="float64")
    # modules are numbered in creation order: the reservoir is Linear_1, the input Linear_2
    assert cell.frozen == {"Linear_1_W", "Linear_2_W", "Linear_2_b"}
    assert set(cell.grad_shapes()) == {"Linear_3_W", "Linear_3_b"}
    assert "frozen" in repr(reservoir)
    cc = graphrnn.compile(cell, backend="program", dtype="float64")
    params = {k: v.copy() for k, v in g.parameters().items()}
    xs, h0, dys, dhT = data(cc)
    _, _, res = cc.forward_train(params, xs, h0)
    assert set(cc.backward(params, res, dys, dhT).params) == {"Linear_3_W", "Linear_3_b"}
    with pytest.raises(graphrnn.errors.ModuleUsageError, match="no parameters to freeze"):
        nn.Tanh().freeze()
    assert reservoir.freeze(False).frozen is False


PER_GATE = """
input x: 3
state h: 4, c: 4
output h_next
i = sigmoid(W_xi @ x + W_hi @ h + b_i)
f = sigmoid(W_xf @ x + W_hf @ h + b_f)
g = tanh(W_xg @ x + W_hg @ h + b_g)
o = sigmoid(W_xo @ x + W_ho @ h + b_o)
c_next = f * c + i * g
h_next = o * tanh(c_next)
"""


@pytest.mark.parametrize("frozen, packed_frozen", [
    (["b_f"], False),                                  # one bias of four: no packed bias
    (["b_i", "b_f", "b_g", "b_o"], True),              # all four: one frozen packed bias
    (["W_xi", "W_xf", "W_xg", "W_xo"], True),          # the input weights: one frozen pack
    (["W_hf"], False),                                 # one recurrent weight: kept apart
])
def test_packing_with_frozen_parts_of_a_per_gate_lstm(frozen: list[str],
                                                      packed_frozen: bool) -> None:
    from graphrnn.pipeline import build_plan
    cell = cell_from_equations(PER_GATE, dtype="float64", frozen=frozen)
    plan = build_plan(cell)
    merged_frozen = plan.cell.frozen
    users = {pc.user for name in merged_frozen for pc in plan.layout[name]}
    assert users == set(frozen)        # every frozen user lives in frozen leaves only
    assert any(len(plan.layout[n]) > 1 for n in merged_frozen) == packed_frozen
    trained = {p.arg for p in plan.cell.params} - merged_frozen
    assert not {pc.user for n in trained for pc in plan.layout[n]} & set(frozen)
    ref = graphrnn.compile(cell, backend="ref", dtype="float64")
    for backend in ("program", "llvm"):
        cc = graphrnn.compile(cell, backend=backend, dtype="float64")
        params = ref.init_params(seed=4, scale=0.5)
        xs, h0, dys, dhT = data(cc)
        _, _, r1 = ref.forward_train(params, xs, h0)
        _, _, r2 = cc.forward_train(params, xs, h0)
        g1, g2 = ref.backward(params, r1, dys, dhT), cc.backward(params, r2, dys, dhT)
        assert set(g2.params) == set(g1.params) == set(cell.param_shapes()) - set(frozen)
        for k in g1.params:
            np.testing.assert_allclose(g2.params[k], g1.params[k], rtol=1e-9, atol=1e-10)
    # the trained parameters' gradients against finite differences, on the merged program
    cc = graphrnn.compile(cell, backend="program", dtype="float64")
    params = cc.init_params(seed=4, scale=0.5)
    xs, h0, dys, dhT = data(cc)
    _, _, res = cc.forward_train(params, xs, h0)
    g = cc.backward(params, res, dys, dhT)
    rng = np.random.default_rng(8)
    dp = {k: rng.standard_normal(params[k].shape) for k in g.params}
    fd, an = fd_and_backward(cc, params, xs, h0, dys, dhT, g, dp)
    assert abs(fd - an) <= 1e-7 * max(abs(fd), abs(an))


@pytest.mark.parametrize("name", sorted(__import__("graphrnn.cells").cells.ZOO))
def test_zoo_cells_with_a_random_half_frozen_equal_ref(name: str) -> None:
    from graphrnn.cells import SQUARE_INPUT, zoo_cell
    zoo = zoo_cell(name, 4 if name in SQUARE_INPUT else 3, 4, "float64")
    names = sorted(zoo.param_shapes())
    rng = np.random.default_rng(sum(map(ord, name)))
    frozen = [n for n in names if rng.random() < 0.5] or names[:1]
    cell = zoo.with_frozen(frozen)
    program = build_program(cell)
    assert not {pc.name for pc in program.grad_pieces} & set(frozen)
    # (the GEMM count may grow: a frozen and a trained weight on one operand are two GEMMs,
    # the same FLOPs as their packed one, and the gradient GEMM computes the trained one only)
    ref = graphrnn.compile(cell, backend="ref", dtype="float64")
    params = ref.init_params(seed=2, scale=0.5)
    xs, h0, dys, dhT = data(ref)
    _, _, r1 = ref.forward_train(params, xs, h0)
    g1 = ref.backward(params, r1, dys, dhT)
    assert set(g1.params) == set(names) - set(frozen)
    for backend in ("program", "llvm"):
        cc = graphrnn.compile(cell, backend=backend, dtype="float64")
        _, _, r2 = cc.forward_train(params, xs, h0)
        g2 = cc.backward(params, r2, dys, dhT)
        assert set(g2.params) == set(g1.params)
        for k in g1.params:
            np.testing.assert_allclose(g2.params[k], g1.params[k], rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(g2.inputs[0], g1.inputs[0], rtol=1e-9, atol=1e-10)
