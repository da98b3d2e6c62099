"""Weight converters: gate orders round trip and keep the function; PyTorch state dicts (built
here as plain numpy dicts, so torch is not needed) round trip; the lecture GRU maps to PyTorch's
only where that is exact."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import assert_all_close

import graphrnn
from graphrnn import cells, convert
from graphrnn.errors import ShapeError

I, H, B, T = 3, 4, 2, 5
ORDERS = ["ifgo", "ifog", "igfo"]


def rand(shape, seed, scale=0.6):
    return np.random.default_rng(seed).uniform(-scale, scale, shape)


def run(cell, params, seed=0):
    cc = graphrnn.compile(cell, backend="ref", dtype="float64")
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((T, B, I))
    h0 = [rng.uniform(-0.5, 0.5, (B, int(s.shape[1]))) for s in cc.cell.states]
    ys, hT = cc.forward(params, xs, h0)
    return ys + hT


def lstm_params(seed=0):
    return {"W_x": rand((I, 4 * H), seed), "W_h": rand((H, 4 * H), seed + 1),
            "b": rand((1, 4 * H), seed + 2)}


def assert_same(a, b):
    assert_all_close(a, b, rtol=1e-12, atol=1e-13)


def test_reorder_gates_moves_blocks():
    a = np.concatenate([np.full((2, H), k) for k in range(4)], axis=1)  # blocks 0 1 2 3 = i f g o
    out = convert.reorder_gates(a, "ifgo", "igfo")
    assert [out[0, k * H] for k in range(4)] == [0, 2, 1, 3]
    out = convert.reorder_gates(a, "pytorch", "char-rnn")
    assert [out[0, k * H] for k in range(4)] == [0, 1, 3, 2]
    # along axis 0 (PyTorch's (4H, in) layout)
    np.testing.assert_array_equal(convert.reorder_gates(a.T, "ifgo", "igfo", axis=0),
                                  convert.reorder_gates(a, "ifgo", "igfo").T)


@pytest.mark.parametrize("src,dst", list(itertools.permutations(ORDERS, 2)))
def test_gate_order_round_trip_and_same_function(src, dst):
    p = lstm_params()
    q = convert.convert_lstm_gate_order(p, src, dst)
    back = convert.convert_lstm_gate_order(q, dst, src)
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])
        assert not np.array_equal(q[k], p[k])
    a = run(cells.lstm(I, H, "float64", gate_order=src), p)
    b = run(cells.lstm(I, H, "float64", gate_order=dst), q)
    assert_same(a, b)
    # and without converting, the other order is a different function
    c = run(cells.lstm(I, H, "float64", gate_order=dst), p)
    assert not np.allclose(a[0], c[0], atol=1e-4)


def test_gate_order_keeps_other_entries():
    p = {**lstm_params(), "extra": np.arange(3.0)}
    q = convert.convert_lstm_gate_order(p, "ifgo", "ifog")
    np.testing.assert_array_equal(q["extra"], p["extra"])


def torch_lstm_sd(seed=0, bias=True):
    sd = {"weight_ih_l0": rand((4 * H, I), seed), "weight_hh_l0": rand((4 * H, H), seed + 1)}
    if bias:
        sd["bias_ih_l0"] = rand((4 * H,), seed + 2)
        sd["bias_hh_l0"] = rand((4 * H,), seed + 3)
    return sd


def np_torch_lstm(sd, xs, h0, c0):
    """PyTorch's documented nn.LSTM equations (gates i, f, g, o), in numpy."""
    Wi, Wh = sd["weight_ih_l0"], sd["weight_hh_l0"]
    b = sd.get("bias_ih_l0", 0) + sd.get("bias_hh_l0", 0)
    h, c = h0, c0
    ys = []
    for x in xs:
        g = x @ Wi.T + h @ Wh.T + b
        i, f = 1 / (1 + np.exp(-g[:, :H])), 1 / (1 + np.exp(-g[:, H:2 * H]))
        gg, o = np.tanh(g[:, 2 * H:3 * H]), 1 / (1 + np.exp(-g[:, 3 * H:]))
        c = f * c + i * gg
        h = o * np.tanh(c)
        ys.append(h)
    return [np.stack(ys), h, c]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("forget_bias", [0.0, 1.0])
