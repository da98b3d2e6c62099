"""The Program: what every backend runs. No nodes, no sympy: buffers, views and ordered steps.

``graphrnn.pipeline.build_program(cell)`` produces a ``Program``; a backend (numpy executor in
``codegen/ref.py``, LLVM, CUDA) runs it. This docstring is the whole contract.

Sizes
-----
``T`` (time steps) and ``B`` (batch rows) are known only when a sequence arrives; every other
size is a concrete int.

Buffers (``Program.buffers``, by name; allocate them per call or cache them by (T, B))
-------------------------------------------------------------------------------------
===========  ==========================  ====================================================
kind         shape                       what
===========  ==========================  ====================================================
``param``    (rows, cols)                packed parameters; filled from the user's dict by
                                         ``Program.param_pieces`` before anything runs
``grad``     (rows, cols)                parameter-shaped results of the backward sweep
``mat``      (rows, cols)                other fixed-shape scratch (e.g. a weight product)
``seq``      (T + extra, B, cols)        one (B, cols) slab per time step; ``extra`` is 0 or
                                         1 (states: S[0] = initial state, S[t+1] = state
                                         after step t, so the forward saves every state)
``carry``    (B, cols)                   a value carried across backward steps (d_h, d_c)
``temp``     (B, cols)                   per-step scratch, only read and written in a loop
===========  ==========================  ====================================================
``dtype`` is ``float32``/``float64``, or ``int64`` for integer inputs (token ids).
Buffers are row-major and C-contiguous; a (T, B, n) seq buffer viewed over all steps is a
(T·B, n) matrix. Every buffer's contents are undefined until a step or a binding writes it,
except ``mat`` buffers (zero-filled once when allocated, before the forward sweep), ``grad``
buffers (zero-filled before the backward sweep), so ``accumulate=True`` may be their first
write, and ``carry`` buffers, which the binding initializes.

Views (``Ref``)
---------------
A ``Ref(buf, t, cols, rows)`` is a 2-D view:

* ``cols=(c0, c1)`` selects columns c0:c1 (``None``: all columns); the row stride is the
  buffer's full width, so a column block is a strided view, exactly like ``a[:, c0:c1]``.
* ``rows=(r0, r1)`` selects rows of a param/grad/mat buffer (``None``: all rows); never used on
  batch-shaped buffers.
* ``t`` is a time offset, meaningful for ``seq`` buffers only (0 otherwise):
  - inside the loop (the ``step`` phase at time t) the view is ``buf[t + ref.t]``: (B, n);
  - in the ``pre``/``post`` phases it is ``buf[ref.t : ref.t + T]`` flattened to (T·B, n).

Steps (executed strictly in order within a phase)
-------------------------------------------------
``Gemm(out, a, b, trans_a, trans_b, accumulate)``
    ``out = op(a) @ op(b)`` or, with ``accumulate``, ``out += op(a) @ op(b)``; ``op(v)`` is
    ``v.T`` when the flag is set. In pre/post a seq operand is (T·B, n): ``Gemm(dW, X, DZ,
    trans_a=True)`` is the weight gradient summed over all steps in one GEMM.
``Kernel(kernel, ins, outs)``
    One fused elementwise kernel over the domain (rows, n) = the shape of ``outs[0]`` (all outs
    share it; rows is B in the loop, T·B in pre/post, or a fixed size for mat/param outputs).
    ``ins[i]`` has the domain shape, or is broadcast as ``kernel.bcast[i]`` says:
    ``"full"`` (rows, n); ``"row"`` (1, n), one row repeated down the rows (a bias);
    ``"col"`` (rows, 1), one column repeated across (a per-row statistic); ``"scalar"`` (1, 1).
    For each element: evaluate ``kernel.program`` (a ``graphrnn.scalar.ScalarProgram``) on the
    inputs, write output j to ``outs[j]``. Copies (an identity program) and fills (a CONST
    program with no inputs) are kernels too. Integer inputs never reach kernels. An output may
    alias an input element-for-element (read-then-write of the same element is allowed).
``Reduce(out, src, op, axis, accumulate)``
    ``op`` in {"sum", "max"} over ``axis`` of the 2-D view ``src``, keeping dims: axis 0 gives
    (1, n) (a bias gradient over T·B rows), axis 1 gives (rows, 1) (a layer-norm statistic).
    With ``accumulate`` (sum only) the result is added to ``out``.
``RowKernel(name, parts)``
    Kernel steps and reductions over columns (``Reduce`` with ``axis=1``) that only touch their
    own rows, run as one kernel over the rows (a layer norm: a row's mean and variance are
    computed and used by the elementwise work after them while the row is in cache, with one
    launch and one barrier for the whole group). Its meaning is running ``parts`` in order; a
    backend may instead run them block by block of rows (every part on rows r0:r1, then the
    next block), which gives the same result because the parts are row-local: every part's
    domain is the same batch rows (B in the loop, T·B before/after it), batch-shaped views are
    read and written row for row (``full``/``col``), fixed buffers are only read (``row``/
    ``scalar``), and before/after the loop a seq buffer written by a part is seen at one time
    offset by every part (otherwise row r of one view would be row r + B of another).
    ``validate`` checks all of it. ``Sweep.count(phase, Kernel)`` counts one per row kernel.
``Gather(out, table, ids)``
    ``out[r, :] = table[ids[r, 0], :]``; ``ids`` views an int64 buffer with one column.
``Scatter(out, ids, src, accumulate)``
    ``out[ids[r, 0], :] += src[r, :]`` for every row r (duplicates add up); without
    ``accumulate`` ``out`` is zeroed first.

Sweeps
------
A ``Sweep`` is ``pre`` (once, before the loop), ``step`` (once per time step) and ``post`` (once
after). ``Program.forward`` runs t = 0 .. T-1, ``Program.backward`` runs t = T-1 .. 0
(``Sweep.reverse``). ``Sweep.diagonal`` is True when the step phase holds only Kernel steps: no
GEMM or reduction couples the rows, so a backend may run the whole loop inside one kernel (each
thread loops over t for its own elements). The backward sweep may read any buffer the forward
sweep wrote (the residuals, the state buffers, the inputs); a backend keeps those alive between
``forward_train`` and ``backward`` (``Program.residuals`` lists the ones beyond the inputs).

Binding (how user arrays enter and leave)
-----------------------------------------
Forward:
* ``inputs[i] = (name, buf)``: the user's x_i (T, B, n) is the seq buffer ``buf`` (extra 0).
* ``states[i] = (name, buf)``: seq buffer with extra 1; write h0_i into ``buf[0]`` before the
  forward sweep; after it, ``buf[T]`` is the final state.
* ``outputs[i] = (name, ref)``: output y_i (T, B, n) is the seq view ``ref`` over all T steps,
  i.e. ``buf[ref.t : ref.t + T, :, c0:c1]`` (often the state buffer itself at t=1: y = h).
* ``param_pieces``: ``ParamPiece(name, rows, cols, ref)`` says ``ref`` holds
  ``user[name][r0:r1, c0:c1]``; copy every piece in before running (a merged GEMM reads several
  user parameters laid out side by side in one packed buffer). A user parameter may have
  several pieces (a weight split into row blocks) or none (unused).
Backward:
* ``d_outputs[i] = (name, buf)``: the cotangent of output i, (T, B, n) into seq ``buf``
  (zeros when the caller passes None).
* ``d_final[i] = (state name, buf)``: carry buffer; write the cotangent of the final state
  (or zeros) into it before the backward sweep; after the sweep it holds d(initial state), which
  ``d_states`` names (``d_states[i] = (state name, ref)``).
* ``d_inputs[i] = (name, ref)``: the gradient of input i is the seq view ``ref`` over T steps;
  ``ref`` is None when it is identically zero (an unused or integer input).
* ``grad_pieces``: ``ParamPiece(name, rows, cols, ref)``: start every user gradient at zero,
  then for each piece ``grad[name][r0:r1, c0:c1] += value(ref)`` (pieces may repeat a region:
  they add up).

``validate(program)`` checks all of this statically (views in range, shapes agreeing, nothing
read before it is written) and every Program that ``build_program`` returns passes it. Carry
and temp buffers are per-step values: no pre/post step may read them; the one place a carry is
read after its sweep is the ``d_states`` binding (the carry then holds d(initial state)).

In Jupyter a Program draws itself (``_repr_svg_``, through ``graphrnn.viz.plan_svg``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Union

from .errors import BackendError
from .ops import Ops
from .scalar import ScalarProgram

BUFFER_KINDS = ("param", "grad", "mat", "seq", "carry", "temp")
BCAST = ("full", "row", "col", "scalar")


@dataclass(frozen=True)
class Buffer:
    name: str
    kind: str               # one of BUFFER_KINDS
    dtype: str              # float32 | float64 | int64
    cols: int
    rows: int = 0           # param/grad/mat only
    extra: int = 0          # seq only: 1 for state buffers (T+1 steps)

    def __post_init__(self) -> None:
        if self.kind not in BUFFER_KINDS:
            raise ValueError(f"buffer {self.name}: kind {self.kind!r} not in {BUFFER_KINDS}")

    @property
    def fixed(self) -> bool:
        """True for (rows, cols) buffers, False for batch-shaped ones."""
        return self.kind in ("param", "grad", "mat")

    def shape(self, T: int, B: int) -> tuple[int, ...]:  # noqa: N803
        if self.fixed:
            return (self.rows, self.cols)
        if self.kind == "seq":
            return (T + self.extra, B, self.cols)
        return (B, self.cols)


@dataclass(frozen=True)
class Ref:
    """A 2-D view of a buffer; see the module docstring."""
    buf: str
    t: int = 0
    cols: tuple[int, int] | None = None
    rows: tuple[int, int] | None = None

    def __str__(self) -> str:
        s = self.buf
        if self.t:
            s += f"[t{self.t:+d}]"
        if self.rows is not None:
            s += f"[{self.rows[0]}:{self.rows[1]},:]"
        if self.cols is not None:
            s += f"[:,{self.cols[0]}:{self.cols[1]}]"
        return s


@dataclass(frozen=True)
class KernelDef:
    name: str
    program: ScalarProgram
    dtype: str
    bcast: tuple[str, ...]   # one of BCAST per input

    def __post_init__(self) -> None:
        if len(self.bcast) != self.program.n_inputs:
            raise ValueError(f"kernel {self.name}: {len(self.bcast)} broadcast flags for "
                             f"{self.program.n_inputs} inputs")

    @property
    def n_inputs(self) -> int:
        return self.program.n_inputs

    @property
    def n_outputs(self) -> int:
        return len(self.program.outputs)


@dataclass(frozen=True)
class Gemm:
    out: Ref
    a: Ref
    b: Ref
    trans_a: bool = False
    trans_b: bool = False
    accumulate: bool = False


@dataclass(frozen=True)
class Kernel:
    kernel: KernelDef
    ins: tuple[Ref, ...]
    outs: tuple[Ref, ...]


@dataclass(frozen=True)
class Reduce:
    out: Ref
    src: Ref
    op: str = "sum"
    axis: int = 0
    accumulate: bool = False


@dataclass(frozen=True)
class Gather:
    out: Ref
    table: Ref
    ids: Ref


@dataclass(frozen=True)
class Scatter:
    out: Ref
    ids: Ref
    src: Ref
    accumulate: bool = False


@dataclass(frozen=True)
class RowKernel:
    """Row-local kernels and column reductions run as one kernel over rows (see the module
    docstring)."""
    name: str
    parts: tuple[Union[Kernel, Reduce], ...]


Step = Union[Gemm, Kernel, Reduce, Gather, Scatter, RowKernel]


@dataclass(frozen=True)
class Sweep:
    pre: tuple[Step, ...] = ()
    step: tuple[Step, ...] = ()
    post: tuple[Step, ...] = ()
    reverse: bool = False

    @property
    def diagonal(self) -> bool:
        return bool(self.step) and all(isinstance(s, Kernel) for s in self.step)

    def phases(self) -> Iterator[tuple[str, tuple[Step, ...]]]:
        yield "pre", self.pre
        yield "step", self.step
        yield "post", self.post

    def count(self, phase: str, kind: type) -> int:
        """Steps of a kind in a phase; a row kernel counts as one Kernel (its parts run as
        one launch), and its reductions do not count as Reduce steps."""
        if kind is Kernel:
            return sum(isinstance(s, (Kernel, RowKernel)) for s in getattr(self, phase))
        return sum(isinstance(s, kind) for s in getattr(self, phase))


@dataclass(frozen=True)
class ParamPiece:
    name: str
    rows: tuple[int, int]
    cols: tuple[int, int]
    ref: Ref

    @property
    def region(self) -> tuple[slice, slice]:
        """The piece's part of the user's parameter: ``param[piece.region]``."""
        return slice(*self.rows), slice(*self.cols)

    def covers(self, shape: tuple[int, int]) -> bool:
        """Whether the piece is the whole of a parameter of this shape."""
        return self.rows == (0, shape[0]) and self.cols == (0, shape[1])


@dataclass(frozen=True)
class Program:
    cell_name: str
    dtype: str
    buffers: tuple[Buffer, ...]
    forward: Sweep
    backward: Sweep
    # forward binding
    inputs: tuple[tuple[str, str], ...]
    states: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, Ref], ...]
    param_pieces: tuple[ParamPiece, ...]
    # backward binding
    d_outputs: tuple[tuple[str, str], ...]
    d_final: tuple[tuple[str, str], ...]
    d_states: tuple[tuple[str, Ref], ...]
    d_inputs: tuple[tuple[str, Ref | None], ...]
    grad_pieces: tuple[ParamPiece, ...]
    # seq buffers the forward writes only so that the backward can read them
    residuals: tuple[str, ...] = ()
    # user parameter shapes, by name (to allocate gradients)
    param_shapes: tuple[tuple[str, tuple[int, int]], ...] = ()
    notes: tuple[str, ...] = field(default=())

    def buffer(self, name: str) -> Buffer:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def buffer_map(self) -> dict[str, Buffer]:
        return {b.name: b for b in self.buffers}

    def kernels(self) -> list[KernelDef]:
        """Every distinct kernel, in first-use order."""
        seen: dict[str, KernelDef] = {}
        for sw in (self.forward, self.backward):
            for _ph, steps in sw.phases():
                for s in steps:
                    for k in (s.parts if isinstance(s, RowKernel) else (s,)):
                        if isinstance(k, Kernel):
                            seen.setdefault(k.kernel.name, k.kernel)
        return list(seen.values())

    def residual_values_per_row(self) -> int:
        """Values per time step and batch row that the forward keeps only for the backward:
        residual buffers plus state buffers not visible as an output."""
        out_bufs = {r.buf for _n, r in self.outputs}
        total = sum(self.buffer(n).cols for n in self.residuals)
        total += sum(self.buffer(b).cols for _n, b in self.states if b not in out_bufs)
        return total

    def residual_bytes_per_step(self, batch: int = 1) -> int:
        size = 8 if self.dtype == "float64" else 4
        return self.residual_values_per_row() * batch * size

    # str(program) and Jupyter's _repr_svg_ are attached by graphrnn/display.py (program.py
    # imports neither explain nor viz, which import it)


# ---- validation ----

Rows = Union[int, str]   # an int, "B" or "TB"


def _view_shape(p: Program, r: Ref, in_loop: bool, bufs: dict[str, Buffer],
                final: bool = False) -> tuple[Rows, int]:
    """(rows, cols) of a view. ``final``: the view is a binding read after the sweep (d_states),
    where a carry buffer holds the sweep's last value, (B, n)."""
    if r.buf not in bufs:
        raise BackendError(f"program {p.cell_name}: view {r} names no buffer")
    b = bufs[r.buf]
    c0, c1 = r.cols if r.cols is not None else (0, b.cols)
    if not 0 <= c0 < c1 <= b.cols:
        raise BackendError(f"program {p.cell_name}: columns {c0}:{c1} out of range for "
                           f"{b.name} ({b.cols} columns)")
    if b.fixed:
        r0, r1 = r.rows if r.rows is not None else (0, b.rows)
        if not 0 <= r0 < r1 <= b.rows:
            raise BackendError(f"program {p.cell_name}: rows {r0}:{r1} out of range for "
                               f"{b.name} ({b.rows} rows)")
        if r.t:
            raise BackendError(f"program {p.cell_name}: time offset on fixed buffer {r}")
        return r1 - r0, c1 - c0
    if r.rows is not None:
        raise BackendError(f"program {p.cell_name}: row block on batch buffer {r}")
    if b.kind == "seq":
        if not 0 <= r.t <= b.extra:
            raise BackendError(f"program {p.cell_name}: time offset {r.t} out of range for "
                               f"{b.name} (extra {b.extra})")
        return ("B" if in_loop else "TB"), c1 - c0
    if not in_loop and not (final and b.kind == "carry"):
        raise BackendError(f"program {p.cell_name}: {b.kind} buffer {b.name} used outside "
                           "the loop")
    if r.t:
        raise BackendError(f"program {p.cell_name}: time offset on {b.kind} buffer {r}")
    return "B", c1 - c0


