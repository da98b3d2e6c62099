"""Generation from a trained language model: priming text, temperature, argmax, seeded and
reproducible.

Two paths give the same kind of text. Where the model's backend has a native generation loop
(``CompiledCell.generator``: the llvm backend's ``codegen.llvm_generate`` runs the whole loop
over tokens, sampling included, in one native call) that loop runs; otherwise, and with
``native=False``, each token is one ``RNNModel.step`` (the single-step entry of every layer) and a
numpy softmax, the reference. With ``argmax`` both give the same text (up to a near tie of two
logits within float rounding: the native GEMVs sum in another order than the BLAS). Sampling is
reproducible for a seed on both, but they draw from different generators: numpy's
``default_rng(seed)`` here, SplitMix64 seeded with ``seed`` natively, so a seed gives different
(equally distributed) text on the two paths."""

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
             state: State | None = None, native: bool | None = None) -> str:
    """``length`` new tokens after ``prime`` (returned without the prime).

    The prime is fed through the model first (each token one step, as char-rnn does); with no
    prime, generation starts from a newline (or the first token). ``temperature`` < 1 sharpens
    the distribution, > 1 flattens it; ``argmax`` always takes the most likely token.
    ``native``: None uses the backend's native loop where there is one (and the parameters are
    finite), True requires it, False takes the Python path (see the module docstring)."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if not argmax and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if len(vocab) != model.n_classes:
        raise ValueError(f"the vocabulary has {len(vocab)} tokens, the model predicts "
                         f"{model.n_classes}")
    gen = None
    if native is not False and model.layers and not model.bidirectional:
        gen = model.layers[0].fwd.generator(model)
    if gen is not None and not gen.accepts(params):
        gen = None   # non-finite parameters: the Python path computes what IEEE says
    if native and gen is None:
        raise ValueError("native=True: this model has no native generation loop (it needs "
                         "every layer compiled with the llvm backend, one-hot or embedding "
                         "input, one direction, and finite parameters)")
    if gen is not None:
        toks = (prime.split() if vocab.sep == " " else list(prime)) if prime else []
        ids = list(vocab.encode(toks)) if toks else \
            [vocab.index.get("\n", vocab.index.get("<eos>", 0))]
        return vocab.decode(gen.run(params, ids, length, temperature, argmax, seed, state))
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
