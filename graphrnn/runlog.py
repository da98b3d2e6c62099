"""Training logs that users already read: JSON lines (always) and TensorBoard event files (when
a writer is installed).

- ``JsonlLog``: one JSON object per line (``step``, ``loss``, ``val_loss`` when evaluated,
  ``grad_norm``, ``tokens_per_s``, ``lr``, ``time``), appended and flushed line by line. A log
  is a stream, not a document, so it is not written atomically like checkpoints: each line
  reaches the operating system as it is written, a crash of the process loses nothing written
  before it, and at most the line being written when the machine itself stops. A resumed run
  appends; the steps it repeats after its checkpoint appear again, later lines winning.
  Non-finite numbers are written as ``null`` (JSON has no NaN).
- ``TensorBoardLog``: scalars ``train/loss``, ``val/loss``, ``train/grad_norm``,
  ``train/tokens_per_s``, ``train/lr`` through tensorboard's own event writer, or
  ``tensorboardX`` when that is what is installed; ``tensorboard_available()`` says whether
  either is. Nothing here imports them until a writer is made.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, TextIO

JSONL_NAME = "log.jsonl"
SCALARS = {"loss": "train/loss", "val_loss": "val/loss", "grad_norm": "train/grad_norm",
           "tokens_per_s": "train/tokens_per_s", "lr": "train/lr"}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class JsonlLog:
    """Append-only JSON lines, flushed after every line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: TextIO | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            raise ValueError(f"log {self.path} is closed")
        rec = {k: _clean(v) for k, v in record.items()}
        rec.setdefault("time", round(time.time(), 3))
        self._f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._f.flush()

    def sync(self) -> None:
        """Down to the disk (at evaluations and the end; each line is already flushed)."""
        if self._f is not None:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self.sync()
            self._f.close()
            self._f = None


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON-lines log; a torn last line (the machine stopped mid-write) is
    skipped, a bad line elsewhere is an error naming it."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON line ({e.msg})") from None
    return out


def tensorboard_available() -> str | None:
    """``"tensorboard"`` or ``"tensorboardX"``: the writer that would be used, or None."""
    import importlib.util
    for mod, name in (("tensorboard.summary.writer.event_file_writer", "tensorboard"),
                      ("tensorboardX", "tensorboardX")):
        try:
            if importlib.util.find_spec(mod) is not None:
                return name
        except ImportError:  # a parent package that is missing
            continue
    return None


class TensorBoardLog:
    """Scalars into a TensorBoard event file under ``log_dir`` (one new file per writer, which
    TensorBoard reads together with earlier runs' files in the same folder)."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.kind = tensorboard_available()
        if self.kind is None:
            raise ImportError("no TensorBoard writer is installed: pip install tensorboard "
                              "(or tensorboardX)")
        if self.kind == "tensorboard":
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
            self._pb = (event_pb2, summary_pb2)
            self._w: Any = EventFileWriter(str(self.log_dir))
        else:
            from tensorboardX import SummaryWriter
            self._w = SummaryWriter(str(self.log_dir))

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        vals = [(SCALARS[k], float(v)) for k, v in record.items()
                if k in SCALARS and v is not None and math.isfinite(float(v))]
        if not vals:
            return
        if self.kind == "tensorboard":
            event_pb2, summary_pb2 = self._pb
            summ = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v)
                                              for t, v in vals])
            self._w.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summ))
        else:
            for t, v in vals:
                self._w.add_scalar(t, v, step)

    def sync(self) -> None:
        self._w.flush()

    def close(self) -> None:
        self._w.close()


class RunLog:
    """The logs of one run: JSON lines in ``log_dir/log.jsonl`` and, when ``tensorboard`` is
    True (or None and a writer is installed), TensorBoard events in ``log_dir``."""

    def __init__(self, log_dir: str | os.PathLike[str], tensorboard: bool | None = None) -> None:
        self.sinks: list[Any] = [JsonlLog(Path(log_dir) / JSONL_NAME)]
        if tensorboard or (tensorboard is None and tensorboard_available()):
            self.sinks.append(TensorBoardLog(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        for s in self.sinks:
            s.write(record)

    def sync(self) -> None:
        for s in self.sinks:
            s.sync()

    def close(self) -> None:
        for s in self.sinks:
            s.close()