def test_lstm_from_torch_matches_torch_equations(order, forget_bias):
    sd = torch_lstm_sd()
    p = convert.lstm_from_torch(sd, gate_order=order, forget_bias=forget_bias)
    assert p["W_x"].shape == (I, 4 * H) and p["b"].shape == (1, 4 * H)
    ours = run(cells.lstm(I, H, "float64", gate_order=order, forget_bias=forget_bias), p)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((T, B, I))
    h0, c0 = (rng.uniform(-0.5, 0.5, (B, H)) for _ in range(2))
    assert_same(ours, np_torch_lstm(sd, xs, h0, c0))
    # back to a torch state dict: the same function (biases summed into bias_ih)
    sd2 = convert.lstm_to_torch(p, gate_order=order, forget_bias=forget_bias)
    np.testing.assert_allclose(sd2["weight_ih_l0"], sd["weight_ih_l0"], rtol=0, atol=0)
    np.testing.assert_allclose(sd2["weight_hh_l0"], sd["weight_hh_l0"], rtol=0, atol=0)
    np.testing.assert_allclose(sd2["bias_ih_l0"] + sd2["bias_hh_l0"],
                               sd["bias_ih_l0"] + sd["bias_hh_l0"], rtol=1e-15, atol=1e-15)


def test_lstm_from_torch_without_bias_prefix_layer_and_reverse():
    sd = {"rnn." + k.replace("_l0", "_l1_reverse"): v for k, v in
          torch_lstm_sd(bias=False).items()}
    p = convert.lstm_from_torch(sd, prefix="rnn.", layer=1, suffix="_reverse")
    np.testing.assert_array_equal(p["b"], np.zeros((1, 4 * H)))
    sd2 = convert.lstm_to_torch(p, prefix="rnn.", layer=1, suffix="_reverse")
    assert set(sd2) == {"rnn.weight_ih_l1_reverse", "rnn.weight_hh_l1_reverse",
                        "rnn.bias_ih_l1_reverse", "rnn.bias_hh_l1_reverse"}


def test_torch_state_dict_errors():
    with pytest.raises(KeyError, match="no 'weight_hh_l0'"):
        convert.lstm_from_torch({"weight_ih_l0": np.zeros((16, 3))})
    bad = torch_lstm_sd()
    bad["weight_hh_l0"] = np.zeros((12, 4))
    with pytest.raises(ShapeError, match=r"weight_hh_l0 must be \(4\*H, H\), got \(12, 4\)"):
        convert.lstm_from_torch(bad)
    bad = torch_lstm_sd()
    bad["bias_hh_l0"] = np.zeros(15)
    with pytest.raises(ShapeError, match=r"bias_hh_l0 must be \(16,\)"):
        convert.lstm_from_torch(bad)
    with pytest.raises(ValueError, match="permutation of 'ifgo'"):
        convert.lstm_from_torch(torch_lstm_sd(), gate_order="xyzw")
    with pytest.raises(ShapeError, match="not 4 equal gate blocks"):
        convert.reorder_gates(np.zeros((2, 7)), "ifgo", "ifog")


def test_rnn_from_torch():
    sd = {"weight_ih_l0": rand((H, I), 1), "weight_hh_l0": rand((H, H), 2),
          "bias_ih_l0": rand((H,), 3), "bias_hh_l0": rand((H,), 4)}
    p = convert.rnn_from_torch(sd)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((T, B, I))
    h = rng.uniform(-0.5, 0.5, (B, H))
    for x in xs:
        h = np.tanh(x @ sd["weight_ih_l0"].T + sd["bias_ih_l0"] + h @ sd["weight_hh_l0"].T
                    + sd["bias_hh_l0"])
    np.testing.assert_allclose(run(cells.rnn_tanh(I, H, "float64"), p)[-1], h, rtol=1e-12)


