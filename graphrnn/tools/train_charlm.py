"""The main job: train a character-level language model, then print samples.

    python -m graphrnn.tools.train_charlm               # stdlib source, nngraph LSTM, ~3 minutes
    python -m graphrnn.tools.train_charlm --data input.txt --minutes 10
    graphrnn train --cell gru --layers 2 --hidden-size 256 --steps 2000

By default the LSTM is declared with the nngraph frontend (char-rnn's ``LSTM.lua`` in Python,
``cli_tools.nngraph_lstm``), compiled with the llvm backend (the slow ``ref`` backend with a warning
where llvm is not available), and trained on the standard library's own Python source, which
every Python installation has. Any text file works with ``--data``. Training shows a progress bar
(loss, tokens/s, ETA), validates, writes a checkpoint (npz, atomic) and a loss plot (PNG, with
matplotlib), then prints samples and where the files are.

``build_model(options)`` rebuilds the model from the options stored in a checkpoint, which is how
``graphrnn sample`` works. A cell from an equations file is stored as the file's text (under
``options["equations"]``; the path is kept only as information), so a checkpoint does not depend
on the file staying where it was. A ``file.py:function`` cell is code: a checkpoint records its
path but never runs it; ``graphrnn sample CKPT --cell file.py:function`` (or ``train --resume
CKPT --cell ...``) runs the file the user names again, and the cells it builds must equal the
ones the checkpoint keeps as JSON (``options["cell_ir"]``, ``graphrnn.ir_json``). The options a
checkpoint holds are checked field by field (``check_options``) before anything is built from
them.

``--resume`` takes the model and data layout (cell, layers, hidden, embed, dropout, dtype, batch,
seq-len, optimizer) from the checkpoint: giving one of them with a different value is an error
naming the option, the checkpoint's value and the given one. ``--lr`` and ``--backend`` may
change on resume: the given value wins and the learning rate used is printed.

Layer sizes reach an equations file the way ``--input-size``/``--hidden-size`` do for the other
commands (``graphrnn.tools.cli_tools.equations_cell``): layer 0's input is the vocabulary
(one-hot) or ``--embed``, upper layers' the layer below, every state gets ``--hidden-size``; a file
without ``input``/``state`` lines is read as input ``x`` and state ``h``.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data import StreamBatcher, Vocab, read_text, split_ids, stdlib_corpus
from ..ir import Cell
from ..model import RNNModel, forget_bias_overrides
from ..optim import StepDecay, make_optimizer
from ..runlog import tensorboard_available
from ..train import TrainConfig, Trainer, plot_losses

DEFAULT_CELL = "nngraph-lstm"
# bounds on a checkpoint's model options: far above any model this trains, low enough that a
# hand-made file cannot make ``build_model`` loop or allocate for hours
MAX_LAYERS = 256
MAX_SIZE = 1 << 16
MAX_VOCAB = 1 << 24
# what a resumed run takes from its checkpoint (the model and the data layout)
FROM_CHECKPOINT = ("cell", "layers", "hidden", "embed", "dropout", "dtype", "batch", "seq_len",
                   "optimizer")


def resolve_layer_cell(spec: str, input_size: int | None, hidden_size: int | None, dtype: str,
                       *, size_flags: tuple[str, str] = ("--input-size", "--hidden-size"),
                       one_input: bool = False) -> Cell:
    """A layer's cell: ``nngraph-lstm`` (above), a zoo name, an equations file or
    ``file.py:function`` (``graphrnn.tools.cli_tools.resolve_cell``, which knows all four)."""
    from .cli_tools import resolve_cell
    return resolve_cell(spec, input_size, hidden_size, dtype, size_flags=size_flags,
                        one_input=one_input)


def _missing_cell_file(opts: dict[str, Any]) -> str | None:
    """The file a checkpoint's cell needs and that is gone, if any."""
    from .cli_tools import is_python_spec
    spec = str(opts.get("cell", ""))
    if "equations" in opts:
        return None  # rebuilt from the stored text
    path = spec.rpartition(":")[0] if is_python_spec(spec) else spec
    if (is_python_spec(spec) or os.path.isabs(spec)) and not os.path.exists(path):
        return path
    return None


