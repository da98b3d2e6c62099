"""Hostile equation texts (issue 13): huge and non-finite numbers, division by a literal zero,
absurd sizes, deep nesting, 10,000-line files, non-ASCII names through the llvm and CUDA
backends, and names of other scripts that look like Latin ones. Each failure is a declaration
error (EquationError) naming the line, what was expected and what was received."""

from __future__ import annotations

import cProfile
import pstats
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest

import graphrnn
from frontends.equations import cell_from_equations
from graphrnn import errors
from graphrnn.errors import EquationError

# the documented bounds (frontends/equations.py), spelt out so that each test here also runs,
# and fails, against the code before issue 13
MAX_NESTING = 200
MAX_SIZE = 2**31 - 1


def eq(text: str, inputs: dict | None = None, states: dict | None = None, **kw):
    kw.setdefault("filename", "cell.eq")
    return cell_from_equations(text, inputs if inputs is not None else {"x": 3},
                               states if states is not None else {"h": 3}, **kw)


def rejected(text: str, *, lineno: int | None, **kw) -> EquationError:
    """The EquationError for ``text``; it names the file and the line, and nothing else leaks."""
    with pytest.raises(EquationError) as ei:
        eq(text, **kw)
    e = ei.value
    assert str(e).startswith(f"cell.eq:{lineno}:" if lineno else "cell.eq")
    assert e.lineno == lineno
    assert len(str(e)) < 1000, "a message quotes the token, not a whole generated line"
    return e


# ---- 1. numbers and sizes ----

@pytest.mark.parametrize("literal", ["9" * 400, "1e999", "-1e999", "1e39", "3.5e38",
                                     "-" + "9" * 400, "1e308"])
def test_numbers_beyond_float32_are_declaration_errors(literal):
    # float(10**400) raised OverflowError; 1e999 was a silent inf; 1e39 is inf at float32
    e = rejected(f"a = tanh(h)\nh_next = a * {literal}", lineno=2)
    assert re.search(r"number out of range: expected a finite number of magnitude at most "
                     r"3\.4028235e\+38 \(float32's largest\), got ", e.msg)
    shown = literal.lstrip("-")
    assert (shown if len(shown) <= 40 else f"({len(shown)} characters)") in e.msg


def test_a_literal_of_thousands_of_digits():
    # Python's parser refuses int literals past 4300 digits with a ValueError-ish SyntaxError
    e = rejected("h_next = h * " + "9" * 5000, lineno=1)
    assert "number out of range" in e.msg and "thousands of digits" in e.msg


def test_folded_numbers_out_of_range():
    e = rejected("h_next = h * (1e38 * 1e38)", lineno=1)
    assert e.msg.startswith("the numbers in '1e38 * 1e38' fold to a value out of range: "
                            "expected a finite number of magnitude at most 3.4028235e+38")
    assert e.msg.endswith("got 9.999999999999999e+75")


def test_largest_finite_numbers_are_accepted():
    cell = eq("h_next = h * 3.4e38 - h * 1e-300 + h / 3e38")
    assert cell.outputs[0].shape == ("B", 3)


@pytest.mark.parametrize("divisor", ["0", "0.0", "(1 - 1)", "(2 * 0)", "0e5"])
def test_division_by_a_literal_zero(divisor):
    e = rejected(f"a = tanh(h)\nh_next = a / {divisor}", lineno=2)
    assert e.msg.startswith(f"division by the number zero in 'a / {divisor}': expected a "
                            "nonzero divisor")
    # the caret is on the divisor
    assert len("h_next = a / ") + 1 <= e.offset <= len(f"h_next = a / {divisor}")


@pytest.mark.parametrize("header,got", [
    ("state q: 100000000000000000000", "got 100000000000000000000"),
    ("input y: 2147483648", "got 2147483648"),
    ("state q: " + "9" * 400, "(400 characters)"),
])
def test_sizes_above_the_bound(header, got):
    e = rejected(f"{header}\nh_next = h", lineno=1)
    assert "size too large: expected at most 2147483647 (2**31 - 1) features" in e.msg
    assert got in e.msg


