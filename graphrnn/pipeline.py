"""The optimizer as one ordered list of passes: from a Cell to the Program backends run.

``PASSES`` is the order, ``build_program(cell)`` runs it (``graphrnn.compile`` calls it once and
hands the Program to the backend), ``build_plan`` also returns what the passes learned (for
explain, viz and tests). Each pass reads and fills in a ``Build``. Split (``split.place``) and
fusion (``fuse.group_nodes``) run inside each sweep's scheduling (``SweepBuilder.build``), because
the backward's leaves are the forward's buffers: the forward sweep is placed, fused and given
homes before the backward's can be.

``GRAPHRNN_DEBUG=1`` prints the IR after each pass, ``=2`` also the explained Program.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from .autodiff import BackwardCell, backward_cell
from .graphs import DiGraph
from .ir import Cell, Node
from .merge import Layout, merge_gemms
from .printer import format_cell, format_nodes
from .program import Program, validate
from .schedule import (
    BackwardSchedule,
    ForwardSchedule,
    assemble_program,
    choose_residuals,
    gemm_terms_last,
    hoist_cotangent_products,
    schedule_backward,
    schedule_forward,
)
from .simplify import simplify, simplify_cell


@dataclass
class Build:
    """What the passes have made so far; each pass fills in its own fields."""
    cell: Cell                                  # the user's cell, at the compile dtype
    use_sympy: bool = True                      # kernel bodies through sympy.cse
    simplified: Cell | None = None
    merged: Cell | None = None                  # GEMMs merged: what the later passes see
    layout: Layout | None = None                # user parameter -> region of a packed one
    backward: BackwardCell | None = None        # of the merged cell
    d_roots: list[Node] = field(default_factory=list)   # its results, simplified
    residual_nodes: list[Node] = field(default_factory=list)
    forward_sweep: ForwardSchedule | None = None
    backward_sweep: BackwardSchedule | None = None
    program: Program | None = None


@dataclass
class Plan:
    """The Program plus what the passes learned (for explain, viz and tests)."""
    program: Program
    cell: Cell                  # simplified and merged
    layout: Layout
    forward_groups: list[list[Node]]
    backward_groups: list[list[Node]]
    forward_deps: DiGraph
    backward_deps: DiGraph
    residual_nodes: list[Node]


def debug_level() -> int:
    """``GRAPHRNN_DEBUG``: 1 prints the IR after each pass, 2 also the explained Program."""
    try:
        return int(os.environ.get("GRAPHRNN_DEBUG", "0") or 0)
    except ValueError:
        return 0


def _debug(title: str, text: str) -> None:
    if debug_level() >= 1:
        print(f"---- {title} ----\n{text}", file=sys.stderr)


def _simplify(b: Build) -> None:
    b.simplified = simplify_cell(b.cell)
    _debug("simplify", format_cell(b.simplified))


def _merge(b: Build) -> None:
    assert b.simplified is not None
    b.merged, b.layout = merge_gemms(b.simplified)
    _debug("merge gemms", format_cell(b.merged))


def _autodiff(b: Build) -> None:
    assert b.merged is not None
    b.backward = backward_cell(b.merged)
    # the carried cotangents' GEMM terms last, so schedule can accumulate them (BLAS beta = 1)
    roots = hoist_cotangent_products(simplify(list(b.backward.roots)),
                                     b.backward.d_outputs, b.backward.d_next)
    b.d_roots = gemm_terms_last(roots, range(len(b.backward.d_states)))
    if debug_level() >= 1:
        lines, _ = format_nodes(b.d_roots)
        _debug("backward cell (simplified)", "\n".join(lines))


def _residuals(b: Build) -> None:
    assert b.merged is not None
    m = b.merged
    kept_anyway = set(m.outputs) | set(m.next_states) | set(m.inputs) | set(m.states)
    b.residual_nodes = choose_residuals(m.roots, b.d_roots, kept_anyway)


def _forward_sweep(b: Build) -> None:
    assert b.merged is not None
    b.forward_sweep = schedule_forward(b.merged, b.residual_nodes, b.use_sympy)


def _backward_sweep(b: Build) -> None:
    assert b.merged is not None and b.backward is not None and b.forward_sweep is not None
    b.backward_sweep = schedule_backward(b.merged, b.backward, b.d_roots, b.forward_sweep,
                                         b.use_sympy)


def _assemble(b: Build) -> None:
    assert b.merged is not None and b.layout is not None and b.backward is not None
    assert b.forward_sweep is not None and b.backward_sweep is not None
    n_carried = len(b.backward.d_states) + len(b.backward.d_inputs)
    b.program = assemble_program(b.cell, b.merged, b.layout, b.d_roots[n_carried:],
                                 b.forward_sweep, b.backward_sweep)


def _validate(b: Build) -> None:
    assert b.program is not None
    validate(b.program)
    if debug_level() >= 2:
        _debug("program", str(b.program))  # the explain table (graphrnn/display.py)


# in order; split (placement in time) and fusion run inside each sweep (module docstring)
PASSES: list[tuple[str, Callable[[Build], None]]] = [
    ("simplify", _simplify),
    ("merge", _merge),
    ("autodiff", _autodiff),
    ("residuals", _residuals),
    ("forward sweep: split, fuse, schedule", _forward_sweep),
    ("backward sweep: split, fuse, schedule", _backward_sweep),
    ("program", _assemble),
    ("validate", _validate),
]


def run_passes(cell: Cell, dtype: str | None = None, use_sympy: bool = True) -> Build:
    """Every pass of ``PASSES`` over ``cell`` (at ``dtype``, default the cell's)."""
    if dtype is not None:
        cell = cell.with_dtype(dtype)
    _debug("input cell", format_cell(cell))
    build = Build(cell, use_sympy)
    for _name, run in PASSES:
        run(build)
    return build


def build_plan(cell: Cell, dtype: str | None = None, use_sympy: bool = True) -> Plan:
    """The Program and what the passes learned on the way."""
    b = run_passes(cell, dtype, use_sympy)
    assert b.program is not None and b.merged is not None and b.layout is not None
    assert b.forward_sweep is not None and b.backward_sweep is not None
    fwd, bwd = b.forward_sweep.builder, b.backward_sweep.builder
    return Plan(b.program, b.merged, b.layout, fwd.groups, bwd.groups, fwd.deps, bwd.deps,
                b.residual_nodes)


def build_program(cell: Cell, dtype: str | None = None, use_sympy: bool = True) -> Program:
    """The Program for a cell: forward and backward sweeps, buffers, bindings."""
    program = run_passes(cell, dtype, use_sympy).program
    assert program is not None
    return program
