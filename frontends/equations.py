"""Cells written as text equations, parsed by a whitelist over Python's ``ast``.

    # cell: gru
    input x: 10
    state h: 20
    r = sigmoid(W_xr @ x + W_hr @ h + b_r)
    z = sigmoid(W_xz @ x + W_hz @ h + b_z)
    hc = tanh(W_c @ [r * h, x] + b_c)
    h_next = (1 - z) * h + z * hc
    output h_next

``cell_from_equations(text, inputs={"x": 10}, states={"h": 20})`` or ``parse_file(path)`` turn
such text into a ``graphrnn.ir.Cell``.

The text, line by line
----------------------
- ``# ...`` is a comment. ``# cell: NAME`` (or the line ``cell NAME``) names the cell.
- Header lines declare what the equations cannot say; each may appear anywhere:
    ``input x: 10, m: 1``     per-step inputs and their feature sizes
    ``state h: 20, c: 20``    recurrent states (h_{t-1}, ...) and their sizes
    ``param W: 20 x 10``      a parameter's shape (also ``(20, 10)``); ``param b: 20`` is (1, 20)
    ``param W: 20 x 20 frozen``  a parameter that is not trained (no gradient is computed, the
                              optimizers expect none: an echo-state reservoir); ``param W:
                              frozen`` leaves its shape to inference
    ``output y, h_next``      the cell's outputs (default: the first state's next value)
    ``next h: hn``            the next value of state h (default: the variable ``h_next``)
    ``const beta: 1.0``       a named constant, as the equation ``beta = 1.0``
  Sizes given as arguments (``inputs=``, ``states=``, ``params=``, ``outputs=``,
  ``next_states=``) are merged with the header; they must agree where both speak.
- Every other line is one equation ``NAME = EXPRESSION``, evaluated top to bottom within one
  time step. An expression is made of
    ``W @ v``            matrix times a column vector (math convention): W is a parameter of shape
                         (out, in), v has ``in`` features; the IR node is
                         ``MATMUL(v, W, arg=(False, True))`` -> (B, out), PyTorch's layout
    ``a + b, a - b, a * b, a / b, -a``   elementwise; numbers broadcast (``1 - z``)
    ``a ** 2``, ``a ** 0.5``             square and square root
    ``[a, b]``           concatenation along the features (the lectures' ``W · [h, x]``)
    ``f(a)``             f in sigmoid, tanh, relu, exp, log, softplus, sqrt, abs, square
    ``max(a, b)``, ``min(a, b)``         elementwise
    ``sum(v)``, ``mean(v)``, ``max(v)``, ``min(v)``, ``var(v)``, ``std(v)``, ``logsumexp(v)``
                         reductions over the features: one value per example, (B, 1), that
                         broadcasts back where it meets a (B, n) value (``v - mean(v)``; the IR
                         gets an explicit EXPAND). ``var`` is the biased (population) variance,
                         computed in two passes (centre, then square); ``std(v) = sqrt(var(v))``
                         with no epsilon (its gradient is infinite where all features are
                         equal); ``logsumexp`` is shifted by the row max, so it never overflows.
                         Reductions need a per-example argument (not parameters alone).
    ``layer_norm(v)``    ``(v - mean(v)) / sqrt(var(v) + 1e-5)``; ``layer_norm(v, eps)`` with
                         a positive number eps. Gain and bias are ordinary parameters:
                         ``g * layer_norm(v) + b``
    ``v[a:b]``           features a..b-1 of v (a SLICE); the bounds are non-negative integer
                         literals or named constants, ``v[a:]`` runs to the end; checked
                         against v's size once it is known
    ``i, f, g, o = split(z, 4)``  on its own line: z's features in equal consecutive parts
                         (one SLICE each); z's size must be a multiple of the count
  Numbers fold: ``2 * 0.5`` is the constant 1. A name bound to a number (``beta = 1.0``,
  ``half = 1 / 2``) is a named constant: that number wherever it is used, never a learned
  parameter; it cannot be an output or a next value.

Parameters are the free names: those that are neither inputs, states nor assigned above. A name
on the left of ``@`` is a weight matrix (out, in); any other free name is a vector (1, n) that is
broadcast over the batch (a bias, a peephole weight). Their sizes are inferred from use by
unification: ``W_hr @ h + b_r`` says that W_hr takes h's size and that its out size equals b_r's
size, ``r * h`` says r has h's size, ``[a, b]`` sums sizes, ``h_next`` has h's size; this is
iterated to a fixed point. A size that stays unknown is an error naming the parameter; pass
``params={"W": (out, in)}`` or a ``param`` line. A free name spelt almost like a defined name
(``h_nxt`` for ``h_next``) is taken for a typo and rejected unless declared as a parameter.

Safety: the text is only ever parsed (``ast.parse``), one line at a time, and walked through a
whitelist; nothing is ``eval``'d, ``exec``'d, compiled to run, or handed to ``sympify``. Attribute
access, subscripts other than feature slices, lambdas, imports, keyword arguments, comparisons,
unknown functions, undefined names, reassignment, use of a name before its assignment and shape
mismatches are rejected with an ``EquationError`` naming the file, the line, the column of the
token, and a hint.

Limits, each a declaration error naming the line, what was expected and what was received:
numbers are finite and at most float32's largest (3.4028235e38) in magnitude, also after folding
(``2 * 1e38``); no division by a number that is (or folds to) zero; every feature size and each
side of a parameter is at most 2**31 - 1 (``MAX_SIZE``), a parameter holds at most 2**48
elements; an expression is at most 200 levels deep (``MAX_NESTING``; a sum of n terms is n
levels); outputs and next values must be per-example (not computed from parameters alone).
Parsing is linear in the text (10,000 equations in about 1.5 s).

Names are read as Python reads identifiers, NFKC-normalized (``ℎ`` is ``h``), in equations,
header lines and arguments alike. Non-ASCII names are fine (backends mangle symbol names,
``codegen/mangle.py``). Two warnings (``graphrnn.errors.EquationWarning`` subclasses, reported at
the equation's file and line) catch what parses but is probably not meant: ``UnusedNameWarning``
for an input or state nothing depends on, and ``ConfusableNameWarning`` for names that differ
only by lookalike letters of other scripts (Cyrillic ``һ`` and Latin ``h``, Greek ``α`` and
``a``), which would otherwise make a learned parameter of a misspelt state.

Every IR node built from an equation records that equation's line as its creation site, so later
errors (in autodiff, a backend, the interpreter) point back to the equation text.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphrnn.errors import (
    ConfusableNameWarning,
    EquationError,
    GraphRNNError,
    ShapeError,
    UndefinedNameError,
    UnusedNameWarning,
)
from graphrnn.ir import (
    FLOATS,
    B,
    Cell,
    Node,
    Site,
    apply,
    call,
    frontend_scope,
    input_,
    param,
    set_site,
    state,
    toposort,
)
from graphrnn.ops import Ops


def _neg(v: Any) -> Any:
    return call(Ops.NEG, v) if isinstance(v, Node) else -v


# layer_norm(v) = (v - mean(v)) / sqrt(var(v) + LAYER_NORM_EPS), as torch.nn.LayerNorm
LAYER_NORM_EPS = 1e-5

# name -> (arity or the allowed argument counts, builder on IR nodes / numbers)
FUNCTIONS: dict[str, tuple[int, Callable[..., Node]]] = {
    "sigmoid": (1, lambda a: call(Ops.SIGMOID, a)),
    "tanh": (1, lambda a: call(Ops.TANH, a)),
    "relu": (1, lambda a: call(Ops.RELU, a)),
    "exp": (1, lambda a: call(Ops.EXP, a)),
    "log": (1, lambda a: call(Ops.LOG, a)),
    "softplus": (1, lambda a: call(Ops.SOFTPLUS, a)),
    "sqrt": (1, lambda a: call(Ops.SQRT, a)),
    "abs": (1, lambda a: call(Ops.MAX, a, call(Ops.NEG, a))),
    "square": (1, lambda a: call(Ops.MUL, a, a)),
    # one argument: the row's max/min over the features (a reduction); two: elementwise
    "max": ((1, 2), lambda a, b=None: _rmax(a) if b is None else call(Ops.MAX, a, b)),
    "min": ((1, 2), lambda a, b=None: _neg(_rmax(_neg(a))) if b is None
            else call(Ops.NEG, call(Ops.MAX, _neg(a), _neg(b)))),
    "sum": (1, lambda a: _rsum(a)),
    "mean": (1, lambda a: _mean(a)),
    "var": (1, lambda a: _var(a)),
    "std": (1, lambda a: call(Ops.SQRT, _var(a))),
    "logsumexp": (1, lambda a: _logsumexp(a)),
    "layer_norm": ((1, 2), lambda a, eps=LAYER_NORM_EPS: _layer_norm(a, eps)),
    "split": (2, lambda a, k: a),  # only in 'i, f = split(z, 2)'; lowered by the checker
}
# The functions that reduce over the features to one value per example, (B, 1); that value
# broadcasts back where it meets a (B, n) one (the builder inserts the EXPAND, as for biases).
REDUCTIONS = frozenset({"sum", "mean", "var", "std", "logsumexp"})


def _reduces(fn: str, nargs: int) -> bool:
    return fn in REDUCTIONS or (fn in ("max", "min") and nargs == 1)


def _rsum(a: Node) -> Node:
    return apply(Ops.REDUCE, a, arg=("sum", 1))


def _rmax(a: Node) -> Node:
    return apply(Ops.REDUCE, a, arg=("max", 1))


def _mean(a: Node) -> Node:
    return call(Ops.MUL, _rsum(a), 1.0 / int(a.shape[1]))


def _var(a: Node) -> Node:
    # two passes (centre, then square): E[x^2] - E[x]^2 cancels catastrophically
    d = call(Ops.SUB, a, _mean(a))
    return _mean(call(Ops.MUL, d, d))


def _logsumexp(a: Node) -> Node:
    # shifted by the row max so exp never overflows; the shift's gradient cancels exactly
    m = _rmax(a)
    return call(Ops.ADD, m, call(Ops.LOG, _rsum(call(Ops.EXP, call(Ops.SUB, a, m)))))


def _layer_norm(a: Node, eps: float) -> Node:
    # hash-consing makes _var's centred value the very node divided here
    return call(Ops.DIV, call(Ops.SUB, a, _mean(a)), call(Ops.SQRT, call(Ops.ADD, _var(a), eps)))

_BINOPS = {ast.Add: Ops.ADD, ast.Sub: Ops.SUB, ast.Mult: Ops.MUL, ast.Div: Ops.DIV}
_HEADER = re.compile(r"^(input|inputs|state|states|param|params|output|outputs|next|cell|const"
                     r"|consts)"
                     r"\s+([^\W\d].*)$")
_CELL_COMMENT = re.compile(r"^#\s*cell\s*:\s*(\S+)\s*$")
_TYPO_CUTOFF = 0.8
# The largest feature size (and each side of a parameter): 2**31 - 1, the int32 sizes BLAS,
# cuBLAS and the CUDA kernels take. A parameter also holds at most 2**48 elements, so its byte
# count fits an int64 with room to spare. Anything larger is a typo, not a model.
MAX_SIZE = 2**31 - 1
MAX_PARAM_ELEMENTS = 2**48
# The largest magnitude of a number in an equation: float32's largest finite value, since a
# cell declared once may be compiled at float32 (1e39 there would silently be inf).
MAX_CONSTANT = 3.4028234663852886e38
# The deepest expression one equation may hold (a sum of n terms is n levels deep). The checker
# and the IR builder recurse a few frames per level; 200 levels stay well inside Python's
# default recursion limit wherever the parser is called from. Deeper is rejected up front.
MAX_NESTING = 200
# Up to this many defined names a free name is compared with every one of them (difflib);
# beyond it only with the names one edit away (``_NearNames``), which keeps a generated file of
# 10,000 equations linear instead of 10,000 x 10,000 comparisons.
_TYPO_EXHAUSTIVE = 200

# what the common rejected constructs are called in messages, with a hint
_REJECTED: dict[type, tuple[str, str]] = {
    ast.Attribute: ("attribute access", "write plain names; functions are called directly, "
                    "e.g. tanh(a), and W @ x needs no .T"),
    ast.Subscript: ("subscripts", "only feature slices v[a:b] with constant integer bounds "
                    "0 <= a < b are allowed (or i, f = split(z, 2))"),
    ast.Lambda: ("lambdas", "write the expression inline"),
    ast.Compare: ("comparisons", "comparisons have no gradient; use relu, max(a, b) or min(a, b)"),
    ast.BoolOp: ("'and'/'or'", "use elementwise * and max(a, b)"),
    ast.IfExp: ("conditional expressions", "use max(a, b), min(a, b) or relu"),
    ast.Tuple: ("tuples", "write [a, b] to concatenate along the features (a tuple is only a "
                "left side: i, f = split(z, 2))"),
    ast.Dict: ("dicts", "only numbers, names, operators, [a, b] and known functions are allowed"),
    ast.Set: ("sets", "write [a, b] to concatenate along the features"),
    ast.ListComp: ("comprehensions", "write [a, b] to concatenate along the features"),
    ast.GeneratorExp: ("generator expressions", "write the expression out"),
    ast.Starred: ("starred expressions", "list the parts: [a, b]"),
    ast.Await: ("await", "equations are plain math"),
    ast.NamedExpr: ("':='", "write one assignment per line"),
    ast.JoinedStr: ("f-strings", "equations are plain math"),
}


@dataclass
class _Line:
    lineno: int
    text: str
    indent: int = 0

    def error(self, msg: str, filename: str, node: ast.AST | None = None,
              col: int | None = None, cls: type[EquationError] = EquationError
              ) -> EquationError:
        if node is not None and hasattr(node, "col_offset"):
            col = self.indent + node.col_offset
        return cls(msg, filename, self.lineno, col, self.text)

    def segment(self, node: ast.AST, whole: bool = False) -> str:
        seg = ast.get_source_segment(self.text[self.indent:], node)
        seg = seg if seg is not None else ast.dump(node)
        # messages quote the token, not a 100 kB expression
        return seg if whole or len(seg) <= 80 else f"{seg[:50]} ... {seg[-20:]}"


@dataclass
class _Expr:
    """A checked expression: kind in name, num, matmul, bin, neg, pow, call, concat, slice,
    split. ``row``: one value per example, (B, 1), from a reduction; it broadcasts over the
    features where it meets a (B, n) value instead of unifying sizes with it."""
    kind: str
    node: ast.AST
    line: _Line
    dim: int | None = None           # size variable; None for a number
    value: Any = None                # num: the float; name: the name; bin: Ops; call: fn name
    parts: list[_Expr] = field(default_factory=list)
    row: bool = False


@dataclass
class _Param:
    name: str
    role: str                        # "matrix" (left of @) or "vector"
    out: int                         # size variables: shape (out, in) or (1, out)
    inn: int | None
    first: tuple[_Line, ast.AST]
    declared: bool = False


class _Dims:
    """Union-find over feature sizes; a class may be bound to a known int."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.value: list[int | None] = []

    def new(self, value: int | None = None) -> int:
        self.parent.append(len(self.parent))
        self.value.append(value)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def get(self, i: int) -> int | None:
        return self.value[self.find(i)]

    def unify(self, a: int, b: int) -> tuple[int, int] | None:
        """Merge two classes; on a conflict return the two known sizes and merge nothing."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        va, vb = self.value[ra], self.value[rb]
        if va is not None and vb is not None and va != vb:
            return va, vb
        self.parent[rb] = ra
        self.value[ra] = va if va is not None else vb
        return None


# Letters of other scripts that look like Latin ones (the common cases of Unicode's
# confusables.txt for Cyrillic and Greek); a name's skeleton replaces them, so two names with one
# skeleton look alike. Compatibility forms (ℎ, h₁, ﬁ) need no entry: Python's parser already
# NFKC-normalizes identifiers, and so do header lines and arguments here.
_LOOKALIKE = str.maketrans({
    # Cyrillic
    "а": "a", "в": "B", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "һ": "h",
    "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y",
    # Greek
    "α": "a", "ο": "o", "ν": "v", "ι": "i", "κ": "k", "ρ": "p", "υ": "u", "χ": "x", "ϲ": "c",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin lookalikes of Latin letters
    "ı": "i", "ȷ": "j", "ɡ": "g",
})


def _skeleton(name: str) -> str:
    return name.translate(_LOOKALIKE)


def _foreign_letters(name: str) -> str:
    """The characters of ``name`` that the skeleton replaces, named (for the warning)."""
    odd = [ch for ch in dict.fromkeys(name) if ch.translate(_LOOKALIKE) != ch]
    return ", ".join(f"{ch!r} U+{ord(ch):04X} {unicodedata.name(ch, '?')}" for ch in odd)


class _NearNames:
    """The candidates of the typo check. Each name is filed under itself and under every
    one-character deletion of itself, so two names one insertion, deletion, substitution or
    adjacent transposition apart share a key (symmetric deletion, as in SymSpell)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(dict.fromkeys(names))
        self.index: dict[str, list[str]] = {}
        if len(self.names) > _TYPO_EXHAUSTIVE:
            for nm in self.names:
                for key in self._keys(nm):
                    self.index.setdefault(key, []).append(nm)

    @staticmethod
    def _keys(nm: str) -> set[str]:
        return {nm} | {nm[:i] + nm[i + 1:] for i in range(len(nm))}

    def close(self, nm: str) -> list[str]:
        """The defined name most like ``nm`` (difflib ratio >= _TYPO_CUTOFF), if any."""
        if len(self.names) <= _TYPO_EXHAUSTIVE:
            cands = self.names
        else:
            # get_close_matches breaks ties by the names themselves, so order is irrelevant
            cands = list({c for key in self._keys(nm) for c in self.index.get(key, ())})
        return difflib.get_close_matches(nm, cands, n=1, cutoff=_TYPO_CUTOFF)