class _Written:
    """What has been written: (buffer, time key) -> column intervals. Time key is "all" for
    fixed/carry/temp buffers and for seq buffers written outside the loop, else the offset."""

    def __init__(self) -> None:
        self.w: dict[tuple[str, object], list[tuple[int, int]]] = {}

    def add(self, buf: str, key: object, cols: tuple[int, int]) -> None:
        self.w.setdefault((buf, key), []).append(cols)

    def intervals(self, buf: str, key: object) -> list[tuple[int, int]]:
        return self.w.get((buf, key), []) + (self.w.get((buf, "all"), [])
                                             if key != "all" else [])

    def covers(self, buf: str, key: object, cols: tuple[int, int],
               also: list[tuple[int, int]] | None = None) -> bool:
        """Whether the columns are written (with ``also``: or in those intervals)."""
        ivs = sorted(self.intervals(buf, key) + (also or []))
        pos = cols[0]
        for a, b in ivs:
            if a <= pos < b:
                pos = b
            if pos >= cols[1]:
                return True
        return pos >= cols[1]


def cols_of(r: Ref, b: Buffer) -> tuple[int, int]:
    """The column range a view covers in its buffer."""
    return r.cols if r.cols is not None else (0, b.cols)


def _cols(r: Ref, bufs: dict[str, Buffer]) -> tuple[int, int]:
    return cols_of(r, bufs[r.buf])


