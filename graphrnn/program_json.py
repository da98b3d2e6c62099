"""A Program as JSON and back, and the on-disk cache of Programs that ``compile()`` consults
before the optimizer runs.

``program_to_json(p)`` is plain data: buffers, bindings and the two sweeps, every step as a
short list (``["gemm", out, a, b, trans_a, trans_b, accumulate]``, ``["kernel", k, ins,
outs]`` with ``k`` an index into the document's kernel table, ...), every view as ``[buf, t,
cols, rows]``. ``program_from_json(doc)`` checks every field's type and range, builds the
dataclasses (whose own checks run) and then ``program.validate`` (views in range, shapes
agreeing, nothing read before it is written): a malformed document raises ``ProgramFormatError``
naming the field, and nothing in it is evaluated.

The cache (``cached_program``): an entry is the JSON of the Program that ``build_program`` made
for a cell, under ``$GRAPHRNN_CACHE_DIR/program/<key>.json`` (default ``~/.cache/graphrnn``).
The key (``program_key``) hashes the cell's canonical IR (``ir_json.cell_to_json``, with names
and output names), the dtype, the options that change the Program (``use_sympy``), the format
version, sympy's version (kernel bodies go through ``sympy.cse``) and a digest of the core's
source files (``source_digest``), so any change to the compiler's code misses the cache instead
of loading a stale plan. An entry is read only as ``safefile.read_keyed`` allows (a regular
file of ours, in a private directory of ours, bound to its key by a SHA-256); one that does not
parse or check out is ignored and rebuilt (and overwritten), never trusted. Programs of this
process are also kept in memory by key (they are immutable). A hit skips every pass of
``pipeline.PASSES``, and the pipeline module with its imports (networkx) is not loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import OrderedDict
from functools import cache
from pathlib import Path
from typing import Any, Callable

from .errors import GraphError, GraphRNNError
from .ir import Cell
from .ops import GroupOp, Ops
from .program import (
    BCAST,
    BUFFER_KINDS,
    Buffer,
    Gather,
    Gemm,
    Kernel,
    KernelDef,
    ParamPiece,
    Program,
    Reduce,
    Ref,
    RowKernel,
    Scatter,
    Step,
    Sweep,
    validate,
)
from .safefile import read_keyed, write_keyed
from .scalar import ScalarProgram

# version of the document's layout; the key also covers the compiler's source (source_digest)
VERSION = 2   # 2: row kernels
MAGIC = b"GRNNPRG1"
# a Program larger than this is not one we wrote (an LSTM's is ~20 kB)
MAX_ENTRY_BYTES = 64 << 20
MAX_ITEMS = 1_000_000
MAX_INT = 1 << 48
MAX_NAME = 1024
DTYPES = ("float32", "float64", "int64")
MEMORY_ENTRIES = 64


class ProgramFormatError(GraphError):
    """A stored Program that is malformed or inconsistent (``program_from_json``)."""


# ---- writing ----

def _ref(r: Ref | None) -> Any:
    if r is None:
        return None
    return [r.buf, r.t, None if r.cols is None else list(r.cols),
            None if r.rows is None else list(r.rows)]


def _piece(pc: ParamPiece) -> list[Any]:
    return [pc.name, list(pc.rows), list(pc.cols), _ref(pc.ref)]


def _kernel_def(k: KernelDef) -> list[Any]:
    prog = k.program
    instrs = [[op.name, list(args), c] for op, args, c in prog.instrs]
    return [k.name, k.dtype, list(k.bcast), prog.n_inputs, instrs, list(prog.outputs)]


def program_to_json(p: Program) -> dict[str, Any]:
    """The Program as a JSON-able document (see the module docstring)."""
    kernels: list[list[Any]] = []
    index: dict[KernelDef, int] = {}

    def step(s: Step) -> list[Any]:
        if isinstance(s, Gemm):
            return ["gemm", _ref(s.out), _ref(s.a), _ref(s.b), s.trans_a, s.trans_b,
                    s.accumulate]
        if isinstance(s, Kernel):
            if s.kernel not in index:
                index[s.kernel] = len(kernels)
                kernels.append(_kernel_def(s.kernel))
            return ["kernel", index[s.kernel], [_ref(r) for r in s.ins],
                    [_ref(r) for r in s.outs]]
        if isinstance(s, Reduce):
            return ["reduce", _ref(s.out), _ref(s.src), s.op, s.axis, s.accumulate]
        if isinstance(s, Gather):
            return ["gather", _ref(s.out), _ref(s.table), _ref(s.ids)]
        if isinstance(s, Scatter):
            return ["scatter", _ref(s.out), _ref(s.ids), _ref(s.src), s.accumulate]
        if isinstance(s, RowKernel):
            return ["rows", s.name, [step(part) for part in s.parts]]
        raise GraphError(f"program {p.cell_name}: cannot store step {s!r}")

    def sweep(sw: Sweep) -> dict[str, Any]:
        return {"pre": [step(s) for s in sw.pre], "step": [step(s) for s in sw.step],
                "post": [step(s) for s in sw.post], "reverse": sw.reverse}

    fwd, bwd = sweep(p.forward), sweep(p.backward)
    return {
        "version": VERSION, "cell_name": p.cell_name, "dtype": p.dtype,
        "buffers": [[b.name, b.kind, b.dtype, b.cols, b.rows, b.extra] for b in p.buffers],
        "kernels": kernels, "forward": fwd, "backward": bwd,
        "inputs": [list(x) for x in p.inputs], "states": [list(x) for x in p.states],
        "outputs": [[n, _ref(r)] for n, r in p.outputs],
        "param_pieces": [_piece(pc) for pc in p.param_pieces],
        "d_outputs": [list(x) for x in p.d_outputs], "d_final": [list(x) for x in p.d_final],
        "d_states": [[n, _ref(r)] for n, r in p.d_states],
        "d_inputs": [[n, _ref(r)] for n, r in p.d_inputs],
        "grad_pieces": [_piece(pc) for pc in p.grad_pieces],
        "residuals": list(p.residuals),
        "param_shapes": [[n, list(s)] for n, s in p.param_shapes],
        "notes": list(p.notes),
    }


def dumps(p: Program) -> bytes:
    """The Program's canonical JSON bytes (one Program, one byte string)."""
    return json.dumps(program_to_json(p), separators=(",", ":"), allow_nan=True).encode()


