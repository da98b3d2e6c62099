"""Checkpoints: named numpy arrays plus JSON metadata in one ``.npz`` file, never pickled.

The JSON (options, vocabulary, optimizer hyper-parameters, step counters, RNG state, loss
history) is stored inside the npz as the uint8 array ``__meta__``, so one file holds everything
and one ``os.replace`` makes the write atomic: a crash leaves the previous checkpoint intact,
never a half-written one (``graphrnn.safefile.atomic_write``; the temporary files of killed
saves are removed by the next save).

A checkpoint is data someone may have handed us, so loading trusts nothing in it: the file is
opened without blocking (a FIFO or a device is refused), every zip member is checked before
anything is inflated or allocated (only numeric ``.npy`` members; the shape its header declares
must match the bytes the member holds; no member may inflate beyond what deflate can reach from
its compressed size, and all of them together not beyond ``MAX_INFLATE_FACTOR`` times the file
or ``MAX_TOTAL_BYTES``), the JSON is
bounded in size and nesting before it is parsed, and nothing is ever unpickled. Whatever is
wrong raises one ``CheckpointError`` naming the file and why (never advising ``allow_pickle``).
The fields of the metadata are checked by whoever reads them (``check_field``; the trainer's in
``graphrnn.train``, the model options in ``graphrnn.tools.train_charlm``).
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import GraphRNNError
from .safefile import NotRegularFileError, atomic_write, open_regular

FORMAT = "graphrnn-checkpoint"
VERSION = 1
# How the parameters in a checkpoint are laid out (metadata field ``weight_layout``, written by
# every ``save``). 1: each cell's own layout, as ``Cell.weight_layouts()`` reads it from the
# graph: the zoo's, trace's and nngraph's weights are (in, out) (``x @ W``), an equations cell's
# are (out, in) (``W @ x``, PyTorch's). A checkpoint without the field predates it and is
# layout 1. A release that changes a frontend's layout (e.g. the zoo to PyTorch's (out, in))
# bumps this number; loading another layout is then refused with the conversion to run
# (``graphrnn.convert.relayout``), never read silently: a square weight would fit either way.
WEIGHT_LAYOUT = 1
_META = "__meta__"
# bounds on what a checkpoint may make us allocate or parse; far above any real one (a 2-layer
# LSTM LM is 4.6 MB, its metadata a few KB)
MAX_TOTAL_BYTES = 16 << 30
MAX_META_BYTES = 64 << 20
MAX_MEMBERS = 100_000
MAX_JSON_DEPTH = 64
# deflate cannot expand data by more than about 1032:1
MAX_DEFLATE_RATIO = 1100
# ``save`` stores members uncompressed, so a checkpoint inflates to about its own size; one
# compressed elsewhere (np.savez_compressed: float weights shrink little) may inflate to this
# many times its size, plus the slack below, and no more (a zip bomb does ~1000 times)
MAX_INFLATE_FACTOR = 64
INFLATE_SLACK = 64 << 20
# array kinds a checkpoint holds: booleans, integers, floats, complex numbers
_KINDS = "biufc"


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
    doc = {"format": FORMAT, "version": VERSION, "weight_layout": WEIGHT_LAYOUT, **meta}
    blob = np.frombuffer(json.dumps(doc, sort_keys=True).encode("utf-8"), dtype=np.uint8)

    def write(f: IO[bytes]) -> None:
        np.savez(f, **{_META: blob}, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write(path, write)


def _not_checkpoint(path: Path, reason: str) -> CheckpointError:
    # numpy's own messages for pickles advise ``allow_pickle=True``, which would let a foreign
    # file run code; never pass that advice on, whatever the reason text says
    if "allow_pickle" in reason or "pickle.load" in reason:
        reason = "it holds pickled Python objects, which graphrnn never loads"
    return CheckpointError(f"{path} is not a graphrnn checkpoint (.npz with JSON metadata): "
                           f"{reason}")


def _sniff(f: IO[bytes]) -> str | None:
    """Why the open file ``f`` cannot be an npz archive, judged from its bytes; None when it is
    a zip. Deciding first matters: a pickle or a text file would otherwise get numpy's pickle
    message, and a ``.npy`` file would load as a bare array rather than an archive."""
    if zipfile.is_zipfile(f):
        return None
    f.seek(0)
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
    file, a FIFO, a foreign, truncated or hostile npz) raises one ``CheckpointError``: "X is
    not a graphrnn checkpoint (.npz with JSON metadata): <reason>"."""
    path = Path(path)
    if not os.path.lexists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        f = open_regular(path)
    except NotRegularFileError as e:
        raise _not_checkpoint(path, e.strerror or "it is not a regular file") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    try:
        with f:
            why = _sniff(f)
            if why is not None:
                raise _not_checkpoint(path, why)
            f.seek(0)
            arrays, blob = _read_members(path, f)
        _check_json_depth(path, blob)
        meta = json.loads(blob.decode("utf-8"))
    except CheckpointError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _not_checkpoint(path, f"its {_META} entry is not UTF-8 JSON") from None
    except ValueError as e:
        # a malformed .npy header, or JSON numbers too long to read as integers
        raise _not_checkpoint(path, f"a member is malformed ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as e:
        raise _not_checkpoint(path, f"it is truncated or corrupt ({type(e).__name__}: {e})"
                              ) from None
    if not isinstance(meta, dict):
        raise _not_checkpoint(path, f"its metadata is a JSON {type(meta).__name__}, not an "
                                    "object")
    if meta.get("format") != FORMAT:
        raise _not_checkpoint(path, f"its metadata names the format {meta.get('format')!r}, "
                                    f"not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {meta.get('version')!r:.40}, this "
                              f"graphrnn reads version {VERSION}")
    layout = meta.get("weight_layout", 1)   # absent: written before the field, layout 1
    if layout != WEIGHT_LAYOUT:
        raise CheckpointError(f"{path} stores weights in layout {layout!r:.40}, this graphrnn "
                              f"uses layout {WEIGHT_LAYOUT} (graphrnn.checkpoint.WEIGHT_LAYOUT: "
                              "zoo, trace and nngraph weights (in, out), equations weights "
                              "(out, in)); convert its parameters with graphrnn.convert.relayout "
                              "before loading them")
    return arrays, meta


def _read_members(path: Path, f: IO[bytes]) -> tuple[dict[str, np.ndarray], bytes]:
    """The arrays of an npz and its metadata's bytes, each member checked before it is
    inflated or allocated."""
    size = os.fstat(f.fileno()).st_size
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _not_checkpoint(path, f"it has {len(infos)} members (at most {MAX_MEMBERS})")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise _not_checkpoint(path, "it has two members of one name")
        packed = sum(i.compress_size for i in infos)
        if packed > size:
            # members sharing their compressed bytes: the overlapping-files zip bomb
            raise _not_checkpoint(path, f"its members claim {packed} compressed bytes, more "
                                        f"than the file's {size}")
        total = 0
        for i in infos:
            if not i.filename.endswith(".npy"):
                raise _not_checkpoint(path, f"member {i.filename!r} is not a .npy array")
            if i.compress_type == zipfile.ZIP_STORED:
                limit = i.compress_size
            elif i.compress_type == zipfile.ZIP_DEFLATED:
                limit = i.compress_size * MAX_DEFLATE_RATIO
            else:
                raise _not_checkpoint(path, f"member {i.filename!r} uses compression method "
                                            f"{i.compress_type} (only stored or deflated)")
            if i.file_size > limit:
                raise _not_checkpoint(path, f"member {i.filename!r} declares {i.file_size} "
                                            f"bytes from {i.compress_size} compressed (a zip "
                                            "bomb or a corrupt archive)")
            total += i.file_size
        if total > MAX_TOTAL_BYTES:
            raise _not_checkpoint(path, f"its members inflate to {total} bytes, more than the "
                                        f"{MAX_TOTAL_BYTES} a checkpoint may hold")
        if total > size * MAX_INFLATE_FACTOR + INFLATE_SLACK:
            raise _not_checkpoint(path, f"its members inflate to {total} bytes from a file of "
                                        f"{size} (a zip bomb)")
        if _META + ".npy" not in names:
            raise _not_checkpoint(path, f"it has no {_META} entry (arrays "
                                        f"{sorted(n[:-4] for n in names)[:6]})")
        arrays: dict[str, np.ndarray] = {}
        for i in infos:
            name = i.filename[:-4]
            if name == _META and i.file_size > MAX_META_BYTES:
                raise _not_checkpoint(path, f"its {_META} entry has {i.file_size} bytes (at "
                                            f"most {MAX_META_BYTES})")
            with zf.open(i) as m:
                arrays[name] = _read_npy(path, name, m, i.file_size)
    blob = arrays.pop(_META)
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise _not_checkpoint(path, f"its {_META} entry is not a byte array")
    return arrays, blob.tobytes()


def _read_npy(path: Path, name: str, m: IO[bytes], size: int) -> np.ndarray:
    """One ``.npy`` member, its header checked against the member's size before allocating."""
    fmt = np.lib.format
    version = fmt.read_magic(m)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(m)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(m)
    else:
        raise _not_checkpoint(path, f"member {name!r} has .npy format version {version}")
    if dtype.hasobject:
        raise _not_checkpoint(path, "it holds Python object arrays (pickled data), which "
                                    "graphrnn never loads")
    if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _not_checkpoint(path, f"member {name!r} holds {dtype} values, not numbers")
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    if m.tell() + nbytes != size:
        raise _not_checkpoint(path, f"member {name!r} declares shape {shape} of {dtype} "
                                    f"({nbytes} bytes) but holds {size - m.tell()} bytes")
    arr = np.empty(shape, dtype, order="F" if fortran else "C")
    view = memoryview(arr.reshape(-1, order="A")).cast("B") if arr.size else memoryview(b"")
    got = 0
    while got < nbytes:
        n = m.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise _not_checkpoint(path, f"member {name!r} is truncated")
        got += n
    return arr


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def _check_json_depth(path: Path, blob: bytes) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH before parsing it (the parser would
    recurse until RecursionError)."""
    depth = 0
    for b in _BRACKET.finditer(_STRING.sub(b'""', blob)):
        depth += 1 if b.group() in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            raise _not_checkpoint(path, f"its metadata is nested deeper than {MAX_JSON_DEPTH} "
                                        "levels")


def check_field(path: str | os.PathLike[str], where: str, value: Any, kind: str, *,
                lo: float | None = None, hi: float | None = None,
                choices: tuple[Any, ...] | None = None, max_len: int = 1 << 20) -> Any:
    """``value`` (metadata field ``where`` of the checkpoint ``path``) when it is of ``kind``
    ("int", "float", "str", "bool", "list", "dict") within ``lo``..``hi`` / ``choices`` /
    ``max_len``; else one ``CheckpointError`` naming the field, what it must be and what it is.
    JSON has no int/bool distinction Python keeps, so ``True`` is not an int here."""
    ok: bool
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
    else:
        ok = isinstance(value, {"str": str, "bool": bool, "list": list, "dict": dict}[kind])
    want = {"int": "an integer", "float": "a finite number", "str": "a string",
            "bool": "true or false", "list": "a list", "dict": "an object"}[kind]
    if ok and lo is not None and value < lo:
        ok, want = False, f"{want} >= {lo}"
    if ok and hi is not None and value > hi:
        ok, want = False, f"{want} <= {hi}"
    if ok and choices is not None and value not in choices:
        ok, want = False, f"one of {list(choices)}"
    if ok and kind in ("str", "list", "dict") and len(value) > max_len:
        ok, want = False, f"{want} of at most {max_len} items"
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise CheckpointError(f"{path}: metadata field {where} must be {want}, got {shown}")
    return value


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
    if not isinstance(state, dict):
        raise CheckpointError(f"the checkpoint's rng state is a {type(state).__name__}, not "
                              "an object")
    name = state.get("bit_generator")
    cls = getattr(np.random, str(name), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, np.random.BitGenerator):
        raise CheckpointError(f"unknown bit generator {name!r:.40} in checkpoint")
    bg = cls()
    try:
        bg.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise CheckpointError(f"the checkpoint's rng state is malformed ({type(e).__name__}: "
                              f"{str(e)[:80]})") from None
    return np.random.Generator(bg)
