"""The trace frontend: cells as Python operators on nodes (``graphrnn.trace``).

    from frontends.trace import CellBuilder, sigmoid, tanh

The builder itself is ``graphrnn.builder`` (the zoo in the core is written with it); this module
is its public name.
"""

from __future__ import annotations

from graphrnn.builder import (
    FUNCTIONS,
    CellBuilder,
    concat,
    exp,
    log,
    maximum,
    reduce_max,
    reduce_sum,
    relu,
    sigmoid,
    softplus,
    sqrt,
    tanh,
    where,
)

__all__ = ["FUNCTIONS", "CellBuilder", "concat", "exp", "log", "maximum", "reduce_max",
           "reduce_sum", "relu", "sigmoid", "softplus", "sqrt", "tanh", "where"]
