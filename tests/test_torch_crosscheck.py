"""Cross-checks against PyTorch (float64): our lstm, gru_torch and, where the two are the same
function, the lecture gru, with weights converted from ``torch.nn.LSTM`` / ``torch.nn.GRU``,
give the same outputs, final states and gradients (parameters, inputs, initial states) to 1e-9.
The lecture GRU with general PyTorch weights is a different function."""

from __future__ import annotations

import numpy as np
import pytest

import graphrnn
from graphrnn import cells, convert

torch = pytest.importorskip("torch")

T, B, I, H = 6, 3, 4, 5
TOL = 1e-9


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def close(ours, theirs, what):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
    np.testing.assert_allclose(ours, theirs, rtol=TOL, atol=TOL, err_msg=what)


def torch_run(module, n_states, seed=0):
    """Run a torch RNN on random data; return inputs, initial states, outputs, final states,
    the cotangents and the gradients of <out, cy> + <final states, ch>."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(T, B, I, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = [(0.5 * torch.randn(1, B, H, generator=g, dtype=torch.float64)).requires_grad_()
          for _ in range(n_states)]
    out, fin = module(xs, tuple(h0) if n_states == 2 else h0[0])
    fin = list(fin) if n_states == 2 else [fin]
    cy = torch.randn(T, B, H, generator=g, dtype=torch.float64)
    ch = [torch.randn(1, B, H, generator=g, dtype=torch.float64) for _ in range(n_states)]
    loss = (out * cy).sum() + sum((f * c).sum() for f, c in zip(fin, ch, strict=True))
    loss.backward()
    return xs, h0, out, fin, cy, ch


def ours_run(cell, params, xs, h0, cy, ch):
    cc = graphrnn.compile(cell, backend="ref", dtype="float64")
    np_h0 = [h.detach().numpy()[0] for h in h0]
    ys, fin, res = cc.forward_train(params, xs.detach().numpy(), np_h0)
    grads = cc.backward(params, res, cy.numpy(), [c.numpy()[0] for c in ch])
    return ys[0], fin, grads


def check_common(ours_y, ours_fin, grads, xs, h0, out, fin):
    close(ours_y, out, "outputs")
    for k, (a, b) in enumerate(zip(ours_fin, fin, strict=True)):
        close(a, b[0], f"final state {k}")
    close(grads.inputs[0], xs.grad, "input gradients")
    for k, (a, b) in enumerate(zip(grads.states, h0, strict=True)):
        close(a, b.grad[0], f"initial state {k} gradients")


@pytest.mark.parametrize("order", ["ifgo", "ifog", "igfo"])
@pytest.mark.parametrize("forget_bias", [0.0, 1.0])
def test_lstm_matches_torch(order, forget_bias):
    torch.manual_seed(0)
    m = torch.nn.LSTM(I, H).double()
    sd = m.state_dict()
    params = convert.lstm_from_torch(sd, gate_order=order, forget_bias=forget_bias)
    xs, h0, out, fin, cy, ch = torch_run(m, 2)
    cell = cells.lstm(I, H, "float64", gate_order=order, forget_bias=forget_bias)
    y, f, g = ours_run(cell, params, xs, h0, cy, ch)
    check_common(y, f, g, xs, h0, out, fin)
    # parameter gradients: the torch gradients mapped the way the weights were
    close(g.params["W_x"], convert.reorder_gates(m.weight_ih_l0.grad.numpy().T, "ifgo", order),
          "dW_x")
    close(g.params["W_h"], convert.reorder_gates(m.weight_hh_l0.grad.numpy().T, "ifgo", order),
          "dW_h")
    for bias in (m.bias_ih_l0, m.bias_hh_l0):  # b feeds both torch biases
        close(g.params["b"], convert.reorder_gates(bias.grad.numpy()[None], "ifgo", order), "db")


def test_lstm_back_to_torch():
    cell = cells.lstm(I, H, "float64", gate_order="ifog", forget_bias=1.0)
    params = graphrnn.init_params(cell, seed=3, scale=0.5, dtype="float64")
    m = torch.nn.LSTM(I, H).double()
    sd = convert.lstm_to_torch(params, gate_order="ifog", forget_bias=1.0)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    xs, h0, out, fin, cy, ch = torch_run(m, 2, seed=4)
    y, f, g = ours_run(cell, params, xs, h0, cy, ch)
    check_common(y, f, g, xs, h0, out, fin)


def test_gru_torch_matches_torch():
    torch.manual_seed(1)
    m = torch.nn.GRU(I, H).double()
    params = convert.gru_torch_from_torch(m.state_dict())
    xs, h0, out, fin, cy, ch = torch_run(m, 1, seed=1)
    y, f, g = ours_run(cells.gru_torch(I, H, "float64"), params, xs, h0, cy, ch)
    check_common(y, f, g, xs, h0, out, fin)
    close(g.params["W_x"], m.weight_ih_l0.grad.numpy().T, "dW_x")
    close(g.params["W_h"], m.weight_hh_l0.grad.numpy().T, "dW_h")
    close(g.params["b_x"], m.bias_ih_l0.grad.numpy()[None], "db_x")
    close(g.params["b_h"], m.bias_hh_l0.grad.numpy()[None], "db_h")
    # and back
    m2 = torch.nn.GRU(I, H).double()
    m2.load_state_dict({k: torch.from_numpy(v)
                        for k, v in convert.gru_torch_to_torch(params).items()})
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])


def _diagonal_gru(seed):
    """A torch GRU whose candidate recurrence W_hn is diagonal and b_hn = 0: the one case where
    PyTorch's GRU and the lecture GRU are the same function."""
    torch.manual_seed(seed)
    m = torch.nn.GRU(I, H).double()
    with torch.no_grad():
        m.weight_hh_l0[2 * H:] = torch.diag(torch.rand(H, dtype=torch.float64) - 0.5)
        m.bias_hh_l0[2 * H:] = 0.0
    return m


