"""The inspection and shipping commands of ``graphrnn``: viz, compile, bench; and resolve_cell.

    graphrnn viz lstm --stage plan -o lstm_plan.svg
    graphrnn viz cell.eq --stage backward -o bw.png --input-size 8 --hidden-size 16
    graphrnn viz my_cells.py:make_lstm --stage forward -o lstm.dot
    graphrnn compile lstm --backend llvm --emit so header -o build/
    graphrnn compile gru --backend cuda --emit cu ptx -o build/
    graphrnn bench lstm --hidden-size 128 --batch 32 --seq-len 50

``add_subcommands(subparsers)`` registers these on the main ``graphrnn`` parser
(graphrnn/tools/cli.py); ``main(argv)`` runs them alone. CELL is a zoo name
(``graphrnn.cells.ZOO``), ``nngraph-lstm`` (char-rnn's LSTM), an equations file, or
``file.py:function`` where the function returns a Cell or an nngraph gModule; the function may take
``input_size``, ``hidden_size`` and ``dtype`` keyword arguments. ``resolve_cell`` turns such a spec
into a Cell and is shared with the training commands.

Sizes and equations files: ``--input-size`` goes to the file's first ``input`` and
``--hidden-size`` to every ``state`` it declares; a size given both ways must agree. A file
without an ``input`` line is read as having the input ``x``, one without a ``state`` line as
having the state ``h`` (``EQ_INPUT``, ``EQ_STATE``); other names need the header lines
``input NAME: SIZE`` / ``state NAME: SIZE``. A file without ``# cell: NAME`` names its cell after
the file (``gru8.eq`` -> ``gru8``).

Bad input (unknown cell, unreadable file, bad equation, unwritable output path) ends the command
with one line on stderr and exit status 1; ``GRAPHRNN_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import inspect
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GraphRNNError, UndefinedNameError
from ..ir import Cell
from ..safefile import atomic_write, open_regular, umask_mode

DEFAULT_INPUT = 16
DEFAULT_HIDDEN = 32
NNGRAPH_LSTM = "nngraph-lstm"   # char-rnn's LSTM, nngraph_lstm below
# the input and state names an equations file without input/state header lines is read with
EQ_INPUT = "x"
EQ_STATE = "h"
# what --input-size / --hidden-size are called where a message names the source of a size
SIZE_FLAGS = ("--input-size", "--hidden-size")


class CellSpecError(GraphRNNError, ValueError):
    """A CELL argument names no zoo cell, no readable equations file and no Python function."""


# ---- CELL -> Cell ----

def _zoo() -> dict[str, Any]:
    from .. import cells
    return cells.ZOO


def _call_user_function(fn: Callable[..., Any], where: str, input_size: int, hidden_size: int,
                        dtype: str) -> Any:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    offered = {"input_size": input_size, "hidden_size": hidden_size, "dtype": dtype}
    kwargs: dict[str, Any] = {}
    if sig is not None:
        takes_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        kwargs = {k: v for k, v in offered.items() if k in sig.parameters or takes_kw}
    try:
        return fn(**kwargs)
    except GraphRNNError as e:
        raise CellSpecError(f"{where}: {_first_line(e)}") from e
    except Exception as e:
        raise CellSpecError(f"{where} raised {type(e).__name__}: {_first_line(e)}") from e


def _load_python_cell(path_text: str, func: str, input_size: int, hidden_size: int,
                      dtype: str) -> Any:
    path = Path(path_text)
    if not path.is_file():
        raise CellSpecError(f"cannot read {path}: no such file")
    if not os.access(path, os.R_OK):
        raise CellSpecError(f"cannot read {path}: permission denied")
    # the user's own script, loaded the way `python file.py` would find its neighbours
    name = f"_graphrnn_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CellSpecError(f"cannot load {path} as a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(mod)
    except SyntaxError as e:
        raise CellSpecError(f"{path}:{e.lineno}: syntax error: {e.msg}") from e
    except Exception as e:
        raise CellSpecError(f"error while loading {path}: {type(e).__name__}: "
                            f"{_first_line(e)}") from e
    finally:
        sys.path.remove(str(path.resolve().parent))
    fn = getattr(mod, func, None)
    if fn is None or not callable(fn):
        found = sorted(k for k, v in vars(mod).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == name)
        raise CellSpecError(f"{path} has no function {func!r}"
                            + (f"; it defines {', '.join(found)}" if found else ""))
    return _call_user_function(fn, f"{path}:{func}", input_size, hidden_size, dtype)


def read_equations(path: Path) -> str:
    """The text of an equations file, or a one-line CellSpecError saying why it cannot be read."""
    if path.is_dir():
        raise CellSpecError(f"cannot read {path}: it is a directory, not an equations file")
    try:
        # never blocks: a checkpoint from before the text was stored names the file, and that
        # name may be a FIFO
        with open_regular(path) as f:
            return f.read().decode("utf-8")
    except OSError as e:
        raise CellSpecError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise CellSpecError(f"cannot read {path}: not UTF-8 text ({e.reason})") from e


# The header lines that matter here, in the equations frontend's syntax (frontends/equations.py
# _HEADER, _CELL_COMMENT): the frontend parses them for real, this scan only learns which names
# the command-line sizes go to and whether the file names its cell.
_SIZE_LINE = re.compile(r"^(inputs?|states?)\s+([^\W\d].*)$")
_CELL_LINE = re.compile(r"^cell\s+[^\W\d].*$")
_CELL_COMMENT = re.compile(r"^#\s*cell\s*:\s*(\S+)\s*$")


def _headers(text: str) -> tuple[list[tuple[str, int | None, int]],
                                 list[tuple[str, int | None, int]], bool]:
    """(inputs, states, names_the_cell): the (name, size or None, line number) items of the
    file's ``input`` and ``state`` lines in order, and whether it has a ``# cell:`` line."""
    inputs: list[tuple[str, int | None, int]] = []
    states: list[tuple[str, int | None, int]] = []
    named = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#"):
            named = named or bool(_CELL_COMMENT.match(line))
            continue
        code = line.split("#", 1)[0].strip()
        named = named or bool(_CELL_LINE.match(code))
        m = _SIZE_LINE.match(code)
        if not m:
            continue
        table = inputs if m.group(1).startswith("input") else states
        for item in m.group(2).split(","):
            nm, _, size = item.partition(":")
            if nm.strip().isidentifier():
                # ASCII digits, a bounded count: '²'.isdigit() is True but int('²') raises, and
                # int() refuses 4300+ digits; the frontend reports a bad size with its line
                digits = size.strip()
                table.append((nm.strip(), int(digits) if re.fullmatch(r"[0-9]{1,18}", digits)
                              else None, lineno))
    return inputs, states, named


