"""Elementwise math, defined once: each op's sympy definition, numpy implementation and VJP.

This table is the single source of truth for elementwise ops. The reference interpreter runs the
numpy column, autodiff uses the VJP column (or ``sympy.diff`` of the definition where an op has no
hand-written rule), and fused kernels are built from the sympy column. A hand-written VJP reuses
the forward output (``y*(1-y)``, ``1-y**2``); ``tests/test_scalar.py`` proves each one equal to
``sympy.diff`` of the definition.

A VJP rule is written once against a tiny namespace ``F`` and ordinary operators, so the same rule
runs on IR nodes (autodiff) and on sympy symbols (the proof).

Kinks and ties, one convention on every backend (PyTorch's and JAX's): ``relu'(0) = step(0) = 0``;
at a tie ``max(a, b)`` sends ``g/2`` to each operand, so ``min(a, b) = -max(-a, -b)`` does too and
``|x| = max(x, -x)`` has derivative ``g/2 - g/2 = 0`` at 0 (sign(0) = 0). Written with ``cmpgt`` in
both directions, the rule does not depend on operand order (simplify reorders commutative ops).
A REDUCE max splits ``g`` evenly between the elements equal to the max (``autodiff.py``).

Non-finite values follow IEEE for the graph as written, on every backend: ``ref`` evaluates it
literally and the optimizer's rewrites keep NaN and inf where they would appear (``x*0`` is folded
only for provably finite x, see ``simplify.py``). SOFTPLUS is kept whole and lowered as
``max(x, 0) + log1p(exp(-|x|))``, so it neither overflows nor has a NaN derivative.

``ScalarProgram`` is what a fused kernel carries: SSA over the elementwise ops plus CONST, with no
shapes, no sympy and no nodes, so every backend can print it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import sympy

from .ops import GroupOp, Ops

# ---- sympy functions that stay primitive (a backend lowers them its own way) ----

class sigmoid(sympy.Function):  # noqa: N801 - sympy naming
    """1 / (1 + exp(-x)), kept whole so kernels can use a fast sigmoid."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        s = sigmoid(self.args[0])
        return s * (1 - s)

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_Number:
            return 1 / (1 + sympy.exp(-x))
        return None

    def _eval_rewrite_as_exp(self, x: sympy.Expr, **kw: Any) -> sympy.Expr:
        return 1 / (1 + sympy.exp(-x))


class softplus(sympy.Function):  # noqa: N801 - sympy naming
    """log(1 + exp(x)), kept whole: every backend lowers it as ``max(x, 0) + log1p(exp(-|x|))``,
    which neither overflows for large x nor loses the tail for very negative x."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sigmoid(self.args[0])

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_Number:
            return sympy.log(1 + sympy.exp(x))
        return None

    def _eval_rewrite_as_exp(self, x: sympy.Expr, **kw: Any) -> sympy.Expr:
        return sympy.log(1 + sympy.exp(x))


class step(sympy.Function):  # noqa: N801
    """Heaviside step with step(0) = 0, the derivative of relu."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sympy.Integer(0)

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_Number:
            return sympy.Integer(1) if x > 0 else sympy.Integer(0)
        return None

    def _eval_rewrite_as_Heaviside(self, x: sympy.Expr, **kw: Any) -> sympy.Expr:  # noqa: N802
        return sympy.Heaviside(x, 0)


class relu(sympy.Function):  # noqa: N801
    """max(x, 0)."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return step(self.args[0])

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_Number:
            return sympy.Max(x, 0)
        return None

    def _eval_rewrite_as_Max(self, x: sympy.Expr, **kw: Any) -> sympy.Expr:  # noqa: N802
        return sympy.Max(x, 0)


class cmpgt(sympy.Function):  # noqa: N801
    """1 where a > b else 0; zero derivative."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sympy.Integer(0)

    @classmethod
    def eval(cls, a: sympy.Expr, b: sympy.Expr) -> sympy.Expr | None:
        if a.is_Number and b.is_Number:
            return sympy.Integer(1) if a > b else sympy.Integer(0)
        return None