def overlap(a: Ref, b: Ref, bufs: dict[str, Buffer], in_loop: bool) -> bool:
    """May two views share an element? Inside the loop two time offsets of a seq buffer are
    different slabs; before or after it they are overlapping ranges of T slabs. Rows count only
    where a view names them (param-shaped buffers); otherwise a view covers every row."""
    if a.buf != b.buf:
        return False
    if in_loop and bufs[a.buf].kind == "seq" and a.t != b.t:
        return False
    (a0, a1), (b0, b1) = _cols(a, bufs), _cols(b, bufs)
    ar, br = a.rows or (0, 1 << 62), b.rows or (0, 1 << 62)
    return a0 < b1 and b0 < a1 and ar[0] < br[1] and br[0] < ar[1]


def reads_writes(s: Step) -> tuple[list[Ref], list[Ref]]:
    """The views a step reads (an accumulating step reads its output too) and writes."""
    if isinstance(s, Gemm):
        return [s.a, s.b] + ([s.out] if s.accumulate else []), [s.out]
    if isinstance(s, Kernel):
        return list(s.ins), list(s.outs)
    if isinstance(s, Reduce):
        return [s.src] + ([s.out] if s.accumulate else []), [s.out]
    if isinstance(s, Gather):
        return [s.table, s.ids], [s.out]
    if isinstance(s, Scatter):
        return [s.ids, s.src] + ([s.out] if s.accumulate else []), [s.out]
    if isinstance(s, RowKernel):
        reads: list[Ref] = []
        writes: list[Ref] = []
        for part in s.parts:
            r, w = reads_writes(part)
            reads += r
            writes += w
        return reads, writes
    raise BackendError(f"unknown step {s!r}")


