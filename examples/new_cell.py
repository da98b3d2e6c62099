"""A new cell written as equations, trained on the char-LM task and compared with the LSTM.

    python examples/new_cell.py                        # MUT1 vs LSTM, a few minutes
    python examples/new_cell.py --cell gru --steps 500
    python examples/new_cell.py --steps 3 --hidden 16  # a smoke run

MUT1 is the best architecture found by Jozefowicz, Zaremba & Sutskever (2015) in their search
over LSTM variants; the GRU is the lecture's. Both are declared below as text equations
(``frontends.equations``: parsed with a whitelist over Python's ast, never eval'd), compiled like
any other cell, and trained with the same data, model size, optimizer, steps and seed as the
zoo LSTM. The script prints each model's validation loss and speed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from frontends.equations import cell_from_equations
from graphrnn.cells import lstm
from graphrnn.data import StreamBatcher, Vocab, read_text, split_ids, stdlib_corpus
from graphrnn.model import RNNModel
from graphrnn.optim import Adam
from graphrnn.sample import generate
from graphrnn.train import TrainConfig, Trainer

EQUATIONS = {
    "mut1": """
# cell: mut1
z = sigmoid(W_xz @ x + b_z)
r = sigmoid(W_xr @ x + W_hr @ h + b_r)
h_next = tanh(W_hh @ (r * h) + tanh(x) + b_h) * z + h * (1 - z)
""",
    "gru": """
# cell: gru
r = sigmoid(W_xr @ x + W_hr @ h + b_r)
z = sigmoid(W_xz @ x + W_hz @ h + b_z)
hc = tanh(W_c @ [r * h, x] + b_c)
h_next = (1 - z) * h + z * hc
""",
}

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / \
    "input.txt"


def equation_cell(name: str, size: int, dtype: str = "float32"):
    return cell_from_equations(EQUATIONS[name], inputs={"x": size}, states={"h": size},
                               dtype=dtype, filename=f"<{name} equations>")


def train_one(label: str, make, vocab: Vocab, train: StreamBatcher, val: StreamBatcher,
              a: argparse.Namespace) -> tuple[float, float, str]:
    H = a.hidden
    model = RNNModel([make(H) for _ in range(a.layers)], len(vocab), len(vocab), embed_size=H,
                     backend=a.backend)
    params = model.init_params(seed=a.seed)
    tr = Trainer(model, params, Adam(a.lr), lambda s, rng: train.batch(s),
                 lambda: (val.batch(k) for k in range(min(len(val), a.val_batches))),
                 TrainConfig(steps=a.steps, clip=5.0, progress=not a.no_progress,
                             seed=a.seed), log=lambda s: None)
    t0 = time.perf_counter()
    tr.run()
    wall = time.perf_counter() - t0
    sample = generate(model, params, vocab, 80, temperature=0.7, seed=a.seed)
    return tr.val_history[-1][1], wall, sample


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", default="mut1", choices=sorted(EQUATIONS))
    p.add_argument("--data", help="text file (default: tinyshakespeare, else the stdlib)")
    p.add_argument("--max-chars", type=int, default=300_000)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--val-batches", type=int, default=20)
    p.add_argument("--backend", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.data:
        text = read_text(a.data)
    elif SHAKESPEARE.exists():
        text = read_text(SHAKESPEARE)
    else:
        text = stdlib_corpus(a.max_chars)
    text = text[:a.max_chars]
    vocab = Vocab.from_text(text)
    tr_ids, va_ids = split_ids(vocab.encode(text), 0.1)
    train = StreamBatcher(tr_ids, a.batch, a.seq_len)
    val = StreamBatcher(va_ids, a.batch, a.seq_len)
    print(f"{a.cell} as equations:{EQUATIONS[a.cell]}")
    results = {}
    for label, make in ((f"{a.cell} (equations)", lambda H: equation_cell(a.cell, H)),
                        ("lstm (zoo)", lambda H: lstm(H, H))):
        results[label] = train_one(label, make, vocab, train, val, a)
    print(f"\n{'cell':<20} {'val loss':>9} {'seconds':>8}   sample")
    for label, (loss, wall, sample) in results.items():
        print(f"{label:<20} {loss:9.4f} {wall:8.1f}   {sample[:40]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
