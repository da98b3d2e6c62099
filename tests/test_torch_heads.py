"""Sequence classification against PyTorch (float64): an embedding, a bidirectional LSTM over
padded variable-length batches (``pack_padded_sequence``), pooled (h_n for ``last``, masked mean
or max over the valid steps), a Linear head and cross-entropy give the same loss and the same
gradients of every parameter as ``RNNModel(..., pool=...)`` with converted weights."""

from __future__ import annotations

import numpy as np
import pytest

from graphrnn import cells, convert
from graphrnn.model import RNNModel

torch = pytest.importorskip("torch")

V, E, H, C, T = 7, 4, 5, 3, 6
TOL = 1e-9


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("pool", ["last", "mean", "max"])
def test_bidirectional_lstm_classifier_matches_torch(pool, batch_first):
    nn = torch.nn
    torch.manual_seed(0)
    emb, lstm, lin = nn.Embedding(V, E).double(), nn.LSTM(E, H, bidirectional=True).double(), \
        nn.Linear(2 * H, C).double()
    rng = np.random.default_rng(0)
    lengths = np.array([6, 2, 4, 1])
    ids = rng.integers(0, V, (T, len(lengths)))
    y = rng.integers(0, C, len(lengths))
    mask = (np.arange(T)[:, None] < lengths[None, :]).astype(float)

    x = emb(torch.tensor(ids))
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    out, (h_n, _) = lstm(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    m = torch.tensor(mask)[:, :, None]
    if pool == "last":
        pooled = torch.cat([h_n[0], h_n[1]], dim=1)
    elif pool == "mean":
        pooled = (out * m).sum(0) / torch.tensor(lengths, dtype=torch.float64)[:, None]
    else:
        pooled = out.masked_fill(m == 0, float("-inf")).max(0).values
    loss = nn.functional.cross_entropy(lin(pooled), torch.tensor(y))
    loss.backward()

    sd = lstm.state_dict()
    model = RNNModel([(cells.lstm(E, H, "float64", gate_order="ifgo"),
                       cells.lstm(E, H, "float64", gate_order="ifgo"))], n_classes=C,
                     vocab_size=V, embed_size=E, backend="ref", dtype="float64", pool=pool,
                     batch_first=batch_first)
    params = {"embed": emb.weight.detach().numpy().copy(),
              "head.W": lin.weight.detach().numpy().T.copy(),
              "head.b": lin.bias.detach().numpy().copy()}
    for pre, suffix in (("l0.", ""), ("l0r.", "_reverse")):
        for k, v in convert.lstm_from_torch(sd, suffix=suffix).items():
            params[pre + k] = np.asarray(v, np.float64)
    if batch_first:
        r = model.loss_and_grads(params, ids.T, y, mask=mask.T)
    else:
        r = model.loss_and_grads(params, ids, y, mask=mask)
    assert r.loss == pytest.approx(loss.item(), rel=TOL, abs=TOL)

    def close(ours, theirs, what):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=TOL, atol=TOL,
                                   err_msg=what)
    close(r.grads["embed"], emb.weight.grad, "embed")
    close(r.grads["head.W"], lin.weight.grad.T, "head.W")
    close(r.grads["head.b"], lin.bias.grad, "head.b")
    for pre, suffix in (("l0.", ""), ("l0r.", "_reverse")):
        close(r.grads[pre + "W_x"], getattr(lstm, f"weight_ih_l0{suffix}").grad.T, pre + "W_x")
        close(r.grads[pre + "W_h"], getattr(lstm, f"weight_hh_l0{suffix}").grad.T, pre + "W_h")
        close(r.grads[pre + "b"], getattr(lstm, f"bias_ih_l0{suffix}").grad[None], pre + "b")