@pytest.mark.parametrize("header,message", [
    ("state q: 10**20", r"state q: size must be a positive integer, got '10\*\*20'"),
    ("state q: ²", r"state q: size must be a positive integer, got '²'"),
    ("state q: ٣", r"state q: size must be a positive integer, got '٣'"),
    ("state q: " + "1" * 5000, r"state q: expected a size, got '111111111111\.\.\.111111 "
                               r"\(5000 characters\)'"),
    ("param W: ² x 3", r"param W: expected a shape like '20 x 10'"),
    ("param W: 99999999999 x 3", r"param 'W': shape too large: expected at most 2147483647 "
                                 r"\(2\*\*31 - 1\) features, got 99999999999"),
    ("param W: 2000000000 x 2000000000", r"param 'W': shape too large: expected at most "
                                         r"281474976710656 \(2\*\*48\) elements, got "
                                         r"2000000000 x 2000000000"),
])
def test_malformed_or_absurd_header_sizes(header, message):
    e = rejected(f"{header}\nh_next = h + W @ x", lineno=1, params=None)
    assert re.search(message, e.msg), e.msg


def test_sizes_given_as_arguments_are_bounded():
    with pytest.raises(EquationError, match=r"input 'x': size too large: expected at most "
                                            r"2147483647 \(2\*\*31 - 1\) features, got "
                                            r"1000000000000000000000000000000$"):
        cell_from_equations("h_next = h", {"x": 10**30}, {"h": 3})
    with pytest.raises(EquationError, match=r"param 'W': shape too large"):
        eq("h_next = h + W @ x", params={"W": (3, 2**31)})


def test_inferred_sizes_are_bounded():
    # each part is in bounds; the concatenation is not
    e = rejected("h_next = h + W @ [y, y]", lineno=1, inputs={"y": 2**31 - 1})
    assert e.msg.startswith("size too large in '[y, y]': expected at most 2147483647")


def test_the_bound_itself_is_accepted():
    cell = eq(f"input y: {MAX_SIZE}\nh_next = h + W @ y", inputs={})
    assert cell.param_shapes()["W"] == (3, MAX_SIZE)   # declared, not allocated


# ---- deep nesting ----

@pytest.mark.parametrize("expr", [
    "(" * 10_000 + "h" + ")" * 10_000,
    "tanh(" * 10_000 + "h" + ")" * 10_000,
    "-" * 10_000 + "h",
    " + ".join(["h"] * 10_000),
    "W @ " * 10_000 + "h",
    "[" * 10_000 + "h" + "]" * 10_000,
    " + ".join(["h"] * (MAX_NESTING + 1)),
])
def test_deep_nesting_is_a_clear_error(expr):
    e = rejected(f"a = tanh(h)\nh_next = {expr}", lineno=2)
    assert "nested" in e.msg and "expected" in e.msg and "got" in e.msg, e.msg


def test_nesting_up_to_the_limit_is_accepted():
    cell = eq("h_next = " + " + ".join(["h"] * (MAX_NESTING - 1)))
    assert cell.outputs[0].shape == ("B", 3)


# ---- regressions the fuzzer found (tests/test_fuzz_equations.py) ----

def test_assignment_above_the_state_header():
    # headers may come anywhere: 'h = x' was taken as an equation, then h declared a state, and
    # Cell() raised GraphError (a shape mismatch) instead of a declaration error
    e = rejected("input x: 3\nh = x\nstate h: 4\nh_next = tanh(h)", lineno=2, inputs={},
                 states={})
    assert e.msg.startswith("cannot assign to state 'h'")