def flat_steps(steps: tuple[Step, ...] | list[Step]) -> list[Step]:
    """The steps with every row kernel replaced by its parts (what it means)."""
    out: list[Step] = []
    for s in steps:
        out += list(s.parts) if isinstance(s, RowKernel) else [s]
    return out


def row_kernel_problem(parts: tuple[Step, ...] | list[Step], bufs: dict[str, Buffer],
                       in_loop: bool) -> str | None:
    """Why these steps cannot run as one row kernel (see the module docstring), or None."""
    if not parts:
        return "has no parts"
    written = {r.buf for part in parts for r in reads_writes(part)[1]}
    offsets: dict[str, set[int]] = {}
    for part in parts:
        if isinstance(part, Kernel):
            if not part.outs:
                return f"holds kernel {part.kernel.name} without outputs"
            views = list(zip(part.ins, part.kernel.bcast)) + [(o, "full") for o in part.outs]
        elif isinstance(part, Reduce):
            if part.axis != 1:
                return f"holds a reduction over axis {part.axis} (rows are not local)"
            views = [(part.src, "full"), (part.out, "col")]
        else:
            return (f"holds a {type(part).__name__}: only kernels and reductions over columns "
                    "are row-local")
        for r, f in views:
            b = bufs[r.buf]
            if b.fixed:
                if f not in ("row", "scalar") or r.buf in written:
                    return (f"reads fixed buffer {r} as {f!r} or writes it: rows would not be "
                            "independent")
            elif f not in ("full", "col"):
                return f"broadcasts batch buffer {r} as {f!r}"
            elif b.kind == "seq" and not in_loop:
                offsets.setdefault(r.buf, set()).add(r.t)
    for name, ts in offsets.items():
        if name in written and len(ts) > 1:
            return (f"sees {name} at time offsets {sorted(ts)} outside the loop: row r of one "
                    "view is another row of the other")
    return None


