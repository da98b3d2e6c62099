"""The equations frontend: every construct, every rejection (messages pinned), agreement with the
trace frontend, and gradients against finite differences."""

import builtins
import re

import numpy as np
import pytest
import sympy
from helpers import assert_all_close, cotangents, fd_and_backward, sequences

import graphrnn
from frontends import trace as tr
from frontends.equations import cell_from_equations, parse_file
from graphrnn.errors import EquationError
from graphrnn.interp import evaluate
from graphrnn.ir import site_of, where
from graphrnn.ops import Ops

GRU = """\
# cell: gru
input x: 4
state h: 5
r = sigmoid(W_xr @ x + W_hr @ h + b_r)
z = sigmoid(W_xz @ x + W_hz @ h + b_z)
hc = tanh(W_c @ [r * h, x] + b_c)
h_next = (1 - z) * h + z * hc
output h_next
"""

LSTM = """\
i = sigmoid(W_xi @ x + W_hi @ h + b_i)   # input gate
f = sigmoid(W_xf @ x + W_hf @ h + b_f)
o = sigmoid(W_xo @ x + W_ho @ h + b_o)
g = tanh(W_xg @ x + W_hg @ h + b_g)
c_next = f * c + i * g
h_next = o * tanh(c_next)
"""


def eq(text, inputs=None, states=None, **kw):
    kw.setdefault("filename", "cell.eq")
    return cell_from_equations(text, inputs if inputs is not None else {"x": 3},
                               states if states is not None else {"h": 3}, **kw)


def run_step(cell, params, x, h, batch=2):
    """One step through the reference interpreter; returns outputs + next states."""
    env = {cell.inputs[0]: x, **{s: v for s, v in zip(cell.states, h, strict=True)},
           **{p: params[p.arg] for p in cell.params}}
    return evaluate(cell.roots, env, batch=batch)


def rand_params(cell, rng, scale=0.5):
    return {p.arg: rng.uniform(-scale, scale, p.shape) for p in cell.params}


# ---- constructs ----

def test_gru_file_with_header(tmp_path):
    path = tmp_path / "gru.eq"
    path.write_text(GRU)
    cell = parse_file(path)
    assert cell.name == "gru"
    assert [n.arg for n in cell.inputs] == ["x"] and [n.arg for n in cell.states] == ["h"]
    assert cell.param_shapes() == {"W_xr": (5, 4), "W_hr": (5, 5), "b_r": (1, 5),
                                   "W_xz": (5, 4), "W_hz": (5, 5), "b_z": (1, 5),
                                   "W_c": (5, 9), "b_c": (1, 5)}
    assert cell.output_names == ("h_next",)
    assert cell.outputs[0] is cell.next_states[0]
    # W @ x is MATMUL(x, W, (False, True)): PyTorch's (out, in) weight layout
    mm = [n for n in cell.nodes() if n.op is Ops.MATMUL]
    assert all(n.arg == (False, True) for n in mm) and len(mm) == 5
    # every node knows the equation line it came from
    s = site_of(cell.params[[p.arg for p in cell.params].index("W_c")])
    assert (s.file, s.line, s.frontend) == (str(path), 6, "equations")
    assert site_of(cell.outputs[0]).line == 7
    assert site_of(cell.outputs[0]).code == "h_next = (1 - z) * h + z * hc"
    assert "gru.eq:7" in where(cell.outputs[0])


def test_arguments_instead_of_header_and_name_default():
    cell = cell_from_equations(GRU.split("output")[0].replace("input x: 4\n", "")
                               .replace("state h: 5\n", "").replace("# cell: gru\n", ""),
                               {"x": 4}, {"h": 5})
    assert cell.name == "cell" and cell.param_shapes()["W_c"] == (5, 9)
    named = cell_from_equations(GRU, name="mygru")
    assert named.name == "mygru"


def test_header_and_arguments_must_agree():
    with pytest.raises(EquationError, match=r"input 'x' is declared with two sizes, 7 and 4"):
        cell_from_equations(GRU, inputs={"x": 7})
    assert cell_from_equations(GRU, inputs={"x": 4}).inputs[0].shape == ("B", 4)


