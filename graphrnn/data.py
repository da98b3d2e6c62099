"""Text data for language models: vocabularies, corpora, and batches for (truncated) BPTT.

- ``Vocab``: tokens <-> ids (characters or words), saved in checkpoints as JSON.
- ``stdlib_corpus``: the default corpus every Python installation has, the standard library's own
  ``.py`` files, concatenated in sorted path order up to a size cap (as Karpathy trained on Linux
  source). Deterministic for a given Python installation.
- ``StreamBatcher``: char-rnn/Zaremba batching: the token stream is cut into B parallel streams
  and read in consecutive chunks of T, so the state carried from chunk k to k+1 belongs to the
  same stream. A batch is a pure function of its index, which makes resuming exact.
- ``to_batch`` / ``IterableData``: any iterable of batches (a list, a generator, a PyTorch
  ``DataLoader``) whose items are ``Batch``es, ``(x, y)``, ``(x, y, lengths)`` or dicts with
  those keys, as numpy arrays or tensors; lengths become a mask (``lengths_mask``).
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
        """Steps read: the per-step weights', else the mask's sum, else T x B (ids may be
        dense features (T, B, F); per-sequence weights (B,) do not count steps)."""
        w = self.weights if self.weights is not None and self.weights.ndim >= 2 else self.mask
        n = self.ids.shape[0] * self.ids.shape[1] if self.ids.ndim >= 2 else self.ids.size
        return float(n if w is None else np.sum(w))


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


# ---- any iterable of batches (a PyTorch DataLoader, a list, a generator) ----

def lengths_mask(lengths: Any, T: int, batch_first: bool = False) -> np.ndarray:
    """The (T, B) (or (B, T)) mask of 1s for each sequence's first ``lengths[b]`` steps."""
    L = np.asarray(lengths).reshape(-1)
    if L.size and (not np.issubdtype(L.dtype, np.integer) or L.min() < 1 or L.max() > T):
        raise DataError(f"lengths must be integers in [1, {T}] (the padded length), got "
                        f"{L.dtype} {L.min()}..{L.max()}")
    m = (np.arange(T)[:, None] < L[None, :]).astype(np.float64)
    return m.T.copy() if batch_first else m


def _numpy(a: Any, what: str) -> np.ndarray:
    """A numpy array from an array, a list or a tensor (PyTorch's are detached and copied to
    the host; anything with ``__array__`` works)."""
    if hasattr(a, "detach"):
        a = a.detach()
        if hasattr(a, "cpu"):
            a = a.cpu()
    try:
        out = np.asarray(a)
    except (TypeError, ValueError) as e:
        raise DataError(f"batch {what}: cannot read {type(a).__name__} as an array ({e})") \
            from None
    if out.dtype == object:
        raise DataError(f"batch {what}: expected a numeric array, got ragged or object data "
                        f"({type(a).__name__}); pad sequences to one length and give lengths")
    return out


def to_batch(item: Any, batch_first: bool = False) -> Batch:
    """One item of an iterable as a ``Batch``: a Batch as it is; ``(x, y)``; ``(x, y,
    lengths)``; or a dict with ``x``, ``y`` and optionally ``lengths``, ``mask``, ``weights``.
    ``x`` is ids (T, B) or features (T, B, F), (B, T, ...) when ``batch_first``; ``y`` the
    targets in the model's layout. Such a batch starts from a zero state (``reset``)."""
    if isinstance(item, Batch):
        return item
    mask = weights = lengths = None
    if isinstance(item, dict):
        unknown = set(item) - {"x", "y", "lengths", "mask", "weights"}
        if unknown or "x" not in item or "y" not in item:
            raise DataError(f"a batch dict needs keys x and y (optional lengths, mask, weights),"
                            f" got {sorted(item)}")
        x, y = item["x"], item["y"]
        lengths, mask, weights = item.get("lengths"), item.get("mask"), item.get("weights")
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        x, y = item[0], item[1]
        lengths = item[2] if len(item) == 3 else None
    else:
        n = len(item) if isinstance(item, (tuple, list)) else None
        raise DataError(f"a batch must be a Batch, (x, y), (x, y, lengths) or a dict; got "
                        f"{type(item).__name__}" + (f" of {n} items" if n is not None else ""))
    xa, ya = _numpy(x, "x"), _numpy(y, "y")
    if xa.ndim not in (2, 3):
        raise DataError(f"batch x: expected ids {'(B, T)' if batch_first else '(T, B)'} or "
                        f"features (..., F), got shape {xa.shape}")
    T = xa.shape[1 if batch_first else 0]
    if lengths is not None and mask is not None:
        raise DataError("give a batch's lengths or its mask, not both")
    m = lengths_mask(_numpy(lengths, "lengths"), T, batch_first) if lengths is not None \
        else (None if mask is None else _numpy(mask, "mask").astype(np.float64))
    w = None if weights is None else _numpy(weights, "weights").astype(np.float64)
    return Batch(xa, ya, m, w, reset=True)


class IterableData:
    """``data(step, rng) -> Batch`` over any iterable, for ``Trainer``: a re-iterable source
    (a list, a DataLoader) is read epoch after epoch, each epoch from a new ``iter()`` (so a
    shuffling DataLoader reshuffles); a one-shot iterator (a generator) ends training when it
    runs out (``StopIteration``). On the first call at step k > 0 (a resumed run) a source with
    a ``len`` is read from position k mod len: a list or an unshuffled DataLoader resumes
    exactly, a shuffling one at the right place in a new order (its sampler's state is not
    checkpointed)."""

    def __init__(self, source: Iterable[Any], batch_first: bool = False) -> None:
        self.source, self.batch_first = source, batch_first
        self.one_shot = iter(source) is source
        self.epoch = 0
        self._it: Any = None
        self._in_epoch = 0
        self._started = False

    def __call__(self, step: int = 0, rng: Any = None) -> Batch:
        if not self._started:
            self._started = True
            n = len(self.source) if hasattr(self.source, "__len__") else 0  # type: ignore
            if step > 0 and n and not self.one_shot:
                self._it = iter(self.source)
                self.epoch, skip = divmod(step, n)
                for _ in range(skip):
                    next(self._it)
                self._in_epoch = skip
        for _ in range(2):
            if self._it is None:
                self._it = iter(self.source)
                self._in_epoch = 0
            try:
                item = next(self._it)
            except StopIteration:
                self._it = None
                if self.one_shot:
                    raise
                if self._in_epoch == 0:
                    break
                self.epoch += 1
                continue
            self._in_epoch += 1
            return to_batch(item, self.batch_first)
        raise DataError("the training data yielded no batch (an empty iterable)")

    def __iter__(self):  # type: ignore[no-untyped-def]
        """One pass, as batches (for validation data)."""
        return (to_batch(item, self.batch_first) for item in self.source)