def test_lecture_gru_matches_torch_where_mathematically_possible():
    m = _diagonal_gru(2)
    lec = convert.gru_from_torch(m.state_dict())
    xs, h0, out, fin, cy, ch = torch_run(m, 1, seed=2)
    y, f, g = ours_run(cells.gru(I, H, "float64"), lec, xs, h0, cy, ch)
    check_common(y, f, g, xs, h0, out, fin)
    # where the weight map is a relabeling, the parameter gradients map the same way
    gi, gh = m.weight_ih_l0.grad.numpy(), m.weight_hh_l0.grad.numpy()
    bi, bh = m.bias_ih_l0.grad.numpy(), m.bias_hh_l0.grad.numpy()
    R, Z, N = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)
    close(g.params["W_g"][:H, :H], -gh[Z].T, "dW_g z, h rows")
    close(g.params["W_g"][H:, :H], -gi[Z].T, "dW_g z, x rows")
    close(g.params["W_g"][:H, H:], gh[R].T, "dW_g r, h rows")
    close(g.params["W_g"][H:, H:], gi[R].T, "dW_g r, x rows")
    close(g.params["b_g"][0, :H], -bi[Z], "db_g z")
    close(g.params["b_g"][0, H:], bi[R], "db_g r")
    close(g.params["b_g"][0, :H], -bh[Z], "db_g z (via bias_hh)")
    close(g.params["b_g"][0, H:], bh[R], "db_g r (via bias_hh)")
    close(g.params["W_c"][H:], gi[N].T, "dW_c x rows")
    close(np.diag(g.params["W_c"][:H]), np.diag(gh[N]), "dW_c diagonal")
    close(g.params["b_c"][0], bi[N], "db_c")


def test_lecture_gru_differs_from_torch_gru():
    torch.manual_seed(5)
    m = torch.nn.GRU(I, H).double()
    with pytest.raises(ValueError, match="reset gate"):
        convert.gru_from_torch(m.state_dict())
    lec = convert.gru_from_torch(m.state_dict(), exact=False)
    xs, h0, out, fin, cy, ch = torch_run(m, 1, seed=5)
    y, f, g = ours_run(cells.gru(I, H, "float64"), lec, xs, h0, cy, ch)
    assert np.max(np.abs(y - out.detach().numpy())) > 1e-3
    # the difference is exactly the reset-gate placement: diagonalizing W_hn and zeroing b_hn
    # in both removes it (checked above), and PyTorch's own GRU equals our gru_torch here
    y2, _, _ = ours_run(cells.gru_torch(I, H, "float64"),
                        convert.gru_torch_from_torch(m.state_dict()), xs, h0, cy, ch)
    close(y2, out, "gru_torch outputs")