def test_every_elementwise_construct_matches_numpy():
    text = """
    a = -x + +h * 2 * 0.5          # unary minus/plus, folding 2 * 0.5
    b = a / (1 + exp(h)) - 3
    c = sigmoid(a) + tanh(b) + relu(a) + softplus(b) + sqrt(exp(a)) + log(1 + exp(b))
    d = max(a, 0) + min(b, h) + abs(a) + square(b) + a ** 2 + exp(a) ** 0.5 + b ** 1
    h_next = c + d - 2 / exp(a)
    """
    cell = eq(text)
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    (out, _nxt) = run_step(cell, {}, x, [h])
    sig = 1 / (1 + np.exp(-x))
    a = -x + h
    b = a / (1 + np.exp(h)) - 3
    c = (1 / (1 + np.exp(-a)) + np.tanh(b) + np.maximum(a, 0) + np.log1p(np.exp(b))
         + np.sqrt(np.exp(a)) + np.log(1 + np.exp(b)))
    d = (np.maximum(a, 0) + np.minimum(b, h) + np.abs(a) + b * b + a * a + np.sqrt(np.exp(a))
         + b)
    np.testing.assert_allclose(out, c + d - 2 / np.exp(a), rtol=1e-5)
    assert sig.shape == out.shape
    assert not cell.params


def test_matmul_concat_and_bias_shapes():
    cell = eq("h_next = tanh(W @ [h, x] + U @ x + b)", {"x": 2}, {"h": 4})
    assert cell.param_shapes() == {"W": (4, 6), "U": (4, 2), "b": (1, 4)}
    assert any(n.op is Ops.EXPAND for n in cell.nodes())  # the bias is broadcast explicitly
    rng = np.random.default_rng(1)
    ps = rand_params(cell, rng)
    x, h = rng.standard_normal((3, 2)), rng.standard_normal((3, 4))
    (out, _) = run_step(cell, ps, x, [h], batch=3)
    want = np.tanh(np.concatenate([h, x], 1) @ ps["W"].T + x @ ps["U"].T + ps["b"])
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_shapes_inferred_through_a_concat_with_one_unknown_part():
    # W1's out size is only known from the concat's total: 7 = 3 + out
    cell = eq("a = W1 @ x\nh_next = tanh(V @ [x, a] + W2 @ h)", {"x": 3}, {"h": 2},
              params={"V": (2, 7)})
    assert cell.param_shapes()["W1"] == (4, 3)


def test_shapes_fixed_point_across_lines():
    # W's out size comes from line 2 (added to h), back-propagated to line 1's value
    cell = eq("a = W @ x\nb = tanh(a) * v\nh_next = b + h", {"x": 3}, {"h": 6})
    assert cell.param_shapes() == {"W": (6, 3), "v": (1, 6)}


def test_params_argument_and_param_header():
    cell = eq("y = U @ h\nh_next = tanh(W @ x + h)", {"x": 3}, {"h": 4}, params={"U": (9, 4)},
              outputs=["y", "h_next"])
    assert cell.param_shapes()["U"] == (9, 4)
    assert cell.output_names == ("y", "h_next") and cell.outputs[0].shape == ("B", 9)
    text = "param U: 9 x 4, b: 4\nparam V: (9, 4)\ny = U @ h + V @ h\nh_next = h + b\noutput y"
    cell2 = eq(text, {"x": 3}, {"h": 4})
    assert cell2.param_shapes() == {"U": (9, 4), "V": (9, 4), "b": (1, 4)}


def test_next_states_explicit_header_and_argument():
    text = "hn = tanh(W @ x + h)\ncn = c + hn\nnext h: hn, c: cn\noutput hn, cn"
    cell = eq(text, {"x": 2}, {"h": 3, "c": 3})
    assert cell.next_states[1] is cell.outputs[1]
    cell2 = eq("hn = tanh(W @ x + h)", {"x": 2}, {"h": 3}, next_states={"h": "hn"})
    assert cell2.output_names == ("hn",)