def _cell_name_from(filename: str) -> str:
    """A cell name (an identifier: it ends up in exported symbol names) from a file's stem."""
    stem = re.sub(r"\W", "_", Path(filename).stem)
    return stem if stem and not stem[0].isdigit() else f"cell_{stem}"


def equations_cell(text: str, filename: str, input_size: int | None = None,
                   hidden_size: int | None = None, dtype: str = "float32",
                   size_flags: tuple[str, str] = SIZE_FLAGS) -> Cell:
    """A Cell from equations text with the command line's sizes (see the module docstring):
    ``input_size`` goes to the first declared input, ``hidden_size`` to every declared state;
    None leaves a declared size alone. ``size_flags`` name where the two sizes came from, for
    the message when they disagree with the file."""
    try:
        from frontends import equations
    except ImportError as e:
        raise CellSpecError(f"{filename}: the equations frontend is not available ({e})") from e
    ins, sts, named = _headers(text)
    # the command line against the header lines, checked here so the message can name the flag
    # (the frontend would refuse the same thing, naming only the two sizes)
    for items, size, flag, kind in ((ins[:1], input_size, size_flags[0], "input"),
                                    (sts, hidden_size, size_flags[1], "state")):
        for nm, declared, lineno in items:
            if size is not None and declared is not None and declared != size:
                raise CellSpecError(f"{filename}:{lineno}: {kind} {nm} is declared with size "
                                    f"{declared}, but {flag} gives {size}; make them agree")
    convention: list[str] = []
    inputs: dict[str, int] = {}
    states: dict[str, int] = {}
    if not ins:
        inputs[EQ_INPUT] = input_size or DEFAULT_INPUT
        convention.append(f"input {EQ_INPUT}: {inputs[EQ_INPUT]}")
    elif input_size is not None:
        inputs[ins[0][0]] = input_size
    if not sts:
        states[EQ_STATE] = hidden_size or DEFAULT_HIDDEN
        convention.append(f"state {EQ_STATE}: {states[EQ_STATE]}")
    elif hidden_size is not None:
        states = {nm: hidden_size for nm, _, _ in sts}
    try:
        return equations.cell_from_equations(  # type: ignore[no-any-return]
            text, inputs=inputs, states=states, dtype=dtype, filename=filename,
            name=None if named else _cell_name_from(filename))
    except GraphRNNError as e:
        # EquationError already says file:line and the token; keep it to one line
        msg = _one_line(str(e))
        # the tail only where the convention can be the cause (a name the file reads is not x
        # or h, or h has no next value), never for a typo in the syntax or a shape mismatch
        if convention and isinstance(e, UndefinedNameError):
            msg += (f"; the file has no {' or '.join(c.split()[0] for c in convention)} header "
                    f"line, so it was read as {', '.join(convention)}: if its names differ, it "
                    "needs 'input NAME: SIZE' / 'state NAME: SIZE' header lines")
        raise CellSpecError(msg) from e


