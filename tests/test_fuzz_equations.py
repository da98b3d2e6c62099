"""Fuzzing the equations frontend: 10,000 generated texts, valid and broken, each of which must
either build a Cell (that prints) or raise EquationError; nothing else may leak (OverflowError,
RecursionError, KeyError, ValueError from int(), a crash). A second test draws 1,000 mostly sound
texts (about half build a Cell) and compiles and runs those on the reference backend.

Grammar-based: headers, equations over a pool of names (ASCII, accented, Greek, Cyrillic
lookalikes, subscripts, keywords, function names), every operator Python has, known and unknown
functions, literals from 0 to 400 digits and 1e999, deep nesting, garbage tokens and control
characters. ``derandomize=True``: the same 10,000 texts on every run, so CI does not flake.
Measured on the 2-core machine: 24 s for the whole file at low load, 38 s with other jobs running.
``GRAPHRNN_FUZZ_EXAMPLES`` changes the number of texts (the compile test draws a tenth of it)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import graphrnn  # noqa: E402
from frontends.equations import FUNCTIONS, cell_from_equations  # noqa: E402
from graphrnn.errors import EquationError  # noqa: E402

PARSE_EXAMPLES = int(os.environ.get("GRAPHRNN_FUZZ_EXAMPLES", "10000"))
COMPILE_EXAMPLES = max(1, PARSE_EXAMPLES // 10)

NAMES = ["x", "h", "c", "a", "b", "z", "W", "U", "V", "b_r", "h_next", "c_next", "y", "hn",
         "état", "α", "β", "Wα", "һ", "һ_next", "h₁", "h1", "ℎ", "ﬁ", "ＡＢ", "σ", "x_t", "xₜ",
         "_", "__x", "if", "lambda", "None", "True", "tanh", "sigmoid", "max", "print", "np",
         "W" * 60, "a" * 300, "数", "ǅ"]
FUNCS = list(FUNCTIONS) + ["sigmod", "print", "eval", "__import__", "σ", "np.tanh", "exp2"]
LITERALS = ["0", "1", "2", "0.5", "-1", "1e3", "1e-3", "1e38", "3.5e38", "1e39", "1e308",
            "1e999", "-1e999", "1e-999", "9" * 400, "9" * 5000, "0" * 50 + "1", "1_000",
            "0x10", "0b1", "0o7", "1j", "1.5j", "00", "1.", ".5", "True", "None", "'s'",
            "b'x'", "...", "inf", "nan", "1/0"]
BINOPS = ["+", "-", "*", "/", "@", "**", "%", "//", "<<", ">>", "&", "|", "^", "<", "==",
          "and", "or", " if x else ", ".", ","]
UNARY = ["-", "+", "~", "not "]
GARBAGE = ["$", "?", "`", "!", ";", ":", "=", "==", "\\", "\t", "\x00", "\x0c", "\r", "\u2028",
           "\u200b", "·", "⊙", "×", "ₜ", "→", "’", "“", "\ufeff", "#", "'", '"', "'''", "{",
           "}", "[", "]", "(", ")", "lambda:", "import os", "yield", "await", "del x",
           "global h", "async", "f'{h}'", "*h", "**h", ":=", "...", "@="]


def _expr(depth: int = 4) -> st.SearchStrategy[str]:
    leaf = st.one_of(st.sampled_from(NAMES), st.sampled_from(LITERALS))
    if depth == 0:
        return leaf

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(BINOPS), inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            st.tuples(st.sampled_from(UNARY), inner).map("".join),
            st.tuples(st.sampled_from(FUNCS), st.lists(inner, max_size=3))
            .map(lambda t: f"{t[0]}({', '.join(t[1])})"),
            st.lists(inner, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
            inner.map(lambda e: f"({e})"),
            inner.map(lambda e: f"{e}[0]"),
            inner.map(lambda e: f"{e}.T"),
            st.tuples(inner, st.sampled_from(["0:2", "1:", ":3", "2:1", "0:99", "-1:", "a:b",
                                              "::2", "0:1.5", "0:n"]))
            .map(lambda t: f"{t[0]}[{t[1]}]"),
        )
    return st.recursive(leaf, grow, max_leaves=12)


def _sound_expr() -> st.SearchStrategy[str]:
    """Mostly well-formed expressions over the bases' names (x: 3 features in most bases, h: 4),
    so a good share of the texts get through the checker and the IR builder."""
    leaf = st.sampled_from(["h", "h", "x", "(U @ h)", "(W2 @ x)", "bias", "1", "0.5", "2",
                            "1e-3", "1e38", "-7"])

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner)
            .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(st.sampled_from([f for f, (k, _) in FUNCTIONS.items() if k == 1]), inner)
            .map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(["max", "min"]), inner, inner)
            .map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            st.tuples(inner, st.sampled_from(["2", "0.5", "1"])).map(lambda t: f"{t[0]} ** {t[1]}"),
            st.tuples(inner, inner).map(lambda t: f"(V @ [{t[0]}, {t[1]}])"),
            inner.map(lambda e: f"-({e})"),
            # the issue-15 forms: reductions broadcast back, layer_norm keeps the size, two
            # slices that add up to the whole (sound for h's 4 features)
            st.tuples(st.sampled_from(["max", "min", "layer_norm"]), inner)
            .map(lambda t: f"{t[0]}({t[1]})"),
            inner.map(lambda e: f"[({e})[0:2], ({e})[2:]]"),
        )
    return st.recursive(leaf, grow, max_leaves=10)


def _deep() -> st.SearchStrategy[str]:
    """Nesting far beyond any limit: parentheses, calls, unary minus, long sums."""
    n = st.sampled_from([50, 199, 201, 1000, 10_000])
    return st.one_of(
        n.map(lambda k: "(" * k + "h" + ")" * k),
        n.map(lambda k: "tanh(" * k + "h" + ")" * k),
        n.map(lambda k: "-" * k + "h"),
        n.map(lambda k: " + ".join(["h"] * k)),
        n.map(lambda k: "[" * k + "h" + "]" * k),
        n.map(lambda k: "W @ " * k + "h"),
    )


# built once: a strategy built inside a draw is validated again on every example (slow)
SOUND_EXPR = _sound_expr()
SIZES = st.one_of(st.integers(1, 6).map(str),
                  st.sampled_from(["0", "-1", "two", "2147483647", "2147483648", "10**20",
                                   "9" * 400, "²", "٣", "3.0", "3 x 4", "(3, 4)", "3 by 4", "",
                                   "1" * 5000]))
HEADER = st.one_of(
    st.tuples(st.sampled_from(["input", "inputs", "state", "states", "param", "params"]),
              st.lists(st.tuples(st.sampled_from(NAMES), SIZES), min_size=1, max_size=3))
    .map(lambda t: f"{t[0]} " + ", ".join(f"{n}: {s}" for n, s in t[1])),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(lambda ns: "output "
                                                                  + ", ".join(ns)),
    st.tuples(st.sampled_from(NAMES), st.sampled_from(NAMES)).map(lambda t: f"next {t[0]}: "
                                                                  f"{t[1]}"),
    st.sampled_from(NAMES + ["9bad", "a b", ""]).map(lambda n: f"# cell: {n}"),
    st.sampled_from(NAMES + ["9bad", "a-b"]).map(lambda n: f"cell {n}"),
)
EQUATION = st.one_of(
    st.tuples(st.sampled_from(NAMES), _expr()).map(lambda t: f"{t[0]} = {t[1]}"),
    st.tuples(st.sampled_from(["h_next", "a"]), _deep()).map(lambda t: f"{t[0]} = {t[1]}"),
    # several names on the left: split (right or wrong count), or a tuple that is not split
    st.tuples(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4),
              st.sampled_from(["split", "max", ""]), _expr(2), st.sampled_from(["2", "3", "n"]))
    .map(lambda t: f"{', '.join(t[0])} = {t[1]}({t[2]}, {t[3]})"),
)
GARBAGE_LINE = st.lists(st.sampled_from(GARBAGE + NAMES + LITERALS), max_size=6).map(" ".join)
LINE = st.tuples(st.sampled_from(["", "", "  ", "\t"]),
                 st.one_of(EQUATION, EQUATION, EQUATION, HEADER, GARBAGE_LINE),
                 st.sampled_from(["", "", "  # comment", "#", " ;"])).map("".join)

# Valid cells to mutate: most generated texts should get deep into the checker, not stop at
# the first token. A mutation replaces, inserts or deletes one line.
BASES = [
    "input x: 3\nstate h: 4\nh_next = tanh(W @ x + U @ h + b)",
    "# cell: gru\ninput x: 3\nstate h: 4\nr = sigmoid(W_xr @ x + W_hr @ h + b_r)\n"
    "z = sigmoid(W_xz @ x + W_hz @ h + b_z)\nhc = tanh(W_c @ [r * h, x] + b_c)\n"
    "h_next = (1 - z) * h + z * hc\noutput h_next",
    "# cell: état\ninput xα: 2\nstate hβ: 3\nhβ_next = tanh(Wα @ xα + U @ hβ + β) * 0.5",
    "input x: 2\nstate h: 2, c: 2\nc_next = sigmoid(c) * c + relu(W @ x)\n"
    "h_next = max(c_next, h) - min(h, 1) + abs(h) ** 0.5 + square(h) / 2",
    "input x: 3\nstate h: 4\nbeta = 0.5\nz = W @ x + U @ h\ni, f = split(z, 2)\n"
    "h_next = sigmoid(i) * h + beta * g * layer_norm(f) - mean(h) + logsumexp(z[0:3])",
]


@st.composite
def texts(draw: st.DrawFn, sound: bool = False) -> str:
    """A text: a few generated lines, or a base cell mutated. ``sound``: a base cell with one
    more, usually well-formed, equation as its first state's next value (mostly valid cells,
    for the compile test)."""
    if not sound and draw(st.integers(0, 3)) == 0:
        return "\n".join(draw(st.lists(LINE, max_size=8)))
    lines = draw(st.sampled_from(BASES)).splitlines()
    if sound:
        # one more output, usually well-formed (the bases but état have x and h)
        lines = draw(st.sampled_from([BASES[0], BASES[1], BASES[3]])).splitlines()
        lines = [ln for ln in lines if not ln.startswith("output")]
        lines += [f"y2 = h + {draw(SOUND_EXPR)}", "output y2, h_next"]
    elif draw(st.booleans()):
        # a new next value for the first state, often sound
        state = "hβ" if "hβ" in lines[2] else "h"
        lines.append(f"{state}_next2 = {draw(SOUND_EXPR)}")
        lines.append(f"next {state}: {state}_next2")
    for _ in range(0 if sound else draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        i = draw(st.integers(0, len(lines)))
        kind = draw(st.sampled_from(["replace", "insert", "delete"]))
        if kind == "insert" or not lines:
            lines.insert(i, draw(LINE))
        elif kind == "replace":
            lines[min(i, len(lines) - 1)] = draw(LINE)
        else:
            del lines[min(i, len(lines) - 1)]
    return draw(st.sampled_from(["\n", "\r\n", "\n\n"])).join(lines)


ARGS = st.sampled_from([{}] * 6 + [{"inputs": {"x": 3}, "states": {"h": 4}},
                                  {"inputs": {"x": 10**30}}, {"states": {"h₁": 2}},
                                  {"params": {"W": (4, 3)}}, {"outputs": "y"},
                                  {"next_states": {"h": "hn"}}])


def build(text: str, args: dict) -> graphrnn.Cell | None:
    """The contract under test: a Cell, or EquationError; anything else propagates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # warnings are allowed; tests/test_hostile_parser.py
        try:                             # checks the ones that matter
            cell = cell_from_equations(text, filename="fuzz.eq", **args)
        except EquationError as e:
            assert str(e).startswith("fuzz.eq"), str(e)
            assert len(str(e)) < 2000, "messages quote tokens, not whole inputs"
            return None
    assert str(cell)
    return cell


@settings(max_examples=PARSE_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(texts(), ARGS)
def test_parser_builds_a_cell_or_raises_equation_error(text, args):
    build(text, args)


COMPILED: list[bool] = []


@settings(max_examples=COMPILE_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(texts(sound=True))
def test_built_cells_compile_and_run_on_ref(text):
    cell = build(text, {})
    COMPILED.append(cell is not None)
    if cell is None or any(int(p.shape[0]) * int(p.shape[1]) > 4096 for p in cell.params) \
            or any(int(n.shape[1]) > 64 for n in cell.inputs + cell.states):
        return
    cc = graphrnn.compile(cell, "ref", dtype="float64")
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 2, int(n.shape[1]))) for n in cc.cell.inputs]
    h0 = [rng.standard_normal((2, int(s.shape[1]))) for s in cc.cell.states]
    with np.errstate(all="ignore"):   # log of a negative number is nan, not an error here
        ys, hs = cc.forward(cc.init_params(0), xs, h0)
    assert len(ys) == len(cell.outputs) and len(hs) == len(cell.states)