def test_output_defaults_to_first_states_next_value():
    cell = eq(LSTM, {"x": 3}, {"h": 4, "c": 4})
    assert cell.output_names == ("h_next",) and cell.outputs[0] is cell.next_states[0]


def test_dtype_and_identity_of_repeated_subexpressions():
    cell = eq("a = W @ x\nb = W @ x\nh_next = a + b + h", {"x": 2}, {"h": 2}, dtype="float64")
    assert cell.dtype == "float64"
    add = cell.next_states[0].src[0]
    assert add.src[0] is add.src[1]  # hash-consed: one matmul


def test_comments_blank_lines_and_indentation():
    cell = eq("\n   # a comment\n\n   h_next = tanh(h)   # trailing comment\n\n")
    assert cell.outputs[0].op is Ops.TANH


# ---- rejections, each message pinned ----

REJECT = [
    ("h_next = h.T", r"attribute access not allowed: 'h.T'"),
    ("h_next = np.tanh(h)", r"attribute access not allowed: 'np.tanh'"),
    ("h_next = W.T @ h", r"attribute access not allowed: 'W.T'"),
    ("h_next = h[0]", r"subscripts not allowed: 'h\[0\]'"),
    ("h_next = (lambda q: q)(h)", r"lambdas not allowed"),
    ("import os", r"imports are not allowed"),
    ("if h: h_next = h", r"got a 'if' statement"),
    ("from os import path", r"imports are not allowed"),
    ("h_next = sigmod(h)", r"unknown function 'sigmod'; did you mean 'sigmoid'\?"),
    ("h_next = print(h)", r"unknown function 'print'"),
    ("h_next = tanh(h, out=h)", r"keyword arguments are not allowed: tanh\(\.\.\. out=\.\.\.\)"),
    ("h_next = tanh(h, h)", r"tanh\(\) takes 1 argument, got 2"),
    # max(h) alone is the row max now (test_equations_lang.py); three arguments are not
    ("h_next = max(h, h, h)", r"max\(\) takes 1 or 2 arguments, got 3"),
    ("h_next = q + h_nxt", r"undefined name 'h_nxt'; did you mean 'h_next'\?"),
    ("a = tanh(h)\na = a * h\nh_next = a", r"reassignment of 'a' \(first assigned on line 1\)"),
    ("h = tanh(h)", r"cannot assign to state 'h'.*name its next value h_next"),
    ("x = tanh(h)", r"cannot assign to input 'x'"),
    ("h_next = a\na = tanh(h)", r"'a' is used before its assignment on line 2 \(a cycle"),
    ("h_next = tanh(U @ a + h)\na = tanh(h)", r"'a' is used before its assignment on line 2"),
    ("a = a + h\nh_next = a", r"'a' is used in its own definition \(a cycle within one step\)"),
    ("h_next = h > x", r"comparisons not allowed: 'h > x'"),
    ("h_next = h if x else h", r"conditional expressions not allowed"),
    ("h_next = h and x", r"'and'/'or' not allowed"),
    ("h_next = h + tanh(x) * [h, x]", r"shape mismatch in 'tanh\(x\) \* \[h, x\]': 'tanh\(x\)' "
     r"has 3 features but '\[h, x\]' has 6 features"),
    ("h_next = h % 2", r"operator '%' is not allowed"),
    ("h_next = ~h", r"operator '~' is not allowed"),
    ("h_next = h ** 3", r"only the powers \*\* 2, \*\* 0.5 and \*\* 1"),
    ("h_next = (h, x)", r"tuples not allowed.*write \[a, b\]"),
    ("h_next = h + 'a'", r"only numbers are allowed as constants, got 'a'"),
    ("h_next = h + True", r"only numbers are allowed as constants, got True"),
    ("h_next = tanh(h", r"syntax error: '\(' was never closed"),
    ("a = h; h_next = a", r"one equation per line: found 2 statements"),
    ("h_next += h", r"augmented assignment"),
    ("h_next: int = h", r"annotated assignment"),
    ("a = b = h", r"chained assignment"),
    ("a, b = h, x", r"the left side must be a single name"),
    ("tanh(h)", r"expected an equation NAME = EXPRESSION, got a bare expression"),
    ("h_next = x @ W", r"the left of @ must be a weight matrix \(a parameter name\), got input "
     r"'x'"),
    ("h_next = tanh(h) @ x", r"the left of @ must be a weight matrix.*got 'tanh\(h\)'"),
    ("h_next = W @ 2", r"the right of @ must be a per-example value"),
    ("h_next = W @ h + W", r"parameter 'W' is a matrix .* but is used here as a vector"),
    ("h_next = b + b @ h", r"parameter 'b' is a vector .* on the left of @ as a matrix"),
    ("h_next = tanh + h", r"function 'tanh' used as a value; did you mean tanh\(\.\.\.\)\?"),
    ("tanh = h\nh_next = h", r"'tanh' is a function name and cannot be assigned"),
    # a name bound to a number is a named constant now (test_equations_lang.py); given as
    # the next value it is refused
    ("a = 2 * 3\nh_next = h\noutput a", r"'a' is a named constant \(6\) but is given as the "
                                         r"output"),
    ("h_next = h + sigmoid(1)", r"sigmoid\(\) of plain numbers"),
    ("h_next = h * (1 / 0)", r"division by the number zero"),
    ("h_next = h + []", r"empty concatenation"),
    ("h_next = W @ [h, 1]", r"cannot concatenate the number 1"),
    ("h_next = tanh(W @ [h, q])", r"cannot infer the in size of parameter 'W'.*"
     r"params=\{'W': \(3, in\)\}"),
    ("y = W @ h\nh_next = h\noutput y", r"cannot infer the out size of parameter 'W': no "
     r"equation fixes it; pass params=\{'W': \(out, 3\)\}"),
    ("h_next = h\noutput yy", r"undefined name 'yy' given as the output"),
    ("hn = h\nnext h: hnn", r"undefined name 'hnn' given as the next value of state 'h'; did "
     r"you mean 'hn'\?"),
    ("hn = h", r"no next value for state 'h': assign h_next = \.\.\. or name it with 'next h: "),
    ("h_next = h\nnext q: h", r"next value given for 'q', which is not a state"),
    ("h_next = W @ x", r"shape mismatch: 'h_next' is the next value of state 'h' \(3 features\)"
     r" but has 5 features"),
    ("input y 3\nh_next = h", r"malformed input line: expected NAME: SIZE items, got 'y 3'"),
    ("state c: -1\nh_next = h", r"state c: size must be a positive integer, got '-1'"),
    ("state c: two\nh_next = h", r"state c: size must be a positive integer, got 'two'"),
    ("param W: 3 by 4\nh_next = h", r"param W: expected a shape like '20 x 10'"),
    ("input h: 3\nh_next = h", r"input 'h' is already declared as state 'h'"),
    ("param Q: 4\nh_next = h", r"shapes given for parameters \['Q'\] that no equation uses"),
    ("", r"no equations found"),
    ("cell 9bad\nh_next = h", r"malformed|syntax error|cell name"),
]