def _nfkc(name: Any) -> Any:
    """Names as Python's parser reads them: it NFKC-normalizes identifiers (``ℎ`` is ``h``,
    ``ﬁ`` is ``fi``), so header and argument names are normalized the same way to match. (It
    rejects ``h₁``: subscript digits are not identifier characters, here neither.)"""
    return unicodedata.normalize("NFKC", name) if isinstance(name, str) else name


def _too_big(size: int) -> str | None:
    """Why a positive size is out of bounds, or None."""
    if size > MAX_SIZE:
        return f"expected at most {MAX_SIZE} (2**31 - 1) features, got {_show_int(size)}"
    return None


def _check_size(kind: str, name: str, size: Any, filename: str) -> int:
    if not isinstance(name, str) or not name.isidentifier():
        raise EquationError(f"{kind} name must be an identifier, got {_show_literal(name)!r}",
                            filename)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise EquationError(f"{kind} {name!r}: size must be a positive int, got "
                            f"{_show_value(size)}", filename)
    why = _too_big(size)
    if why:
        raise EquationError(f"{kind} {name!r}: size too large: {why}", filename)
    return size


def _digits(val: str) -> int | None:
    """An ASCII decimal literal as an int, None if it is not one (``\\d`` and str.isdigit take
    other scripts' digits, and '²'.isdigit() is True but int('²') fails)."""
    return int(val) if re.fullmatch(r"[0-9]+", val) else None