# ---- reading, every field checked ----

def _fail(where: str, what: str, got: Any) -> ProgramFormatError:
    shown = repr(got)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ProgramFormatError(f"stored program: {where} must be {what}, got {shown}")


def _list(where: str, v: Any, n: int | None = None) -> list[Any]:
    if not isinstance(v, list) or (n is not None and len(v) != n) or len(v) > MAX_ITEMS:
        raise _fail(where, "a list" + (f" of {n} items" if n is not None else ""), v)
    return v


def _int(where: str, v: Any, lo: int = 0, hi: int = MAX_INT) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(where, f"an integer in [{lo}, {hi}]", v)
    return v


def _bool(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(where, "true or false", v)
    return v


def _str(where: str, v: Any, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str) or len(v) > MAX_NAME or (choices is not None and v not in choices):
        raise _fail(where, f"one of {choices}" if choices else "a string", v)
    return v


def _pair(where: str, v: Any) -> tuple[int, int] | None:
    if v is None:
        return None
    a, b = _list(where, v, 2)
    return _int(where, a), _int(where, b)


def _ref_from(where: str, v: Any) -> Ref:
    buf, t, cols, rows = _list(where, v, 4)
    return Ref(_str(f"{where} buffer", buf), _int(f"{where} t", t, -1, 1),
               _pair(f"{where} cols", cols), _pair(f"{where} rows", rows))


def _piece_from(where: str, v: Any) -> ParamPiece:
    name, rows, cols, ref = _list(where, v, 4)
    r, c = _pair(f"{where} rows", rows), _pair(f"{where} cols", cols)
    if r is None or c is None:
        raise _fail(where, "a piece with rows and columns", v)
    return ParamPiece(_str(f"{where} name", name), r, c, _ref_from(f"{where} ref", ref))


def _named(where: str, v: Any) -> tuple[str, str]:
    a, b = _list(where, v, 2)
    return _str(where, a), _str(where, b)


def _named_ref(where: str, v: Any, optional: bool = False) -> tuple[str, Any]:
    n, r = _list(where, v, 2)
    if r is None and optional:
        return _str(where, n), None
    return _str(where, n), _ref_from(f"{where} view", r)


def _kernel_from(where: str, v: Any) -> KernelDef:
    name, dtype, bcast, n_inputs, instrs_v, outputs = _list(where, v, 6)
    instrs = []
    for i, ins in enumerate(_list(f"{where} instructions", instrs_v)):
        w = f"{where} instruction {i}"
        op_name, args, c = _list(w, ins, 3)
        op_name = _str(f"{w} op", op_name)
        op = Ops.__members__.get(op_name)
        if op is None or (op is not Ops.CONST and op not in GroupOp.Elementwise):
            raise _fail(f"{w} op", "an elementwise op or CONST", op_name)
        if op is Ops.CONST:
            if isinstance(c, bool) or not isinstance(c, (int, float)) or _list(w, args):
                raise _fail(w, "a constant: no arguments and a number", ins)
            c = float(c)
        elif c is not None:
            raise _fail(f"{w} constant", "null", c)
        instrs.append((op, tuple(_int(f"{w} argument", a) for a in _list(w, args)), c))
    try:
        prog = ScalarProgram(_int(f"{where} inputs", n_inputs),
                             tuple(instrs),
                             tuple(_int(f"{where} output", o) for o in _list(where, outputs)))
        return KernelDef(_str(f"{where} name", name), prog, _str(f"{where} dtype", dtype, DTYPES),
                         tuple(_str(f"{where} broadcast", b, BCAST)
                               for b in _list(f"{where} broadcast", bcast)))
    except ValueError as e:   # the dataclasses' own checks
        raise ProgramFormatError(f"stored program: {where}: {e}") from None


def _step_from(where: str, v: Any, kernels: list[KernelDef]) -> Step:
    kind = _str(f"{where} kind", _list(where, v)[0] if v else None,
                ("gemm", "kernel", "reduce", "gather", "scatter", "rows"))
    if kind == "gemm":
        _k, out, a, b, ta, tb, acc = _list(where, v, 7)
        return Gemm(_ref_from(f"{where} out", out), _ref_from(f"{where} a", a),
                    _ref_from(f"{where} b", b), _bool(where, ta), _bool(where, tb),
                    _bool(where, acc))
    if kind == "kernel":
        _k, k, ins, outs = _list(where, v, 4)
        return Kernel(kernels[_int(f"{where} kernel", k, 0, len(kernels) - 1)],
                      tuple(_ref_from(f"{where} in", r) for r in _list(where, ins)),
                      tuple(_ref_from(f"{where} out", r) for r in _list(where, outs)))
    if kind == "reduce":
        _k, out, src, op, axis, acc = _list(where, v, 6)
        return Reduce(_ref_from(f"{where} out", out), _ref_from(f"{where} src", src),
                      _str(f"{where} op", op, ("sum", "max")), _int(f"{where} axis", axis, 0, 1),
                      _bool(where, acc))
    if kind == "rows":
        _k, name, parts = _list(where, v, 3)
        steps = tuple(_step_from(f"{where} part {i}", part, kernels)
                      for i, part in enumerate(_list(where, parts)))
        if not steps or not all(isinstance(x, (Kernel, Reduce)) for x in steps):
            raise _fail(where, "row kernel parts that are kernels and reductions", parts)
        return RowKernel(_str(f"{where} name", name), steps)  # type: ignore[arg-type]
    if kind == "gather":
        _k, out, table, ids = _list(where, v, 4)
        return Gather(_ref_from(f"{where} out", out), _ref_from(f"{where} table", table),
                      _ref_from(f"{where} ids", ids))
    _k, out, ids, src, acc = _list(where, v, 5)
    return Scatter(_ref_from(f"{where} out", out), _ref_from(f"{where} ids", ids),
                   _ref_from(f"{where} src", src), _bool(where, acc))


def _sweep_from(where: str, v: Any, kernels: list[KernelDef]) -> Sweep:
    if not isinstance(v, dict) or set(v) != {"pre", "step", "post", "reverse"}:
        raise _fail(where, "an object with pre, step, post and reverse", v)
    phases = {ph: tuple(_step_from(f"{where}.{ph}[{i}]", s, kernels)
                        for i, s in enumerate(_list(f"{where}.{ph}", v[ph])))
              for ph in ("pre", "step", "post")}
    return Sweep(phases["pre"], phases["step"], phases["post"],
                 _bool(f"{where}.reverse", v["reverse"]))


_FIELDS = frozenset({"version", "cell_name", "dtype", "buffers", "kernels", "forward",
                     "backward", "inputs", "states", "outputs", "param_pieces", "d_outputs",
                     "d_final", "d_states", "d_inputs", "grad_pieces", "residuals",
                     "param_shapes", "notes"})


def program_from_json(doc: Any) -> Program:
    """The Program ``program_to_json`` described, every field checked and the result
    validated (``program.validate``); ``ProgramFormatError`` names what is wrong."""
    if not isinstance(doc, dict) or set(doc) != _FIELDS:
        raise _fail("the document", f"an object with the fields {sorted(_FIELDS)}",
                    sorted(doc) if isinstance(doc, dict) else doc)
    if doc["version"] != VERSION:
        raise _fail("version", str(VERSION), doc["version"])
    buffers = []
    for i, b in enumerate(_list("buffers", doc["buffers"])):
        w = f"buffers[{i}]"
        name, kind, dtype, cols, rows, extra = _list(w, b, 6)
        buffers.append(Buffer(_str(f"{w} name", name), _str(f"{w} kind", kind, BUFFER_KINDS),
                              _str(f"{w} dtype", dtype, DTYPES), _int(f"{w} cols", cols, 1),
                              _int(f"{w} rows", rows), _int(f"{w} extra", extra, 0, 1)))
    kernels = [_kernel_from(f"kernels[{i}]", k) for i, k in enumerate(_list("kernels",
                                                                             doc["kernels"]))]
    shapes = []
    for i, v in enumerate(_list("param_shapes", doc["param_shapes"])):
        n, s = _list(f"param_shapes[{i}]", v, 2)
        r, c = _list(f"param_shapes[{i}] shape", s, 2)
        shapes.append((_str(f"param_shapes[{i}]", n),
                       (_int(f"param_shapes[{i}]", r, 1), _int(f"param_shapes[{i}]", c, 1))))
    try:
        p = Program(
            cell_name=_str("cell_name", doc["cell_name"]),
            dtype=_str("dtype", doc["dtype"], ("float32", "float64")),
            buffers=tuple(buffers),
            forward=_sweep_from("forward", doc["forward"], kernels),
            backward=_sweep_from("backward", doc["backward"], kernels),
            inputs=tuple(_named(f"inputs[{i}]", x) for i, x in enumerate(_list(
                "inputs", doc["inputs"]))),
            states=tuple(_named(f"states[{i}]", x) for i, x in enumerate(_list(
                "states", doc["states"]))),
            outputs=tuple(_named_ref(f"outputs[{i}]", x) for i, x in enumerate(_list(
                "outputs", doc["outputs"]))),
            param_pieces=tuple(_piece_from(f"param_pieces[{i}]", x) for i, x in enumerate(
                _list("param_pieces", doc["param_pieces"]))),
            d_outputs=tuple(_named(f"d_outputs[{i}]", x) for i, x in enumerate(_list(
                "d_outputs", doc["d_outputs"]))),
            d_final=tuple(_named(f"d_final[{i}]", x) for i, x in enumerate(_list(
                "d_final", doc["d_final"]))),
            d_states=tuple(_named_ref(f"d_states[{i}]", x) for i, x in enumerate(_list(
                "d_states", doc["d_states"]))),
            d_inputs=tuple(_named_ref(f"d_inputs[{i}]", x, optional=True) for i, x in
                           enumerate(_list("d_inputs", doc["d_inputs"]))),
            grad_pieces=tuple(_piece_from(f"grad_pieces[{i}]", x) for i, x in enumerate(
                _list("grad_pieces", doc["grad_pieces"]))),
            residuals=tuple(_str("residuals", x) for x in _list("residuals", doc["residuals"])),
            param_shapes=tuple(shapes),
            notes=tuple(_str("notes", x) for x in _list("notes", doc["notes"])),
        )
        validate(p)
    except ProgramFormatError:
        raise
    except (GraphRNNError, ValueError, KeyError, TypeError) as e:
        raise ProgramFormatError(f"stored program: inconsistent: {e}") from None
    for b in p.buffers:   # rows only where a buffer has them, extra only on seq buffers
        if (b.rows < 1) == b.fixed or (b.extra and b.kind != "seq"):
            raise _fail(f"buffer {b.name}", "rows for param/grad/mat only, extra for seq only",
                        [b.kind, b.rows, b.extra])
    return p


def loads(data: bytes) -> Program:
    """``program_from_json`` of JSON bytes (``ProgramFormatError`` when they do not parse)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProgramFormatError(f"stored program: not JSON ({e})") from None
    return program_from_json(doc)


# ---- the cache ----

@cache
def source_digest(folder: str) -> str:
    """SHA-256 over the names and bytes of a package folder's ``*.py`` files (not below it):
    the version of the code, so a changed compiler never reads a plan an older one made."""
    h = hashlib.sha256()
    paths = sorted(Path(folder).glob("*.py"))
    if not paths:   # no sources to read (a zipped install): no version, so no caching
        return ""
    for path in paths:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def compiler_digest() -> str:
    """The version of the optimizer: the core's source files and sympy's version ("" when the
    sources cannot be read: then nothing is cached)."""
    source = source_digest(str(Path(__file__).parent))
    if not source:
        return ""
    sympy = sys.modules.get("sympy")
    version = getattr(sympy, "__version__", "?") if sympy is not None else "?"
    return f"{source}:sympy-{version}"


def program_key(cell: Cell, dtype: str, use_sympy: bool = True) -> str | None:
    """The cache key of the Program ``build_program(cell, dtype, use_sympy)`` makes, or None
    for a cell that cannot be stored as IR JSON (it is then built every time)."""
    from .ir_json import cell_to_json
    compiler = compiler_digest()
    if not compiler:
        return None
    try:
        doc = cell_to_json(cell.with_dtype(dtype))
    except GraphRNNError:
        return None
    h = hashlib.sha256()
    for part in (MAGIC.decode(), str(VERSION), compiler, dtype, repr(bool(use_sympy)),
                 json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=True)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def cache_dir() -> Path:
    root = os.environ.get("GRAPHRNN_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "graphrnn"
    return base / "program"


_memory: OrderedDict[str, Program] = OrderedDict()


def clear_memory() -> None:
    """Forget the Programs this process keeps (tests; the disk cache stays)."""
    _memory.clear()


def read_entry(key: str) -> Program | None:
    """The Program stored under ``key``, or None when there is none we may trust: missing,
    refused by ``safefile`` (not ours, not private, not bound to this key) or malformed."""
    data = read_keyed(cache_dir() / f"{key}.json", MAGIC, key, MAX_ENTRY_BYTES)
    if data is None:
        return None
    try:
        return loads(data)
    except ProgramFormatError:
        return None


def write_entry(key: str, program: Program) -> bool:
    """Store ``program`` under ``key`` (atomically; False where the directory is refused)."""
    return write_keyed(cache_dir() / f"{key}.json", MAGIC, key, dumps(program))


def cached_program(cell: Cell, dtype: str, use_sympy: bool,
                   build: Callable[[], Program]) -> tuple[Program, bool]:
    """The Program for ``cell`` at ``dtype``: from this process's memory, from the disk cache,
    or ``build()`` (then stored); and whether it came from a cache."""
    key = program_key(cell, dtype, use_sympy)
    if key is None:
        return build(), False
    p = _memory.get(key)
    if p is None:
        p = read_entry(key)
        if p is not None and (p.dtype != dtype or p.cell_name != cell.name):
            p = None   # bound to the key, so only a hash collision could get here
    if p is not None:
        _memory[key] = p
        _memory.move_to_end(key)
        return p, True
    p = build()
    write_entry(key, p)
    _memory[key] = p
    while len(_memory) > MEMORY_ENTRIES:
        _memory.popitem(last=False)
    return p, False