def torch_gru_sd(seed=0, diagonal=False, zero_bhn=False):
    sd = {"weight_ih_l0": rand((3 * H, I), seed), "weight_hh_l0": rand((3 * H, H), seed + 1),
          "bias_ih_l0": rand((3 * H,), seed + 2), "bias_hh_l0": rand((3 * H,), seed + 3)}
    if diagonal:
        sd["weight_hh_l0"][2 * H:] = np.diag(rand((H,), seed + 4, 1.0))
    if zero_bhn:
        sd["bias_hh_l0"][2 * H:] = 0.0
    return sd


def test_gru_torch_round_trip():
    sd = torch_gru_sd()
    p = convert.gru_torch_from_torch(sd)
    sd2 = convert.gru_torch_to_torch(p)
    for k in sd:
        np.testing.assert_array_equal(sd2[k], sd[k])
    with pytest.raises(ShapeError, match="gru_torch_to_torch: expected"):
        convert.gru_torch_to_torch({**p, "b_h": np.zeros((1, 3))})


def test_lecture_gru_from_torch_exact_when_possible():
    sd = torch_gru_sd(diagonal=True, zero_bhn=True)
    lec = convert.gru_from_torch(sd)
    a = run(cells.gru_torch(I, H, "float64"), convert.gru_torch_from_torch(sd))
    b = run(cells.gru(I, H, "float64"), lec)
    assert_same(a, b)
    # and back: the lecture weights give a torch state dict of the same function
    sd2 = convert.gru_to_torch(lec)
    c = run(cells.gru_torch(I, H, "float64"), convert.gru_torch_from_torch(sd2))
    assert_same(a, c)


def test_lecture_gru_from_torch_refuses_when_impossible():
    with pytest.raises(ValueError, match="off-diagonal"):
        convert.gru_from_torch(torch_gru_sd())
    with pytest.raises(ValueError, match=r"largest \|b_hn\|"):
        convert.gru_from_torch(torch_gru_sd(diagonal=True))
    # exact=False maps anyway, into a different function
    sd = torch_gru_sd()
    lec = convert.gru_from_torch(sd, exact=False)
    a = run(cells.gru_torch(I, H, "float64"), convert.gru_torch_from_torch(sd))
    b = run(cells.gru(I, H, "float64"), lec)
    assert not np.allclose(a[0], b[0], atol=1e-4)
    # the lecture-to-torch direction checks the h-rows of W_c
    with pytest.raises(ValueError, match="first 4 rows of W_c"):
        convert.gru_to_torch(lec)


def test_torch_like_tensors_are_accepted():
    class FakeTensor:  # what the converters rely on: .detach().cpu().numpy()
        def __init__(self, a):
            self.a = a

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    sd = torch_lstm_sd()
    p = convert.lstm_from_torch({k: FakeTensor(v) for k, v in sd.items()})
    np.testing.assert_array_equal(p["W_x"], sd["weight_ih_l0"].T)


def test_convert_does_not_import_torch():
    import subprocess
    import sys
    code = ("import sys, graphrnn.convert, graphrnn.cells; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rnn_to_torch_round_trips_and_refuses_wrong_shapes():
    from graphrnn.convert import rnn_from_torch, rnn_to_torch
    rng = np.random.default_rng(0)
    p = {"W_x": rng.standard_normal((3, 5)), "W_h": rng.standard_normal((5, 5)),
         "b": rng.standard_normal((1, 5))}
    sd = rnn_to_torch(p, layer=1, suffix="_reverse")
    assert sd["weight_ih_l1_reverse"].shape == (5, 3) and not sd["bias_hh_l1_reverse"].any()
    back = rnn_from_torch(sd, layer=1, suffix="_reverse")
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])
    with pytest.raises(graphrnn.ShapeError, match="rnn_to_torch"):
        rnn_to_torch({**p, "b": p["b"][:, :4]})
