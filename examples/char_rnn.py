"""char-rnn (Karpathy 2015) with graphrnn: a character-level LSTM language model.

    python examples/char_rnn.py                       # tinyshakespeare when present, ~5 minutes
    python examples/char_rnn.py --data my.txt --cell gru --hidden 256 --minutes 20
    python examples/char_rnn.py --steps 3 --hidden 16  # a smoke run

Reads ``../shared/data/tinyshakespeare/input.txt`` (relative to the repository root) when it
exists, else the Python standard library's source. Same options as ``graphrnn train``, with
char-rnn's defaults: 2 layers of 128, sequences of 50, batches of 50, RMSprop 2e-3 with decay
0.97 per epoch-ish, gradient clamp 5, one-hot input, uniform +-0.08 initialization.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphrnn.tools.train_charlm import add_train_args, run

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / \
    "input.txt"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_train_args(p)
    p.set_defaults(cell="nngraph-lstm", layers=2, hidden=128, seq_len=50, batch=50,
                   optimizer="rmsprop", lr=2e-3, decay=0.97, decay_after=1000,
                   decay_every=400, clip=5.0, out="runs/char_rnn", minutes=None)
    a = p.parse_args(argv)
    if a.data is None and SHAKESPEARE.exists():
        a.data = str(SHAKESPEARE)
    if a.steps is None and a.minutes is None:
        a.minutes = 5.0
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
