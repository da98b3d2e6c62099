"""The one op enum of the IR and the group sets that passes test membership against.

Few members on purpose: frontend ideas (Reshape+SplitTable, Narrow, MulConstant, Dropout, ...)
are lowered to these, so every pass and backend handles a small closed set.
"""

from __future__ import annotations

from enum import Enum, auto


class Ops(Enum):
    # leaves
    INPUT = auto()   # per-step input x_t, arg = name
    STATE = auto()   # recurrent state (h_{t-1}), arg = name
    PARAM = auto()   # learned parameter, arg = name
    CONST = auto()   # constant filled to the node's shape, arg = float value

    # the only contraction: (M, K) @ (K, N); arg = (trans_a, trans_b)
    MATMUL = auto()

    # elementwise unary
    NEG = auto()
    EXP = auto()
    LOG = auto()
    TANH = auto()
    SIGMOID = auto()
    RELU = auto()
    SOFTPLUS = auto()
    SQRT = auto()
    STEP = auto()    # Heaviside: 1 where x > 0 else 0 (relu's derivative)

    # elementwise binary
    ADD = auto()
    SUB = auto()
    MUL = auto()
    DIV = auto()
    MAX = auto()
    CMPGT = auto()   # 1.0 where a > b else 0.0

    # elementwise ternary
    WHERE = auto()   # c != 0 ? a : b

    # reductions: arg = (kind in {"sum", "max"}, axis in {0, 1}); keepdims
    REDUCE = auto()

    # layout, all along the feature axis (axis 1) unless stated
    SLICE = auto()   # arg = (start, stop)
    CONCAT = auto()  # concatenation of the sources along axis 1
    EXPAND = auto()  # broadcast a size-1 axis; arg = the new shape
    GATHER = auto()  # rows of a table: src = (table (V, E), ids (B, 1) int64)
    SCATTER = auto() # gather's transpose: src = (ids, values (B, E)), arg = V -> (V, E)

    # structure
    FUSED = auto()   # a kernel: arg = ScalarProgram, src = its inputs; outputs read with GET
    GET = auto()     # arg = index of an output of a multi-output node
    SINK = auto()    # ties several outputs into one root


class GroupOp:
    Leaf = frozenset({Ops.INPUT, Ops.STATE, Ops.PARAM, Ops.CONST})
    Unary = frozenset({Ops.NEG, Ops.EXP, Ops.LOG, Ops.TANH, Ops.SIGMOID, Ops.RELU,
                       Ops.SOFTPLUS, Ops.SQRT, Ops.STEP})
    Binary = frozenset({Ops.ADD, Ops.SUB, Ops.MUL, Ops.DIV, Ops.MAX, Ops.CMPGT})
    Ternary = frozenset({Ops.WHERE})
    Elementwise = Unary | Binary | Ternary
    Commutative = frozenset({Ops.ADD, Ops.MUL, Ops.MAX})
    Layout = frozenset({Ops.SLICE, Ops.CONCAT, Ops.EXPAND, Ops.GATHER, Ops.SCATTER})
    Contraction = frozenset({Ops.MATMUL, Ops.SCATTER})
    # never part of a fused elementwise kernel
    Unfusable = frozenset({Ops.MATMUL, Ops.REDUCE, Ops.CONCAT, Ops.GATHER, Ops.SCATTER,
                           Ops.FUSED, Ops.GET, Ops.SINK}) | Leaf
    # zero derivative everywhere it exists
    NonDifferentiable = frozenset({Ops.STEP, Ops.CMPGT})
