"""The ``graphrnn`` command line: a table of subcommands.

    graphrnn train [--data FILE] [--cell lstm|gru|cell.eq|file.py:fn] [--steps N | --minutes M]
    graphrnn sample runs/charlm/checkpoint.npz --length 500 --prime "def " --temperature 0.8
    graphrnn explain lstm --hidden-size 64 [--backend llvm]

Each entry of ``COMMANDS`` is ``(name, help, add_arguments, run)``; adding a subcommand is adding
a row. The inspection commands (viz, compile, bench) come from ``graphrnn.tools.cli_tools`` when
it is present. Errors (missing files, bad options, mismatched checkpoints, diverged training)
print one line ``graphrnn: error: ...`` on stderr and exit with status 1; ``--debug`` (before or
after the subcommand, or ``GRAPHRNN_TRACEBACK=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

Command = tuple[str, str, Callable[[argparse.ArgumentParser], None],
                Callable[[argparse.Namespace], int]]


# ---- train ----

def _train_args(p: argparse.ArgumentParser) -> None:
    from .train_charlm import add_train_args
    add_train_args(p)


def _train(a: argparse.Namespace) -> int:
    from .train_charlm import run
    return run(a)


# ---- sample ----

def _sample_args(p: argparse.ArgumentParser) -> None:
    from .cli_tools import CELL_EXEC_HELP, SAMPLE_TEMPERATURE, add_backend_arg, number
    p.epilog = ("A checkpoint holds arrays and JSON only and never makes graphrnn run code: a "
                "model whose cell is file.py:function needs --cell file.py:function given "
                "again. " + CELL_EXEC_HELP)
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by graphrnn train")
    p.add_argument("--length", type=number(int, ge=0), default=500, help="tokens to generate")
    p.add_argument("--prime", default="", help="text fed to the model before sampling")
    # the same default as the samples graphrnn train prints
    p.add_argument("--temperature", type=number(float, gt=0), default=SAMPLE_TEMPERATURE)
    p.add_argument("--argmax", action="store_true", help="always take the most likely token")
    p.add_argument("--seed", type=number(int, ge=0), default=0)
    add_backend_arg(p, None, extra=("auto",), help="override the checkpoint's backend")
    p.add_argument("--cell", default=None, metavar="CELL",
                   help="rebuild the model with this cell instead of the checkpoint's; needed "
                   "for a file.py:function cell (this runs the file)")


def _sample(a: argparse.Namespace) -> int:
    from .. import checkpoint as ckpt
    from ..data import Vocab
    from ..sample import generate
    from .cli_tools import check_backend
    from .train_charlm import build_model, check_options
    check_backend(a.backend, extra=("auto",))   # before the checkpoint: a typo is cheap to say
    arrays, meta = ckpt.load(a.checkpoint)
    if "options" not in meta or "vocab" not in meta:
        raise ckpt.CheckpointError(f"{a.checkpoint} has no model options or vocabulary; it was "
                                   "not written by graphrnn train")
    params = ckpt.group(arrays, "param")
    opts = check_options(a.checkpoint, meta, params)
    if a.backend:
        opts["backend"] = a.backend
    vocab = Vocab.from_json(meta["vocab"])
    model = build_model(opts, checkpoint=a.checkpoint, cell=a.cell)
    try:
        model.check_params(params)
    except ValueError as e:
        raise ckpt.CheckpointError(f"{a.checkpoint}: {e}") from None
    unknown = [c for c in (a.prime.split() if vocab.sep == " " else a.prime)
               if c not in vocab.index]
    if unknown and vocab.unk is None:
        raise ValueError(f"--prime has characters not in the vocabulary: {sorted(set(unknown))}")
    text = generate(model, params, vocab, a.length, a.prime, a.temperature, a.argmax, a.seed)
    print(a.prime + text)
    return 0


# ---- explain ----

EXPLAIN_HELP = ("The plan shown is the optimizer's Program, which every compiled backend "
                "(program, llvm, cuda) runs as it is; ref runs the unrolled cell instead.")


def _explain_args(p: argparse.ArgumentParser) -> None:
    from .cli_tools import CELL_EXEC_HELP, CELL_HELP, SIZES_HELP, add_backend_arg, add_size_args
    p.epilog = f"{EXPLAIN_HELP} {SIZES_HELP} {CELL_EXEC_HELP}"
    p.add_argument("cell", metavar="CELL", help=CELL_HELP)
    add_size_args(p)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    # validated so a typo is not silently accepted; every compiled backend runs the same plan
    add_backend_arg(p, "llvm", help="the plan does not depend on it")


def _find_explain() -> Callable[..., Any] | None:
    import importlib
    try:
        mod = importlib.import_module("graphrnn.explain")
    except ImportError:
        return None
    fn = getattr(mod, "explain", None)
    return fn if callable(fn) else None


def _explain(a: argparse.Namespace) -> int:
    from .cli_tools import cell_sizes, check_backend, check_sizes
    from .train_charlm import resolve_layer_cell
    check_sizes(a)
    check_backend(a.backend)
    cell = resolve_layer_cell(a.cell, a.input_size, a.hidden_size, a.dtype)
    print(f"cell {cell.name}: {cell_sizes(cell)}, {a.dtype}")
    fn = _find_explain()
    if fn is not None:
        import inspect
        kw = {"backend": a.backend} if "backend" in inspect.signature(fn).parameters else {}
        text = fn(cell, **kw)
        if text is not None:
            print(text)
        return 0
    # no planner report yet: the cell and its backward step as IR text
    from ..autodiff import backward_cell
    from ..printer import format_cell
    print(format_cell(cell))
    bw = backward_cell(cell)
    print(f"\n# backward step: {len(bw.roots)} results "
          f"(d_states {len(bw.d_states)}, d_inputs {len(bw.d_inputs)}, "
          f"d_params {len(bw.d_params)}), {len(cell.nodes())} forward nodes")
    return 0


COMMANDS: list[Command] = [
    ("train", "train a language model (default: char-level LSTM on the stdlib source)",
     _train_args, _train),
    ("sample", "generate text from a checkpoint", _sample_args, _sample),
    ("explain", "show how a cell is compiled: the optimizer's plan, which every compiled "
     "backend runs", _explain_args, _explain),
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(prog="graphrnn", description="graphrnn: compile and train "
                                     "recurrent cells declared as graphs or equations.")
    parser.add_argument("--version", action="version", version=f"graphrnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    from .cli_tools import show_defaults
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, add_args, fn in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        show_defaults(p)
        p.set_defaults(func=fn)
    try:
        from .cli_tools import add_subcommands
    except ImportError:
        pass
    else:
        add_subcommands(sub)
    for p in sub.choices.values():
        # also after the subcommand (`graphrnn train ... --debug`); SUPPRESS keeps a subcommand
        # without it from resetting the value given before the subcommand
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .cli_tools import run_command
    return run_command(build_parser(), sys.argv[1:] if argv is None else argv)

if __name__ == "__main__":
    sys.exit(main())