@pytest.mark.parametrize("text,message", REJECT, ids=[r[1][:40] for r in REJECT])
def test_rejections_name_line_and_token(text, message):
    with pytest.raises(EquationError, match=message) as ei:
        eq(text, params={"W": (5, 3)} if "W @ x" in text else None)
    e = ei.value
    assert isinstance(e, SyntaxError) and isinstance(e, graphrnn.GraphRNNError)
    assert str(e).startswith("cell.eq")
    if text.strip():
        assert e.lineno is not None or "no next value" in message or "no equation uses" \
            in message
    if e.lineno is not None:   # the caret points into the offending line
        line = text.splitlines()[e.lineno - 1]
        assert e.offset is not None and 1 <= e.offset <= len(line) + 1, (e.offset, line)


def test_error_points_at_line_and_column():
    text = "a = tanh(h)\nb = a + x\nh_next = a * sigmod(b)"
    with pytest.raises(EquationError) as ei:
        eq(text)
    e = ei.value
    assert (e.filename, e.lineno, e.offset) == ("cell.eq", 3, len("h_next = a * ") + 1)
    lines = str(e).splitlines()
    assert lines[0].startswith("cell.eq:3: unknown function 'sigmod'")
    assert lines[1].strip() == "h_next = a * sigmod(b)"
    assert lines[2].index("^") == lines[1].index("sigmod")