@pytest.mark.parametrize("text,role,lineno", [
    ("h_next = h\nhn = -bias\nnext h: hn", "next value of state 'h'", 2),
    ("y = tanh(bias)\nh_next = h\noutput y, h_next", "output", 1),
])
def test_a_step_result_computed_from_parameters_only(text, role, lineno):
    # (1, n) instead of (B, n): Cell() raised GraphError for a next state
    e = rejected(text, lineno=lineno, params={"bias": 3})
    assert f"is the {role} but is computed from parameters and numbers only: expected a " \
           "per-example value (B, n), got (1, 3)" in e.msg


# ---- 2. parse time is linear ----

def chain(n: int) -> str:
    """n simple equations, each reading the one above and a parameter of its own."""
    lines = ["input x: 4", "state h: 8", "a0 = tanh(W0 @ x + h)"]
    lines += [f"a{i} = tanh(a{i - 1} * scale{i} + h)" for i in range(1, n)]
    return "\n".join(lines + [f"h_next = a{n - 1}"])


def calls_to_parse(n: int) -> int:
    """Python and C function calls made while parsing ``chain(n)``: a machine-independent
    measure of work (a timing would flake on a shared 2-core machine)."""
    text = chain(n)
    prof = cProfile.Profile()
    prof.enable()
    cell_from_equations(text, filename="chain.eq")
    prof.disable()
    return int(pstats.Stats(prof).total_calls)  # type: ignore[attr-defined]


def test_parse_work_grows_linearly():
    # before: a site walk of the whole graph per equation and a difflib scan of every name per
    # parameter made 4x the lines cost ~13x the calls; linear is 4x (1.5x allows for noise in
    # constant terms, a quadratic part cannot hide under it at these sizes)
    small, big = calls_to_parse(300), calls_to_parse(1200)
    assert big / small < 4 * 1.5, (small, big)


def test_ten_thousand_lines_parse():
    cell = cell_from_equations(chain(10_000), filename="chain.eq")
    assert len(cell.params) == 10_000 and cell.outputs[0].shape == ("B", 8)
    assert str(cell)   # printable


def test_typo_check_still_works_in_a_large_cell():
    # above 200 names the typo check uses an index of one-edit neighbours: still finds them
    text = chain(1500).replace("h_next = a1499", "h_next = a1499 + a1_499")
    with pytest.raises(EquationError, match=r"undefined name 'a1_499'; did you mean 'a1499'\?"):
        cell_from_equations(text, filename="chain.eq")


# ---- 3. non-ASCII names through the backends ----

NAMES = ["gru", "lstm_zoo", "a_b", "a__b", "a-b", "a.b", "é", "état", "etat", "__e9_tat",
         "__e9_", "_", "__", "", "h1", "Wα", "W__3b1_", "数", "_x", "x_", "x__", "日本"]


def test_mangling_is_ascii_injective_and_keeps_plain_names():
    from codegen.mangle import demangle, mangle
    out = {n: mangle(n) for n in NAMES}
    assert len(set(out.values())) == len(NAMES)            # collision-free on tricky names
    for n, m in out.items():
        assert re.fullmatch(r"[A-Za-z0-9_]+", m), (n, m)
        assert demangle(m) == n                              # and decodable
    assert [mangle(n) for n in ("gru", "lstm_zoo", "a_b", "h1")] == ["gru", "lstm_zoo", "a_b",
                                                                    "h1"]
    assert mangle("état") == mangle("état")                 # deterministic


UNICODE_CELL = """\
# cell: état
input xα: 3
state hβ: 4
gate = sigmoid(Wα @ xα + Uβ @ hβ + β)
hβ_next = gate * hβ + (1 - gate) * tanh(Wγ @ xα)
"""


