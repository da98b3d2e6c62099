"""Quality benchmark (not a test): a 2-layer LSTM (H=256) char-LM on tinyshakespeare, and the
same model and hyper-parameters in ``torch.nn.LSTM`` at equal steps.

    python benchmarks/quality_charlm.py --steps 3000            # graphrnn (llvm backend)
    python benchmarks/quality_charlm.py --steps 3000 --torch    # also torch.nn.LSTM

Target (issue 5): graphrnn's validation loss <= 1.50 nats/char, with the wall time printed;
torch within 0.03 nats at equal steps. Both use the same setup: embedding 64 -> LSTM 256 x 2
-> linear 65, uniform +-0.08 init, Adam 2e-3, gradient clamp 5, batch 32, sequences of 100,
truncated BPTT with the state carried, 10% validation split, the same batches in the same order.
Prints one JSON line per model with steps, wall seconds and validation loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from graphrnn.cells import lstm
from graphrnn.data import StreamBatcher, Vocab, read_text, split_ids
from graphrnn.model import RNNModel
from graphrnn.optim import Adam
from graphrnn.train import TrainConfig, Trainer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def val_loss_graphrnn(model, params, val, n):
    tot = cnt = 0.0
    state = None
    for k in range(n):
        b = val.batch(k)
        ls, c, state, _ = model.evaluate(params, b.ids, b.targets, state)
        tot, cnt = tot + ls, cnt + c
    return tot / cnt


def run_graphrnn(a, vocab, train, val, nval):
    cells = [lstm(a.embed, a.hidden), lstm(a.hidden, a.hidden)]
    model = RNNModel(cells, len(vocab), len(vocab), embed_size=a.embed, backend=a.backend,
                     dropout=a.dropout)
    params = model.init_params(seed=a.seed, scale=0.08)
    tr = Trainer(model, params, Adam(a.lr), lambda s, rng: train.batch(s), None,
                 TrainConfig(steps=a.steps, clip=5.0, seed=a.seed, progress=True))
    t0 = time.perf_counter()
    tr.run()
    wall = time.perf_counter() - t0
    return {"model": f"graphrnn/{model.layers[0].fwd.backend_name}", "steps": tr.step,
            "wall_s": round(wall, 1), "val_loss": round(val_loss_graphrnn(model, params, val,
                                                                          nval), 4)}


def run_torch(a, vocab, train, val, nval):
    import torch
    torch.manual_seed(a.seed)
    torch.set_num_threads(2)
    V = len(vocab)
    emb = torch.nn.Embedding(V, a.embed)
    rnn = torch.nn.LSTM(a.embed, a.hidden, num_layers=2, dropout=a.dropout)
    head = torch.nn.Linear(a.hidden, V)
    ps = list(emb.parameters()) + list(rnn.parameters()) + list(head.parameters())
    for p in ps:
        torch.nn.init.uniform_(p, -0.08, 0.08)
    opt = torch.optim.Adam(ps, lr=a.lr)
    state = None
    t0 = time.perf_counter()
    for s in range(a.steps):
        b = train.batch(s)
        if b.reset:
            state = None
        x = torch.tensor(b.ids)
        y = torch.tensor(b.targets)
        out, state = rnn(emb(x), state)
        state = tuple(h.detach() for h in state)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        for p in ps:
            p.grad.clamp_(-5, 5)
        opt.step()
    wall = time.perf_counter() - t0
    tot = cnt = 0.0
    state = None
    with torch.no_grad():
        for k in range(nval):
            b = val.batch(k)
            out, state = rnn(emb(torch.tensor(b.ids)), state)
            lo = head(out).reshape(-1, V)
            tot += float(torch.nn.functional.cross_entropy(lo, torch.tensor(b.targets)
                                                           .reshape(-1), reduction="sum"))
            cnt += b.ids.size
    return {"model": "torch.nn.LSTM", "steps": a.steps, "wall_s": round(wall, 1),
            "val_loss": round(tot / cnt, 4)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--backend", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch", action="store_true", help="also train torch.nn.LSTM")
    p.add_argument("--no-graphrnn", action="store_true")
    a = p.parse_args(argv)
    if not Path(a.data).exists():
        print(f"no data at {a.data}; pass --data", file=sys.stderr)
        return 1
    text = read_text(a.data)
    vocab = Vocab.from_text(text)
    tr_ids, va_ids = split_ids(vocab.encode(text), 0.1)
    train = StreamBatcher(tr_ids, a.batch, a.seq_len)
    val = StreamBatcher(va_ids, a.batch, a.seq_len)
    nval = len(val)
    if not a.no_graphrnn:
        print(json.dumps(run_graphrnn(a, vocab, train, val, nval)), flush=True)
    if a.torch:
        print(json.dumps(run_torch(a, vocab, train, val, nval)), flush=True)
    return 0


if __name__ == "__main__":
    np.seterr(over="ignore")
    sys.exit(main())
