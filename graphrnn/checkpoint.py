"""Checkpoints: named numpy arrays plus JSON metadata in one ``.npz`` file, never pickled.

The JSON (options, vocabulary, optimizer hyper-parameters, step counters, RNG state, loss
history) is stored inside the npz as the uint8 array ``__meta__``, so one file holds everything
and one ``os.replace`` makes the write atomic: a crash leaves the previous checkpoint intact,
never a half-written one. Loading uses ``allow_pickle=False``; a file that is not a graphrnn
checkpoint, or is truncated, raises ``CheckpointError`` naming the file and why (never advising
``allow_pickle``: a checkpoint holds only numeric arrays and JSON).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
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


def _not_checkpoint(path: Path, reason: str) -> CheckpointError:
    # numpy's own messages for pickles advise ``allow_pickle=True``, which would let a foreign
    # file run code; never pass that advice on, whatever the reason text says
    if "allow_pickle" in reason or "pickle.load" in reason:
        reason = "it holds pickled Python objects, which graphrnn never loads"
    return CheckpointError(f"{path} is not a graphrnn checkpoint (.npz with JSON metadata): "
                           f"{reason}")


def _sniff(path: Path) -> str | None:
    """Why ``path`` cannot be an npz archive, judged from its bytes; None when it is a zip.
    Deciding before ``np.load`` matters: a pickle or a text file would get numpy's pickle
    message, and a ``.npy`` file would load as a bare array rather than an archive."""
    if path.is_dir():
        return "it is a directory"
    if zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        return "it is a truncated or corrupt zip archive"
    if head.startswith(b"\x93NUMPY"):
        return "it is a single .npy array, not an .npz archive"
    if head[:1] == b"\x80":
        return "it is a Python pickle, which graphrnn never loads (unpickling can run code)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at byte 512 still counts as text
        text = head[:-3].decode("utf-8", errors="replace")
    if text and all(c.isprintable() or c in "\t\r\n\f" for c in text):
        return "it is a text file, not an .npz (zip) archive"
    return "it is not an .npz (zip) archive"


def load(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a checkpoint written by ``save``. Any other file (a pickle, a text
    file, a foreign or truncated npz) raises one ``CheckpointError``: "X is not a graphrnn
    checkpoint (.npz with JSON metadata): <reason>"."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        why = _sniff(path)
        if why is not None:
            raise _not_checkpoint(path, why)
        with np.load(path, allow_pickle=False) as z:
            if _META not in z.files:
                raise _not_checkpoint(path, f"it has no {_META} entry (arrays "
                                            f"{sorted(z.files)[:6]})")
            meta = json.loads(z[_META].tobytes().decode("utf-8"))
            arrays = {k: z[k] for k in z.files if k != _META}
    except CheckpointError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _not_checkpoint(path, f"its {_META} entry is not UTF-8 JSON") from None
    except ValueError as e:
        # allow_pickle=False refusing an object array is the one ValueError np.load raises on
        # a well-formed zip; anything else is a malformed member
        msg = str(e)
        why = ("it holds Python object arrays (pickled data), which graphrnn never loads"
               if "pickle" in msg or "Object arrays" in msg else f"a member is malformed ({msg})")
        raise _not_checkpoint(path, why) from None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise _not_checkpoint(path, f"it is truncated or corrupt ({type(e).__name__}: {e})"
                              ) from None
    if not isinstance(meta, dict):
        raise _not_checkpoint(path, f"its metadata is a JSON {type(meta).__name__}, not an "
                                    "object")
    if meta.get("format") != FORMAT:
        raise _not_checkpoint(path, f"its metadata names the format {meta.get('format')!r}, "
                                    f"not {FORMAT!r}")
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