def _check_shapes(p: Program, s: Step, in_loop: bool, bufs: dict[str, Buffer]) -> None:
    def sh(r: Ref) -> tuple[Rows, int]:
        return _view_shape(p, r, in_loop, bufs)

    def bad(msg: str) -> BackendError:
        return BackendError(f"program {p.cell_name}: {type(s).__name__} {msg}")

    if isinstance(s, Gemm):
        (m, ka) = sh(s.a)[::-1] if s.trans_a else sh(s.a)
        (kb, n) = sh(s.b)[::-1] if s.trans_b else sh(s.b)
        if ka != kb:
            raise bad(f"inner sizes differ: {s.a} {sh(s.a)} @ {s.b} {sh(s.b)}")
        if sh(s.out) != (m, n):
            raise bad(f"writes {s.out} {sh(s.out)} but computes {(m, n)}")
    elif isinstance(s, Kernel):
        k = s.kernel
        if len(s.ins) != k.n_inputs or len(s.outs) != k.n_outputs:
            raise bad(f"{k.name}: {len(s.ins)} ins/{len(s.outs)} outs for a kernel of "
                      f"{k.n_inputs}/{k.n_outputs}")
        if not s.outs:
            raise bad(f"{k.name}: no outputs")
        dom = sh(s.outs[0])
        for o in s.outs:
            if sh(o) != dom:
                raise bad(f"{k.name}: outputs disagree: {o} {sh(o)} vs {dom}")
        for r, f in zip(s.ins, k.bcast, strict=True):
            want = {"full": dom, "row": (1, dom[1]), "col": (dom[0], 1), "scalar": (1, 1)}[f]
            if sh(r) != want:
                raise bad(f"{k.name}: input {r} is {sh(r)}, expected {want} ({f})")
            if bufs[r.buf].dtype == "int64":
                raise bad(f"{k.name}: integer input {r}")
    elif isinstance(s, Reduce):
        rows, n = sh(s.src)
        want = (1, n) if s.axis == 0 else (rows, 1)
        if sh(s.out) != want or s.op not in ("sum", "max"):
            raise bad(f"writes {s.out} {sh(s.out)}, expected {want}")
        if s.accumulate and s.op != "sum":
            raise bad("accumulates a max")
    elif isinstance(s, RowKernel):
        why = row_kernel_problem(s.parts, bufs, in_loop)
        if why is not None:
            raise bad(f"{s.name} {why}")
        rows = {sh(part.outs[0] if isinstance(part, Kernel) else part.out)[0]
                for part in s.parts}
        if len(rows) != 1:
            raise bad(f"{s.name}: parts over different rows {sorted(map(str, rows))}")
        for part in s.parts:
            _check_shapes(p, part, in_loop, bufs)
    elif isinstance(s, Gather):
        if sh(s.ids)[1] != 1 or bufs[s.ids.buf].dtype != "int64":
            raise bad(f"ids {s.ids} must be one int64 column")
        if sh(s.out) != (sh(s.ids)[0], sh(s.table)[1]):
            raise bad(f"writes {s.out} {sh(s.out)}")
    elif isinstance(s, Scatter):
        if sh(s.ids)[1] != 1 or bufs[s.ids.buf].dtype != "int64":
            raise bad(f"ids {s.ids} must be one int64 column")
        if sh(s.src)[0] != sh(s.ids)[0] or sh(s.out)[1] != sh(s.src)[1]:
            raise bad(f"shapes {sh(s.out)} <- {sh(s.ids)}, {sh(s.src)}")


