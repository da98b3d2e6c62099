"""A Zaremba et al. (2014) word-level language model on any PTB-format corpus.

    python examples/word_lm.py --train ptb.train.txt --valid ptb.valid.txt
    python examples/word_lm.py --steps 3 --hidden 16   # a smoke run on the bundled PTB files

PTB format: one sentence per line, words separated by spaces, ``<unk>`` already in the text; the
end of each line is the token ``<eos>``. The recipe ("small" config, scaled by the flags): 2 LSTM
layers with Zaremba's gate order, embedding = hidden size, dropout on the non-recurrent
connections only, uniform +-0.1 initialization, SGD with learning rate 1 halved every epoch after
``--decay-after`` epochs, global-norm clipping at 5, truncated BPTT of 20 steps with the state
carried across batches. Reports perplexity = exp(loss).

Without --train it uses ``../shared/data/ptb/ptb.valid.txt`` for training and ``ptb.test.txt`` for
validation (the shared data has no training split); any other corpus works by path.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from graphrnn.data import StreamBatcher, Vocab, read_text
from graphrnn.model import RNNModel
from graphrnn.optim import SGD, StepDecay
from graphrnn.train import TrainConfig, Trainer

PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


def words(path: str) -> list[str]:
    return [w for line in read_text(path).splitlines() for w in line.split() + ["<eos>"]]


def zaremba_cell(input_size: int, hidden_size: int, dtype: str):
    from graphrnn.cells import lstm
    return lstm(input_size, hidden_size, dtype, gate_order="zaremba")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", default=str(PTB / "ptb.valid.txt"))
    p.add_argument("--valid", default=str(PTB / "ptb.test.txt"))
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--dropout", type=float, default=0.0, help="0.5 for the medium config")
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seq-len", type=int, default=20)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--decay-after", type=int, default=4, help="epochs at full learning rate")
    p.add_argument("--epochs", type=float, default=6)
    p.add_argument("--steps", type=int, default=None, help="overrides --epochs")
    p.add_argument("--max-norm", type=float, default=5.0)
    p.add_argument("--backend", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-valid-batches", type=int, default=0, help="0: the whole file")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    train_words, valid_words = words(a.train), words(a.valid)
    vocab = Vocab.from_words(train_words)
    train = StreamBatcher(vocab.encode(train_words), a.batch, a.seq_len)
    valid = StreamBatcher(vocab.encode(valid_words), a.batch, a.seq_len)
    epoch = len(train)
    H = a.hidden
    cells = [zaremba_cell(H, H, "float32") for _ in range(a.layers)]
    model = RNNModel(cells, len(vocab), len(vocab), embed_size=H, dropout=a.dropout,
                     backend=a.backend)
    params = model.init_params(seed=a.seed, scale=0.1)
    opt = SGD(a.lr, schedule=StepDecay(start=a.decay_after * epoch, every=epoch, gamma=0.5))
    steps = a.steps if a.steps is not None else int(a.epochs * epoch)
    nval = a.max_valid_batches or len(valid)
    tr = Trainer(model, params, opt, lambda s, rng: train.batch(s),
                 lambda: (valid.batch(k) for k in range(nval)),
                 TrainConfig(steps=steps, max_norm=a.max_norm, eval_every=epoch,
                             progress=not a.no_progress, seed=a.seed, explode_factor=10.0),
                 log=print)
    print(f"vocabulary {len(vocab)}, {len(train_words):,} training words, {epoch} steps/epoch, "
          f"backend {model.layers[0].fwd.backend_name}")
    tr.run()
    for s, v in tr.val_history:
        print(f"step {s}: validation perplexity {math.exp(v):.1f}")
    final = tr.val_history[-1][1]
    print(f"final validation perplexity {math.exp(final):.1f} "
          f"({tr.tokens_per_s:,.0f} words/s)")
    return 0 if np.isfinite(final) else 1


if __name__ == "__main__":
    sys.exit(main())
