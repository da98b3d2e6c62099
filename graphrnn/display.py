"""How a Cell and a Program show themselves: ``print(cell)`` is the printer's SSA text,
``print(program)`` the explained plan, and Jupyter draws both as SVG (``graphrnn.viz``). A
CompiledCell shows its plan (its program, or its cell for backends without one). Without
Graphviz's ``dot`` the SVG is None and Jupyter falls back to ``_repr_pretty_``: the same text as
``print``, not a dataclass repr.

The methods are attached here, from outside ``ir.py`` and ``program.py``, so that those two
import neither the printer, ``explain`` nor ``viz``, which all import them (no import cycle).
``graphrnn/__init__.py`` imports this module, so every Cell and Program has them.
"""

from __future__ import annotations

from typing import Any

from .api import CompiledCell
from .explain import explain_program
from .ir import Cell
from .printer import format_cell
from .program import Program


def cell_svg(cell: Cell) -> str | None:
    """Jupyter's picture of a cell (``graphrnn.viz.cell_svg``); None without graphviz."""
    from . import viz
    return viz.cell_svg(cell)


def program_svg(program: Program) -> str | None:
    """Jupyter's picture of the plan (``graphrnn.viz.plan_svg``); None when it cannot be
    drawn (no graphviz, no ``dot`` binary, ...), so Jupyter falls back to the text repr."""
    from . import viz
    try:   # a notebook repr must never raise, whatever viz does
        return viz.plan_svg(program)
    except Exception:
        return None


def program_text(program: Program) -> str:
    """``str(program)``: the plan as ``graphrnn.explain`` prints it (batch 1)."""
    return explain_program(program)


def pretty(obj: Any, p: Any, cycle: bool) -> None:
    """IPython's text view (``_repr_pretty_``): ``str(obj)``, shown when there is no SVG."""
    p.text(type(obj).__name__ + "(...)" if cycle else str(obj))


def compiled_svg(cc: CompiledCell) -> str | None:
    """Jupyter's picture of a compiled cell: its plan, or its cell when it runs none."""
    if cc.runs_program:
        return program_svg(cc.program)
    return cell_svg(cc.cell)


def compiled_text(cc: CompiledCell) -> str:
    """A compiled cell's text view: its backend and its plan as ``explain`` prints it."""
    try:
        plan = cc.explain()
    except Exception:  # a notebook repr must never raise: the cell's SSA text instead
        plan = format_cell(cc.cell)
    return f"{cc.backend_name} {cc.dtype} cell {cc.cell.name!r}\n{plan}"


def compiled_pretty(cc: CompiledCell, p: Any, cycle: bool) -> None:
    p.text("CompiledCell(...)" if cycle else compiled_text(cc))


Cell.__str__ = format_cell  # type: ignore[method-assign,assignment]
Cell._repr_svg_ = cell_svg  # type: ignore[attr-defined]
Program.__str__ = program_text  # type: ignore[method-assign,assignment]
Program._repr_svg_ = program_svg  # type: ignore[attr-defined]
Cell._repr_pretty_ = pretty  # type: ignore[attr-defined]
Program._repr_pretty_ = pretty  # type: ignore[attr-defined]
CompiledCell._repr_svg_ = compiled_svg  # type: ignore[attr-defined]
CompiledCell._repr_pretty_ = compiled_pretty  # type: ignore[attr-defined]