def validate(p: Program) -> None:
    """Raise BackendError unless every view is in range, every step's shapes agree and no step
    reads a buffer (view) before it is written."""
    bufs = p.buffer_map
    if len(bufs) != len(p.buffers):
        raise BackendError(f"program {p.cell_name}: duplicate buffer names")
    w = _Written()
    for b in p.buffers:
        if b.kind in ("grad", "mat"):
            w.add(b.name, "all", (0, b.cols))   # zero-filled
    for pc in p.param_pieces:
        _view_shape(p, pc.ref, False, bufs)
        w.add(pc.ref.buf, "all", _cols(pc.ref, bufs))
    for _n, b in p.inputs:
        w.add(b, "all", (0, bufs[b].cols))
    for _n, b in p.states:
        if bufs[b].kind != "seq" or bufs[b].extra != 1:
            raise BackendError(f"program {p.cell_name}: state buffer {b} must be seq, extra 1")
        w.add(b, 0, (0, bufs[b].cols))

    def run_sweep(sw: Sweep, name: str) -> None:
        d = -1 if sw.reverse else 1   # the offset a step writes for the next one to read at 0
        loop_writes = [(r.buf, r.t, _cols(r, bufs)) for s in flat_steps(sw.step)
                       for r in reads_writes(s)[1] if bufs[r.buf].kind == "seq"]
        for phase, steps in sw.phases():
            in_loop = phase == "step"
            this_iter = _Written()
            for s in steps:
                if isinstance(s, RowKernel):
                    _check_shapes(p, s, in_loop, bufs)
            for i, s in enumerate(flat_steps(steps)):
                _check_shapes(p, s, in_loop, bufs)
                reads, writes = reads_writes(s)
                for r in reads:
                    b, cols = bufs[r.buf], _cols(r, bufs)
                    if b.kind != "seq":
                        ok = w.covers(r.buf, "all", cols) or this_iter.covers(r.buf, "all", cols)
                    elif not in_loop:
                        ok = w.covers(r.buf, r.t, cols)
                    else:
                        # buf[t+k] is known before the loop, or written earlier in this
                        # iteration, or initialized for the first step and written by the
                        # previous iteration at offset k + d
                        # (before the loop, e.g. a zero block filled once, and in this
                        # iteration: the two together)
                        ok = (w.covers(r.buf, r.t, cols, this_iter.intervals(r.buf, r.t))
                              and r.t not in _init_keys(r.buf)) \
                            or this_iter.covers(r.buf, r.t, cols) \
                            or (w.covers(r.buf, r.t, cols) and any(
                                x[0] == r.buf and x[1] == r.t + d and x[2][0] <= cols[0]
                                and cols[1] <= x[2][1] for x in loop_writes))
                    if not ok:
                        raise BackendError(f"program {p.cell_name}: {name}.{phase} step {i} "
                                           f"({type(s).__name__}) reads {r} before it is "
                                           "written")
                for r in writes:
                    b = bufs[r.buf]
                    if b.kind == "param":
                        raise BackendError(f"program {p.cell_name}: step writes param {r}")
                    if b.kind == "seq" and in_loop:
                        this_iter.add(r.buf, r.t, _cols(r, bufs))
                    elif b.kind == "seq":
                        for k in range(b.extra + 1):
                            if k == r.t or b.extra == 0:
                                w.add(r.buf, k, _cols(r, bufs))
                        if b.extra and w.covers(r.buf, r.t - d, _cols(r, bufs)):
                            # initialized slab + all later ones: the whole buffer is known
                            w.add(r.buf, r.t - d, _cols(r, bufs))
                            _done_init.add(r.buf)
                    else:
                        this_iter.add(r.buf, "all", _cols(r, bufs))
                        w.add(r.buf, "all", _cols(r, bufs))
            if in_loop:
                # after the loop a seq buffer written at offset k holds buf[k:k+T]; a state
                # buffer initialized at offset k - d then holds buf[k-d : k-d+T] as well
                for buf, k, cols in loop_writes:
                    w.add(buf, k, cols)
                    if w.covers(buf, k - d, cols) or bufs[buf].extra == 0:
                        w.add(buf, k - d, cols)
                        _done_init.add(buf)

    _done_init: set[str] = set()

    def _init_keys(buf: str) -> set[int]:
        # offsets of a buffer that hold only their first slab (set by the binding)
        if buf in _done_init:
            return set()
        return {0} if buf in {b for _n, b in p.states} else set()

    run_sweep(p.forward, "forward")
    for _n, r in p.outputs:
        _view_shape(p, r, False, bufs)
        if not w.covers(r.buf, r.t, _cols(r, bufs)):
            raise BackendError(f"program {p.cell_name}: output {_n} reads {r}, never written")
    for _n, b in p.d_outputs:
        w.add(b, "all", (0, bufs[b].cols))
    for _n, b in p.d_final:
        if bufs[b].kind != "carry":
            raise BackendError(f"program {p.cell_name}: d_final buffer {b} must be a carry")
        w.add(b, "all", (0, bufs[b].cols))
    for b in p.buffers:   # carries start at zero or d_final
        if b.kind == "carry":
            w.add(b.name, "all", (0, b.cols))
    run_sweep(p.backward, "backward")
    for _n, r in p.d_inputs:
        if r is not None:
            _view_shape(p, r, False, bufs)
    # d(initial state) is read from its carry after the backward sweep: legitimate for this
    # binding only (a step after the loop reading a carry is still refused above)
    state_cols = {n: bufs[b].cols for n, b in p.states if b in bufs}
    for n, r in p.d_states:
        if r.buf not in bufs or bufs[r.buf].kind != "carry":
            raise BackendError(f"program {p.cell_name}: d_states must name carry buffers, "
                               f"got {r} for state {n}")
        _rows, cols = _view_shape(p, r, False, bufs, final=True)
        if n in state_cols and cols != state_cols[n]:
            raise BackendError(f"program {p.cell_name}: d_states view {r} of state {n} has "
                               f"{cols} columns, the state {state_cols[n]}")
    for pc in p.grad_pieces:
        rows, cols = _view_shape(p, pc.ref, False, bufs)
        if (rows, cols) != (pc.rows[1] - pc.rows[0], pc.cols[1] - pc.cols[0]):
            raise BackendError(f"program {p.cell_name}: gradient piece of {pc.name} is "
                               f"{(rows, cols)}, region {pc.rows} x {pc.cols}")


