"""One explicit weight convention: every cell says how it stores each weight
(``Cell.weight_layouts()``: the zoo, trace and nngraph (in, out), equations (out, in) as PyTorch),
a transposed weight is reported as such with the fix, ``convert.relayout`` converts between two
cells, and checkpoints carry the layout version so a later switch can never be read silently."""

from __future__ import annotations

import json

import numpy as np
import pytest

import graphrnn
from graphrnn import checkpoint as ckpt
from graphrnn import nn
from graphrnn.builder import CellBuilder, tanh
from graphrnn.cells import zoo_cell
from graphrnn.convert import relayout
from graphrnn.equations import cell_from_equations
from graphrnn.errors import RuntimeInputError, ShapeError

LSTM_EQ = """
input x: 3
state h: 4, c: 4
output h_next
z = W_x @ x + W_h @ h + b
i, f, g, o = split(z, 4)
c_next = sigmoid(f) * c + sigmoid(i) * tanh(g)
h_next = sigmoid(o) * tanh(c_next)
"""


def test_each_frontend_says_its_layout() -> None:
    assert zoo_cell("lstm", 3, 4).weight_layouts() == {"W_x": "(in, out)", "W_h": "(in, out)"}
    eq = cell_from_equations(LSTM_EQ)
    assert eq.weight_layouts() == {"W_x": "(out, in)", "W_h": "(out, in)"}
    assert "b" not in eq.weight_layouts()          # a bias is (1, n) in every frontend
    lecture = nn.lecture_lstm(3, 4)
    assert set(lecture.weight_layouts().values()) == {"(in, out)"}
    cb = CellBuilder("both")
    x, h = cb.input("x", 4), cb.state("h", 4)
    w = cb.param("W", (4, 4))
    from graphrnn.ir import Ops, apply
    h2 = tanh(x @ w + apply(Ops.MATMUL, h, w, arg=(False, True)))
    assert cb.build([h2], {"h": h2}).weight_layouts() == {"W": "mixed"}


@pytest.mark.parametrize("make, name, layout", [
    (lambda: zoo_cell("lstm", 3, 4), "W_x", "stores W_x as (in, out) and computes x @ W_x"),
    (lambda: cell_from_equations(LSTM_EQ), "W_h", "stores W_h as (out, in) and computes W_h @ x"),
])
def test_a_transposed_weight_is_named_as_such(make, name: str, layout: str) -> None:  # type: ignore
    cell = make()
    cc = graphrnn.compile(cell, backend="ref")
    params = cc.init_params(seed=0)
    params[name] = params[name].T
    with pytest.raises(RuntimeInputError) as e:
        cc.forward(params, [np.zeros((2, 1, 3), np.float32)])
    msg = str(e.value)
    assert f"parameter {name!r}: expected shape" in msg and "the transpose" in msg
    assert layout in msg and f"pass {name}.T" in msg and "graphrnn.convert.relayout" in msg
    # a shape that is simply wrong gets no layout story
    params[name] = np.zeros((2, 2), np.float32)
    with pytest.raises(RuntimeInputError) as e:
        cc.forward(params, [np.zeros((2, 1, 3), np.float32)])
    assert "transpose" not in str(e.value)


