"""Generation from a trained language model with the single-step entry point (``CompiledCell.step``
through ``RNNModel.step``): priming text, temperature, argmax, seeded and reproducible."""

from __future__ import annotations

import numpy as np

from .data import Vocab
from .model import Arrays, RNNModel, State


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def generate(model: RNNModel, params: Arrays, vocab: Vocab, length: int, prime: str = "",
             temperature: float = 1.0, argmax: bool = False, seed: int = 0,
             state: State | None = None) -> str:
    """``length`` new tokens after ``prime`` (returned without the prime).

    The prime is fed through the model first (each token one step, as char-rnn does); with no
    prime, generation starts from a newline (or the first token). ``temperature`` < 1 sharpens
    the distribution, > 1 flattens it; ``argmax`` always takes the most likely token."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if not argmax and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if len(vocab) != model.n_classes:
        raise ValueError(f"the vocabulary has {len(vocab)} tokens, the model predicts "
                         f"{model.n_classes}")
    rng = np.random.default_rng(seed)
    was = model.training
    model.eval()
    try:
        toks = (prime.split() if vocab.sep == " " else list(prime)) if prime else []
        ids = list(vocab.encode(toks)) if toks else \
            [vocab.index.get("\n", vocab.index.get("<eos>", 0))]
        logits = None
        for i in ids:
            logits, state = model.step(params, np.array([i]), state)
        out: list[int] = []
        assert logits is not None
        for _ in range(length):
            z = logits[0].astype(np.float64)
            nxt = int(np.argmax(z)) if argmax else \
                int(rng.choice(len(z), p=_softmax(z / temperature)))
            out.append(nxt)
            logits, state = model.step(params, np.array([nxt]), state)
    finally:
        model.training = was
    return vocab.decode(out)
