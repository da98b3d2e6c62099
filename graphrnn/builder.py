"""Cells as plain Python code on symbolic tensors (operator overloading).

The operator sugar lives in the core so that the zoo (``graphrnn.cells``) is written on the core
alone; ``frontends.trace`` (``graphrnn.trace``) is its public name and re-exports it.

    from frontends.trace import CellBuilder, sigmoid, tanh

    cb = CellBuilder("lstm", dtype="float32")
    x = cb.input("x", 10)
    h, c = cb.state("h", 20), cb.state("c", 20)
    z = cb.linear(x, 80, "W_x", bias=False) + cb.linear(h, 80, "W_h")
    i, f, o, g = sigmoid(z[:, 0:20]), ...
    c2 = f * c + i * g
    cell = cb.build(outputs=[h2], next_states={"h": h2, "c": c2})

``+ - * /`` are elementwise, ``@`` is a matmul, ``x[:, a:b]`` slices features, numbers broadcast.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from graphrnn.errors import GraphError
from graphrnn.ir import Cell, Node, apply, call, frontend_scope, input_, param, state
from graphrnn.ops import Ops


def sigmoid(x: Node) -> Node: return call(Ops.SIGMOID, x)
def tanh(x: Node) -> Node: return call(Ops.TANH, x)
def relu(x: Node) -> Node: return call(Ops.RELU, x)
def exp(x: Node) -> Node: return call(Ops.EXP, x)
def log(x: Node) -> Node: return call(Ops.LOG, x)
def softplus(x: Node) -> Node: return call(Ops.SOFTPLUS, x)
def sqrt(x: Node) -> Node: return call(Ops.SQRT, x)
def maximum(a: Any, b: Any) -> Node: return call(Ops.MAX, a, b)
def where(c: Any, a: Any, b: Any) -> Node: return call(Ops.WHERE, c, a, b)


def concat(parts: Sequence[Node]) -> Node:
    """``[a, b]`` along the features (the lectures' ``W · [h_{t-1}, x_t]``)."""
    return apply(Ops.CONCAT, *parts)


def reduce_sum(x: Node, axis: int = 1) -> Node:
    return apply(Ops.REDUCE, x, arg=("sum", axis))


def reduce_max(x: Node, axis: int = 1) -> Node:
    return apply(Ops.REDUCE, x, arg=("max", axis))


FUNCTIONS = {"sigmoid": sigmoid, "tanh": tanh, "relu": relu, "exp": exp, "log": log,
             "softplus": softplus, "sqrt": sqrt, "max": maximum, "where": where}


class CellBuilder:
    """Declares leaves with sizes and dtype, then builds a Cell from the result nodes."""

    def __init__(self, name: str = "cell", dtype: str = "float32") -> None:
        self.name = name
        self.dtype = dtype
        self.inputs: list[Node] = []
        self.states: list[Node] = []
        self.frozen: set[str] = set()
        self._scope = frontend_scope("trace")

    def input(self, name: str, size: int) -> Node:
        with self._scope:
            n = input_(name, size, self.dtype)
        self.inputs.append(n)
        return n

    def state(self, name: str, size: int) -> Node:
        with self._scope:
            n = state(name, size, self.dtype)
        self.states.append(n)
        return n

    def param(self, name: str, shape: tuple[int, int], frozen: bool = False) -> Node:
        """A parameter; ``frozen=True``: not trained (no gradient, ``Cell.frozen``)."""
        with self._scope:
            p = param(name, shape, self.dtype)
        if frozen:
            self.frozen.add(name)
        return p

    def linear(self, x: Node, out: int, name: str, bias: bool = True,
               frozen: bool = False) -> Node:
        """``x @ W_name (+ b_name)``: W is (in, out), b is (1, out); ``frozen`` freezes both."""
        with self._scope:
            y = x @ self.param(name, (int(x.shape[1]), out), frozen)
            if bias:
                y = y + self.param("b" + name[1:] if name.startswith("W") else name + "_b",
                                   (1, out), frozen)
        return y

    def build(self, outputs: Sequence[Node], next_states: Mapping[str, Node] | Sequence[Node],
              output_names: Sequence[str] | None = None) -> Cell:
        if isinstance(next_states, Mapping):
            names = [s.arg for s in self.states]
            extra = set(next_states) - set(names)
            if extra:
                raise GraphError(f"next_states names unknown states {sorted(extra)}; the states "
                                 f"are {names}")
            missing = [n for n in names if n not in next_states]
            if missing:
                raise GraphError(f"no next state given for {missing}")
            nxt = [next_states[n] for n in names]
        else:
            nxt = list(next_states)
        cell = Cell.make(self.inputs, self.states, outputs, nxt, self.name, output_names)
        # a frozen parameter the outputs do not reach is not part of the cell
        return cell.with_frozen(self.frozen & set(cell.param_shapes())) if self.frozen else cell