@pytest.mark.parametrize("text,message,token", [
    # a forgotten state would become a learned (1, n) bias and never carry over
    ("c_next = c + h\nh_next = tanh(c_next)",
     r"'c' is not an input or a state, but c_next is assigned: declare the state", "c + h"),
    # an unknown name right of @ would become a (1, n) parameter and blame the weight's size
    ("h_next = tanh(U @ hidden_prev)",
     r"undefined name 'hidden_prev' on the right of @: it must be an input, a state or a value "
     r"assigned above", "hidden_prev"),
])
def test_silent_parameters_are_refused(text, message, token):
    with pytest.raises(EquationError, match=message) as ei:
        eq(text)
    e = ei.value
    line = text.splitlines()[e.lineno - 1]
    assert e.offset == line.index(token) + 1


@pytest.mark.parametrize("text,hint", [("h_next = tanh(W · [h, x])", "write @ for a matrix"),
                                       ("h_next = f ⊙ h", "write * for the elementwise"),
                                       ("h_next = σ(h)", "did you mean 'sigmoid'")])
def test_lecture_notation_gets_a_hint(text, hint):
    with pytest.raises(EquationError, match=re.escape(hint)):
        eq(text)


def test_shape_mismatch_with_declared_matmul():
    with pytest.raises(EquationError, match=r"shape mismatch in 'W @ x': W takes 4 features but "
                                            r"'x' has 3 features") as ei:
        eq("h_next = h + W @ x", params={"W": (3, 4)})
    assert ei.value.lineno == 1 and ei.value.offset == len("h_next = h + ") + 1


def test_tied_weight_used_with_two_sizes():
    with pytest.raises(EquationError, match=r"W takes 2 features but 'h' has 3"):
        eq("h_next = W @ x + W @ h", {"x": 2}, {"h": 3})


def test_concat_sizes_solved_after_the_fact():
    # u's size is known only from line 2; then the concat needs 3 + 3 but V takes 4
    with pytest.raises(EquationError, match=r"shape mismatch in '\[x, u\]': the parts have "
                                            r"3 \+ 3 = 6 features but 4 are needed") as ei:
        eq("a = V @ [x, u]\nh_next = h + u + U @ a", params={"V": (2, 4)})
    assert ei.value.lineno == 1
    with pytest.raises(EquationError, match=r"5 features are needed but the known parts "
                                            r"already have 6"):
        eq("h_next = h + V @ [h, x, W @ x]", params={"V": (3, 5)})
    # and the unknown part is solved when it fits: W's out size is 5 - 3 = 2
    cell = eq("h_next = h + V @ [h, W @ x]", params={"V": (3, 5)})
    assert cell.param_shapes()["W"] == (2, 3)


def test_bad_arguments():
    with pytest.raises(EquationError, match=r"input 'x': size must be a positive int"):
        cell_from_equations("h_next = h", {"x": 0}, {"h": 3})
    with pytest.raises(EquationError, match=r"dtype must be one of"):
        cell_from_equations("h_next = h", {}, {"h": 3}, dtype="float16")
    with pytest.raises(EquationError, match=r"param 'W': shape must be \(out, in\)"):
        eq("h_next = W @ h", params={"W": (3, 0)})
    with pytest.raises(TypeError, match=r"text must be a str"):
        cell_from_equations(b"h_next = h", {}, {"h": 3})
    with pytest.raises(EquationError, match=r"next value given for 'c'"):
        eq("h_next = h", next_states={"c": "h"})


