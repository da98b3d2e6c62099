"""Checkpoints: named numpy arrays plus JSON metadata in one ``.npz`` file, never pickled.

The JSON (options, vocabulary, optimizer hyper-parameters, step counters, RNG state, loss
history) is stored inside the npz as the uint8 array ``__meta__``, so one file holds everything
and one ``os.replace`` makes the write atomic: a crash leaves the previous checkpoint intact,
never a half-written one. Loading uses ``allow_pickle=False``; a file that is not a graphrnn
checkpoint, or is truncated, raises ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GraphRNNError

FORMAT = "graphrnn-checkpoint"
VERSION = 1
_META = "__meta__"


class CheckpointError(GraphRNNError, ValueError):
    """A checkpoint is missing, unreadable, corrupt, or does not fit what loads it."""


def save(path: str | os.PathLike[str], arrays: dict[str, np.ndarray],
         meta: dict[str, Any]) -> Path:
    """Write arrays and JSON-able meta atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    bad = [k for k in arrays if k == _META or not k or k.startswith("/")]
    if bad:
        raise CheckpointError(f"reserved or empty array names {bad}")
    doc = {"format": FORMAT, "version": VERSION, **meta}
    blob = np.frombuffer(json.dumps(doc, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_META: blob}, **{k: np.asarray(v) for k, v in arrays.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a checkpoint written by ``save``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            if _META not in z.files:
                raise CheckpointError(f"{path} is not a graphrnn checkpoint (no metadata)")
            meta = json.loads(z[_META].tobytes().decode("utf-8"))
            arrays = {k: z[k] for k in z.files if k != _META}
    except CheckpointError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a graphrnn checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {meta.get('version')}, this "
                              f"graphrnn reads version {VERSION}")
    return arrays, meta


def group(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays under ``prefix/``, with the prefix removed."""
    p = prefix + "/"
    return {k[len(p):]: v for k, v in arrays.items() if k.startswith(p)}


def prefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v for k, v in arrays.items()}


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A Generator's state as JSON (PCG64's 128-bit integers are plain JSON integers)."""
    return rng.bit_generator.state  # type: ignore[no-any-return]


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    name = state.get("bit_generator")
    cls = getattr(np.random, str(name), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, np.random.BitGenerator):
        raise CheckpointError(f"unknown bit generator {name!r} in checkpoint")
    bg = cls()
    bg.state = state
    return np.random.Generator(bg)