def _show_int(n: int) -> str:
    """An int for a message; str() of one past 4300 digits raises ValueError."""
    digits = int(n.bit_length() * 0.30103) + 1
    return _show_literal(str(n)) if digits < 4000 else f"an integer of about {digits} digits"


def _show_value(v: Any) -> str:
    """repr() of a user-given value for a message, shortened; repr of a 5000-digit int raises."""
    try:
        return str(_show_literal(repr(v)))
    except ValueError:
        return "an integer of thousands of digits"


def _show_literal(text: Any) -> Any:
    """A literal for a message: long ones shortened (a 400-digit number is not worth echoing)."""
    if not isinstance(text, str):
        return text
    return text if len(text) <= 40 else f"{text[:12]}...{text[-6:]} ({len(text)} characters)"


class _Parser:
    def __init__(self, text: str, filename: str, inputs: Mapping[str, int],
                 states: Mapping[str, int], params: Mapping[str, Any] | None,
                 outputs: Sequence[str] | str | None, next_states: Mapping[str, str] | None,
                 name: str | None, frozen: Sequence[str] | None = None) -> None:
        self.filename = filename
        self.dims = _Dims()
        self.inputs: dict[str, int] = {}
        self.states: dict[str, int] = {}
        self.leaf_line: dict[str, _Line] = {}
        self.param_shapes: dict[str, tuple[int, int]] = {}
        self.outputs: list[tuple[str, _Line | None]] = []
        self.next_states: dict[str, tuple[str, _Line | None]] = {}
        self.name = name
        self.equations: list[tuple[_Line, ast.Assign]] = []
        self.assigned: dict[str, _Line] = {}
        self.consts: dict[str, tuple[float, _Line]] = {}   # from 'const beta: 1.0' lines
        self.frozen: dict[str, _Line | None] = {}   # 'param W: 20 x 20 frozen', frozen=[..]

        for k, v in inputs.items():
            size = _check_size("input", k, v, filename)
            self._declare(self.inputs, "input", _nfkc(k), size, None)
        for k, v in states.items():
            size = _check_size("state", k, v, filename)
            self._declare(self.states, "state", _nfkc(k), size, None)
        for k, v in (params or {}).items():
            self._declare_param(_nfkc(k), v, None)
        if isinstance(frozen, str):
            raise EquationError(f"frozen must be a list of parameter names, got the string "
                                f"{frozen!r}; write frozen=[{frozen!r}]", filename)
        for k in frozen or ():
            if not isinstance(k, str) or not _nfkc(k).isidentifier():
                raise EquationError(f"frozen: expected parameter names, got {k!r}", filename)
            self.frozen[_nfkc(k)] = None
        if outputs is not None:
            for o in [outputs] if isinstance(outputs, str) else list(outputs):
                self.outputs.append((_nfkc(o), None))
        for s, n in (next_states or {}).items():
            self.next_states[_nfkc(s)] = (_nfkc(n), None)
        self._split_lines(text)
        self._check_assigned_leaves()

    # ---- errors ----
    def err(self, line: _Line | None, msg: str, node: ast.AST | None = None,
            col: int | None = None, cls: type[EquationError] = EquationError) -> EquationError:
        if line is None:
            return cls(msg, self.filename)
        return line.error(msg, self.filename, node, col, cls)

    # ---- declarations ----
    def _declare(self, table: dict[str, int], kind: str, name: str, size: int,
                 line: _Line | None) -> None:
        col = line.text.find(name) if line else None
        if name in FUNCTIONS:
            raise self.err(line, f"{kind} {name!r} shadows the function {name}(); pick another "
                                 "name", col=col)
        other, other_kind = ((self.states, "state") if table is self.inputs
                             else (self.inputs, "input"))
        if name in other:
            raise self.err(line, f"{kind} {name!r} is already declared as {other_kind} "
                                 f"{name!r}; inputs and states need distinct names", col=col)
        if name in table and table[name] != size:
            raise self.err(line, f"{kind} {name!r} is declared with two sizes, {table[name]} "
                                 f"and {size}", col=col)
        table[name] = size
        if line is not None:
            self.leaf_line.setdefault(name, line)

    def _declare_param(self, name: str, shape: Any, line: _Line | None) -> None:
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (1, shape)
        ok = (isinstance(shape, (tuple, list)) and len(shape) == 2
              and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape))
        if not isinstance(name, str) or not name.isidentifier() or not ok:
            raise self.err(line, f"param {name!r}: shape must be (out, in) of positive ints or "
                                 f"an int n for a vector (1, n), got {_show_value(shape)}")
        shape = (int(shape[0]), int(shape[1]))
        why = next((w for w in map(_too_big, shape) if w), None)
        if why is None and shape[0] * shape[1] > MAX_PARAM_ELEMENTS:
            why = (f"expected at most {MAX_PARAM_ELEMENTS} (2**48) elements, got {shape[0]} x "
                   f"{shape[1]} = {shape[0] * shape[1]}")
        if why:
            raise self.err(line, f"param {name!r}: shape too large: {why}",
                           col=line.text.find(name) if line else None)
        if name in self.param_shapes and self.param_shapes[name] != shape:
            raise self.err(line, f"param {name!r} is declared twice with different shapes "
                                 f"{self.param_shapes[name]} and {shape}")
        self.param_shapes[name] = shape

    def _split_lines(self, text: str) -> None:
        for lineno, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if not stripped:
                continue
            line = _Line(lineno, raw, len(raw) - len(raw.lstrip()))
            m = _CELL_COMMENT.match(stripped)
            if m:
                self._set_name(m.group(1), line)
                continue
            if stripped.startswith("#"):
                continue
            code = stripped.split("#", 1)[0].rstrip()
            m = _HEADER.match(code)
            if m:
                self._header(m.group(1), m.group(2).strip(), line)
                continue
            self._equation(line)

    def _set_name(self, name: str, line: _Line) -> None:
        name = _nfkc(name)
        if not name.isidentifier():
            raise self.err(line, f"cell name must be an identifier, got {_show_literal(name)!r}",
                           col=line.text.find(name))
        if self.name is None:
            self.name = name

    def _header(self, kw: str, rest: str, line: _Line) -> None:
        col = line.text.find(rest) if rest else line.indent
        if kw == "cell":
            self._set_name(rest, line)
            return
        items = [s.strip() for s in _split_top(rest)]
        if kw in ("output", "outputs"):
            for it in items:
                it = _nfkc(it)
                if not it.isidentifier():
                    raise self.err(line, f"output: expected a name, got {_show_literal(it)!r}",
                                   col=col)
                self.outputs.append((it, line))
            return
        for it in items:
            # [^\s:] rather than \w: identifiers may hold characters \w does not match, such as
            # the combining accent of an 'état' typed decomposed (e + U+0301); NFKC composes it
            m = re.fullmatch(r"([^\s:]+)\s*:\s*(.+)", it)
            if not m or not m.group(1).isidentifier():
                example = {"next": "next h: hn", "param": "param W: 20 x 10",
                           "params": "param W: 20 x 10"}.get(kw, f"{kw.rstrip('s')} x: 10")
                raise self.err(line, f"malformed {kw} line: expected NAME: SIZE items, got "
                                     f"{_show_literal(it)!r}; e.g. '{example}'", col=col)
            nm, val = _nfkc(m.group(1)), m.group(2).strip()
            if len(val) > 1000 and kw != "next":
                # int() refuses 4300+ digits (ValueError) and no size needs this many
                raise self.err(line, f"{kw} {nm}: expected a size, got "
                                     f"{_show_literal(val)!r}", col=line.text.find(val, col))
            if kw == "next":
                val = _nfkc(val)
                if not val.isidentifier():
                    raise self.err(line, f"next {nm}: expected the name of its next value, got "
                                         f"{_show_literal(val)!r}", col=col)
                self.next_states[nm] = (val, line)
            elif kw in ("const", "consts"):
                self._declare_const(nm, val, line, col)
            elif kw in ("input", "inputs", "state", "states"):
                size = _digits(val)
                if size is None or size <= 0:
                    raise self.err(line, f"{kw} {nm}: size must be a positive integer, got "
                                         f"{_show_literal(val)!r}", col=line.text.find(val, col))
                why = _too_big(size)
                if why:
                    raise self.err(line, f"{kw} {nm}: size too large: {why}",
                                   col=line.text.find(val, col))
                table = self.inputs if kw.startswith("input") else self.states
                self._declare(table, kw.rstrip("s"), nm, size, line)
            else:
                fm = re.fullmatch(r"(.*?)\s*\bfrozen", val)
                if fm:   # 'param W: 20 x 20 frozen' (or 'param W: frozen', size from use)
                    self.frozen.setdefault(nm, line)
                    val = fm.group(1)
                    if not val:
                        continue
                # ASCII digits only: \d would take other scripts' digits too
                pm = re.fullmatch(r"\(?\s*([0-9]+)\s*(?:[,x×]\s*([0-9]+))?\s*\)?", val)
                if not pm:
                    raise self.err(line, f"param {nm}: expected a shape like '20 x 10', "
                                         f"'(20, 10)' or '20' (then 'frozen' for a parameter "
                                         f"that is not trained), got {_show_literal(val)!r}",
                                   col=line.text.find(val, col))
                dims = [_digits(g) for g in pm.groups() if g is not None]
                shape: Any = tuple(dims) if len(dims) == 2 else dims[0]
                self._declare_param(nm, shape, line)

    def _declare_const(self, nm: str, val: str, line: _Line, col: int) -> None:
        """``const beta: 1.0``: the same named constant as the equation ``beta = 1.0``."""
        where_ = line.text.find(val, col)
        if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", val):
            raise self.err(line, f"const {nm}: expected a number such as 1.0 or -2e-3, got "
                                 f"{_show_literal(val)!r}", col=where_)
        v = float(val)
        if not abs(v) <= MAX_CONSTANT:
            raise self.err(line, "number out of range: expected a finite number of magnitude "
                                 f"at most {MAX_CONSTANT:.8g} (float32's largest), got "
                                 f"{_show_literal(val)}", col=where_)
        if nm in FUNCTIONS or nm in self.inputs or nm in self.states:
            raise self.err(line, f"const {nm!r} is already a function, input or state name; "
                                 "pick another name", col=line.text.find(nm))
        if nm in self.consts and self.consts[nm][0] != v:
            raise self.err(line, f"const {nm!r} is declared with two values, "
                                 f"{self.consts[nm][0]:g} and {v:g}", col=line.text.find(nm))
        self.consts[nm] = (v, line)

    def _equation(self, line: _Line) -> None:
        src = line.text[line.indent:]
        try:
            tree = ast.parse(src, filename=self.filename, mode="exec")
        except SyntaxError as e:
            col = line.indent + (e.offset - 1 if e.offset else 0)
            # the lectures' notation for products and the subscripts they write on names
            hints = {"·": "write @ for a matrix product", "×": "write @ for a matrix "
                     "product or * elementwise", "⊙": "write * for the elementwise product",
                     "ₜ": "drop the time subscript: a state is "
                     "h_{t-1}, its next value h_next"}
            hint = next((f" ({h})" for ch, h in hints.items() if ch in src), "")
            if "too many nested parentheses" in e.msg:
                raise self.err(line, "expression is too deeply nested: expected at most "
                                     f"{MAX_NESTING} levels, got more parentheses, brackets or "
                                     "calls than Python's parser accepts (about 200); split it "
                                     "over several equations", col=col) from None
            if "integer string conversion" in e.msg:
                # Python refuses int literals of 4300+ digits; say it in this file's terms
                raise self.err(line, "number out of range: expected a finite number of "
                                     f"magnitude at most {MAX_CONSTANT:.8g} (float32's "
                                     "largest), got an integer literal of thousands of digits",
                               col=col) from None
            raise self.err(line, f"syntax error: {e.msg}{hint}; expected NAME = EXPRESSION",
                           col=col) from None
        except (RecursionError, MemoryError, ValueError) as e:
            # Python's own parser gives up on very deep expressions this way
            raise self.err(line, f"cannot parse this line ({type(e).__name__} in Python's "
                                 f"parser): expected an expression at most {MAX_NESTING} levels "
                                 "deep, got one nested too deeply or malformed; split it over "
                                 "several equations", col=line.indent) from None
        if len(tree.body) != 1:
            raise self.err(line, "one equation per line: found "
                                 f"{len(tree.body)} statements", tree.body[1]
                           if len(tree.body) > 1 else None)
        stmt = tree.body[0]
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            raise self.err(line, "imports are not allowed in equations", stmt)
        if isinstance(stmt, ast.AugAssign):
            raise self.err(line, "augmented assignment (+=, *=, ...) is not allowed; every "
                                 "name is assigned once: write h_next = h + ...", stmt)
        if isinstance(stmt, ast.AnnAssign):
            raise self.err(line, "annotated assignment is not allowed; sizes go in header "
                                 "lines such as 'state h: 20'", stmt)
        if not isinstance(stmt, ast.Assign):
            what = ("a bare expression" if isinstance(stmt, ast.Expr)
                    else f"a '{type(stmt).__name__.lower()}' statement")
            raise self.err(line, f"expected an equation NAME = EXPRESSION, got {what}", stmt)
        if len(stmt.targets) != 1:
            raise self.err(line, "chained assignment a = b = ... is not allowed; one name per "
                                 "equation", stmt.targets[1])
        target = stmt.targets[0]
        if isinstance(target, ast.Tuple):
            # i, f, g, o = split(z, 4): the one form with several names on the left
            if not (isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Name)
                    and stmt.value.func.id == "split"):
                raise self.err(line, "the left side must be a single name, got "
                                     f"'{line.segment(target)}'; several names need split on "
                                     "the right: 'i, f = split(z, 2)'", target)
            bad = next((t for t in target.elts if not isinstance(t, ast.Name)), None)
            if bad is not None or len(target.elts) < 2:
                raise self.err(line, "the left side of split must be two or more names, got "
                                     f"'{line.segment(target)}'", bad or target)
            names: list[ast.Name] = list(target.elts)  # type: ignore[arg-type]
        elif isinstance(target, ast.Name):
            names = [target]
        else:
            raise self.err(line, "the left side must be a single name, got "
                                 f"'{line.segment(target)}'", target)
        for t in names:
            nm = t.id
            if nm in FUNCTIONS:
                raise self.err(line, f"'{nm}' is a function name and cannot be assigned", t)
            if nm in self.inputs or nm in self.states:
                raise self._assigned_leaf(nm, line, t)
            if nm in self.assigned:
                raise self.err(line, f"reassignment of {nm!r} (first assigned on line "
                                     f"{self.assigned[nm].lineno}); each name is assigned once "
                                     "per step: use a new name", t)
            self.assigned[nm] = line
        self.equations.append((line, stmt))

    def _assigned_leaf(self, nm: str, line: _Line, target: ast.AST) -> EquationError:
        kind = "input" if nm in self.inputs else "state"
        hint = f"; name its next value {nm}_next" if kind == "state" else ""
        return self.err(line, f"cannot assign to {kind} {nm!r}: inputs and states are "
                              f"given each step{hint}", target)

    def _check_assigned_leaves(self) -> None:
        """Headers may come anywhere: 'h = x' above 'state h: 4' is caught once all are read."""
        for line, stmt in self.equations:
            for t in _target_names(stmt):
                if t.id in self.inputs or t.id in self.states:
                    raise self._assigned_leaf(t.id, line, t)