def test_non_ascii_names_compile_and_run_on_llvm():
    pytest.importorskip("llvmlite")
    cell = cell_from_equations(UNICODE_CELL)
    cc = graphrnn.compile(cell, "llvm", dtype="float64")
    assert cc.prefix.isascii() and cc.prefix.isidentifier()
    ref = graphrnn.compile(cell, "ref", dtype="float64")
    rng = np.random.default_rng(0)
    ps = ref.init_params(0)
    xs = [rng.standard_normal((5, 2, 3))]
    h0 = [rng.standard_normal((2, 4))]
    for a, b in zip(sum(cc.forward(ps, xs, h0), []), sum(ref.forward(ps, xs, h0), []),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_cells_whose_names_differed_only_in_punctuation_get_their_own_symbols():
    pytest.importorskip("llvmlite")
    from codegen.llvm import module_prefix
    assert module_prefix("a-b", "float32") != module_prefix("a_b", "float32")
    assert module_prefix("état", "float32") != module_prefix("_tat", "float32")


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the header")
def test_exported_header_of_a_non_ascii_cell_is_valid_c(tmp_path):
    pytest.importorskip("llvmlite")
    from codegen.llvm import export
    # two states whose names differ only in a Greek letter would give one enum constant twice
    cell = cell_from_equations("# cell: état\ninput x: 3\nstate hα: 2, hβ: 2\n"
                               "hα_next = tanh(W @ x + hβ)\nhβ_next = hα * hβ\n")
    paths = export(cell, tmp_path, emit=("header",))
    header = paths["header"]
    assert header.name.isascii()
    main = tmp_path / "main.c"
    main.write_text(f'#include "{header.name}"\nint main(void) {{ return 0; }}\n')
    subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-fsyntax-only", "-I", str(tmp_path),
                    str(main)], check=True, capture_output=True)


