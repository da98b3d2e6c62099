"""How a Cell and a Program show themselves: ``print(cell)`` is the printer's SSA text,
``print(program)`` the explained plan, and Jupyter draws both as SVG (``graphrnn.viz``).

The methods are attached here, from outside ``ir.py`` and ``program.py``, so that those two
import neither the printer, ``explain`` nor ``viz``, which all import them (no import cycle).
``graphrnn/__init__.py`` imports this module, so every Cell and Program has them.
"""

from __future__ import annotations

from .explain import explain_program
from .ir import Cell
from .printer import format_cell
from .program import Program


def cell_svg(cell: Cell) -> str | None:
    """Jupyter's picture of a cell (``graphrnn.viz.cell_svg``); None without graphviz."""
    try:
        from . import viz
    except ImportError:
        return None
    return viz.cell_svg(cell)


def program_svg(program: Program) -> str | None:
    """Jupyter's picture of the plan (``graphrnn.viz.plan_svg``); None when it cannot be
    drawn (no graphviz, no ``dot`` binary, ...), so Jupyter falls back to the text repr."""
    try:
        from . import viz
        plan_svg = getattr(viz, "plan_svg", None)
        return plan_svg(program) if plan_svg is not None else None
    except Exception:  # a notebook repr must never raise
        return None


def program_text(program: Program) -> str:
    """``str(program)``: the plan as ``graphrnn.explain`` prints it (batch 1)."""
    return explain_program(program)


Cell.__str__ = format_cell  # type: ignore[method-assign,assignment]
Cell._repr_svg_ = cell_svg  # type: ignore[attr-defined]
Program.__str__ = program_text  # type: ignore[method-assign,assignment]
Program._repr_svg_ = program_svg  # type: ignore[attr-defined]