def _target_names(stmt: ast.Assign) -> list[ast.Name]:
    """The names an equation assigns: one, or several for 'i, f = split(z, 2)'."""
    t = stmt.targets[0]
    return list(t.elts) if isinstance(t, ast.Tuple) else [t]  # type: ignore[list-item]


def _split_top(s: str) -> list[str]:
    """Split on commas outside parentheses (``param W: (20, 10), b: 20``)."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [x for x in out if x.strip()] or [""]


class _Checker:
    """Pass 1: walk each equation's ast through the whitelist into _Expr trees with size
    variables; collect unification constraints. Pass 2 (``solve``) resolves sizes."""

    def __init__(self, p: _Parser) -> None:
        self.p = p
        self.dims = p.dims
        self.vars: dict[str, int] = {}          # input/state/assigned name -> size variable
        self.params: dict[str, _Param] = {}
        self.concats: list[_Expr] = []
        self.defined_at: dict[str, int] = {}    # assigned name -> line number, once checked
        # every defined name is known before pass 1 starts: index them once
        self.near = _NearNames(list(p.inputs) + list(p.states) + list(p.assigned))
        for nm, size in list(p.inputs.items()) + list(p.states.items()):
            self.vars[nm] = self.dims.new(size)
        self.slices: list[_Expr] = []           # v[a:b] and the parts of split
        self.rows: set[str] = set()             # names of (B, 1) values from reductions
        # named constants: a name bound to a number (beta = 1.0, or 2 * 0.5) is that number
        # wherever it is used, not a learned parameter
        self.consts: dict[str, float] = {nm: v for nm, (v, _) in p.consts.items()}
        self.trees: list[tuple[str, _Line, _Expr]] = []
        for line, stmt in p.equations:
            targets = _target_names(stmt)
            for t in targets:
                if t.id in p.consts:
                    raise p.err(line, f"cannot assign to {t.id!r}: it is a const (line "
                                      f"{p.consts[t.id][1].lineno}); use a new name", t)
            if len(targets) > 1:
                self.split_assign(stmt, targets, line)
                continue
            nm = targets[0].id
            e = self.expr(stmt.value, line, nm)
            self.defined_at[nm] = line.lineno
            if e.dim is None:
                self.consts[nm] = e.value
                continue
            self.vars[nm] = e.dim
            if e.row:
                self.rows.add(nm)
            self.trees.append((nm, line, e))

    def split_assign(self, stmt: ast.Assign, targets: list[ast.Name], line: _Line) -> None:
        """``i, f, g, o = split(z, 4)``: equal consecutive parts of z's features."""
        p, call_ = self.p, stmt.value
        assert isinstance(call_, ast.Call)
        if call_.keywords or len(call_.args) != 2:
            raise p.err(line, "split takes two arguments by position: expected split(z, N), got "
                              f"'{line.segment(call_)}'", call_)
        k = self.int_bound(call_.args[1], line, "the number of parts of split")
        if k != len(targets):
            raise p.err(line, f"split into {k} parts but {len(targets)} names on the left: "
                              "expected as many names as parts", call_.args[1])
        z = self.expr(call_.args[0], line, targets[0].id)
        if z.dim is None:
            raise p.err(line, "split of a plain number: expected a per-example value",
                        call_.args[0])
        part = self.dims.new()
        for i, t in enumerate(targets):
            e = _Expr("split", call_, line, part, (k, i), [z])
            self.slices.append(e)
            self.vars[t.id] = part
            self.defined_at[t.id] = line.lineno
            self.trees.append((t.id, line, e))

    def int_bound(self, node: ast.AST | None, line: _Line, what: str) -> int:
        """A non-negative integer literal, or a named constant holding one."""
        v: Any = None
        if isinstance(node, ast.Constant):
            v = node.value
        elif isinstance(node, ast.Name) and node.id in self.consts:
            v = self.consts[node.id]
            v = int(v) if float(v).is_integer() else v
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            got = f"'{line.segment(node)}'" if node is not None else "nothing"
            raise self.p.err(line, f"{what} must be a constant non-negative integer: expected a "
                                   f"number such as 4 or a name bound to one, got {got}", node)
        return v

    def unify(self, a: int, b: int, line: _Line, node: ast.AST, what: Callable[[], str]) -> None:
        # the message is built only on a conflict: source segments cost a scan of the line
        bad = self.dims.unify(a, b)
        if bad is not None:
            raise self.p.err(line, f"shape mismatch in '{line.segment(node)}': {what()}", node)

    def expr(self, node: ast.AST, line: _Line, target: str) -> _Expr:
        # every level of nesting takes at least one character: short lines need no count
        if len(line.text) > MAX_NESTING and _depth(node, MAX_NESTING) > MAX_NESTING:
            raise self.p.err(line, f"expression is too deeply nested: expected at most "
                                   f"{MAX_NESTING} levels (a sum of n terms is n levels), got "
                                   f"more than {MAX_NESTING}; split it over several equations",
                             node)
        try:
            return self._expr(node, line, target)
        except RecursionError:  # a caller already deep in its own stack
            raise self.p.err(line, "expression is too deeply nested for the current stack; "
                                   "split it over several equations", node) from None

    def _expr(self, node: ast.AST, line: _Line, target: str) -> _Expr:
        p = self.p
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise p.err(line, f"only numbers are allowed as constants, got {_show_value(v)}",
                            node)
            return _Expr("num", node, line, None, self.number(v, line, node))
        if isinstance(node, ast.Name):
            return self.name(node, line, target)
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.USub, ast.UAdd)):
                raise p.err(line, f"operator '{_op_text(node.op)}' is not allowed; only unary "
                                  "minus and plus", node)
            a = self._expr(node.operand, line, target)
            if isinstance(node.op, ast.UAdd):
                return a
            if a.dim is None:
                return _Expr("num", node, line, None, -a.value)  # same magnitude: in bounds
            return _Expr("neg", node, line, a.dim, None, [a], a.row)
        if isinstance(node, ast.BinOp):
            return self.binop(node, line, target)
        if isinstance(node, ast.Call):
            return self.call(node, line, target)
        if isinstance(node, ast.List):
            if not node.elts:
                raise p.err(line, "empty concatenation []; list at least one value", node)
            parts = [self._expr(e, line, target) for e in node.elts]
            for e in parts:
                if e.dim is None:
                    raise p.err(line, f"cannot concatenate the number {e.value:g}; the parts "
                                      "of [a, b] must be per-example values", e.node)
            if len(parts) == 1:
                return parts[0]
            sizes = [self.dims.get(e.dim) for e in parts]  # type: ignore[arg-type]
            total = sum(sizes) if all(v is not None for v in sizes) else None  # type: ignore
            out = _Expr("concat", node, line, self.dims.new(total), None, parts)
            self.concats.append(out)
            return out
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            return self.slice(node, line, target)
        entry = _REJECTED.get(type(node))
        if entry is not None:
            raise p.err(line, f"{entry[0]} not allowed: '{line.segment(node)}'; {entry[1]}",
                        node)
        raise p.err(line, f"'{line.segment(node)}' ({type(node).__name__}) is not allowed in "
                          "an equation; use names, numbers, + - * / @ **, [a, b] and the "
                          f"functions {', '.join(FUNCTIONS)}", node)

    def slice(self, node: ast.Subscript, line: _Line, target: str) -> _Expr:
        """``v[a:b]`` over the features; the bounds are checked once v's size is known."""
        p, sl = self.p, node.slice
        assert isinstance(sl, ast.Slice)
        if sl.step is not None:
            raise p.err(line, f"slice steps are not allowed: expected v[a:b], got "
                              f"'{line.segment(node)}'", sl.step)
        start = self.int_bound(sl.lower, line, "a slice bound") if sl.lower is not None else 0
        stop = self.int_bound(sl.upper, line, "a slice bound") if sl.upper is not None else None
        if stop is not None and stop <= start:
            raise p.err(line, f"empty slice '{line.segment(node)}': expected bounds a < b, got "
                              f"{start} and {stop}", sl)
        v = self._expr(node.value, line, target)
        if v.dim is None:
            raise p.err(line, "slice of a plain number: expected a per-example value",
                        node.value)
        out = _Expr("slice", node, line, self.dims.new(None if stop is None else stop - start),
                    (start, stop), [v])
        self.slices.append(out)
        return out

    def name(self, node: ast.Name, line: _Line, target: str) -> _Expr:
        self._check_use(node, line, target)
        nm = node.id
        if nm in self.consts:
            return _Expr("num", node, line, None, self.consts[nm])
        if nm in self.vars:
            return _Expr("name", node, line, self.vars[nm], nm, row=nm in self.rows)
        return _Expr("name", node, line, self.vector_param(nm, node, line).out, nm)

    def _check_use(self, node: ast.Name, line: _Line, target: str) -> None:
        p, nm = self.p, node.id
        if nm == target:
            raise p.err(line, f"{nm!r} is used in its own definition (a cycle within one step); "
                              "use a state for the previous step's value", node)
        if nm in FUNCTIONS:
            raise p.err(line, f"function '{nm}' used as a value; did you mean {nm}(...)?", node)
        if nm in p.assigned and nm not in self.defined_at:
            raise p.err(line, f"{nm!r} is used before its assignment on line "
                              f"{p.assigned[nm].lineno} (a cycle within one step); equations "
                              "run top to bottom: move it below, or make it a state", node)

    def _typo_check(self, nm: str, node: ast.AST, line: _Line) -> None:
        if nm in self.p.param_shapes or nm in self.p.frozen:
            return
        if f"{nm}_next" in self.p.assigned:
            # a free name would become a learned bias and the state would never carry over
            raise self.p.err(line, f"{nm!r} is not an input or a state, but {nm}_next is "
                                   f"assigned: declare the state ('state {nm}: SIZE' or "
                                   f"states={{{nm!r}: SIZE}})", node, cls=UndefinedNameError)
        close = self.near.close(nm)
        if close:
            raise self.p.err(line, f"undefined name {nm!r}; did you mean {close[0]!r}? (if "
                                   f"{nm!r} is a parameter, declare it: 'param {nm}: SIZE' or "
                                   f"params={{{nm!r}: ...}})", node, cls=UndefinedNameError)

    def vector_param(self, nm: str, node: ast.AST, line: _Line) -> _Param:
        prm = self.params.get(nm)
        if prm is None:
            self._typo_check(nm, node, line)
            shape = self.p.param_shapes.get(nm)
            if shape is not None and shape[0] != 1:
                raise self.p.err(line, f"parameter {nm!r} is declared {shape[0]} x {shape[1]} "
                                       f"but used as a vector; write {nm} @ v to multiply", node)
            prm = _Param(nm, "vector", self.dims.new(shape[1] if shape else None), None,
                         (line, node), shape is not None)
            self.params[nm] = prm
        elif prm.role != "vector":
            raise self.p.err(line, f"parameter {nm!r} is a matrix (left of @ on line "
                                   f"{prm.first[0].lineno}) but is used here as a vector", node)
        return prm

    def matrix_param(self, node: ast.AST, line: _Line, target: str) -> _Param:
        p = self.p
        if isinstance(node, ast.Name):
            self._check_use(node, line, target)  # use-before-assignment and cycles first
        elif type(node) in _REJECTED:
            what, hint = _REJECTED[type(node)]
            raise p.err(line, f"{what} not allowed: '{line.segment(node)}'; {hint}", node)
        if not isinstance(node, ast.Name) or node.id in self.vars or node.id in FUNCTIONS \
                or node.id in p.assigned or node.id in self.consts:
            if isinstance(node, ast.Name) and node.id in self.vars:
                kind = ("input" if node.id in p.inputs else "state" if node.id in p.states
                        else "computed value")
                what = f"{kind} {node.id!r}"
            else:
                what = f"'{line.segment(node)}'"
            raise p.err(line, f"the left of @ must be a weight matrix (a parameter name), got "
                              f"{what}; write W @ v with W of shape (out, in) on the left "
                              "(math convention)", node)
        nm = node.id
        prm = self.params.get(nm)
        if prm is None:
            self._typo_check(nm, node, line)
            shape = p.param_shapes.get(nm)
            prm = _Param(nm, "matrix", self.dims.new(shape[0] if shape else None),
                         self.dims.new(shape[1] if shape else None), (line, node),
                         shape is not None)
            self.params[nm] = prm
        elif prm.role != "matrix":
            raise p.err(line, f"parameter {nm!r} is a vector (line {prm.first[0].lineno}) but is "
                              "used here on the left of @ as a matrix", node)
        return prm

    def binop(self, node: ast.BinOp, line: _Line, target: str) -> _Expr:
        p = self.p
        if isinstance(node.op, ast.MatMult):
            prm = self.matrix_param(node.left, line, target)
            r = node.right
            if (isinstance(r, ast.Name) and r.id not in self.vars and r.id not in p.assigned
                    and r.id not in p.param_shapes and r.id not in self.consts):
                # W @ name with an unknown name: it would silently become a (1, n) parameter
                raise p.err(line, f"undefined name {r.id!r} on the right of @: it must be an "
                                  "input, a state or a value assigned above (declare it with "
                                  f"'input {r.id}: SIZE' or 'state {r.id}: SIZE')", r,
                            cls=UndefinedNameError)
            v = self._expr(r, line, target)
            if v.dim is None:
                raise p.err(line, f"{prm.name} @ {v.value:g}: the right of @ must be a "
                                  "per-example value, not a number", node.right)
            assert prm.inn is not None
            self.unify(prm.inn, v.dim, line, node,
                       lambda: f"{prm.name} takes {self._show(prm.inn)} but "
                       f"'{line.segment(node.right)}' has {self._show(v.dim)}")
            w = _Expr("name", node.left, line, None, prm.name)
            return _Expr("matmul", node, line, prm.out, None, [w, v])
        if isinstance(node.op, ast.Pow):
            a = self._expr(node.left, line, target)
            k = self._expr(node.right, line, target)
            if k.dim is not None or k.value not in (0.5, 1.0, 2.0):
                raise p.err(line, "only the powers ** 2, ** 0.5 and ** 1 with a number "
                                  f"exponent are supported, got '{line.segment(node)}'", node)
            if a.dim is None:
                if a.value < 0 and k.value == 0.5:
                    raise p.err(line, f"square root of the negative number {a.value:g}", node)
                return _Expr("num", node, line, None, self.folded(a.value ** k.value, line, node))
            return _Expr("pow", node, line, a.dim, k.value, [a], a.row)
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise p.err(line, f"operator '{_op_text(node.op)}' is not allowed; use + - * / @ "
                              "and **", node)
        a = self._expr(node.left, line, target)
        b = self._expr(node.right, line, target)
        if a.dim is None and b.dim is None:
            if op is Ops.DIV and b.value == 0:
                raise p.err(line, "division by the number zero", node)
            val = {Ops.ADD: a.value + b.value, Ops.SUB: a.value - b.value,
                   Ops.MUL: a.value * b.value}.get(op, a.value / b.value if b.value else 0.0)
            return _Expr("num", node, line, None, self.folded(val, line, node))
        if op is Ops.DIV and b.dim is None and b.value == 0:
            # h / 0 would be a constant 0 in the IR and inf (or nan) at every element
            raise p.err(line, f"division by the number zero in '{line.segment(node)}': expected "
                              "a nonzero divisor", node.right)
        if a.dim is not None and b.dim is not None and a.row == b.row:
            self.unify(a.dim, b.dim, line, node,
                       lambda: f"'{line.segment(node.left)}' has {self._show(a.dim)} but "
                       f"'{line.segment(node.right)}' has {self._show(b.dim)}")
        # a (B, 1) reduction broadcasts over the other side's features
        full = [x for x in (a, b) if x.dim is not None and not x.row]
        dim = full[0].dim if full else (a.dim if a.dim is not None else b.dim)
        return _Expr("bin", node, line, dim, op, [a, b], not full)

    def call(self, node: ast.Call, line: _Line, target: str) -> _Expr:
        p = self.p
        if not isinstance(node.func, ast.Name):
            entry = _REJECTED.get(type(node.func))
            what = entry[0] if entry else "calling an expression"
            raise p.err(line, f"{what} not allowed: '{line.segment(node.func)}'; call a known "
                              f"function by name: {', '.join(FUNCTIONS)}", node.func)
        fn = node.func.id
        if fn not in FUNCTIONS:
            close = (["sigmoid"] if fn == "σ" else
                     difflib.get_close_matches(fn, list(FUNCTIONS), n=1))
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise p.err(line, f"unknown function {fn!r}; {hint}known functions: "
                              f"{', '.join(FUNCTIONS)}", node.func)
        if node.keywords:
            kw = node.keywords[0]
            raise p.err(line, f"keyword arguments are not allowed: {fn}(... "
                              f"{kw.arg or '**'}=...); pass values by position", kw)
        if fn == "split":
            raise p.err(line, "split gives several values: expected it alone on the right of "
                              "'i, f = split(z, 2)', got it inside an expression", node)
        arity = FUNCTIONS[fn][0]
        counts = arity if isinstance(arity, tuple) else (arity,)
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise p.err(line, f"starred arguments are not allowed in {fn}(...)", node)
        if len(node.args) not in counts:
            want = " or ".join(map(str, counts))
            raise p.err(line, f"{fn}() takes {want} argument{'s' * (max(counts) > 1)}, got "
                              f"{len(node.args)}", node)
        args = [self._expr(a, line, target) for a in node.args]
        if fn == "layer_norm" or _reduces(fn, len(args)):
            if args[0].dim is None:
                raise p.err(line, f"{fn}() of a plain number: expected a per-example value",
                            node.args[0])
        if fn == "layer_norm":
            if len(args) == 2 and (args[1].dim is not None or not args[1].value > 0):
                raise p.err(line, "the epsilon of layer_norm(v, eps) must be a positive number, "
                                  f"got '{line.segment(node.args[1])}'", node.args[1])
            return _Expr("call", node, line, args[0].dim, fn, args, args[0].row)
        if _reduces(fn, len(args)):
            return _Expr("call", node, line, self.dims.new(1), fn, args, True)
        dims = [a.dim for a in args if a.dim is not None]
        if not dims:
            raise p.err(line, f"{fn}() of plain numbers; pass a per-example value", node)
        full = [a for a in args if a.dim is not None and not a.row]
        for a in full[1:]:
            self.unify(full[0].dim, a.dim, line, node,  # type: ignore[arg-type]
                       lambda: f"the arguments of {fn}() differ in size")
        return _Expr("call", node, line, full[0].dim if full else dims[0], fn, args, not full)

    def number(self, v: int | float, line: _Line, node: ast.AST) -> float:
        """A literal as a float within MAX_CONSTANT (float(10**400) raises OverflowError, 1e999
        is inf, and 1e39 is inf once compiled at float32)."""
        big = isinstance(v, int) and abs(v) > MAX_CONSTANT
        f = v if isinstance(v, float) else (math.inf if big else float(v))
        if not abs(f) <= MAX_CONSTANT:  # also nan, which a literal cannot be, but be sure
            raise self.p.err(line, "number out of range: expected a finite number of magnitude "
                                   f"at most {MAX_CONSTANT:.8g} (float32's largest), got "
                                   f"{_show_literal(line.segment(node, whole=True))}", node)
        return f

    def folded(self, v: float, line: _Line, node: ast.AST) -> float:
        """A folded constant (2 * 0.5) within MAX_CONSTANT: 1e300 * 1e300 is inf."""
        if not abs(v) <= MAX_CONSTANT:
            raise self.p.err(line, f"the numbers in '{_show_literal(line.segment(node))}' "
                                   "fold to a value out of range: expected a finite number of "
                                   f"magnitude at most {MAX_CONSTANT:.8g} (float32's "
                                   f"largest), got {v}", node)
        return v

    def _show(self, dim: int) -> str:
        v = self.dims.get(dim)
        return f"{v} features" if v is not None else "an unknown number of features"

    # ---- pass 2: sizes ----
    def solve(self) -> None:
        p = self.p
        # the next value of each state has the state's size
        for s, (nm, line) in self.next_map().items():
            if nm not in self.vars:
                raise self.undefined(nm, line, f"next value of state {s!r}")
            bad = self.dims.unify(self.vars[s], self.vars[nm])
            if bad is not None:
                where_ = p.assigned.get(nm) or line
                raise p.err(where_, f"shape mismatch: {nm!r} is the next value of state {s!r} "
                                    f"({bad[0]} features) but has {bad[1]} features",
                            col=where_.indent if where_ else None)
        changed = True
        while changed:
            changed = False
            for e in self.concats:
                sizes = [self.dims.get(x.dim) for x in e.parts]  # type: ignore[arg-type]
                total = self.dims.get(e.dim)  # type: ignore[arg-type]
                if all(s is not None for s in sizes):
                    if total is None:
                        self.dims.value[self.dims.find(e.dim)] = sum(sizes)  # type: ignore
                        changed = True
                    elif total != sum(sizes):  # type: ignore[arg-type]
                        raise p.err(e.line, f"shape mismatch in '{e.line.segment(e.node)}': the "
                                            f"parts have {' + '.join(map(str, sizes))} = "
                                            f"{sum(sizes)} features but {total} are needed",
                                    e.node)
                elif total is not None and sum(s is None for s in sizes) == 1:
                    rest = total - sum(s for s in sizes if s is not None)
                    k = sizes.index(None)
                    if rest <= 0:
                        raise p.err(e.line, f"shape mismatch in '{e.line.segment(e.node)}': "
                                            f"{total} features are needed but the known parts "
                                            f"already have {total - rest}", e.parts[k].node)
                    self.dims.value[self.dims.find(e.parts[k].dim)] = rest  # type: ignore
                    changed = True
            for e in self.slices:
                changed |= self.solve_slice(e)
        for e in self.slices:
            if self.dims.get(e.parts[0].dim) is None:  # type: ignore[arg-type]
                raise p.err(e.line, f"cannot infer the size of "
                                    f"'{e.line.segment(e.parts[0].node)}' that is sliced here",
                            e.node)
        for prm in self.params.values():
            out = self.dims.get(prm.out)
            inn = self.dims.get(prm.inn) if prm.inn is not None else 1
            if out is None or inn is None:
                line, node = prm.first
                if prm.role == "matrix":
                    which = " and ".join(w for w, v in (("out", out), ("in", inn)) if v is None)
                    shape = f"({out if out is not None else 'out'}, " \
                            f"{inn if inn is not None else 'in'})"
                else:
                    which, shape = "vector", "n"
                raise p.err(line, f"cannot infer the {which} size of parameter {prm.name!r}: no "
                                  f"equation fixes it; pass params={{{prm.name!r}: {shape}}} or "
                                  f"a line 'param {prm.name}: ...'", node)
        for name, line, e in self.trees:
            if self.dims.get(e.dim) is None:  # type: ignore[arg-type]
                raise p.err(line, f"cannot infer the size of {name!r}", col=line.indent)
        self.check_bounds()
        unused = set(p.param_shapes) - set(self.params)
        if unused:
            raise EquationError(f"shapes given for parameters {sorted(unused)} that no equation "
                                "uses", p.filename)
        for nm, line in p.frozen.items():
            if nm not in self.params:
                what = ("an input" if nm in p.inputs else "a state" if nm in p.states else
                        "a named constant" if nm in self.consts or nm in p.consts else
                        "assigned by an equation" if nm in p.assigned else
                        "used by no equation")
                raise p.err(line, f"param {nm!r} is marked frozen but is {what}: only "
                                  "parameters (free names the equations use) can be frozen",
                            col=line.text.find(nm) if line else None)

    def solve_slice(self, e: _Expr) -> bool:
        """One step of size inference for v[a:b] or a part of split(v, k); True if it bound
        a size. Out-of-range bounds and indivisible splits are errors here, where v's size is
        first known."""
        p, d = self.p, self.dims
        v = e.parts[0]
        n, m = d.get(v.dim), d.get(e.dim)  # type: ignore[arg-type]
        # scanning the line for the source segment is only worth it for a message (this runs
        # for every slice on every pass of solve's fixed point)
        seg = lambda: e.line.segment(e.node)  # noqa: E731
        if e.kind == "split":
            k = e.value[0]
            if n is not None:
                if n % k:
                    raise p.err(e.line, f"split not divisible in '{seg()}': expected a size that "
                                        f"is a multiple of {k}, got {n} features", e.node)
                if m is None:
                    d.value[d.find(e.dim)] = n // k  # type: ignore[arg-type]
                    return True
                if m != n // k:
                    raise p.err(e.line, f"shape mismatch in '{seg()}': each of the {k} parts of "
                                        f"{n} features has {n // k}, but {m} are needed", e.node)
            elif m is not None:
                d.value[d.find(v.dim)] = m * k  # type: ignore[arg-type]
                return True
            return False
        start, stop = e.value
        if n is not None:
            if (stop if stop is not None else n) > n or start >= n:
                raise p.err(e.line, f"slice out of range in '{seg()}': expected bounds 0 <= a < b "
                                    f"<= {n} (the features of "
                                    f"'{e.line.segment(v.node)}'), got [{start}:"
                                    f"{'' if stop is None else stop}]", e.node)
            if stop is None and m is None:
                d.value[d.find(e.dim)] = n - start  # type: ignore[arg-type]
                return True
            if stop is None and m != n - start:
                raise p.err(e.line, f"shape mismatch in '{seg()}': it has {n - start} features "
                                    f"but {m} are needed", e.node)
        elif stop is None and m is not None:
            d.value[d.find(v.dim)] = start + m  # type: ignore[arg-type]
            return True
        return False

    def check_bounds(self) -> None:
        """Inferred sizes within MAX_SIZE: declared ones are checked where they are read, but a
        concatenation adds sizes up ([h, h] of two 2**30 states)."""
        p = self.p
        for e in self.concats:
            why = _too_big(self.dims.get(e.dim) or 0)  # type: ignore[arg-type]
            if why:
                raise p.err(e.line, f"size too large in '{_show_literal(e.line.segment(e.node))}'"
                                    f": {why}", e.node)
        for prm in self.params.values():
            out = self.dims.get(prm.out) or 1
            inn = (self.dims.get(prm.inn) if prm.inn is not None else 1) or 1
            why = _too_big(out) or _too_big(inn)
            if why is None and out * inn > MAX_PARAM_ELEMENTS:
                why = (f"expected at most {MAX_PARAM_ELEMENTS} (2**48) elements, got {out} x "
                       f"{inn} = {out * inn}")
            if why:
                line, node = prm.first
                raise p.err(line, f"parameter {prm.name!r} is too large: {why}", node)

    def next_map(self) -> dict[str, tuple[str, _Line | None]]:
        p = self.p
        for s, (_nm, line) in p.next_states.items():
            if s not in p.states:
                raise p.err(line, f"next value given for {s!r}, which is not a state; the "
                                  f"states are {list(p.states)}",
                            col=line.text.find(s) if line else None)
        out = {}
        for s in p.states:
            if s in p.next_states:
                out[s] = p.next_states[s]
            elif f"{s}_next" in p.assigned:
                out[s] = (f"{s}_next", None)
            else:
                raise UndefinedNameError(f"no next value for state {s!r}: assign {s}_next = ... "
                                         f"or name it with 'next {s}: NAME' / next_states="
                                         f"{{{s!r}: 'NAME'}}", p.filename)
        return out

    def undefined(self, nm: str, line: _Line | None, role: str) -> EquationError:
        if nm in self.consts:
            # the default h_next has no line: report the constant's own
            line = line or self.p.assigned.get(nm) or self.p.consts[nm][1]
            return self.p.err(line, f"{nm!r} is a named constant ({self.consts[nm]:g}) but is "
                                    f"given as the {role}: expected a per-example value",
                              col=line.text.find(nm) if line else None)
        known = list(self.vars)
        close = difflib.get_close_matches(nm, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; defined names: {known}"
        col = line.text.find(nm) if line else None
        return self.p.err(line, f"undefined name {nm!r} given as the {role}{hint}", col=col,
                          cls=UndefinedNameError)


def _depth(node: ast.AST, limit: int) -> int:
    """The nesting depth of an expression, without recursion; stops counting past ``limit``."""
    best, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        best = max(best, d)
        if best > limit:
            break
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(n)
                     if not isinstance(c, (ast.expr_context, ast.operator, ast.unaryop)))
    return best