def test_cuda_kernel_names_of_a_non_ascii_cell_are_c_identifiers():
    from codegen.cuda_exec import ProgramExecutor
    from graphrnn.pipeline import build_program
    # a diagonal recurrence (no product on the state): its time loop is one kernel named after
    # the cell, besides the pointwise kernels
    cell = cell_from_equations("# cell: état\ninput xα: 3\nstate hβ: 4\n"
                               "hβ_next = tanh(Wα @ xα) + sigmoid(uβ * hβ) * hβ\n")
    ex = ProgramExecutor(build_program(cell))
    names = [k.name for k in ex.kernels()]
    assert names and any("loop" in n for n in names)
    for k in ex.kernels():
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k.name), k.name
        assert k.source.isascii() or "/*" in k.source


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ for the CUDA shim")
def test_non_ascii_cell_runs_through_the_cuda_kernels_on_the_cpu(tmp_path):
    from codegen.cuda_exec import CudaCpuBackend
    cell = cell_from_equations(UNICODE_CELL)
    cc = CudaCpuBackend(cell, "float64", cache_dir=tmp_path)
    ref = graphrnn.compile(cell, "ref", dtype="float64")
    rng = np.random.default_rng(1)
    ps = ref.init_params(0)
    xs, h0 = [rng.standard_normal((3, 2, 3))], [rng.standard_normal((2, 4))]
    for a, b in zip(sum(cc.forward(ps, xs, h0), []), sum(ref.forward(ps, xs, h0), []),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_train_on_a_non_ascii_cell_uses_llvm_without_falling_back(tmp_path, capsys):
    pytest.importorskip("llvmlite")
    from graphrnn.cli import main
    (tmp_path / "état.eq").write_text("# cell: état\nstate hβ: 8\n"
                                      "hβ_next = tanh(Wα @ x + U @ hβ + β)\n")
    (tmp_path / "text.txt").write_text("the cat sat on the mat.\n" * 40)
    rc = main(["train", "--data", str(tmp_path / "text.txt"), "--out", str(tmp_path / "run"),
               "--cell", str(tmp_path / "état.eq"), "--steps", "2", "--hidden", "8",
               "--batch", "2", "--seq-len", "8", "--no-progress", "--sample-length", "5",
               "--eval-every", "0"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "backend llvm" in out, out
    assert "unavailable" not in err, err


def test_nfkc_names_match_what_pythons_parser_reads():
    # Python reads the identifier ℎ (U+210E) as h and ﬁ as fi: headers and arguments too
    cell = cell_from_equations("input x: 2\nstate ℎ: 3\nh_next = tanh(W @ x) + ℎ\n")
    assert [s.arg for s in cell.states] == ["h"]
    cell2 = cell_from_equations("h_next = h + ﬁ", {"ﬁ": 3}, {"ℎ": 3})
    assert [n.arg for n in cell2.inputs + cell2.states] == ["fi", "h"]
    # Python rejects h₁ (subscript digits are not identifier characters); so does a header
    e = rejected("state h₁: 3\nh_next = h", lineno=1)
    assert "malformed state line: expected NAME: SIZE items, got 'h₁: 3'" in e.msg


# ---- 4. unused inputs/states and confusable names ----

def caught(text: str, **kw) -> list[warnings.WarningMessage]:
    assert hasattr(errors, "EquationWarning"), "no warning class for equations"
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        eq(text, **kw)
    return [w for w in ws if issubclass(w.category, errors.EquationWarning)]


def test_cyrillic_h_becomes_a_parameter_and_is_flagged():
    # 'һ' (U+04BB) reads as h; it silently became a learned (1, 3) bias and h went unused
    ws = caught("input x: 3\nstate h: 3\nh_next = tanh(W @ x + һ)", inputs={}, states={})
    kinds = {w.category: w for w in ws}
    assert set(kinds) == {errors.UnusedNameWarning, errors.ConfusableNameWarning}
    assert all(issubclass(w.category, UserWarning) for w in ws)
    unused, conf = kinds[errors.UnusedNameWarning], kinds[errors.ConfusableNameWarning]
    assert str(unused.message).startswith("cell.eq:2: state 'h' (declared on line 2) is never "
                                          "used: expected the equations to read it")
    assert (unused.filename, unused.lineno) == ("cell.eq", 2)
    assert str(conf.message).startswith("cell.eq:3: parameter 'һ' looks like state 'h' (line 2) "
                                        "but is a different name")
    assert "U+04BB CYRILLIC SMALL LETTER SHHA" in str(conf.message)
    assert (conf.filename, conf.lineno) == ("cell.eq", 3)


def test_greek_alpha_next_to_latin_a():
    ws = caught("α = tanh(h)\na = α + x\nh_next = a")
    assert [w.category for w in ws] == [errors.ConfusableNameWarning]
    assert "value 'α' looks like value 'a' (line 2)" in str(ws[0].message)
    assert "GREEK SMALL LETTER ALPHA" in str(ws[0].message)


def test_unused_input_given_as_an_argument():
    ws = caught("h_next = tanh(h)", inputs={"x": 3})
    assert [w.category for w in ws] == [errors.UnusedNameWarning]
    assert "input 'x' (declared by the inputs= argument) is never used" in str(ws[0].message)


def test_a_clean_cell_gives_no_warning():
    # the warnings can stay silent: Greek names alone, with no Latin twin, are fine
    assert caught("α = tanh(W @ x + h)\nh_next = α * h") == []
    assert caught("r = sigmoid(W_r @ x + U_r @ h)\nh_next = r * h + (1 - r) * tanh(V @ x)") == []


def test_cli_reads_header_sizes_as_the_frontend_does():
    # the CLI's own scan of header lines did int('²') (ValueError: '²'.isdigit() is True)
    from graphrnn.tools.cli_tools import equations_cell
    for size in ("²", "9" * 5000):
        # the CLI's error (CellSpecError) carries the frontend's message, on one line
        with pytest.raises(graphrnn.GraphRNNError, match=r"cell\.eq:1: state h: (size must be a "
                                                         r"positive integer|expected a size)"):
            equations_cell(f"state h: {size}\nh_next = tanh(W @ x + h)", "cell.eq", 3, 4)