def test_parser_never_evaluates_user_text(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("user text must not be evaluated")
    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    monkeypatch.setattr(sympy, "sympify", boom)
    monkeypatch.setattr(sympy, "parse_expr", boom, raising=False)
    cell = eq(GRU.replace("input x: 4", "input x: 3").replace("state h: 5", ""), {}, {"h": 3})
    assert cell.name == "gru"
    for evil in ("h_next = __import__('os').system('touch /tmp/pwned') + h",
                 "h_next = h + (lambda: exit())()", "h_next = [c for c in h]",
                 "h_next = h.__class__.__bases__"):
        with pytest.raises(EquationError):
            eq(evil)


def test_deep_nesting_is_a_clear_error_not_a_crash():
    text = "h_next = " + " + ".join(["h"] * 3000)
    try:
        cell = eq(text)
    except EquationError as e:
        assert "nested" in str(e)
    else:
        assert cell.outputs[0].shape == ("B", 3)


def test_later_errors_point_back_to_the_equation_line():
    # the interpreter's error message names the equation file line of the failing node
    cell = eq("a = h * 2\nh_next = a + x", {"x": 3}, {"h": 3})
    assert "cell.eq:2" in where(cell.outputs[0])
    assert "cell.eq:1" in where(cell.outputs[0].src[0])


# ---- the same cells written with the trace frontend ----

def trace_lstm(I, H):
    cb = tr.CellBuilder("lstm", "float64")
    x, h, c = cb.input("x", I), cb.state("h", H), cb.state("c", H)
    z = x @ cb.param("Wx", (I, 4 * H)) + h @ cb.param("Wh", (H, 4 * H)) + cb.param("b", (1, 4 * H))
    i, f = tr.sigmoid(z[:, 0:H]), tr.sigmoid(z[:, H:2 * H])
    o, g = tr.sigmoid(z[:, 2 * H:3 * H]), tr.tanh(z[:, 3 * H:4 * H])
    c2 = f * c + i * g
    h2 = o * tr.tanh(c2)
    return cb.build([h2], {"h": h2, "c": c2})


def trace_gru(I, H):
    cb = tr.CellBuilder("gru", "float64")
    x, h = cb.input("x", I), cb.state("h", H)
    r = tr.sigmoid(x @ cb.param("Axr", (I, H)) + h @ cb.param("Ahr", (H, H))
                  + cb.param("cr", (1, H)))
    z = tr.sigmoid(x @ cb.param("Axz", (I, H)) + h @ cb.param("Ahz", (H, H))
                  + cb.param("cz", (1, H)))
    hc = tr.tanh(tr.concat([r * h, x]) @ cb.param("Ac", (H + I, H)) + cb.param("cc", (1, H)))
    h2 = (1 - z) * h + z * hc
    return cb.build([h2], [h2])


def _compare(c_eq, c_tr, p_eq, p_tr, I, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((5, 3, I))
    h0 = [rng.standard_normal((3, int(s.shape[1]))) for s in c_eq.states]
    a = graphrnn.compile(c_eq, "ref", dtype="float64").forward(p_eq, xs, h0)
    b = graphrnn.compile(c_tr, "ref", dtype="float64").forward(p_tr, xs, h0)
    assert_all_close(a[0] + a[1], b[0] + b[1], rtol=1e-12, atol=1e-12)


def test_lstm_equations_equal_trace_lstm():
    I, H = 3, 4
    c_eq = eq(LSTM, {"x": I}, {"h": H, "c": H}, dtype="float64")
    c_tr = trace_lstm(I, H)
    rng = np.random.default_rng(2)
    p_tr = rand_params(c_tr, rng)
    p_eq = {}
    for k, gate in enumerate("ifog"):
        cols = slice(k * H, (k + 1) * H)
        p_eq[f"W_x{gate}"] = p_tr["Wx"][:, cols].T
        p_eq[f"W_h{gate}"] = p_tr["Wh"][:, cols].T
        p_eq[f"b_{gate}"] = p_tr["b"][:, cols]
    _compare(c_eq, c_tr, p_eq, p_tr, I)


def test_gru_equations_equal_trace_gru():
    I, H = 4, 5
    c_eq = cell_from_equations(GRU, dtype="float64")
    c_tr = trace_gru(I, H)
    p_tr = rand_params(c_tr, np.random.default_rng(3))
    p_eq = {"W_xr": p_tr["Axr"].T, "W_hr": p_tr["Ahr"].T, "b_r": p_tr["cr"],
            "W_xz": p_tr["Axz"].T, "W_hz": p_tr["Ahz"].T, "b_z": p_tr["cz"],
            "W_c": p_tr["Ac"].T, "b_c": p_tr["cc"]}
    _compare(c_eq, c_tr, p_eq, p_tr, I)


def test_mismapped_weights_are_detected():
    # the comparison can fail: without the transpose the GRU disagrees
    I, H = 4, 4
    c_eq = cell_from_equations(GRU.replace("x: 4", "x: 4").replace("h: 5", "h: 4"),
                               dtype="float64")
    c_tr = trace_gru(I, H)
    p_tr = rand_params(c_tr, np.random.default_rng(3))
    p_eq = {"W_xr": p_tr["Axr"], "W_hr": p_tr["Ahr"], "b_r": p_tr["cr"], "W_xz": p_tr["Axz"],
            "W_hz": p_tr["Ahz"], "b_z": p_tr["cz"], "W_c": p_tr["Ac"].T, "b_c": p_tr["cc"]}
    with pytest.raises(AssertionError):
        _compare(c_eq, c_tr, p_eq, p_tr, I)


# ---- gradients: adjoint check against float64 central differences ----

def adjoint_check(cell, T_=4, batch=2, seed=0, tol=1e-6):
    cc = graphrnn.compile(cell, "ref", dtype="float64")
    rng = np.random.default_rng(seed)
    ps = {k: v + 0.0 for k, v in cc.init_params(seed, scale=0.5).items()}
    xs, h0 = sequences(cc, T_, batch, rng)
    _ys, _hT, res = cc.forward_train(ps, xs, h0)
    cy, ch = cotangents(cc, T_, batch, rng)
    g = cc.backward(ps, res, cy, ch)
    tp = {k: rng.standard_normal(v.shape) for k, v in ps.items()}
    tx = [rng.standard_normal(x.shape) for x in xs]
    th = [rng.standard_normal(h.shape) for h in h0]
    for what, direction in {"params": dict(dp=tp), "inputs": dict(dx=tx),
                            "states": dict(dh=th)}.items():
        fd, analytic = fd_and_backward(cc, ps, xs, h0, cy, ch, g, **direction)
        assert abs(fd - analytic) <= tol * max(1.0, abs(analytic)), (what, fd, analytic)


def test_gru_equations_gradients():
    adjoint_check(cell_from_equations(GRU))


def test_lstm_equations_gradients():
    adjoint_check(eq(LSTM, {"x": 3}, {"h": 4, "c": 4}))


def test_gradients_through_every_function():
    text = """
    a = W @ x + U @ h + b
    s = softplus(a) + sqrt(1 + square(a)) + log(1 + sigmoid(a)) + exp(-abs(a)) / 2
    m = max(a, h) - min(a, 0.3) + relu(a) * 0.1 + a ** 2 / 4
    h_next = tanh(s * m) / (2 + sigmoid(m))
    """
    adjoint_check(eq(text, {"x": 2}, {"h": 3}), seed=1)


def test_sites_survive_compiling_at_another_dtype():
    # compile() retypes the cell to float64; the new nodes keep the equation lines
    cell = eq("a = tanh(W_site @ x)\nh_next = a * h", {"x": 3}, {"h": 3})
    cc = graphrnn.compile(cell, "ref", dtype="float64")
    out = cc.cell.outputs[0]
    assert out.dtype == "float64" and out is not cell.outputs[0]
    assert (site_of(out).file, site_of(out).line) == ("cell.eq", 2)
    assert site_of(out.src[0]).line == 1


def test_reachable_lazily_from_graphrnn():
    import frontends.equations as mod
    assert graphrnn.equations is mod
    assert graphrnn.equations.cell_from_equations is cell_from_equations
