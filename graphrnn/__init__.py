"""graphrnn: declare an RNN cell as equations, differentiate it, optimize it, compile it.

    from graphrnn import nn                      # the nngraph frontend (loaded lazily)
    cell = graphrnn.cells.lstm(10, 20)           # or your own cell
    cc = graphrnn.compile(cell, backend="ref")   # "ref", "llvm", "cuda"

``graphrnn`` never imports ``codegen`` or ``frontends`` at import time: backends are looked up by
name when a cell is compiled, frontends when first touched.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import display as _display  # noqa: F401 - attaches str() and Jupyter views
from .api import CompiledCell, Grads, Residuals, compile, init_params
from .autodiff import BackwardCell, backward_cell, vjp
from .errors import (
    BackendError,
    EquationError,
    EquationWarning,
    GraphError,
    GraphRNNError,
    ModuleUsageError,
    RuntimeInputError,
    ShapeError,
)
from .explain import explain
from .ir import B, Cell, Node, apply, const, input_, param, state
from .ops import GroupOp, Ops

__version__ = "0.1.0"

# name -> module that provides it, imported on first use
_LAZY = {
    "nn": "graphrnn.nn",  # each replaces itself with its frontends module
    "equations": "graphrnn.equations",
    "trace": "graphrnn.trace",
    "cells": "graphrnn.cells",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        globals()[name] = mod
        return mod
    raise AttributeError(f"module 'graphrnn' has no attribute {name!r}")


__all__ = ["B", "BackendError", "explain", "BackwardCell", "Cell", "CompiledCell", "EquationError",
           "EquationWarning", "GraphError", "GraphRNNError", "Grads", "GroupOp",
           "ModuleUsageError", "Node", "Ops", "Residuals", "RuntimeInputError", "ShapeError",
           "apply", "backward_cell", "compile", "const", "init_params", "input_", "param", "state",
           "vjp", "__version__"]