def stored_cell_spec(spec: str, eq: dict[str, Any] | None = None) -> str:
    """How a CELL argument is recorded in a checkpoint's options: a ``file.py:function`` with
    its absolute path (findable from elsewhere), an equations file as its absolute path
    (information only), anything else as given. ``eq``: the equations file already read for
    ``spec`` (``equations_source``), so it is not read again."""
    from .cli_tools import equations_source, is_python_spec
    if is_python_spec(spec):
        head, sep, fn = spec.rpartition(":")
        return str(Path(head).resolve()) + sep + fn
    if eq is None:
        eq = equations_source(spec)
    return eq["path"] if eq is not None else spec


def check_options(path: str | os.PathLike[str], meta: dict[str, Any],
                  params: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The model options and vocabulary of a checkpoint's metadata, checked field by field
    (types and ranges, and the layer count against the parameters it holds) before anything
    is built from them; a copy of ``meta["options"]``."""
    from ..checkpoint import CheckpointError, check_field
    o = dict(check_field(path, "options", meta.get("options"), "dict"))
    check_field(path, "options.cell", o.get("cell"), "str", max_len=4096)
    layers = check_field(path, "options.layers", o.get("layers"), "int", lo=1, hi=MAX_LAYERS)
    check_field(path, "options.hidden", o.get("hidden"), "int", lo=1, hi=MAX_SIZE)
    check_field(path, "options.embed", o.get("embed", 0), "int", lo=0, hi=MAX_SIZE)
    dropout = check_field(path, "options.dropout", o.get("dropout", 0.0), "float", lo=0)
    if not dropout < 1:
        raise CheckpointError(f"{path}: metadata field options.dropout must be below 1, got "
                              f"{dropout}")
    check_field(path, "options.dtype", o.get("dtype", "float32"), "str",
                choices=("float32", "float64"))
    check_field(path, "options.backend", o.get("backend", "auto"), "str", max_len=64)
    V = check_field(path, "options.vocab_size", o.get("vocab_size"), "int", lo=1, hi=MAX_VOCAB)
    for k in ("seq_len", "batch"):
        if k in o:
            check_field(path, f"options.{k}", o[k], "int", lo=1, hi=1 << 20)
    if "equations" in o:
        eq = check_field(path, "options.equations", o["equations"], "dict")
        check_field(path, "options.equations.name", eq.get("name"), "str", max_len=4096)
        check_field(path, "options.equations.text", eq.get("text"), "str")
    if "cell_ir" in o:
        from ..errors import GraphError
        from ..ir_json import cell_from_json
        docs = check_field(path, "options.cell_ir", o["cell_ir"], "list", max_len=MAX_LAYERS)
        if len(docs) != layers:
            raise CheckpointError(f"{path}: options.cell_ir has {len(docs)} cells for "
                                  f"{layers} layers")
        for i, d in enumerate(docs):
            try:
                cell_from_json(d)
            except GraphError as e:
                raise CheckpointError(f"{path}: options.cell_ir[{i}]: {e}") from None
    voc = check_field(path, "vocab", meta.get("vocab"), "dict")
    toks = check_field(path, "vocab.tokens", voc.get("tokens"), "list", max_len=MAX_VOCAB)
    for i, t in enumerate(toks):
        check_field(path, f"vocab.tokens[{i}]", t, "str", max_len=4096)
    if len(toks) != V:
        raise CheckpointError(f"{path}: the vocabulary has {len(toks)} tokens but "
                              f"options.vocab_size is {V}")
    check_field(path, "vocab.sep", voc.get("sep", ""), "str", max_len=16)
    if voc.get("unk") is not None:
        check_field(path, "vocab.unk", voc["unk"], "str", max_len=4096)
    if params is not None:
        held = {k.split(".")[0] for k in params if k.startswith("l")}
        n = sum(1 for i in range(len(held)) if f"l{i}" in held)
        if n != layers:
            raise CheckpointError(f"{path}: options.layers is {layers} but the checkpoint holds "
                                  f"parameters for {n} layers")
    return o


def build_model(opts: dict[str, Any], checkpoint: str | None = None,
                cell: str | None = None) -> RNNModel:
    """The model described by ``opts`` (as stored in checkpoints under ``options``); pass the
    ``checkpoint``'s path when the options come from one, for the message when its cell's file
    is gone. ``cell``: a CELL argument the user gave, used instead of the options' cell. A
    checkpoint's ``file.py:function`` cell is never run unless given again as ``cell``."""
    from .cli_tools import CellSpecError, equations_cell, equations_source, is_python_spec
    if cell is not None:
        opts = {k: v for k, v in opts.items() if k != "equations"}
        opts["cell"] = cell
    elif checkpoint is not None:
        gone = _missing_cell_file(opts)
        if gone is not None:
            raise CellSpecError(f"{checkpoint}: its cell {opts['cell']} needs the file {gone}, "
                                "which is missing; put the file back there (a checkpoint "
                                "stores a Python cell's path, not its code)")
        if is_python_spec(str(opts["cell"])) and "equations" not in opts:
            from ..checkpoint import CheckpointError
            raise CheckpointError(
                f"{checkpoint}: its cell {opts['cell']} is Python code, which a checkpoint "
                f"never runs; to run that file, name it yourself: --cell {opts['cell']}")
    dtype = opts.get("dtype", "float32")
    embed = int(opts.get("embed") or 0)
    V = int(opts["vocab_size"])
    size = embed if embed else V
    hidden = int(opts["hidden"])
    eq = opts.get("equations")
    # a checkpoint from before the equations text was stored was trained with the file's own
    # state sizes, whatever --hidden said (its input size had to be the layer's anyway): rebuild
    # it the same way
    legacy = checkpoint is not None and cell is None and eq is None \
        and equations_source(opts["cell"]) is not None
    cells: list[Any] = []
    for i in range(int(opts["layers"])):
        # where a layer's sizes come from, for the message when an equations file disagrees
        first = "--embed" if embed else "the vocabulary size (one-hot input)"
        flags = (first if i == 0 else "the layer below", "--hidden-size")
        if eq is not None:
            c = equations_cell(eq["text"], eq.get("name", "cell.eq"), size, hidden, dtype,
                               flags)
        else:
            c = resolve_layer_cell(opts["cell"], size, None if legacy else hidden, dtype,
                                   size_flags=flags, one_input=True)
        cells.append(c)
        size = int(c.outputs[0].shape[1])
    if cell is not None and "cell_ir" in opts:
        _check_same_cells(checkpoint, cell, cells, opts["cell_ir"])
    return RNNModel(cells, n_classes=V, vocab_size=V,
                    input="embedding" if embed else "onehot",
                    embed_size=embed or None, dropout=float(opts.get("dropout", 0.0)),
                    backend=opts.get("backend", "auto"), dtype=dtype)


def cell_docs(model: RNNModel) -> list[dict[str, Any]]:
    """Each layer's cell as JSON (``graphrnn.ir_json``): what a checkpoint of a
    ``file.py:function`` cell keeps, to tell whether the file given again still builds it."""
    from ..ir_json import cell_to_json
    return [cell_to_json(lay.fwd.cell) for lay in model.layers]


def _check_same_cells(checkpoint: str | None, spec: str, cells: list[Cell],
                      stored: list[Any]) -> None:
    from ..checkpoint import CheckpointError
    from ..ir_json import cell_to_json
    for i, (c, doc) in enumerate(zip(cells, stored)):
        if cell_to_json(c) != doc:
            raise CheckpointError(f"{checkpoint}: the cell {spec} builds for layer {i} differs "
                                  "from the one this checkpoint was trained with (has the file "
                                  "changed?)")


# ---- the command line of the training job (shared with ``graphrnn train``) ----

def add_train_args(p: argparse.ArgumentParser) -> None:
    from .cli_tools import CELL_EXEC_HELP, SAMPLE_TEMPERATURE, add_alias, add_backend_arg, number
    p.epilog = ("--resume CKPT continues a run: the cell, --layers, --hidden-size, --embed, "
                "--dropout, --dtype, --batch, --seq-len and --optimizer come from the "
                "checkpoint, and giving one with another value is an error; --lr and --backend "
                "may change on resume (the given value wins; the learning rate used is "
                "printed), as may the clipping options; the optimizer's other settings and "
                "state come from the checkpoint. " + CELL_EXEC_HELP)
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="FILE", help="a text file (default: the Python standard "
                   "library's own source)")
    g.add_argument("--max-chars", type=number(int, gt=0), default=2_000_000,
                   help="cap on the default corpus size (default 2,000,000)")
    g.add_argument("--val-fraction", type=number(float, ge=0, lt=1), default=0.05)
    g.add_argument("--val-batches", type=number(int, ge=0), default=100,
                   help="validate on at most this many batches (0: all)")
    g = p.add_argument_group("model")
    g.add_argument("--cell", default=DEFAULT_CELL, action=_Given,
                   help="nngraph-lstm (default), a zoo cell (lstm, gru, mut1, ...), an equations "
                   "file, or file.py:function returning a Cell or an nngraph gModule (this runs "
                   "the file, as python would). An "
                   "equations file gets the layer's input size (vocabulary, --embed or the layer "
                   "below) and --hidden-size for every state; sizes it declares must agree; "
                   "without 'input NAME: SIZE' / 'state NAME: SIZE' lines it is read as input x, "
                   "state h")
    add_backend_arg(g, "auto", extra=("auto",), help="auto: llvm, else ref", action=_Given)
    g.add_argument("--layers", type=int, default=2, action=_Given)
    # --hidden-size as in explain, viz, compile and bench; --hidden is the older spelling
    g.add_argument("--hidden-size", dest="hidden", type=int, default=128, action=_Given,
                   metavar="H", help="state size of each layer")
    add_alias(g, "--hidden", "hidden", type=int, action=_Given)
    g.add_argument("--embed", type=int, default=0, action=_Given,
                   help="embedding size (0: one-hot characters, as char-rnn)")
    g.add_argument("--dropout", type=float, default=0.0, action=_Given)
    g.add_argument("--dtype", default="float32", choices=("float32", "float64"), action=_Given)
    g.add_argument("--init", default="uniform", choices=("uniform", "orthogonal"))
    g.add_argument("--init-scale", type=number(float, gt=0), default=0.08)
    g.add_argument("--forget-bias", type=number(float), default=None,
                   help="initial forget-gate bias of LSTM-style cells")
    g = p.add_argument_group("optimization")
    g.add_argument("--optimizer", default="adam",
                   choices=("sgd", "rmsprop", "adagrad", "adam", "adamw"), action=_Given)
    g.add_argument("--lr", type=float, default=2e-3, action=_Given,
                   help="learning rate (on --resume, when given, it replaces the "
                   "checkpoint's)")
    g.add_argument("--momentum", type=number(float, ge=0, lt=1), default=0.0,
                   help="SGD momentum")
    g.add_argument("--weight-decay", type=number(float, ge=0), default=None,
                   help="L2 weight decay (adamw: decoupled; default 0, adamw 0.01)")
    g.add_argument("--decay", type=number(float, gt=0), default=1.0,
                   help="multiply the learning rate by this ... ")
    g.add_argument("--decay-after", type=number(int, ge=0), default=0,
                   help="... after this many steps ...")
    g.add_argument("--decay-every", type=number(int, gt=0), default=1000,
                   help="... and every N steps after")
    g.add_argument("--clip", type=number(float, ge=0), default=5.0,
                   help="elementwise gradient clamp (0: off)")
    g.add_argument("--max-norm", type=number(float, ge=0), default=0.0,
                   help="global-norm clipping (0: off)")
    g.add_argument("--batch", type=int, default=32, action=_Given)
    g.add_argument("--seq-len", type=int, default=50, action=_Given, help="truncated BPTT length")
    g.add_argument("--steps", type=number(int, ge=0), default=None, help="step budget")
    g.add_argument("--minutes", type=number(float, gt=0), default=None,
                   help="time budget (default 3 when no --steps)")
    g.add_argument("--eval-every", type=number(int, ge=0), default=200,
                   help="validate every N steps (0: only at the end)")
    g.add_argument("--seed", type=number(int, ge=0), default=0)
    g = p.add_argument_group("output")
    g.add_argument("--out", default="runs/charlm", help="folder for checkpoint.npz and loss.png")
    g.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint (see below)")
    # --length and --temperature as in graphrnn sample; --sample-length is the older spelling
    g.add_argument("--length", dest="sample_length", type=number(int, ge=0), default=400,
                   metavar="N",
                   help="characters of the sample printed after training")
    add_alias(g, "--sample-length", "sample_length", type=number(int, ge=0))
    g.add_argument("--temperature", type=number(float, gt=0), default=SAMPLE_TEMPERATURE)
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one line per evaluation instead")
    g.add_argument("--log-dir", metavar="DIR", default=None,
                   help="where log.jsonl (one JSON line per logged step: loss, val_loss, "
                   "grad_norm, tokens_per_s, lr) and TensorBoard events go (default: --out)")
    g.add_argument("--log-every", type=number(int, gt=0), default=10,
                   help="a log line every N steps (and at every evaluation)")
    g.add_argument("--tensorboard", default="auto", choices=("auto", "on", "off"),
                   help="TensorBoard event files in the log folder: auto (when tensorboard or "
                   "tensorboardX is installed), on (an error without one), off")
    g = p.add_argument_group("parallel (mpiexec -n N graphrnn train ...: data-parallel over MPI, "
                             "see docs/distributed.md)")
    g.add_argument("--threads", type=number(int, gt=0), default=None,
                   help="threads per process (default: the cores, over mpiexec's processes "
                   "on this host); each rank is pinned to cores of its own")
    g.add_argument("--deterministic", action="store_true",
                   help="sum the gradients in rank order: runs with the same N are "
                   "bit-identical")
    g.add_argument("--bucket-mb", type=number(float, ge=0), default=4.0,
                   help="gradients are reduced in buckets of at least this many MiB, each "
                   "started as soon as it is ready (default 4)")
    g.add_argument("--comm-timeout", type=number(float, gt=0), default=300.0,
                   help="seconds a collective may wait for the other ranks before the job "
                   "ends with an error (default 300)")
    g.add_argument("--check-every", type=number(int, ge=0), default=100,
                   help="compare a checksum of the parameters across ranks every N steps "
                   "(0: off; default 100)")


