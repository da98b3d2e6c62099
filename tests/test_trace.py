"""The trace frontend: cells as Python code on symbolic tensors."""

import numpy as np
import pytest

from frontends import trace as tr
from graphrnn.errors import GraphError, ShapeError
from graphrnn.interp import evaluate
from graphrnn.ir import B, site_of
from graphrnn.ops import Ops


def test_builder_makes_a_cell_with_sites_and_frontend():
    cb = tr.CellBuilder("rnn", "float64")
    x, h = cb.input("x", 3), cb.state("h", 4)
    hn = tr.tanh(cb.linear(x, 4, "W_x", bias=False) + cb.linear(h, 4, "W_h"))
    cell = cb.build([hn], {"h": hn})
    assert cell.name == "rnn" and cell.dtype == "float64"
    assert cell.param_shapes() == {"W_x": (3, 4), "W_h": (4, 4), "b_h": (1, 4)}
    assert site_of(cell.params[0]).frontend == "trace"
    assert site_of(cell.params[0]).file.endswith("test_trace.py")
    assert cb.linear(x, 2, "proj").src[1].src[0].arg == "proj_b"  # bias name without a W


def test_operators_and_functions_match_numpy():
    cb = tr.CellBuilder("ops", "float64")
    x, h = cb.input("x", 3), cb.state("h", 3)
    p = cb.param("p", (1, 3))
    parts = [x + h, x - 1, 2 - x, x * h, x / 2, 1 / (1 + tr.exp(h)), -x, +x, x ** 2,
             tr.sqrt(tr.exp(x)), tr.log(tr.sigmoid(x)), tr.relu(x), tr.softplus(h),
             tr.maximum(x, h), tr.maximum(x, 0.5), tr.where(tr.relu(x), x, h), x * p]
    out = parts[0]
    for q in parts[1:]:
        out = out + q
    y = tr.concat([out, x[:, 0:2], tr.reduce_sum(h), tr.reduce_max(x)])
    cell = cb.build([y], [h])
    assert y.shape == (B, 3 + 2 + 1 + 1)
    rng = np.random.default_rng(0)
    xv, hv, pv = rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), rng.random((1, 3))
    got = evaluate([cell.outputs[0]], {cell.inputs[0]: xv, cell.states[0]: hv,
                                        cell.params[0]: pv})[0]
    sig = 1 / (1 + np.exp(-xv))
    want = (xv + hv + xv - 1 + 2 - xv + xv * hv + xv / 2 + 1 / (1 + np.exp(hv)) - xv + xv
            + xv ** 2 + np.sqrt(np.exp(xv)) + np.log(sig) + np.maximum(xv, 0)
            + np.log1p(np.exp(hv)) + np.maximum(xv, hv) + np.maximum(xv, 0.5)
            + np.where(xv > 0, xv, hv) + xv * pv)
    want = np.concatenate([want, xv[:, :2], hv.sum(1, keepdims=True),
                           xv.max(1, keepdims=True)], 1)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_matmul_operator_is_row_times_weight():
    cb = tr.CellBuilder("mm")
    x = cb.input("x", 3)
    y = x @ cb.param("W", (3, 5))
    assert y.op is Ops.MATMUL and y.arg == (False, False) and y.shape == (B, 5)


def test_build_errors():
    cb = tr.CellBuilder("bad")
    x, h, c = cb.input("x", 2), cb.state("h", 3), cb.state("c", 3)
    with pytest.raises(GraphError, match=r"next_states names unknown states \['q'\]; the states "
                                         r"are \['h', 'c'\]"):
        cb.build([h], {"h": h, "c": c, "q": h})
    with pytest.raises(GraphError, match=r"no next state given for \['c'\]"):
        cb.build([h], {"h": h})
    with pytest.raises(GraphError, match=r"2 states but 1 next states"):
        cb.build([h], [h])
    with pytest.raises(GraphError, match=r"next state of h is f32\[B,2\]"):
        cb.build([h], [x, c])


def test_shape_errors_point_at_the_user_line():
    cb = tr.CellBuilder("se")
    x, h = cb.input("se_x", 2), cb.state("se_h", 3)
    with pytest.raises(ShapeError, match=r"shape mismatch: f32\[B,2\] vs f32\[B,3\].*"
                                         r"test_trace.py:\d+"):
        _ = x * h
    with pytest.raises(ShapeError, match=r"matmul: inner sizes differ"):
        _ = x @ cb.param("se_W", (3, 3))
    with pytest.raises(ShapeError, match=r"param se_b: shape must be 2-D"):
        cb.param("se_b", (3,))
    with pytest.raises(ShapeError, match=r"input name must be an identifier"):
        cb.input("not a name", 2)


def test_weight_on_the_left_gets_the_row_convention_hint():
    cb = tr.CellBuilder("c")
    x, W = cb.input("x", 3), cb.param("W", (4, 3))
    with pytest.raises(ShapeError, match=r"inner sizes differ: f32\[4,3\] @ f32\[B,3\] \(3 vs "
                                         r"B\); rows are examples here: write x @ W with W of "
                                         r"shape \(in, out\)"):
        W @ x
    h = cb.state("h", 3)
    with pytest.raises(ShapeError, match=r"tanh needs at least one Node operand, got \(list\); a "
                                         r"list is not a concatenation here: write concat"):
        tr.tanh([h, x])