def identity_kernel(dtype: str, bcast: str = "full") -> KernelDef:
    """A copy, as a kernel."""
    return KernelDef(f"copy_{bcast}", ScalarProgram(1, (), (0,)), dtype, (bcast,))


def fill_kernel(value: float, dtype: str) -> KernelDef:
    """A fill with a constant, as a kernel with no inputs."""
    return KernelDef(f"fill_{value:g}".replace("-", "m").replace(".", "_"),
                     ScalarProgram(0, ((Ops.CONST, (), float(value)),), (0,)), dtype, ())


# ---- work: FLOPs of steps and sweeps (explain prints them, llvm sizes its threads by them) ----

FLOP_COST = {Ops.CONST: 0}   # everything else counts one flop per element (transcendentals too)


def view_dims(p: Program, r: Ref, in_loop: bool) -> tuple[Rows, int]:
    """A view's (rows, cols): rows "B" in the loop, "TB" for a whole sequence, else a number."""
    b = p.buffer(r.buf)
    cols = (r.cols[1] - r.cols[0]) if r.cols else b.cols
    if b.fixed:
        return ((r.rows[1] - r.rows[0]) if r.rows else b.rows), cols
    return ("B" if in_loop or b.kind != "seq" else "TB"), cols


def _rows_at(x: Rows, batch: int) -> int:
    return batch if x in ("B", "TB") else int(x)


