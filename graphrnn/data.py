"""Text data for language models: vocabularies, corpora, and batches for (truncated) BPTT.

- ``Vocab``: tokens <-> ids (characters or words), saved in checkpoints as JSON.
- ``stdlib_corpus``: the default corpus every Python installation has, the standard library's own
  ``.py`` files, concatenated in sorted path order up to a size cap (as Karpathy trained on Linux
  source). Deterministic for a given Python installation.
- ``StreamBatcher``: char-rnn/Zaremba batching: the token stream is cut into B parallel streams
  and read in consecutive chunks of T, so the state carried from chunk k to k+1 belongs to the
  same stream. A batch is a pure function of its index, which makes resuming exact.
"""

from __future__ import annotations

import os
import sysconfig
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class DataError(ValueError):
    """Input data is missing, unreadable or unusable; the message names the file."""


@dataclass
class Batch:
    """Token ids (T, B) and next-token targets (T, B). ``mask`` stops the states past each
    sequence's end, ``weights`` weights the loss (default: the mask, or all ones); ``reset``
    says the state must start from zero (a new sequence, not a continuation)."""
    ids: np.ndarray
    targets: np.ndarray
    mask: np.ndarray | None = None
    weights: np.ndarray | None = None
    reset: bool = False

    @property
    def tokens(self) -> float:
        w = self.weights if self.weights is not None else self.mask
        return float(self.ids.size if w is None else np.sum(w))


class Vocab:
    """Tokens in id order. ``sep`` joins decoded tokens ("" for characters, " " for words)."""

    def __init__(self, tokens: Iterable[str], sep: str = "", unk: str | None = None) -> None:
        self.tokens = list(tokens)
        self.sep, self.unk = sep, unk
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise DataError("vocabulary has duplicate tokens")
        if unk is not None and unk not in self.index:
            raise DataError(f"unknown-token {unk!r} is not in the vocabulary")

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        """Characters, sorted (char-rnn's vocabulary)."""
        if not text:
            raise DataError("cannot build a vocabulary from empty text")
        return cls(sorted(set(text)))

    @classmethod
    def from_words(cls, words: Iterable[str], unk: str = "<unk>") -> Vocab:
        """Words by descending frequency, ties alphabetical; ``unk`` always present."""
        counts = Counter(words)
        counts.setdefault(unk, 0)
        return cls(sorted(counts, key=lambda w: (-counts[w], w)), sep=" ", unk=unk)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, seq: Iterable[str]) -> np.ndarray:
        if self.unk is None:
            try:
                return np.array([self.index[t] for t in seq], dtype=np.int64)
            except KeyError as e:
                raise DataError(f"token {e.args[0]!r} is not in the vocabulary") from None
        u = self.index[self.unk]
        return np.array([self.index.get(t, u) for t in seq], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sep.join(self.tokens[int(i)] for i in ids)

    def to_json(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "sep": self.sep, "unk": self.unk}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Vocab:
        return cls(d["tokens"], d.get("sep", ""), d.get("unk"))


def read_text(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p} does not exist")
    if p.is_dir():
        raise DataError(f"data file {p} is a directory")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {p} is not UTF-8 text ({e.reason} at byte {e.start})") \
            from None
    except OSError as e:
        raise DataError(f"cannot read data file {p}: {e.strerror}") from None
    if not text:
        raise DataError(f"data file {p} is empty")
    return text


def _ascii(text: str) -> str:
    # a small, stable vocabulary: tabs become spaces, anything else outside printable ASCII '?'
    text = text.replace("\t", "    ")
    return "".join(c if c == "\n" or " " <= c <= "~" else "?" for c in text)


def stdlib_corpus(max_chars: int = 2_000_000) -> str:
    """The standard library's .py files (no tests, no site-packages), sorted by path,
    concatenated up to ``max_chars`` and reduced to printable ASCII."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "test", "tests",
                                                              "__pycache__", "idle_test"))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    files.sort(key=lambda f: f.relative_to(root).as_posix())
    parts: list[str] = []
    total = 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(f"# file: {f.relative_to(root).as_posix()}\n{text}\n")
        total += len(parts[-1])
        if total >= max_chars:
            break
    if not parts:
        raise DataError(f"no Python source files found under {root}")
    return _ascii("".join(parts))[:max_chars]


def split_ids(ids: np.ndarray, val_fraction: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The last ``val_fraction`` of the stream is validation data."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(len(ids) * val_fraction)
    return ids[:len(ids) - n_val], ids[len(ids) - n_val:]


class StreamBatcher:
    """B parallel streams read in consecutive chunks of T (inputs) shifted by one (targets)."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int) -> None:
        if batch_size < 1 or seq_len < 1:
            raise DataError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        n = len(ids) // batch_size
        if n < seq_len + 1:
            raise DataError(f"{len(ids)} tokens are too few for batch {batch_size} x sequence "
                            f"{seq_len}; need at least {batch_size * (seq_len + 1)}")
        self.streams = np.asarray(ids[:n * batch_size], np.int64).reshape(batch_size, n).T
        self.batch_size, self.seq_len = batch_size, seq_len
        self.n_chunks = (n - 1) // seq_len

    def __len__(self) -> int:
        return self.n_chunks

    def batch(self, k: int) -> Batch:
        """Chunk k (mod the epoch length); reset at the start of each epoch."""
        k %= self.n_chunks
        T = self.seq_len
        s = self.streams
        return Batch(s[k * T:(k + 1) * T], s[k * T + 1:(k + 1) * T + 1], reset=(k == 0))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self.batch(k) for k in range(self.n_chunks))


def pad_batch(seqs: list[np.ndarray], targets: list[np.ndarray],
              weights: list[np.ndarray] | None = None, pad: int = 0) -> Batch:
    """Variable-length sequences -> a padded (T, B) batch with a mask (time-major)."""
    if not seqs or len(seqs) != len(targets):
        raise DataError("pad_batch needs equally many (non-zero) sequences and targets")
    T = max(len(s) for s in seqs)
    Bn = len(seqs)
    ids = np.full((T, Bn), pad, np.int64)
    tg = np.full((T, Bn), pad, np.int64)
    mask = np.zeros((T, Bn))
    w = np.zeros((T, Bn)) if weights is not None else None
    for b, (s, t) in enumerate(zip(seqs, targets, strict=True)):
        if len(s) != len(t):
            raise DataError(f"sequence {b}: {len(s)} inputs but {len(t)} targets")
        ids[:len(s), b], tg[:len(s), b], mask[:len(s), b] = s, t, 1
        if w is not None:
            w[:len(s), b] = weights[b]  # type: ignore[index]
    return Batch(ids, tg, mask, w, reset=True)