class where(sympy.Function):  # noqa: N801
    """c != 0 ? a : b."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        c, a, b = self.args
        if argindex == 1:
            return sympy.Integer(0)
        if argindex == 2:
            return where(c, 1, 0)
        return where(c, 0, 1)

    @classmethod
    def eval(cls, c: sympy.Expr, a: sympy.Expr, b: sympy.Expr) -> sympy.Expr | None:
        if c.is_Number:
            return a if c != 0 else b
        if a == b:
            return a
        return None


class SympyF:
    """The namespace VJP rules use, over sympy expressions."""
    exp = staticmethod(sympy.exp)
    log = staticmethod(sympy.log)
    tanh = staticmethod(sympy.tanh)
    sqrt = staticmethod(sympy.sqrt)
    sigmoid = sigmoid
    softplus = softplus
    step = step
    relu = relu
    cmpgt = cmpgt
    where = where

    @staticmethod
    def zeros_like(x: Any) -> Any:
        return sympy.Integer(0)


# ---- numpy implementations (the reference interpreter's meaning of each op) ----

def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    # e = exp(-|x|) never overflows: 1/(1+e) for x >= 0 and e/(1+e) for x < 0 are within 2 ulp
    # in both tails (exp(-logaddexp(0, -x)) multiplied the log's rounding by |x|: 7 ulp at -13)
    x = np.asarray(x)
    with np.errstate(invalid="ignore"):   # NaN in, NaN out
        e = np.exp(-np.abs(x))
        return (np.where(x < 0, e, 1) / (1 + e)).astype(x.dtype, copy=False)


def _np_step(x: np.ndarray) -> np.ndarray:
    return (x > 0).astype(x.dtype)


def _np_cmpgt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a > b).astype(np.result_type(a, b))


def _np_where(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(c != 0, a, b).astype(np.result_type(a, b), copy=False)


def _np_softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x).astype(x.dtype, copy=False)


def _max_vjp(F: Any, g: Any, y: Any, a: Any, b: Any) -> tuple[Any, Any]:
    # at a tie the cotangent is split evenly (PyTorch's and JAX's convention), so the result does
    # not depend on operand order, which simplify's canonical order changes
    wa = 0.5 * (1 + F.cmpgt(a, b) - F.cmpgt(b, a))
    return g * wa, g * (1 - wa)


@dataclass(frozen=True)
class OpDef:
    op: Ops
    arity: int
    sym: Callable[..., sympy.Expr]
    np: Callable[..., np.ndarray]
    # vjp(F, g, y, *xs) -> one cotangent per input (None = zero); None: use sympy.diff
    vjp: Callable[..., tuple[Any, ...]] | None


_x, _y, _z = sympy.symbols("x y z", real=True)

TABLE: dict[Ops, OpDef] = {d.op: d for d in [
    OpDef(Ops.NEG, 1, lambda x: -x, np.negative, lambda F, g, y, x: (-g,)),
    OpDef(Ops.EXP, 1, sympy.exp, np.exp, lambda F, g, y, x: (g * y,)),
    OpDef(Ops.LOG, 1, sympy.log, np.log, lambda F, g, y, x: (g / x,)),
    OpDef(Ops.TANH, 1, sympy.tanh, np.tanh, lambda F, g, y, x: (g * (1 - y * y),)),
    OpDef(Ops.SIGMOID, 1, sigmoid, _np_sigmoid, lambda F, g, y, x: (g * (y * (1 - y)),)),
    OpDef(Ops.RELU, 1, relu, lambda x: np.maximum(x, 0), lambda F, g, y, x: (g * F.step(x),)),
    OpDef(Ops.SOFTPLUS, 1, softplus, _np_softplus, lambda F, g, y, x: (g * F.sigmoid(x),)),
    OpDef(Ops.SQRT, 1, sympy.sqrt, np.sqrt, lambda F, g, y, x: (g * 0.5 / y,)),
    OpDef(Ops.STEP, 1, step, _np_step, lambda F, g, y, x: (None,)),
    OpDef(Ops.ADD, 2, lambda a, b: a + b, np.add, lambda F, g, y, a, b: (g, g)),
    OpDef(Ops.SUB, 2, lambda a, b: a - b, np.subtract, lambda F, g, y, a, b: (g, -g)),
    OpDef(Ops.MUL, 2, lambda a, b: a * b, np.multiply, lambda F, g, y, a, b: (g * b, g * a)),
    OpDef(Ops.DIV, 2, lambda a, b: a / b, np.divide, lambda F, g, y, a, b: (g / b, -(g * y) / b)),
    OpDef(Ops.MAX, 2, sympy.Max, np.maximum, _max_vjp),
    OpDef(Ops.CMPGT, 2, cmpgt, _np_cmpgt, lambda F, g, y, a, b: (None, None)),
    OpDef(Ops.WHERE, 3, where, _np_where,
          lambda F, g, y, c, a, b: (None, F.where(c, g, F.zeros_like(g)),
                                    F.where(c, F.zeros_like(g), g))),
]}

assert set(TABLE) == set(GroupOp.Elementwise), "every elementwise op needs a row"


def sympy_vjp(op: Ops) -> list[sympy.Expr]:
    """d(definition)/d(input_i) for each input, in terms of the input symbols."""
    syms = sympy.symbols(f"a0:{TABLE[op].arity}", real=True)
    expr = TABLE[op].sym(*syms)
    return [sympy.diff(expr, s) for s in syms]


# ---- scalar programs: the body of a fused kernel ----

@dataclass(frozen=True)
class ScalarProgram:
    """SSA over elementwise ops. Values 0..n_inputs-1 are the kernel's inputs; instruction k
    defines value n_inputs + k as ``op(*args)`` (args are value indices) or, for ``Ops.CONST``,
    the float ``const``. ``outputs`` lists the values the kernel writes, in order."""
    n_inputs: int
    instrs: tuple[tuple[Ops, tuple[int, ...], float | None], ...]
    outputs: tuple[int, ...]

    def __post_init__(self) -> None:
        for k, (op, args, _c) in enumerate(self.instrs):
            if op is not Ops.CONST and op not in GroupOp.Elementwise:
                raise ValueError(f"scalar program: {op.name} is not a scalar op")
            if any(a >= self.n_inputs + k or a < 0 for a in args):
                raise ValueError(f"scalar program: instruction {k} reads an undefined value")
        if any(o >= self.n_inputs + len(self.instrs) for o in self.outputs):
            raise ValueError("scalar program: output names an undefined value")

    def __str__(self) -> str:
        lines = [f"  v{i} = in{i}" for i in range(self.n_inputs)]
        for k, (op, args, c) in enumerate(self.instrs):
            rhs = repr(c) if op is Ops.CONST else f"{op.name.lower()} " + ", ".join(
                f"v{a}" for a in args)
            lines.append(f"  v{self.n_inputs + k} = {rhs}")
        lines.append("  out " + ", ".join(f"v{o}" for o in self.outputs))
        return "\n".join(lines)


def run_scalar_program(prog: ScalarProgram, inputs: list[np.ndarray],
                       dtype: Any) -> list[np.ndarray]:
    """The meaning of a ScalarProgram, on numpy arrays of one shape."""
    vals: list[Any] = list(inputs)
    for op, args, c in prog.instrs:
        if op is Ops.CONST:
            vals.append(np.asarray(c, dtype=dtype))
        else:
            vals.append(TABLE[op].np(*[vals[a] for a in args]))
    shape = np.broadcast_shapes(*[np.shape(v) for v in inputs]) if inputs else ()
    return [np.broadcast_to(np.asarray(vals[o], dtype=dtype), shape).copy()
            for o in prog.outputs]