@pytest.mark.parametrize("name, text", [("lstm", LSTM_EQ), ("rnn_tanh", """
input x: 3
state h: 4
h_next = tanh(W_x @ x + W_h @ h + b)
""")])
def test_relayout_between_a_zoo_cell_and_its_equations(name: str, text: str) -> None:
    zoo = zoo_cell(name, 3, 4, "float64")
    eq = cell_from_equations(text, dtype="float64")
    zc = graphrnn.compile(zoo, backend="ref", dtype="float64")
    ec = graphrnn.compile(eq, backend="ref", dtype="float64")
    zp = zc.init_params(seed=1, scale=0.5)
    ep = relayout(zp, zoo, eq)
    assert all(ep[k].shape == s for k, s in eq.param_shapes().items())
    xs = [np.random.default_rng(0).standard_normal((5, 2, 3))]
    for a, b in zip(zc.forward(zp, xs)[0], ec.forward(ep, xs)[0]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    back = relayout(ep, eq, zoo)
    assert all(np.array_equal(back[k], zp[k]) for k in zp)
    # the same layout: copied as is
    assert all(np.array_equal(v, zp[k]) for k, v in relayout(zp, zoo, zoo).items())


def test_relayout_refuses_cells_that_do_not_match() -> None:
    zoo, eq = zoo_cell("lstm", 3, 4), cell_from_equations(LSTM_EQ)
    with pytest.raises(KeyError, match="the cells' parameters differ"):
        relayout({}, zoo_cell("gru", 3, 4), eq)
    bad = zoo_cell("lstm", 3, 5)
    params = graphrnn.compile(bad, backend="ref").init_params()
    with pytest.raises(ShapeError, match=r"relayout: W_x of lstm \(\(in, out\)\) becomes "):
        relayout(params, bad, eq)
    with pytest.raises(KeyError, match="no 'W_h'"):
        relayout({"W_x": np.zeros((3, 16)), "b": np.zeros((1, 16))}, zoo, eq)


def test_ir_messages_name_both_layouts() -> None:
    cb = CellBuilder("c")
    h = cb.state("h", 4)
    w = cb.param("W", (5, 4))
    with pytest.raises(ShapeError, match=r"x @ W with W of shape \(in, out\) \(the equations "
                                         r"frontend reads W @ x with W \(out, in\)"):
        _ = w @ h
    with pytest.raises(ShapeError, match=r"W @ x with W \(out, in\), PyTorch's layout"):
        _ = w.T


def _rewrite_meta(path, **fields) -> None:  # type: ignore[no-untyped-def]
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta.update(fields)
    for k, v in fields.items():
        if v is None:
            del meta[k]
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


def test_checkpoints_carry_the_weight_layout(tmp_path) -> None:
    path = ckpt.save(tmp_path / "m.npz", {"param/W_x": np.ones((3, 16))}, {"cell": "lstm"})
    arrays, meta = ckpt.load(path)
    assert meta["weight_layout"] == ckpt.WEIGHT_LAYOUT == 1
    # written before the field existed: layout 1, read as before
    _rewrite_meta(path, weight_layout=None)
    assert "weight_layout" not in json.loads(np.load(path)["__meta__"].tobytes())
    assert np.array_equal(ckpt.load(path)[0]["param/W_x"], np.ones((3, 16)))
    # another layout is refused, with the conversion to run
    _rewrite_meta(path, weight_layout=2)
    with pytest.raises(ckpt.CheckpointError, match=r"stores weights in layout 2, this graphrnn "
                                                   r"uses layout 1 .*graphrnn.convert.relayout"):
        ckpt.load(path)


def test_pytorch_weights_fit_an_equations_cell_as_they_are() -> None:
    rng = np.random.default_rng(3)
    H, n_in = 4, 3
    sd = {"weight_ih_l0": rng.standard_normal((4 * H, n_in)),
          "weight_hh_l0": rng.standard_normal((4 * H, H)),
          "bias_ih_l0": rng.standard_normal(4 * H), "bias_hh_l0": rng.standard_normal(4 * H)}
    from graphrnn.convert import lstm_from_torch
    zoo = zoo_cell("lstm", n_in, H, "float64")
    eq = cell_from_equations(LSTM_EQ, dtype="float64")
    zp = lstm_from_torch(sd)
    ep = {"W_x": sd["weight_ih_l0"], "W_h": sd["weight_hh_l0"],
          "b": (sd["bias_ih_l0"] + sd["bias_hh_l0"])[None, :]}
    xs = [rng.standard_normal((4, 2, n_in))]
    y1 = graphrnn.compile(zoo, backend="ref", dtype="float64").forward(zp, xs)[0][0]
    y2 = graphrnn.compile(eq, backend="ref", dtype="float64").forward(ep, xs)[0][0]
    np.testing.assert_allclose(y1, y2, rtol=1e-12, atol=1e-12)
    assert all(np.array_equal(v, relayout(zp, zoo, eq)[k]) for k, v in ep.items())