def _op_text(op: ast.AST) -> str:
    return {ast.Mod: "%", ast.FloorDiv: "//", ast.LShift: "<<", ast.RShift: ">>",
            ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&", ast.Not: "not",
            ast.Invert: "~"}.get(type(op), type(op).__name__)


class _Builder:
    """Pass 3: IR nodes from the checked trees, each recorded at its equation line."""

    def __init__(self, c: _Checker, dtype: str) -> None:
        self.c = c
        self.dtype = dtype
        self.claimed: set[Node] = set()
        p = c.p
        self.leaves: dict[str, Node] = {}
        for nm, size in p.inputs.items():
            self.leaves[nm] = input_(nm, size, dtype)
        for nm, size in p.states.items():
            self.leaves[nm] = state(nm, size, dtype)
        for nm, line in p.leaf_line.items():
            self._claim(self.leaves[nm], line)
        for prm in c.params.values():
            out = c.dims.get(prm.out)
            inn = c.dims.get(prm.inn) if prm.inn is not None else None
            shape = (out, inn) if prm.role == "matrix" else (1, out)
            self.leaves[prm.name] = param(prm.name, shape, dtype)  # type: ignore[arg-type]
            self._claim(self.leaves[prm.name], prm.first[0])
        self.values: dict[str, Node] = {}
        for nm, line, e in c.trees:
            node = self.build(e)
            self.values[nm] = node
            # a claimed node's sources are claimed already: stop there, so claiming the sites
            # of N chained equations is linear in the graph, not a walk of it per equation
            for n in toposort([node], stop=self.claimed):
                self._claim(n, line)

    def _claim(self, n: Node, line: _Line) -> None:
        if n not in self.claimed:
            self.claimed.add(n)
            set_site(n, Site(self.c.p.filename, line.lineno, "equations", code=line.text.strip()))

    def value(self, nm: str) -> Node:
        return self.values.get(nm) or self.leaves[nm]

    def build(self, e: _Expr) -> Any:
        try:
            return self._build(e)
        except (ShapeError, GraphRNNError) as err:
            if isinstance(err, EquationError):
                raise
            raise self.c.p.err(e.line, f"{err}", e.node) from err

    def _build(self, e: _Expr) -> Any:
        k = e.kind
        if k == "num":
            return e.value
        if k == "name":
            return self.value(e.value)
        parts = [self._build(x) for x in e.parts]
        if k == "matmul":
            w, v = parts
            return apply(Ops.MATMUL, v, w, arg=(False, True))
        if k == "neg":
            return call(Ops.NEG, parts[0])
        if k == "pow":
            return parts[0] ** e.value
        if k == "bin":
            return call(e.value, *parts)
        if k == "call":
            if e.value == "layer_norm" or _reduces(e.value, len(parts)):
                if parts[0].shape[0] != B:
                    raise self.c.p.err(e.line, f"{e.value}() of parameters and numbers only: "
                                               "expected a per-example value (B, n), got "
                                               f"{parts[0].shape}", e.node)
            return FUNCTIONS[e.value][1](*parts)
        if k == "slice":
            start, stop = e.value
            return apply(Ops.SLICE, parts[0],
                         arg=(start, int(parts[0].shape[1]) if stop is None else stop))
        if k == "split":
            n, i = int(parts[0].shape[1]) // e.value[0], e.value[1]
            return apply(Ops.SLICE, parts[0], arg=(i * n, (i + 1) * n))
        if k == "concat":
            return apply(Ops.CONCAT, *parts)
        raise AssertionError(k)


