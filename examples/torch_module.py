"""A custom recurrent cell written as equations, trained in a plain PyTorch loop.

    .venv/bin/python examples/torch_module.py                # a few seconds on 2 cores
    .venv/bin/python examples/torch_module.py --epochs 20 --hidden 64 --compile

The cell is a GRU whose gates see a layer-normalized recurrent input (text below, parsed by
``graphrnn.equations``). ``graphrnn.torch.Module`` compiles it (llvm: the whole time loop and
its backward are native code) and holds its weights as ``nn.Parameter``s in PyTorch's (out, in)
layout, so everything around it is ordinary PyTorch: an ``nn.Linear`` head, a ``DataLoader``,
``torch.optim.AdamW``, gradient clipping, optionally ``torch.compile``.

The task is Hochreiter & Schmidhuber's adding problem: each step carries a random number and a
marker; the target is the sum of the two marked numbers. Predicting the mean (1.0) gives a mean
squared error of about 1/6; a model that learned to add gets far below it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphrnn.equations as eqs  # noqa: E402
import graphrnn.torch as gt  # noqa: E402

CELL = """
# cell: ln_gru
input x: {inp}
state h: {hidden}
param U: {h3} x {hidden}
u = layer_norm(U @ h) * g + c
r = sigmoid(W_r @ x + u[0:{hidden}] + b_r)
z = sigmoid(W_z @ x + u[{hidden}:{h2}] + b_z)
n = tanh(W_n @ x + r * u[{h2}:{h3}] + b_n)
h_next = (1 - z) * n + z * h
output h_next
"""


def adding_problem(n: int, T: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, T, generator=g)
    marks = torch.zeros(n, T)
    first = torch.randint(0, T // 2, (n,), generator=g)
    second = torch.randint(T // 2, T, (n,), generator=g)
    marks[torch.arange(n), first] = 1.0
    marks[torch.arange(n), second] = 1.0
    x = torch.stack([values, marks], dim=2)            # (n, T, 2): batch first
    y = (values * marks).sum(1, keepdim=True)
    return TensorDataset(x, y)


class Model(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        text = CELL.format(inp=2, hidden=hidden, h2=2 * hidden, h3=3 * hidden)
        self.rnn = gt.Module(eqs.cell_from_equations(text), batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _ys, h = self.rnn(x)                             # h: (1, B, hidden)
        return self.head(h[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=20)
    ap.add_argument("--train-size", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    train = DataLoader(adding_problem(args.train_size, args.seq_len, args.seed),
                       batch_size=args.batch, shuffle=True)
    valid = adding_problem(512, args.seq_len, args.seed + 1)
    model = Model(args.hidden)
    print(model)
    run = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    loss_fn = nn.MSELoss()

    def validate() -> float:
        with torch.no_grad():
            return float(loss_fn(run(valid.tensors[0]), valid.tensors[1]))

    first = validate()
    print(f"validation MSE before training: {first:.4f} (predicting the mean: ~0.167)")
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = loss_fn(run(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        print(f"epoch {epoch + 1}: train MSE {loss.item():.4f}, validation MSE {validate():.4f}")
    last = validate()
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.1f} s: validation MSE "
          f"{first:.4f} -> {last:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
