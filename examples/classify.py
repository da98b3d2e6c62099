"""Variable-length sequence classification with masks: does a sequence contain the pattern?

    python examples/classify.py                       # GRU, max pooling, a few seconds
    python examples/classify.py --pool last --cell lstm --steps 600
    python examples/classify.py --pool mean           # a mean dilutes the pattern: slower

Each example is a random string over ``abcd`` of length 4..``--max-len``; its class is 1 when it
contains ``--pattern`` (default ``ab``) somewhere, else 0, balanced 50/50 (chance is 50%).
Sequences are padded to the batch's longest (``batch_first``, with the pad id 0, which is also
the letter ``a``: without the mask the padding would read as text) and given with their lengths,
as a PyTorch ``DataLoader`` would yield them: ``(x, y, lengths)``. The model is a recurrent
layer whose outputs are pooled over each sequence's valid steps (``--pool``: ``max`` fires
wherever the pattern is, ``last`` must carry it to the end, ``mean`` dilutes it) into a softmax
over the two classes, trained with cross-entropy and AdamW (no decay on biases).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np

from graphrnn.data import lengths_mask
from graphrnn.model import POOLS, RNNModel, stack
from graphrnn.optim import AdamW
from graphrnn.train import TrainConfig, Trainer

ALPHABET = "abcd"


def example(rng: np.random.Generator, pattern: str, max_len: int, label: int
            ) -> tuple[np.ndarray, int]:
    """One string of class ``label`` (1: contains ``pattern``), as letter ids."""
    while True:
        n = int(rng.integers(max(4, len(pattern)), max_len + 1))
        s = "".join(ALPHABET[i] for i in rng.integers(0, len(ALPHABET), n))
        if label == 1 and pattern not in s:
            at = int(rng.integers(0, n - len(pattern) + 1))
            s = s[:at] + pattern + s[at + len(pattern):]
        if (pattern in s) == bool(label):
            return np.array([ALPHABET.index(c) for c in s], np.int64), label


def padded(seqs: list[np.ndarray], labels: list[int]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (B, T) padded with 0, y (B,), lengths (B,)): what a DataLoader's collate gives."""
    lengths = np.array([len(s) for s in seqs])
    x = np.zeros((len(seqs), int(lengths.max())), np.int64)
    for b, s in enumerate(seqs):
        x[b, :len(s)] = s
    return x, np.array(labels, np.int64), lengths


def dataset(n: int, rng: np.random.Generator, pattern: str, max_len: int
            ) -> list[tuple[np.ndarray, int]]:
    return [example(rng, pattern, max_len, i % 2) for i in range(n)]


class Batches:
    """A re-iterable source of (x, y, lengths) batches, reshuffled every epoch (as a
    DataLoader with ``shuffle=True``); the Trainer reads it epoch after epoch."""

    def __init__(self, data: list[tuple[np.ndarray, int]], batch: int, seed: int) -> None:
        self.data, self.batch = data, batch
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.data) // self.batch

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        order = self.rng.permutation(len(self.data))
        for k in range(len(self)):
            chunk = [self.data[i] for i in order[k * self.batch:(k + 1) * self.batch]]
            yield padded([c[0] for c in chunk], [c[1] for c in chunk])


def accuracy(model: RNNModel, params: dict[str, np.ndarray],
             batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    right = total = 0
    for x, y, lengths in batches:
        logits, _ = model.predict(params, x, mask=lengths_mask(lengths, x.shape[1],
                                                               batch_first=True))
        right += int(np.sum(logits.argmax(-1) == y))
        total += len(y)
    return right / total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pattern", default="ab", help="the substring that makes class 1")
    p.add_argument("--max-len", type=int, default=16)
    p.add_argument("--cell", default="gru", help="a zoo cell: gru, lstm, rnn_tanh, ...")
    p.add_argument("--pool", default="max", choices=[q for q in POOLS if q != "step"])
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--embed", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train-size", type=int, default=2048)
    p.add_argument("--val-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--backend", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if set(a.pattern) - set(ALPHABET) or not 0 < len(a.pattern) <= 4 <= a.max_len:
        p.error(f"--pattern must be 1-4 letters of {ALPHABET!r} and --max-len at least 4")
    rng = np.random.default_rng(a.seed)
    train = dataset(a.train_size, rng, a.pattern, a.max_len)
    val = list(Batches(dataset(a.val_size, rng, a.pattern, a.max_len), a.batch, a.seed))
    model = RNNModel(stack(a.cell, 1, a.embed, a.hidden), n_classes=2,
                     vocab_size=len(ALPHABET), embed_size=a.embed, backend=a.backend,
                     pool=a.pool, batch_first=True)
    params = model.init_params(seed=a.seed, scale=0.3)
    opt = AdamW(a.lr, weight_decay=1e-2, groups=[{"params": ["l0.b*", "head.b"],
                                                  "weight_decay": 0.0}])
    before = accuracy(model, params, val)
    tr = Trainer(model, params, opt, Batches(train, a.batch, a.seed + 1), val_data=val,
                 config=TrainConfig(max_norm=5.0, carry_state=False, seed=a.seed,
                                    progress=not a.no_progress, explode_factor=10.0),
                 log=lambda s: None)
    tr.run(steps=a.steps)
    after = accuracy(model, params, val)
    print(f"task: contains {a.pattern!r} (lengths 4..{a.max_len}), {a.cell} + {a.pool} pooling,"
          f" backend {model.layers[0].fwd.backend_name}")
    print(f"validation loss {tr.val_history[-1][1]:.4f} after {tr.step} steps")
    print(f"validation accuracy {after:.3f} (before training {before:.3f}, chance 0.500)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