def _check_args(a: argparse.Namespace) -> None:
    positive = {"--layers": a.layers, "--hidden-size": a.hidden, "--batch": a.batch,
                "--seq-len": a.seq_len, "--lr": a.lr}
    for name, v in positive.items():
        if not 0 < v < float("inf"):
            raise ValueError(f"{name} must be positive and finite, got {v}")
    if a.layers > MAX_LAYERS or a.hidden > MAX_SIZE or a.embed > MAX_SIZE:
        raise ValueError(f"--layers must be <= {MAX_LAYERS}, --hidden-size and --embed <= "
                         f"{MAX_SIZE}, got {a.layers}, {a.hidden}, {a.embed}")
    if not 0 <= a.dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {a.dropout}")
    if a.embed < 0:
        raise ValueError(f"--embed must be >= 0, got {a.embed}")
    if getattr(a, "tensorboard", "auto") == "on" and tensorboard_available() is None:
        raise ValueError("--tensorboard on: no TensorBoard writer is installed (pip install "
                         "tensorboard, or tensorboardX); use --tensorboard auto or off")


class _Given(argparse.Action):
    """Stores the value and records that the option was given (``given_options``), so that
    ``--resume`` can tell a given value from a default one."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        given = set(getattr(namespace, "given_options", ()))
        given.add(self.dest)
        namespace.given_options = given
        # the spelling typed (--hidden-size or its older --hidden), for error messages
        flags = dict(getattr(namespace, "given_flags", {}))
        flags[self.dest] = option_string
        namespace.given_flags = flags


def _given(a: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(a, k) for k in sorted(getattr(a, "given_options", ()))}


def _check_resume(path: str, opts: dict[str, Any], meta: dict[str, Any],
                  given: dict[str, Any], flags: dict[str, str] | None = None) -> None:
    """An option given with --resume must agree with the checkpoint where the checkpoint
    decides (FROM_CHECKPOINT): one line naming the option and both values otherwise."""
    from ..checkpoint import CheckpointError
    held = dict(opts)
    held.setdefault("embed", 0)
    held.setdefault("dropout", 0.0)
    held.setdefault("dtype", "float32")
    om = meta.get("optimizer")
    held["optimizer"] = om.get("name") if isinstance(om, dict) else None
    for k in FROM_CHECKPOINT:
        if k not in given or k not in held:
            continue
        want = stored_cell_spec(given[k]) if k == "cell" else given[k]
        if want != held[k]:
            flag = (flags or {}).get(k) or "--" + k.replace("_", "-")
            raise CheckpointError(f"{flag} {given[k]} conflicts with the checkpoint {path}, "
                                  f"which has {k} {held[k]}; leave {flag} out to resume (the "
                                  "model and data layout come from the checkpoint)")


def run(a: argparse.Namespace, out: Any = None) -> int:
    """Train as the arguments say; print samples and where the files went. Under ``mpiexec
    -n N`` (N > 1) data-parallel: rank 0 prints and writes, and an error on any rank ends the
    whole job (``graphrnn.distributed``)."""
    from ..distributed import launched_with_several_ranks
    if not launched_with_several_ranks():
        if getattr(a, "threads", None):
            from codegen.llvm_blas import set_blas_threads
            set_blas_threads(a.threads)
        return _run(a, out)
    from ..distributed import Distributed, DistributedError, mpi_module
    MPI = mpi_module()   # a missing mpi4py: one error line on every rank, nothing to abort
    try:
        dist = Distributed(deterministic=a.deterministic, bucket_mb=a.bucket_mb,
                           timeout=a.comm_timeout, check_every=a.check_every,
                           threads=a.threads)
    except DistributedError as e:   # e.g. --threads oversubscribing one host: end them all
        print(f"graphrnn: error: rank {MPI.COMM_WORLD.Get_rank()}: {e}", file=sys.stderr,
              flush=True)
        time.sleep(0.5)
        MPI.COMM_WORLD.Abort(1)
        raise SystemExit(1) from None
    try:
        from codegen.llvm_blas import set_blas_threads
        set_blas_threads(dist.threads)
        if dist.is_root:
            print(f"data-parallel: {dist.size} ranks, {dist.threads} thread(s) each"
                  f"{', deterministic' if a.deterministic else ''}", file=out or sys.stdout)
        return _run(a, out if dist.is_root else io.StringIO(), dist)
    except BaseException as e:  # noqa: BLE001 - any error on one rank must end them all
        from ..train import TrainingDivergedError
        # a divergence happens on every rank at once (they hold the same numbers): one line
        if dist.is_root or not isinstance(e, TrainingDivergedError):
            msg = " | ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
            print(f"graphrnn: error: rank {dist.rank}: {msg or type(e).__name__}",
                  file=sys.stderr, flush=True)
        dist.abort(1)
        raise SystemExit(1) from None


def _run(a: argparse.Namespace, out: Any = None, dist: Any = None) -> int:
    out = out or sys.stdout
    given = _given(a)
    _check_args(a)
    from .cli_tools import check_backend, check_output_dir
    check_backend(a.backend, extra=("auto",))
    # the data before the output folder: a missing data file must not leave an empty run folder
    if a.data:
        text, source = read_text(a.data), a.data
    else:
        text, source = stdlib_corpus(a.max_chars), "the Python standard library's source"
    # the output folder now, before minutes of training, with a one-line reason when it fails
    outdir = Path(a.out)
    if dist is None or dist.is_root:
        check_output_dir(outdir)
    resume_params = None
    if a.resume:
        from .. import checkpoint as ckpt
        arrays, resume_meta = ckpt.load(a.resume)
        resume_params = ckpt.group(arrays, "param")
        opts = check_options(a.resume, resume_meta, resume_params)
        _check_resume(a.resume, opts, resume_meta, given, getattr(a, "given_flags", None))
        if "backend" in given:
            opts["backend"] = given["backend"]
        vocab = Vocab.from_json(resume_meta["vocab"])
    else:
        from .cli_tools import equations_source
        vocab = Vocab.from_text(text)
        eq = equations_source(a.cell)
        opts = {"cell": stored_cell_spec(a.cell, eq), "layers": a.layers, "hidden": a.hidden,
                "embed": a.embed, "dropout": a.dropout, "dtype": a.dtype,
                "backend": a.backend, "vocab_size": len(vocab), "seq_len": a.seq_len,
                "batch": a.batch}
        if eq is not None:
            opts["equations"] = {"name": eq["name"], "text": eq["text"]}
    ids = np.array([vocab.index.get(c, -1) for c in text], np.int64)
    if (ids < 0).any():
        raise ValueError(f"{source} has characters the checkpoint's vocabulary lacks, e.g. "
                         f"{text[int(np.argmax(ids < 0))]!r}")
    train_ids, val_ids = split_ids(ids, a.val_fraction)
    train = StreamBatcher(train_ids, int(opts["batch"]), int(opts["seq_len"]))
    val = StreamBatcher(val_ids, int(opts["batch"]), int(opts["seq_len"])) \
        if len(val_ids) > int(opts["batch"]) * (int(opts["seq_len"]) + 1) else None
    # a resumed run's cell is the checkpoint's, unless the user names it (a file.py:function
    # cell must be: a checkpoint never runs code)
    model = build_model(opts, a.resume, cell=a.cell if "cell" in given and a.resume else None)
    if resume_params is not None:
        try:
            model.check_params(resume_params)
        except ValueError as e:
            # before init_params allocates what the options claim
            raise ckpt.CheckpointError(f"{a.resume}: {e}") from None
    from .cli_tools import cell_sizes, is_python_spec
    if not a.resume and is_python_spec(a.cell):
        # the cell as data: never run from the checkpoint, but the file given again (sample
        # --cell, --resume --cell) must still build this
        opts["cell_ir"] = cell_docs(model)
    backend = model.layers[0].fwd.backend_name
    cell0 = model.layers[0].fwd.cell
    n_params = sum(math.prod(s) for s in model.param_shapes().values())
    print(f"data: {source}: {len(text):,} characters, vocabulary {len(vocab)}", file=out)
    print(f"model: {opts['layers']} x {cell0.name} ({cell_sizes(cell0)}),"
          f" {n_params:,} parameters, backend {backend}", file=out)
    overrides = forget_bias_overrides(model, a.forget_bias) if a.forget_bias is not None \
        else None
    params = model.init_params(a.seed, a.init, a.init_scale, overrides)
    schedule = StepDecay(a.decay_after, a.decay_every, a.decay) if a.decay != 1.0 else None
    hyper: dict[str, Any] = {"momentum": a.momentum} if a.optimizer == "sgd" else {}
    if a.weight_decay is not None:
        hyper["weight_decay"] = a.weight_decay
    opt = make_optimizer(a.optimizer, a.lr, schedule, **hyper)
    ck = outdir / "checkpoint.npz"
    minutes = a.minutes if a.minutes is not None or a.steps is not None else 3.0
    cfg = TrainConfig(steps=a.steps, minutes=minutes, clip=a.clip or None,
                      max_norm=a.max_norm or None, eval_every=a.eval_every, checkpoint=str(ck),
                      progress=not a.no_progress, seed=a.seed,
                      log_dir=str(a.log_dir or outdir), log_every=a.log_every,
                      tensorboard={"auto": None, "on": True, "off": False}[a.tensorboard])
    nval = min(len(val), a.val_batches or len(val)) if val is not None else 0
    vb = (lambda: (val.batch(k) for k in range(nval))) if val is not None else None
    # without the bar, each evaluation is a line of its own, printed as it happens
    log = (lambda m: print(m, file=out, flush=True)) if a.no_progress else None
    tr = Trainer(model, params, opt, lambda step, rng: train.batch(step), vb, cfg,
                 meta={"vocab": vocab.to_json(), "options": opts, "kind": "charlm"}, log=log,
                 dist=dist)
    if a.resume:
        tr.load(a.resume)
        print(f"resumed from {a.resume} at step {tr.step}", file=out)
        if "lr" in given and tr.opt.lr != float(a.lr):
            print(f"learning rate: {a.lr} (--lr; the checkpoint's was {tr.opt.lr})", file=out)
            tr.opt.lr = float(a.lr)
        else:
            print(f"learning rate: {tr.opt.lr} (the checkpoint's)", file=out)
    t0 = time.perf_counter()
    tr.run()
    wall = time.perf_counter() - t0
    last = tr.val_history[-1][1] if tr.val_history else float("nan")
    print(f"trained {tr.step} steps in {wall:.1f} s ({tr.tokens_per_s:,.0f} tokens/s); "
          f"validation loss {last:.4f} nats/char", file=out)
    if dist is not None:
        print(f"rank 0 waited {dist.comm_seconds:.2f} s for the other ranks' gradients",
              file=out)
        if not dist.is_root:
            return 0
    from ..sample import generate
    prime = "def " if not a.data else ""
    for temp in (a.temperature,):
        s = generate(model, tr.params, vocab, a.sample_length, prime=prime, temperature=temp,
                     seed=a.seed)
        print(f"--- sample (temperature {temp}) ---\n{prime}{s}\n---", file=out)
    plot = plot_losses(tr.history, tr.val_history, outdir / "loss.png")
    print(f"checkpoint: {ck}", file=out)
    print(f"log: {Path(cfg.log_dir or outdir) / 'log.jsonl'}"
          + (" (and TensorBoard events there)" if cfg.tensorboard is not False
             and tensorboard_available() else ""), file=out)
    print(f"loss plot: {plot}" if plot else "loss plot: not written (matplotlib missing)",
          file=out)
    print(f"sample more: graphrnn sample {ck} --length 1000 --temperature {a.temperature}",
          file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``graphrnn train`` on its own (``python -m graphrnn.tools.train_charlm [options]``)."""
    from .cli_tools import run_command
    p = argparse.ArgumentParser(prog="graphrnn train", description="train a language model "
                                "(default: char-level LSTM on the stdlib source)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    add_train_args(p)
    from .cli_tools import show_defaults
    show_defaults(p)
    p.set_defaults(func=run)
    return run_command(p, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
