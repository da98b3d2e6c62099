"""The main job: train a character-level language model, then print samples.

    python -m graphrnn.train_charlm                 # stdlib source, nngraph LSTM, ~3 minutes
    python -m graphrnn.train_charlm --data input.txt --minutes 10
    graphrnn train --cell gru --layers 2 --hidden 256 --steps 2000

By default the LSTM is declared with the nngraph frontend (char-rnn's ``LSTM.lua`` in Python,
``nngraph_lstm`` below), compiled with the llvm backend (the slow ``ref`` backend with a warning
where llvm is not available), and trained on the standard library's own Python source, which
every Python installation has. Any text file works with ``--data``. Training shows a progress bar
(loss, tokens/s, ETA), validates, writes a checkpoint (npz, atomic) and a loss plot (PNG, with
matplotlib), then prints samples and where the files are.

``build_model(options)`` rebuilds the model from the options stored in a checkpoint, which is how
``graphrnn sample`` works. A cell from an equations file is stored as the file's text (under
``options["equations"]``; the path is kept only as information), so a checkpoint does not depend
on the file staying where it was; a ``file.py:function`` cell is code, which is not stored: its
checkpoint needs the file at the recorded path.

Layer sizes reach an equations file the way ``--input-size``/``--hidden-size`` do for the other
commands (``graphrnn.cli_tools.equations_cell``): layer 0's input is the vocabulary (one-hot) or
``--embed``, upper layers' the layer below, every state gets ``--hidden``; a file without
``input``/``state`` lines is read as input ``x`` and state ``h``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data import StreamBatcher, Vocab, read_text, split_ids, stdlib_corpus
from .ir import Cell
from .model import RNNModel, forget_bias_overrides
from .optim import StepDecay, make_optimizer
from .train import TrainConfig, Trainer, plot_losses

DEFAULT_CELL = "nngraph-lstm"


def nngraph_lstm(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """char-rnn's LSTM (Karpathy's ``LSTM.lua``), one layer, declared with the nngraph frontend.
    """
    from graphrnn import nn
    H = hidden_size
    x = nn.Identity()().annotate(name="x")
    prev_h = nn.Identity()().annotate(name="h")
    prev_c = nn.Identity()().annotate(name="c")
    i2h = nn.Linear(input_size, 4 * H)(x).annotate(name="i2h")
    h2h = nn.Linear(H, 4 * H)(prev_h).annotate(name="h2h")
    all_sums = nn.CAddTable()([i2h, h2h])
    n1, n2, n3, n4 = nn.SplitTable(2)(nn.Reshape(4, H)(all_sums)).split(4)
    in_gate, forget_gate = nn.Sigmoid()(n1), nn.Sigmoid()(n2)
    out_gate, in_transform = nn.Sigmoid()(n3), nn.Tanh()(n4)
    next_c = nn.CAddTable()([nn.CMulTable()([forget_gate, prev_c]),
                             nn.CMulTable()([in_gate, in_transform])])
    next_h = nn.CMulTable()([out_gate, nn.Tanh()(next_c)])
    g = nn.gModule([x, prev_h, prev_c], [next_h, next_c])
    return g.to_cell(inputs=["x"], states=["h", "c"], next_states=[0, 1], outputs=[0],
                     name="charrnn_lstm", dtype=dtype)


def resolve_layer_cell(spec: str, input_size: int | None, hidden_size: int | None, dtype: str,
                       *, size_flags: tuple[str, str] = ("--input-size", "--hidden-size"),
                       one_input: bool = False) -> Cell:
    """A layer's cell: ``nngraph-lstm`` (above), a zoo name, an equations file or
    ``file.py:function`` (``graphrnn.cli_tools.resolve_cell``, which knows all four)."""
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


def build_model(opts: dict[str, Any], checkpoint: str | None = None) -> RNNModel:
    """The model described by ``opts`` (as stored in checkpoints under ``options``); pass the
    ``checkpoint``'s path when the options come from one, for the message when its cell's file
    is gone."""
    from .cli_tools import CellSpecError, equations_cell, equations_source
    if checkpoint is not None:
        gone = _missing_cell_file(opts)
        if gone is not None:
            raise CellSpecError(f"{checkpoint}: its cell {opts['cell']} needs the file {gone}, "
                                "which is missing; put the file back there (a checkpoint "
                                "stores a Python cell's path, not its code)")
    dtype = opts.get("dtype", "float32")
    embed = int(opts.get("embed") or 0)
    V = int(opts["vocab_size"])
    size = embed if embed else V
    hidden = int(opts["hidden"])
    eq = opts.get("equations")
    # a checkpoint from before the equations text was stored was trained with the file's own
    # state sizes, whatever --hidden said (its input size had to be the layer's anyway): rebuild
    # it the same way
    legacy = checkpoint is not None and eq is None and equations_source(opts["cell"]) is not None
    cells: list[Any] = []
    for i in range(int(opts["layers"])):
        # where a layer's sizes come from, for the message when an equations file disagrees
        first = "--embed" if embed else "the vocabulary size (one-hot input)"
        flags = (first if i == 0 else "the layer below", "--hidden")
        if eq is not None:
            c = equations_cell(eq["text"], eq.get("name", "cell.eq"), size, hidden, dtype,
                               flags)
        else:
            c = resolve_layer_cell(opts["cell"], size, None if legacy else hidden, dtype,
                                   size_flags=flags, one_input=True)
        cells.append(c)
        size = int(c.outputs[0].shape[1])
    return RNNModel(cells, n_classes=V, vocab_size=V,
                    input="embedding" if embed else "onehot",
                    embed_size=embed or None, dropout=float(opts.get("dropout", 0.0)),
                    backend=opts.get("backend", "auto"), dtype=dtype)


# ---- the command line of the training job (shared with ``graphrnn train``) ----

def add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="FILE", help="a text file (default: the Python standard "
                   "library's own source)")
    g.add_argument("--max-chars", type=int, default=2_000_000,
                   help="cap on the default corpus size (default 2,000,000)")
    g.add_argument("--val-fraction", type=float, default=0.05)
    g.add_argument("--val-batches", type=int, default=100,
                   help="validate on at most this many batches (0: all)")
    g = p.add_argument_group("model")
    g.add_argument("--cell", default=DEFAULT_CELL,
                   help="nngraph-lstm (default), a zoo cell (lstm, gru, mut1, ...), an equations "
                   "file, or file.py:function returning a Cell or an nngraph gModule. An "
                   "equations file gets the layer's input size (vocabulary, --embed or the layer "
                   "below) and --hidden for every state; sizes it declares must agree; without "
                   "'input NAME: SIZE' / 'state NAME: SIZE' lines it is read as input x, state h")
    g.add_argument("--backend", default="auto",
                   help="auto (llvm, else ref), llvm, ref, program, cuda")
    g.add_argument("--layers", type=int, default=2)
    g.add_argument("--hidden", type=int, default=128)
    g.add_argument("--embed", type=int, default=0,
                   help="embedding size (0: one-hot characters, as char-rnn)")
    g.add_argument("--dropout", type=float, default=0.0)
    g.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    g.add_argument("--init", default="uniform", choices=("uniform", "orthogonal"))
    g.add_argument("--init-scale", type=float, default=0.08)
    g.add_argument("--forget-bias", type=float, default=None,
                   help="initial forget-gate bias of LSTM-style cells")
    g = p.add_argument_group("optimization")
    g.add_argument("--optimizer", default="adam", choices=("sgd", "rmsprop", "adagrad", "adam"))
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    g.add_argument("--decay", type=float, default=1.0,
                   help="multiply the learning rate by this ... ")
    g.add_argument("--decay-after", type=int, default=0, help="... after this many steps ...")
    g.add_argument("--decay-every", type=int, default=1000, help="... and every N steps after")
    g.add_argument("--clip", type=float, default=5.0, help="elementwise gradient clamp (0: off)")
    g.add_argument("--max-norm", type=float, default=0.0, help="global-norm clipping (0: off)")
    g.add_argument("--batch", type=int, default=32)
    g.add_argument("--seq-len", type=int, default=50, help="truncated BPTT length")
    g.add_argument("--steps", type=int, default=None, help="step budget")
    g.add_argument("--minutes", type=float, default=None,
                   help="time budget (default 3 when no --steps)")
    g.add_argument("--eval-every", type=int, default=200)
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("output")
    g.add_argument("--out", default="runs/charlm", help="folder for checkpoint.npz and loss.png")
    g.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint")
    g.add_argument("--sample-length", type=int, default=400)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--no-progress", action="store_true")


def _check_args(a: argparse.Namespace) -> None:
    positive = {"--layers": a.layers, "--hidden": a.hidden, "--batch": a.batch,
                "--seq-len": a.seq_len, "--lr": a.lr}
    for name, v in positive.items():
        if not v > 0:
            raise ValueError(f"{name} must be positive, got {v}")
    if a.steps is not None and a.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {a.steps}")
    if a.minutes is not None and a.minutes < 0:
        raise ValueError(f"--minutes must be >= 0, got {a.minutes}")
    if not 0 <= a.dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {a.dropout}")
    if a.embed < 0:
        raise ValueError(f"--embed must be >= 0, got {a.embed}")


def run(a: argparse.Namespace, out: Any = None) -> int:
    """Train as the arguments say; print samples and where the files went."""
    out = out or sys.stdout
    _check_args(a)
    # the output folder now, before minutes of training, with a one-line reason when it fails
    from .cli_tools import check_output_dir
    outdir = Path(a.out)
    check_output_dir(outdir)
    if a.data:
        text, source = read_text(a.data), a.data
    else:
        text, source = stdlib_corpus(a.max_chars), "the Python standard library's source"
    resume_meta = None
    if a.resume:
        from . import checkpoint as ckpt
        _, resume_meta = ckpt.load(a.resume)
        vocab = Vocab.from_json(resume_meta["vocab"])
        opts = resume_meta["options"]
    else:
        from .cli_tools import equations_source, is_python_spec
        vocab = Vocab.from_text(text)
        cell = a.cell
        eq = equations_source(cell)
        if is_python_spec(cell):  # code is not stored: keep the file findable from elsewhere
            head, sep, fn = cell.rpartition(":")
            cell = str(Path(head).resolve()) + sep + fn
        elif eq is not None:  # the path is information only; the cell is rebuilt from the text
            cell = eq["path"]
        opts = {"cell": cell, "layers": a.layers, "hidden": a.hidden, "embed": a.embed,
                "dropout": a.dropout, "dtype": a.dtype, "backend": a.backend,
                "vocab_size": len(vocab), "seq_len": a.seq_len, "batch": a.batch}
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
    model = build_model(opts, a.resume)
    backend = model.layers[0].fwd.backend_name
    from .cli_tools import cell_sizes
    cell0 = model.layers[0].fwd.cell
    print(f"data: {source}: {len(text):,} characters, vocabulary {len(vocab)}", file=out)
    print(f"model: {opts['layers']} x {cell0.name} ({cell_sizes(cell0)}),"
          f" {sum(v.size for v in model.init_params(0).values()):,} parameters, backend "
          f"{backend}", file=out)
    overrides = forget_bias_overrides(model, a.forget_bias) if a.forget_bias is not None \
        else None
    params = model.init_params(a.seed, a.init, a.init_scale, overrides)
    schedule = StepDecay(a.decay_after, a.decay_every, a.decay) if a.decay != 1.0 else None
    hyper = {"momentum": a.momentum} if a.optimizer == "sgd" else {}
    opt = make_optimizer(a.optimizer, a.lr, schedule, **hyper)
    ck = outdir / "checkpoint.npz"
    minutes = a.minutes if a.minutes is not None or a.steps is not None else 3.0
    cfg = TrainConfig(steps=a.steps, minutes=minutes, clip=a.clip or None,
                      max_norm=a.max_norm or None, eval_every=a.eval_every, checkpoint=str(ck),
                      progress=not a.no_progress, seed=a.seed)
    nval = min(len(val), a.val_batches or len(val)) if val is not None else 0
    vb = (lambda: (val.batch(k) for k in range(nval))) if val is not None else None
    tr = Trainer(model, params, opt, lambda step, rng: train.batch(step), vb, cfg,
                 meta={"vocab": vocab.to_json(), "options": opts, "kind": "charlm"})
    if a.resume:
        tr.load(a.resume)
        print(f"resumed from {a.resume} at step {tr.step}", file=out)
    t0 = time.perf_counter()
    tr.run()
    wall = time.perf_counter() - t0
    last = tr.val_history[-1][1] if tr.val_history else float("nan")
    print(f"trained {tr.step} steps in {wall:.1f} s ({tr.tokens_per_s:,.0f} tokens/s); "
          f"validation loss {last:.4f} nats/char", file=out)
    from .sample import generate
    prime = "def " if not a.data else ""
    for temp in (a.temperature,):
        s = generate(model, tr.params, vocab, a.sample_length, prime=prime, temperature=temp,
                     seed=a.seed)
        print(f"--- sample (temperature {temp}) ---\n{prime}{s}\n---", file=out)
    plot = plot_losses(tr.history, tr.val_history, outdir / "loss.png")
    print(f"checkpoint: {ck}", file=out)
    print(f"loss plot: {plot}" if plot else "loss plot: not written (matplotlib missing)",
          file=out)
    print(f"sample more: graphrnn sample {ck} --length 1000 --temperature 0.8", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