def _warn(msg: str, category: type[Warning], filename: str, line: _Line | None) -> None:
    # warn_explicit: the warning is reported at the equation's file and line, not at ours
    where = f"{filename}:{line.lineno}" if line else filename
    warnings.warn_explicit(f"{where}: {msg}", category, filename, line.lineno if line else 0)


def _warn_unused(p: _Parser, cell: Cell) -> None:
    """An input or state nothing depends on: usually a name that was meant to be it was spelt
    differently (another script's letter) and became a parameter."""
    used = set(cell.nodes())
    for kind, leaves in (("input", cell.inputs), ("state", cell.states)):
        for n in leaves:
            if n in used:
                continue
            line = p.leaf_line.get(n.arg)
            declared = (f"declared on line {line.lineno}" if line else
                        f"declared by the {kind}s= argument")
            _warn(f"{kind} {n.arg!r} ({declared}) is never used: expected the equations to read "
                  f"it, got no equation that does (is it spelt differently where it is used?)",
                  UnusedNameWarning, p.filename, line)


def _warn_confusable(p: _Parser, c: _Checker) -> None:
    """Names that differ only by lookalike letters of other scripts."""
    where: dict[str, tuple[str, _Line | None]] = {}
    for nm in p.inputs:
        where[nm] = ("input", p.leaf_line.get(nm))
    for nm in p.states:
        where[nm] = ("state", p.leaf_line.get(nm))
    for nm, line in p.assigned.items():
        where[nm] = ("value", line)
    for nm, prm in c.params.items():
        where[nm] = ("parameter", prm.first[0])
    groups: dict[str, list[str]] = {}
    for nm in where:
        groups.setdefault(_skeleton(nm), []).append(nm)
    for names in groups.values():
        if len(names) < 2:
            continue
        # report at the name with foreign letters (usually the mistake), else the last one
        odd = [n for n in names if _skeleton(n) != n] or names[-1:]
        culprit = odd[-1]
        kind, line = where[culprit]
        others = ", ".join(f"{where[n][0]} {n!r}"
                           + (f" (line {where[n][1].lineno})" if where[n][1] else "")
                           for n in names if n != culprit)
        _warn(f"{kind} {culprit!r} looks like {others} but is a different name: expected one "
              f"script per name, got {_foreign_letters(culprit) or 'lookalike letters'}",
              ConfusableNameWarning, p.filename, line)