def step_flops(p: Program, s: Step, in_loop: bool, batch: int) -> int:
    """FLOPs of one step for one time step (phase work outside the loop is per step too)."""
    if isinstance(s, Gemm):
        a, b = view_dims(p, s.a, in_loop), view_dims(p, s.b, in_loop)
        m, k = (a[1], a[0]) if s.trans_a else a
        n = b[0] if s.trans_b else b[1]
        return 2 * _rows_at(m, batch) * _rows_at(k, batch) * int(n)
    if isinstance(s, Kernel):
        r, c = view_dims(p, s.outs[0], in_loop)
        ops = sum(FLOP_COST.get(op, 1) for op, _a, _c in s.kernel.program.instrs)
        return _rows_at(r, batch) * int(c) * max(ops, 1)
    if isinstance(s, Reduce):
        r, c = view_dims(p, s.src, in_loop)
        return _rows_at(r, batch) * int(c)
    if isinstance(s, Scatter):
        r, c = view_dims(p, s.src, in_loop)
        return _rows_at(r, batch) * int(c)
    if isinstance(s, RowKernel):
        return sum(step_flops(p, part, in_loop, batch) for part in s.parts)
    return 0


def sweep_flops(p: Program, sw: Sweep, batch: int = 1) -> int:
    """FLOPs of a whole sweep for one time step at the given batch."""
    return sum(step_flops(p, s, ph == "step", batch) for ph, steps in sw.phases() for s in steps)