def _load_equations(path: Path, input_size: int | None, hidden_size: int | None, dtype: str,
                    size_flags: tuple[str, str] = SIZE_FLAGS) -> Cell:
    return equations_cell(read_equations(path), str(path), input_size, hidden_size, dtype,
                          size_flags)


def is_python_spec(spec: str) -> bool:
    """Whether a CELL argument is ``file.py:function``."""
    head, sep, _ = spec.rpartition(":")
    return bool(sep) and head.endswith(".py")


def equations_source(spec: str) -> dict[str, str] | None:
    """For a CELL argument that is an equations file: its name, absolute path and text, which
    a checkpoint stores so the cell can be rebuilt when the file has moved; else None."""
    if not isinstance(spec, str) or is_python_spec(spec) or spec.endswith(".py") \
            or spec == NNGRAPH_LSTM or spec in _zoo() or not Path(spec).exists():
        return None
    path = Path(spec)
    return {"name": path.name, "path": str(path.resolve()), "text": read_equations(path)}


def nngraph_lstm(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """char-rnn's LSTM (Karpathy's ``LSTM.lua``), one layer, declared with the nngraph frontend.
    """
    from frontends import nngraph as nn
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


def is_gmodule(obj: Any) -> bool:
    """Whether a cell file returned an nngraph gModule (the frontend is loaded to tell)."""
    from frontends.nngraph import gModule
    return isinstance(obj, gModule)


def _to_cell(obj: Any, where: str) -> Cell:
    if isinstance(obj, Cell):
        return obj
    if is_gmodule(obj):
        try:
            return obj.to_cell()  # type: ignore[no-any-return]
        except GraphRNNError as e:
            raise CellSpecError(f"{where}: the gModule cannot become a cell: "
                                f"{_first_line(e)}; return g.to_cell(inputs=[...], "
                                "states=[...], next_states=[...]) instead") from e
    raise CellSpecError(f"{where} returned {type(obj).__name__}, expected a Cell or an nngraph "
                        "gModule")


def resolve_cell(spec: str, input_size: int | None = None, hidden_size: int | None = None,
                 dtype: str = "float32", *, size_flags: tuple[str, str] = SIZE_FLAGS,
                 one_input: bool = False) -> Cell:
    """A Cell from a CELL argument: a zoo name, ``nngraph-lstm``, an equations file or
    ``file.py:function``. A size left None is the equations file's own (from its header), else
    DEFAULT_INPUT / DEFAULT_HIDDEN. ``one_input``: the cell is a model layer, so it must take
    exactly one per-step input (a ``file.py:function`` that does not gets a hint how to say
    which of a gModule's inputs are states)."""
    if not isinstance(spec, str) or not spec:
        raise CellSpecError("no cell given: name a zoo cell, an equations file or "
                            "file.py:function")
    head, _, func = spec.rpartition(":")
    if is_python_spec(spec):
        if not func.isidentifier():
            raise CellSpecError(f"{spec}: {func!r} is not a function name")
        obj = _load_python_cell(head, func, input_size or DEFAULT_INPUT,
                                hidden_size or DEFAULT_HIDDEN, dtype)
        cell = _to_cell(obj, spec)
        if one_input and len(cell.inputs) != 1:
            got = "an nngraph gModule, whose every input is a per-step input: " \
                if is_gmodule(obj) else ""
            raise CellSpecError(
                f"{spec}: a layer's cell must take exactly one float input (x_t), cell "
                f"{cell.name} takes {[n.arg for n in cell.inputs]}; {func} returned {got}"
                "return g.to_cell(inputs=[...], states=[...], next_states=[...]) to say which "
                "gModule inputs are the step input and which the recurrent states")
    elif spec.endswith(".py"):
        raise CellSpecError(f"{spec}: name the function that returns the cell, as "
                            f"{spec}:function")
    elif spec == NNGRAPH_LSTM:
        try:
            cell = nngraph_lstm(input_size or DEFAULT_INPUT, hidden_size or DEFAULT_HIDDEN,
                                dtype)
        except ImportError as e:
            warnings.warn(f"nngraph frontend unavailable ({e}); using the zoo LSTM",
                          RuntimeWarning, stacklevel=2)
            return resolve_cell("lstm", input_size, hidden_size, dtype)
    elif spec in _zoo():
        from .. import cells
        try:
            cell = cells.zoo_cell(spec, input_size or DEFAULT_INPUT,
                                  hidden_size or DEFAULT_HIDDEN, dtype)
        except GraphRNNError as e:
            raise CellSpecError(f"zoo cell {spec}: {_first_line(e)}") from e
    elif Path(spec).exists():
        cell = _load_equations(Path(spec), input_size, hidden_size, dtype, size_flags)
    else:
        looks_like_file = os.sep in spec or "." in spec
        what = (f"no such file: {spec}" if looks_like_file
                else f"unknown cell {spec!r}")
        raise CellSpecError(f"{what}; CELL is {NNGRAPH_LSTM} (char-rnn's LSTM), a zoo cell "
                            f"({', '.join(sorted(_zoo()))}), an equations file, or "
                            "file.py:function")
    if cell.dtype != dtype:
        cell = cell.with_dtype(dtype)
    return cell


def cell_sizes(cell: Cell) -> str:
    """The sizes a cell really has, for printed output: ``input 3, hidden 8``."""
    ins = ", ".join(str(n.shape[1]) for n in cell.inputs) or "none"
    hid = ", ".join(dict.fromkeys(str(n.shape[1]) for n in cell.states)) or "none"
    return f"input {ins}, hidden {hid}"


# ---- helpers ----

def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _one_line(text: str) -> str:
    """Fold a multi-line message (an EquationError with its source line and caret) into one."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and ln.strip() != "^"]
    return " | ".join(lines) if lines else text


def _check_output_file(path: Path) -> None:
    if path.exists() and path.is_dir():
        raise CellSpecError(f"cannot write {path}: it is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CellSpecError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CellSpecError(f"cannot write {path}: directory {parent} is not writable")


def check_output_dir(path: Path) -> None:
    """Create ``path`` as a directory, or say in one line why it cannot be written."""
    if path.exists() and not path.is_dir():
        raise CellSpecError(f"cannot write to {path}: it is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CellSpecError(f"cannot write to {path}: {e.strerror or e}") from e
    if not os.access(path, os.W_OK):
        raise CellSpecError(f"cannot write to {path}: permission denied")


CELL_HELP = (f"zoo cell name, {NNGRAPH_LSTM}, equations file, or file.py:function (which runs "
             "that Python file)")
# said in the --help of every command that takes a CELL
CELL_EXEC_HELP = ("CELL as file.py:function imports and runs file.py, as `python file.py` "
                  "would: name only files you trust. An equations file is parsed, never run, "
                  "and a checkpoint never runs code.")


def number(cast: Callable[[str], Any], *, gt: float | None = None, ge: float | None = None,
           lt: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type`` for a finite number within bounds: a bad value is an argparse
    error naming the option and the value (``argument --eval-every: must be >= 0, got -3``)."""
    def parse(text: str) -> Any:
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        ok = v == v and v not in (float("inf"), float("-inf"))
        want = "a finite number"
        for bound, holds, what in ((gt, lambda b: v > b, "> {}"), (ge, lambda b: v >= b, ">= {}"),
                                   (lt, lambda b: v < b, "< {}")):
            if ok and bound is not None and not holds(bound):
                ok, want = False, what.format(bound)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return v
    parse.__name__ = cast.__name__
    return parse
SIZES_HELP = ("An equations file gets --input-size as the size of its first input and "
              "--hidden-size as that of every state; sizes it declares itself must agree. A "
              "file without 'input NAME: SIZE' / 'state NAME: SIZE' header lines is read as "
              f"input {EQ_INPUT!r} and state {EQ_STATE!r}.")
CELL_EPILOG = f"{SIZES_HELP} {CELL_EXEC_HELP}"


def add_size_args(p: argparse.ArgumentParser) -> None:
    """--input-size and --hidden-size, None when not given (an equations file's own sizes)."""
    p.add_argument("--input-size", type=int, default=None, metavar="I",
                   help=f"input features (default: the equations file's, else {DEFAULT_INPUT})")
    p.add_argument("--hidden-size", type=int, default=None, metavar="H",
                   help=f"hidden features (default: the equations file's, else "
                   f"{DEFAULT_HIDDEN})")


# one default for graphrnn sample and the samples graphrnn train prints
SAMPLE_TEMPERATURE = 0.8


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, unless its help already speaks of it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # a flag's default (off) goes without saying
        if (action.help and "default" in action.help) or action.default is False:
            return action.help
        return super()._get_help_string(action)


def show_defaults(p: argparse.ArgumentParser) -> None:
    """Every option of ``p`` lists its default in ``--help`` (argparse shows none for an option
    without help text, so those get one that is just the default)."""
    p.formatter_class = DefaultsFormatter
    for a in p._actions:
        if (a.help is None and a.option_strings and a.default not in (None, False)
                and a.default is not argparse.SUPPRESS):
            a.help = "(default: %(default)s)"


def add_alias(p: Any, old: str, dest: str, **kw: Any) -> None:
    """An older spelling of an option (``--hidden`` for ``--hidden-size``): accepted, so scripts
    keep working, but hidden from ``--help`` and without a default of its own."""
    p.add_argument(old, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kw)


def backend_names(extra: Sequence[str] = ()) -> list[str]:
    from ..api import BACKENDS
    return sorted(BACKENDS) + list(extra)


def add_backend_arg(p: Any, default: str | None, extra: Sequence[str] = (), help: str = "",
                    **kw: Any) -> None:
    """``--backend`` with graphrnn.api.BACKENDS as its choices, the same in every command. The
    choice is checked by ``check_backend`` rather than argparse, for the one-line error."""
    names = backend_names(extra)
    p.add_argument("--backend", default=default, metavar="{" + ",".join(names) + "}",
                   help=help or None, **kw)


def check_backend(name: str | None, extra: Sequence[str] = ()) -> None:
    if name is not None and name not in backend_names(extra):
        raise CellSpecError(f"unknown backend {name!r}; choose from "
                            f"{', '.join(backend_names(extra))}")


def split_list(values: Sequence[str] | str) -> list[str]:
    """A list option given space- or comma-separated (``--emit ir so``, ``--emit ir,so``)."""
    items = [values] if isinstance(values, str) else list(values)
    return [v.strip() for item in items for v in item.split(",") if v.strip()]


def check_sizes(args: argparse.Namespace) -> None:
    for name in ("input_size", "hidden_size"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise CellSpecError(f"--{name.replace('_', '-')} must be positive, got {v}")


def _add_cell_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("cell", metavar="CELL", help=CELL_HELP)
    add_size_args(p)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")


def _cell_from_args(args: argparse.Namespace) -> Cell:
    check_sizes(args)
    return resolve_cell(args.cell, args.input_size, args.hidden_size, args.dtype)


# ---- viz ----

def cmd_viz(args: argparse.Namespace) -> int:
    from .. import viz
    out = Path(args.output) if args.output else Path(f"{Path(args.cell).stem}_{args.stage}.svg")
    _check_output_file(out)
    if out.suffix.lower().lstrip(".") not in viz.FORMATS:
        raise CellSpecError(f"cannot write {out}: unknown picture format {out.suffix!r}; use "
                            ".svg, .png, .pdf or .dot")
    if args.sweep is not None and args.stage != "plan":
        # a forward or backward picture has no sweeps: refuse rather than ignore the option
        raise CellSpecError(f"--sweep applies to --stage plan only, not --stage {args.stage}")
    cell = _cell_from_args(args)
    sweep = args.sweep or "both"
    sweeps = ("forward", "backward") if sweep == "both" else (sweep,)
    g = viz.stage_dot(cell, args.stage, sweeps=sweeps)
    try:
        written = viz.render(g, out)
    except viz.DotNotFoundError as e:
        raise CellSpecError(str(e)) from e
    print(f"wrote {written} ({args.stage} graph of cell {cell.name}: {cell_sizes(cell)})")
    return 0


# ---- compile ----

EMITS = {"llvm": ("ir", "obj", "so", "header"), "cuda": ("cu", "ptx")}


def cmd_compile(args: argparse.Namespace) -> int:
    emits = list(dict.fromkeys(split_list(args.emit or []) or EMITS[args.backend]))
    bad = [e for e in emits if e not in EMITS[args.backend]]
    if bad:
        raise CellSpecError(f"--backend {args.backend} cannot emit {', '.join(bad)}; it emits "
                            f"{', '.join(EMITS[args.backend])}")
    out = Path(args.output)
    check_output_dir(out)
    cell = _cell_from_args(args)
    print(f"cell {cell.name}: {cell_sizes(cell)}, {args.dtype}")
    written = export_cell(cell, args.backend, emits, out, args.dtype, args.arch)
    for kind, path in written:
        print(f"wrote {path} ({kind})")
    return 0


def _write_text(path: Path, text: str) -> None:
    """An exported file, atomically, with the usual umask permissions (others may build it)."""
    atomic_write(path, text.encode(), fsync=False, mode=umask_mode())


def export_cell(cell: Cell, backend: str, emits: Sequence[str], out_dir: Path, dtype: str,
                arch: str = "sm_80") -> list[tuple[str, Path]]:
    """Write the backend's artifacts for ``cell``; returns (kind, path) pairs in order written.
    llvm: ``codegen.llvm.export`` (ir, obj, so, header); cuda: ``codegen.cuda.cuda_source``
    (cu) and ``codegen.cuda.ptx`` (ptx for ``arch``, needs nvcc but no GPU)."""
    import importlib
    try:
        mod = importlib.import_module(f"codegen.{backend}")
    except ImportError as e:
        raise CellSpecError(f"the {backend} backend is not available: {_first_line(e)}") from e
    if backend == "llvm":
        written = mod.export(cell, out_dir, emit=tuple(emits), dtype=dtype)
        return [(kind, Path(path)) for kind, path in dict(written).items()]
    prefix = f"grnn_{cell.name}_{'f64' if dtype == 'float64' else 'f32'}"
    out: list[tuple[str, Path]] = []
    if "cu" in emits:
        path = out_dir / f"{prefix}.cu"
        _write_text(path, mod.cuda_source(cell, dtype))
        out.append(("cu", path))
    if "ptx" in emits:
        if not re.fullmatch(r"sm_\d{2,3}a?", arch):
            raise CellSpecError(f"--arch must look like sm_80 or sm_90, got {arch!r}")
        path = out_dir / f"{prefix}_{arch}.ptx"
        _write_text(path, mod.ptx(cell, arch, dtype))
        out.append(("ptx", path))
    return out


# ---- bench ----

TORCH_CELLS = {"lstm": "LSTM", "gru_torch": "GRU", "rnn_tanh": "RNN"}


def _median_spread(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times)
    return float(np.median(a)), float(np.percentile(a, 75) - np.percentile(a, 25))


def _graphrnn_impl(cell: Cell, backend: str, T: int, B: int,
                   dtype: str) -> tuple[float, Callable[[], Any], Callable[[], Any]]:
    from ..api import compile as gr_compile
    t0 = time.perf_counter()
    cc = gr_compile(cell, backend=backend, dtype=dtype)
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    params = cc.init_params(seed=0)
    xs = [rng.standard_normal((T, B, int(x.shape[1]))).astype(dtype) for x in cc.cell.inputs]
    d_ys = [rng.standard_normal((T, B, int(o.shape[1]))).astype(dtype) for o in cc.cell.outputs]

    def infer() -> Any:
        return cc.forward(params, xs)

    def train() -> Any:
        _, _, res = cc.forward_train(params, xs)
        return cc.backward(params, res, d_ys)
    return compile_s, infer, train


def _torch_impl(zoo_name: str, I: int, H: int, T: int, B: int,
                dtype: str) -> tuple[float, Callable[[], Any], Callable[[], Any]]:
    import torch
    t0 = time.perf_counter()
    tdt = torch.float64 if dtype == "float64" else torch.float32
    mod = getattr(torch.nn, TORCH_CELLS[zoo_name])(I, H).to(tdt)
    compile_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, I, generator=gen, dtype=tdt)
    dy = torch.randn(T, B, H, generator=gen, dtype=tdt)

    def infer() -> Any:
        with torch.no_grad():
            return mod(x)

    def train() -> Any:
        mod.zero_grad(set_to_none=True)
        y, _ = mod(x)
        y.backward(dy)
    return compile_s, infer, train


def bench_cell(cell: Cell, backends: Sequence[str], T: int, B: int, repeat: int,
               zoo_name: str | None = None,
               log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Time inference and a training step (forward + BPTT) of ``cell`` on each backend,
    interleaving the implementations so drift hits all alike. Returns one row per
    implementation: name, compile_s, infer_ms, infer_spread_ms, train_ms, train_spread_ms.
    Backends that are not available are reported through ``log`` and skipped."""
    I = int(cell.inputs[0].shape[1]) if cell.inputs else 0
    H = int(cell.states[0].shape[1]) if cell.states else 0
    impls: dict[str, tuple[float, Callable[[], Any], Callable[[], Any]]] = {}
    for b in backends:
        try:
            if b == "torch":
                if zoo_name not in TORCH_CELLS:
                    log(f"skipping torch: no torch.nn module for cell {cell.name}")
                    continue
                impls[f"torch.nn.{TORCH_CELLS[zoo_name]}"] = _torch_impl(
                    zoo_name, I, H, T, B, cell.dtype)
            else:
                impls[f"graphrnn {b}"] = _graphrnn_impl(cell, b, T, B, cell.dtype)
        except ImportError as e:
            log(f"skipping {b}: {_first_line(e)}")
        except GraphRNNError as e:
            log(f"skipping {b}: {_first_line(e)}")
    if not impls:
        raise CellSpecError("no backend could run the benchmark; tried " + ", ".join(backends))
    times: dict[str, dict[str, list[float]]] = {k: {"infer": [], "train": []} for k in impls}
    for _, infer, train in impls.values():  # warm up, untimed: caches, JIT, thread pools
        infer()
        train()
    # no garbage collection inside a timed call (as timeit): a full collection of what the
    # imports left (torch, the benchmark module) cost one ~20 ms call and a spread larger than
    # the median at --repeat 3
    gc.collect()
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            for name, (_, infer, train) in impls.items():
                for kind, fn in (("infer", infer), ("train", train)):
                    t0 = time.perf_counter()
                    fn()
                    times[name][kind].append(time.perf_counter() - t0)
    finally:
        if gc_was_on:
            gc.enable()
    rows = []
    for name, (compile_s, _, _) in impls.items():
        im, isp = _median_spread(times[name]["infer"])
        tm, tsp = _median_spread(times[name]["train"])
        rows.append({"name": name, "compile_s": compile_s, "infer_ms": im * 1e3,
                     "infer_spread_ms": isp * 1e3, "train_ms": tm * 1e3,
                     "train_spread_ms": tsp * 1e3})
    return rows


def _bench_cpu_module() -> Any:
    """benchmarks/bench_cpu.py of this checkout, when it is there (a source checkout)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cpu.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_graphrnn_bench_cpu", path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception:  # a broken benchmark script must not break the command
        return None
    return mod if hasattr(mod, "bench_config") else None


def bench_with_bench_cpu(bc: Any, zoo_name: str, T: int, B: int, H: int, repeat: int,
                         with_ref: bool) -> list[dict[str, Any]]:
    """benchmarks/bench_cpu.bench_config for one configuration (llvm, ref, torch.nn, PyTorch
    eager and TorchScript, JAX), as rows of this module's table."""
    # the script reports its correctness checks as "<!-- check ... -->" lines for its markdown
    # report; here they are progress, not results: stderr, so stdout is the table alone
    with contextlib.redirect_stdout(sys.stderr):
        raw, compile_s = bc.bench_config(zoo_name, T, B, H, repeat, 120.0, with_ref,
                                         ["infer", "train"])
    rows: dict[str, dict[str, Any]] = {}
    for r in raw:
        row = rows.setdefault(r["impl"], {"name": r["impl"], "compile_s": None})
        row[f"{r['mode']}_ms"] = r["ms"]
        row[f"{r['mode']}_spread_ms"] = r["max"] - r["min"]
    if "graphrnn llvm" in rows:
        rows["graphrnn llvm"]["compile_s"] = compile_s.get("cold")
    return [r for r in rows.values() if "infer_ms" in r and "train_ms" in r]


def format_table(rows: Sequence[dict[str, Any]], title: str,
                 spread: str = "the interquartile range") -> str:
    """The comparison table; speed-ups are against the first row not from graphrnn (a PyTorch
    module) when there is one, else against the slowest row."""
    base = next((r for r in rows if not r["name"].startswith("graphrnn")), None)
    if base is None:
        base = max(rows, key=lambda r: r["train_ms"])
    head = (f"{'implementation':<22} {'compile s':>9} {'inference ms':>16} {'train step ms':>17}"
            f" {'train vs ' + base['name']:>{max(12, len(base['name']) + 9)}}")
    lines = [title, head, "-" * len(head)]
    for r in rows:
        ratio = base["train_ms"] / r["train_ms"] if r["train_ms"] > 0 else float("inf")
        comp = "-" if r["compile_s"] is None else f"{r['compile_s']:.3f}"
        lines.append(f"{r['name']:<22} {comp:>9} "
                     f"{r['infer_ms']:>9.2f} ±{r['infer_spread_ms']:<6.2f}"
                     f"{r['train_ms']:>10.2f} ±{r['train_spread_ms']:<6.2f}"
                     f" {ratio:>{max(11, len(base['name']) + 8)}.2f}x")
    lines.append(f"(medians over the repetitions, ± {spread}; compile s: cold)")
    return "\n".join(lines)


def plot_rows(rows: Sequence[dict[str, Any]], title: str, path: Path) -> bool:
    """A grouped bar chart (inference and training step, ms) as PNG; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(rows) + 2), 3.6), dpi=100)
    # error bars: half the interquartile range either side of the median
    ax.bar(x - 0.2, [r["infer_ms"] for r in rows], 0.4,
           yerr=[r["infer_spread_ms"] / 2 for r in rows], label="inference")
    ax.bar(x + 0.2, [r["train_ms"] for r in rows], 0.4,
           yerr=[r["train_spread_ms"] / 2 for r in rows], label="training step (fwd + BPTT)")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("milliseconds (median)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png"), fsync=False,
                     mode=umask_mode())
    finally:
        plt.close(fig)
    return True


def cmd_bench(args: argparse.Namespace) -> int:
    for name in ("batch", "seq_len", "repeat"):
        if getattr(args, name) <= 0:
            raise CellSpecError(f"--{name.replace('_', '-')} must be positive, got "
                                f"{getattr(args, name)}")
    backends = split_list(args.backends)
    from ..api import BACKENDS
    unknown = [b for b in backends if b not in BACKENDS and b != "torch"]
    if unknown:
        raise CellSpecError(f"unknown backend {unknown[0]!r}; choose from "
                            f"{', '.join(sorted(BACKENDS))}, torch")
    plot = None if args.no_plot else Path(args.plot or f"bench_{Path(args.cell).stem}.png")
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise CellSpecError(f"cannot write {plot}: the bar chart is a PNG; name it .png")
        _check_output_file(plot)
    cell = _cell_from_args(args)
    I = int(cell.inputs[0].shape[1]) if cell.inputs else 0
    H = int(cell.states[0].shape[1]) if cell.states else 0
    zoo_name = args.cell if args.cell in _zoo() else None
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731 - a one-line logger
    bc = _bench_cpu_module() if zoo_name is not None else None
    spread = "the interquartile range"
    if (bc is not None and zoo_name in getattr(bc, "CELLS", ()) and "llvm" in backends
            and I == H and len(cell.inputs) == 1 and args.dtype == "float32"
            and set(backends) <= {"llvm", "ref", "torch"}):
        # the project's CPU benchmark knows this configuration: PyTorch eager, TorchScript
        # and JAX versions of the same cell join the comparison
        rows = bench_with_bench_cpu(bc, zoo_name, args.seq_len, args.batch, H, args.repeat,
                                    "ref" in backends)
        spread = "max - min"
    else:
        rows = bench_cell(cell, backends, args.seq_len, args.batch, args.repeat, zoo_name, log)
    title = (f"cell {cell.name}: T={args.seq_len} B={args.batch} I={I} H={H} {args.dtype}, "
             f"{args.repeat} repetitions")
    print(format_table(rows, title, spread))
    if plot is not None:
        if plot_rows(rows, title, plot):
            print(f"wrote {plot}")
        else:
            print("no bar chart: matplotlib is not installed (pip install matplotlib)")
    return 0


# ---- registration ----

def _run(handler: Callable[[argparse.Namespace], int], command: str) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (GraphRNNError, OSError, ValueError, KeyError, ImportError) as e:
            if getattr(args, "debug", False) or os.environ.get("GRAPHRNN_TRACEBACK") == "1":
                raise
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"graphrnn {command}: error: {_one_line(str(msg))}", file=sys.stderr)
            return 1
    return run


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    """Parse argv and run the chosen ``func``: an error (missing file, bad option, mismatched
    checkpoint, diverged training) prints one line ``graphrnn: error: ...`` on stderr and gives
    status 1, unless ``--debug`` or ``GRAPHRNN_TRACEBACK=1`` asks for the traceback. Shared by
    the ``graphrnn`` command and the main job run on its own."""
    args = parser.parse_args(list(argv))
    debug = bool(getattr(args, "debug", False)) or os.environ.get("GRAPHRNN_TRACEBACK") == "1"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("graphrnn: interrupted", file=sys.stderr)
        return 130
    except (GraphRNNError, OSError, ValueError, KeyError, ArithmeticError) as e:
        if debug:
            raise
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{e.filename}: {msg}"
        lines = [ln.strip() for ln in msg.strip().splitlines() if ln.strip()]
        print(f"graphrnn: error: {' | '.join(lines) or type(e).__name__}", file=sys.stderr)
        return 1


def add_subcommands(subparsers: Any) -> None:
    """Register viz, compile and bench on the ``graphrnn`` parser's subparsers."""
    p = subparsers.add_parser("viz", help="draw a cell, its backward graph or its plan",
                              description="Draw a cell's forward step, backward step or "
                              "optimized plan as SVG, PNG, PDF or DOT.", epilog=CELL_EPILOG)
    _add_cell_args(p)
    p.add_argument("--stage", choices=("forward", "backward", "plan"), default="forward")
    p.add_argument("--sweep", choices=("forward", "backward", "both"), default=None,
                   help="with --stage plan only: which sweep to draw (default both)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="out.svg, out.png, out.pdf or out.dot (default CELL_STAGE.svg)")
    p.set_defaults(func=_run(cmd_viz, "viz"))

    p = subparsers.add_parser("compile", help="export native code of a cell (LLVM or CUDA)",
                              description="Write the compiled cell: LLVM IR, object file, "
                              "shared library and C header, or CUDA C and PTX.",
                              epilog=CELL_EPILOG)
    _add_cell_args(p)
    p.add_argument("--backend", choices=tuple(EMITS), default="llvm")
    p.add_argument("--emit", nargs="+", metavar="KIND",
                   help="llvm: ir obj so header; cuda: cu ptx, space- or comma-separated "
                   "(default: all of the backend's)")
    p.add_argument("-o", "--output", metavar="DIR", default=".", help="output directory")
    p.add_argument("--arch", default="sm_80", help="cuda --emit ptx: target")
    p.set_defaults(func=_run(cmd_compile, "compile"))

    p = subparsers.add_parser("bench", help="time one cell on the available backends",
                              description="Time a training step (forward + BPTT) and inference "
                              "of one cell at one size on each backend, print a table and "
                              "draw a bar chart.", epilog=CELL_EPILOG)
    _add_cell_args(p)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions (median reported)")
    p.add_argument("--backends", nargs="+", default=["ref", "llvm", "torch"], metavar="BACKEND",
                   help="ref, program, llvm, cuda, torch, space- or comma-separated (default "
                   "ref llvm torch; missing ones are skipped)")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart (default bench_CELL.png)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the bar chart")
    p.set_defaults(func=_run(cmd_bench, "bench"))
    for name in ("viz", "compile", "bench"):
        show_defaults(subparsers.choices[name])


def main(argv: Sequence[str] | None = None) -> int:
    """Run viz/compile/bench on their own (``python -m graphrnn.tools.cli_tools``)."""
    parser = argparse.ArgumentParser(prog="graphrnn")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