def cell_from_equations(text: str, inputs: Mapping[str, int] | None = None,
                        states: Mapping[str, int] | None = None,
                        outputs: Sequence[str] | str | None = None,
                        next_states: Mapping[str, str] | None = None, dtype: str = "float32",
                        name: str | None = None, filename: str = "<equations>",
                        params: Mapping[str, Any] | None = None,
                        frozen: Sequence[str] | None = None) -> Cell:
    """A Cell from text equations (see the module docstring for the language).

    ``inputs``/``states``: name -> feature size, in order (also from ``input``/``state`` lines).
    ``outputs``: names of the outputs (default: the first state's next value). ``next_states``:
    state -> name of its next value (default ``<state>_next``). ``params``: shapes of parameters
    that use alone does not fix, ``{"W": (out, in), "b": n}``. ``name`` defaults to the
    ``# cell: NAME`` header, else ``"cell"``. ``frozen``: names of parameters that are not
    trained (as ``param W: 20 x 20 frozen`` lines; ``Cell.frozen``).
    """
    if not isinstance(text, str):
        raise TypeError(f"cell_from_equations: text must be a str, got {type(text).__name__}")
    if dtype not in FLOATS:
        raise EquationError(f"dtype must be one of {FLOATS}, got {dtype!r}", filename)
    with frontend_scope("equations"):
        p = _Parser(text, filename, dict(inputs or {}), dict(states or {}), params, outputs,
                    next_states, name, frozen)
        if not p.equations:
            raise EquationError("no equations found; write one NAME = EXPRESSION per line",
                                filename)
        c = _Checker(p)
        if not c.trees:
            raise EquationError("only named constants found: expected at least one equation "
                                "computing a per-example value from an input or a state",
                                filename)
        c.solve()
        nxt = c.next_map()
        out_names = [o for o, _ in p.outputs]
        if not out_names:
            out_names = [nxt[next(iter(p.states))][0]] if p.states else [c.trees[-1][0]]
        for o, line in p.outputs:
            if o not in c.vars:
                raise c.undefined(o, line, "output")
        b = _Builder(c, dtype)
        roles = [(nxt[s][0], f"next value of state {s!r}") for s in p.states] + \
            [(o, "output") for o in out_names]
        for nm, role in roles:
            if b.value(nm).shape[0] != B:
                # an intermediate value may be per-parameter (broadcast where it is used), but
                # what leaves the step must have one row per example
                line = p.assigned.get(nm) or p.leaf_line.get(nm)
                raise p.err(line, f"{nm!r} is the {role} but is computed from parameters and "
                                  f"numbers only: expected a per-example value (B, n), got "
                                  f"{b.value(nm).shape}; combine it with an input or a state",
                            col=line.indent if line else None)
        cell = Cell.make([b.leaves[n] for n in p.inputs], [b.leaves[n] for n in p.states],
                         [b.value(o) for o in out_names],
                         [b.value(nxt[s][0]) for s in p.states], p.name or "cell", out_names,
                         frozen=p.frozen)
        _warn_unused(p, cell)
        _warn_confusable(p, c)
    return cell


def parse_file(path: str | Path, inputs: Mapping[str, int] | None = None,
               states: Mapping[str, int] | None = None, outputs: Sequence[str] | str | None = None,
               next_states: Mapping[str, str] | None = None, dtype: str = "float32",
               name: str | None = None, params: Mapping[str, Any] | None = None,
               frozen: Sequence[str] | None = None) -> Cell:
    """A Cell from an equations file (UTF-8); sizes usually come from its header lines."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return cell_from_equations(text, inputs, states, outputs, next_states, dtype, name,
                               str(path), params, frozen)


__all__ = ["FUNCTIONS", "cell_from_equations", "parse_file"]
