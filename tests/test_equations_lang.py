"""The cell language of issue 15: reductions over the features (sum, mean, max, min, var, std,
logsumexp) that broadcast back, layer_norm, feature slices v[a:b], ``i, f = split(z, 2)`` and
named constants. Each form: the values it means (numpy), ref/program/llvm agreement at float64,
gradients against central finite differences, and its errors (line, expected, received)."""

from pathlib import Path

import numpy as np
import pytest
from helpers import TOL, assert_all_close, cotangents, fd_and_backward, flat, sequences

import graphrnn
from frontends.equations import cell_from_equations, parse_file
from graphrnn.errors import EquationError
from graphrnn.interp import evaluate
from graphrnn.ops import Ops

BACKENDS = ("ref", "program", "llvm")

# Ba et al. 2016, the layer-normalized LSTM: W_x x, W_h h and c' normalized over the features,
# with gains and biases; one fused 4H pre-activation split into the gates.
LN_LSTM = """\
# cell: ln_lstm
input x: 3
state h: 4, c: 4
z = layer_norm(W_x @ x) * g1 + layer_norm(W_h @ h) * g2 + b
i, f, o, u = split(z, 4)
c_next = sigmoid(f) * c + sigmoid(i) * tanh(u)
h_next = sigmoid(o) * tanh(g3 * layer_norm(c_next) + b3)
output h_next
"""


def eq(text: str, inputs: dict | None = None, states: dict | None = None, **kw):
    kw.setdefault("filename", "lang.eq")
    return cell_from_equations(text, inputs if inputs is not None else {"x": 3},
                               states if states is not None else {"h": 4}, **kw)


def step(cell, h: np.ndarray, params: dict | None = None, x: np.ndarray | None = None):
    """One step on the reference interpreter: the outputs and next states."""
    env = {**dict(zip(cell.states, [h], strict=False)), **{p: (params or {})[p.arg]
                                                            for p in cell.params}}
    if cell.inputs:
        env[cell.inputs[0]] = x
    return evaluate(cell.roots, env, batch=h.shape[0])


def check_backends_and_gradients(cell, T: int = 3, batch: int = 2, seed: int = 0) -> None:
    """ref, program and llvm agree on every value of a training call at float64, and ref's
    gradients equal central finite differences along random directions."""
    results = {}
    for backend in BACKENDS:
        cc = graphrnn.compile(cell, backend, dtype="float64")
        rng = np.random.default_rng(seed)
        ps = cc.init_params(seed, scale=0.5)
        xs, h0 = sequences(cc, T, batch, rng)
        ys, hT, res = cc.forward_train(ps, xs, h0)
        dys, dhT = cotangents(cc, T, batch, rng)
        g = cc.backward(ps, res, dys, dhT)
        results[backend] = flat(ys, hT, g)
        if backend == "ref":
            tp = {k: rng.standard_normal(v.shape) for k, v in ps.items()}
            tx = [rng.standard_normal(x.shape) for x in xs]
            th = [rng.standard_normal(v.shape) for v in h0]
            for what, d in {"params": dict(dp=tp), "inputs": dict(dx=tx),
                            "states": dict(dh=th)}.items():
                fd, an = fd_and_backward(cc, ps, xs, h0, dys, dhT, g, **d)
                assert abs(fd - an) <= 1e-6 * max(1.0, abs(an)), (what, fd, an)
    for backend in BACKENDS[1:]:
        assert_all_close(results[backend], results["ref"], **TOL["float64"])


# ---- reductions ----

REDUCTION_VALUES = {
    "sum": lambda v: v.sum(1, keepdims=True),
    "mean": lambda v: v.mean(1, keepdims=True),
    "max": lambda v: v.max(1, keepdims=True),
    "min": lambda v: v.min(1, keepdims=True),
    "var": lambda v: v.var(1, keepdims=True),
    "std": lambda v: v.std(1, keepdims=True),
    "logsumexp": lambda v: np.log(np.exp(v).sum(1, keepdims=True)),
}


@pytest.mark.parametrize("fn", sorted(REDUCTION_VALUES))
def test_reduction_values_broadcast_back(fn):
    # h - fn(h): the (B, 1) value is expanded over h's features, as a bias is over the batch
    cell = eq(f"h_next = h - {fn}(h)", inputs={})
    assert any(n.op is Ops.REDUCE for n in cell.nodes())
    assert any(n.op is Ops.EXPAND for n in cell.nodes())
    h = np.random.default_rng(0).standard_normal((3, 4))
    (out, _nxt) = step(cell, h)
    np.testing.assert_allclose(out, h - REDUCTION_VALUES[fn](h), rtol=1e-6, atol=1e-6)


def test_logsumexp_is_stable():
    cell = eq("h_next = h - logsumexp(h)", inputs={}, dtype="float64")
    h = np.array([[1000.0, 999.0, -1000.0, 0.0]])
    (out, _nxt) = step(cell, h)
    want = h - (1000.0 + np.log1p(np.exp(-1.0) + np.exp(-2000.0) + np.exp(-1000.0)))
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_reduction_assigned_to_a_name_still_broadcasts():
    text = """
    m = mean(h)
    s = sqrt(var(h) + 0.1)
    h_next = (h - m) / s + max(h) * sigmoid(m) - min(h)
    """
    cell = eq(text, inputs={})
    h = np.random.default_rng(1).standard_normal((2, 4))
    (out, _nxt) = step(cell, h)
    m, v = h.mean(1, keepdims=True), h.var(1, keepdims=True)
    want = (h - m) / np.sqrt(v + 0.1) + h.max(1, keepdims=True) / (1 + np.exp(-m)) \
        - h.min(1, keepdims=True)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_layer_norm_value_and_eps():
    cell = eq("h_next = g * layer_norm(h) + b + layer_norm(h, 0.5)", inputs={},
              dtype="float64")
    rng = np.random.default_rng(2)
    h = rng.standard_normal((3, 4))
    ps = {"g": rng.standard_normal((1, 4)), "b": rng.standard_normal((1, 4))}
    (out, _nxt) = step(cell, h, ps)
    d = h - h.mean(1, keepdims=True)
    v = h.var(1, keepdims=True)
    want = ps["g"] * d / np.sqrt(v + 1e-5) + ps["b"] + d / np.sqrt(v + 0.5)
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_reductions_on_every_backend_with_gradients():
    text = """
    a = W @ x + U @ h + b
    m = mean(a)
    h_next = tanh((a - m) * sigmoid(std(a) + var(a)) + logsumexp(a) / 4 + sum(a) / 8)
    h2 = h_next * max(h) - min(a) * 0.1 + g * layer_norm(a)
    output h2
    """
    check_backends_and_gradients(eq(text, {"x": 3}, {"h": 4}))


# ---- slices and split ----

def test_slices_values():
    cell = eq("h_next = [h[2:4], h[0:1], h[3:]] * 1 + [h[:2], h[1:3]] * 0", inputs={},
              states={"h": 4})
    slices = [n.arg for n in cell.nodes() if n.op is Ops.SLICE]
    assert sorted(set(slices)) == [(0, 1), (0, 2), (1, 3), (2, 4), (3, 4)]
    h = np.arange(8.0).reshape(2, 4)
    (out, _nxt) = step(cell, h)
    np.testing.assert_allclose(out, np.concatenate([h[:, 2:4], h[:, 0:1], h[:, 3:]], 1))


def test_slice_bounds_may_be_named_constants():
    cell = eq("n = 2\nh_next = [h[n:4], h[0:n]]", inputs={}, states={"h": 4})
    assert sorted(n.arg for n in cell.nodes() if n.op is Ops.SLICE) == [(0, 2), (2, 4)]


def test_split_into_equal_parts_infers_the_fused_weight():
    text = """
    z = W @ x + U @ h + b
    i, f, o, u = split(z, 4)
    h_next = sigmoid(f) * h + sigmoid(i) * tanh(u) * sigmoid(o)
    """
    cell = eq(text, {"x": 3}, {"h": 5})
    shapes = {p.arg: p.shape for p in cell.params}
    # the split's parts have h's size, so z and the fused weights have 4 x 5 features
    assert shapes == {"W": (20, 3), "U": (20, 5), "b": (1, 20)}
    assert sorted(n.arg for n in cell.nodes() if n.op is Ops.SLICE) == \
        [(0, 5), (5, 10), (10, 15), (15, 20)]
    check_backends_and_gradients(cell)


def test_slices_on_every_backend_with_gradients():
    text = """
    z = tanh(W @ [x, h] + b)
    h_next = z[0:4] * sigmoid(z[4:8]) + [h[0:1], z[9:]] + sum(h[1:2]) * [h[2:], h[0:2]]
    """
    check_backends_and_gradients(eq(text, {"x": 3}, {"h": 4}, params={"W": (12, 7)}))


def test_llvm_gradient_of_sliced_matmul_plus_rotated_state():
    # a kernel wrote the new carried d_h in place while another of its outputs (the cotangent
    # of z[8:12]) still read the old d_h: llvm's noalias outputs let the store move above that
    # load (schedule.SweepBuilder._reads_only_for); ref and program were right
    cell = eq("z = W @ [x, h]\nh_next = [h[1:], h[0:1]] + z[8:12]", {"x": 3}, {"h": 4},
              params={"W": (12, 7)})
    check_backends_and_gradients(cell)


def test_llvm_gradient_of_sliced_matmul_plus_rotated_state_smallest():
    cell = eq("z = W @ h\nh_next = [h[1:], h[0:1]] + z[8:12] + x", {"x": 4}, {"h": 4},
              params={"W": (12, 4)})
    check_backends_and_gradients(cell, T=1)


# ---- named constants ----

def test_named_constants_are_numbers_not_parameters():
    text = """
    beta = 1.0
    half = beta / 2
    sq = half ** 2
    h_next = beta * h + half - sq + W @ x
    """
    cell = eq(text)
    assert sorted(p.arg for p in cell.params) == ["W"]
    h = np.ones((1, 4))
    ps = {"W": np.zeros((4, 3))}
    (out, _nxt) = step(cell, h, ps, np.zeros((1, 3)))
    np.testing.assert_allclose(out, h + 0.5 - 0.25)


def test_const_header_is_a_named_constant():
    cell = eq("const beta: 0.5, n: 2\nh_next = beta * [h[n:], h[0:n]] + W @ x")
    assert sorted(p.arg for p in cell.params) == ["W"]
    h = np.arange(4.0).reshape(1, 4)
    (out, _nxt) = step(cell, h, {"W": np.zeros((4, 3))}, np.zeros((1, 3)))
    np.testing.assert_allclose(out, 0.5 * np.array([[2.0, 3.0, 0.0, 1.0]]))


# ---- the layer-norm LSTM ----

def test_layer_norm_lstm_compiles_everywhere_with_gradients():
    cell = cell_from_equations(LN_LSTM)
    shapes = {p.arg: p.shape for p in cell.params}
    assert shapes == {"W_x": (16, 3), "W_h": (16, 4), "g1": (1, 16), "g2": (1, 16),
                      "b": (1, 16), "g3": (1, 4), "b3": (1, 4)}
    check_backends_and_gradients(cell, T=4, batch=3)


def test_layer_norm_lstm_forward_matches_numpy():
    cell = cell_from_equations(LN_LSTM, dtype="float64")
    rng = np.random.default_rng(3)
    ps = {p.arg: rng.standard_normal(p.shape) * 0.5 for p in cell.params}
    x, h, c = (rng.standard_normal((2, n)) for n in (3, 4, 4))
    env = {cell.inputs[0]: x, cell.states[0]: h, cell.states[1]: c,
           **{p: ps[p.arg] for p in cell.params}}
    out, h2, c2 = evaluate(cell.roots, env, batch=2)

    def ln(v):
        return (v - v.mean(1, keepdims=True)) / np.sqrt(v.var(1, keepdims=True) + 1e-5)

    def sg(v):
        return 1 / (1 + np.exp(-v))

    z = ln(x @ ps["W_x"].T) * ps["g1"] + ln(h @ ps["W_h"].T) * ps["g2"] + ps["b"]
    i, f, o, u = np.split(z, 4, axis=1)
    c_want = sg(f) * c + sg(i) * np.tanh(u)
    h_want = sg(o) * np.tanh(ps["g3"] * ln(c_want) + ps["b3"])
    np.testing.assert_allclose(c2, c_want, rtol=1e-12)
    np.testing.assert_allclose(h2, h_want, rtol=1e-12)
    np.testing.assert_allclose(out, h_want, rtol=1e-12)


# ---- errors: line, what was expected, what was received ----

LANG_REJECT = [
    ("param b: 4\nh_next = h + sum(b)", 2,
     r"sum\(\) of parameters and numbers only: expected a per-example value \(B, n\), got "
     r"\(1, 1\)|sum\(\) of parameters and numbers only: expected a per-example value \(B, n\), "
     r"got \(1, 4\)"),
    ("y = h[0:5]\nh_next = h + sum(y)", 1,
     r"slice out of range in 'h\[0:5\]': expected bounds 0 <= a < b <= 4 \(the features of "
     r"'h'\), got \[0:5\]"),
    ("y = h[4:]\nh_next = h + sum(y)", 1, r"slice out of range in 'h\[4:\]'"),
    ("a, b = split(h, 2)\nh_next = h", 1, None),  # valid: h has 4 features
    ("a, b, c = split(h, 3)\nh_next = h + sum(a)", 1,
     r"split not divisible in 'split\(h, 3\)': expected a size that is a multiple of 3, got 4 "
     r"features"),
    ("n = h\nh_next = h[0:n]", 2,
     r"a slice bound must be a constant non-negative integer: expected a number such as 4 or "
     r"a name bound to one, got 'n'"),
    ("h_next = h[0:1.5] + h", 1, r"a slice bound must be a constant non-negative integer"),
    ("h_next = h[-1:] + h", 1, r"got '-1'"),
    ("h_next = h[3:1] + h", 1, r"empty slice 'h\[3:1\]': expected bounds a < b, got 3 and 1"),
    ("h_next = h[::2]", 1, r"slice steps are not allowed: expected v\[a:b\], got 'h\[::2\]'"),
    ("h_next = h[0]", 1, r"subscripts not allowed: 'h\[0\]'"),
    ("a, b = split(h, 3)\nh_next = h", 1,
     r"split into 3 parts but 2 names on the left: expected as many names as parts"),
    ("a, b = h, h\nh_next = h", 1, r"the left side must be a single name, got 'a, b'; several "
                                   r"names need split"),
    ("h_next = h + split(h, 2)", 1, r"split gives several values: expected it alone"),
    ("h_next = h + mean(2)", 1, r"mean\(\) of a plain number: expected a per-example value"),
    ("h_next = layer_norm(h, h)", 1,
     r"the epsilon of layer_norm\(v, eps\) must be a positive number, got 'h'"),
    ("h_next = layer_norm(h, 0)", 1, r"must be a positive number, got '0'"),
    ("h_next = max(h, h, h)", 1, r"max\(\) takes 1 or 2 arguments, got 3"),
    ("beta = 2\ny = h * beta\nh_next = beta", 3,
     r"'h_next' is a named constant \(2\) but is given as the next value of state 'h'"),
    ("beta = 2", 1, r"only named constants found"),
    ("const beta: one\nh_next = h", 1,
     r"const beta: expected a number such as 1.0 or -2e-3, got 'one'"),
    ("const beta: 1e39\nh_next = h", 1, r"number out of range"),
    ("const beta: 1\nbeta = 2\nh_next = h", 2,
     r"cannot assign to 'beta': it is a const \(line 1\)"),
    ("const beta: 1\nh_next = beta @ h", 2, r"the left of @ must be a weight matrix"),
    ("const h_next: 1", 1, r"no equations found"),
    ("const beta: 1\nnext h: beta\ny = h * beta", 2,
     r"'beta' is a named constant \(1\) but is given as the next value"),
    ("h_next = h - sum(h) * [h, h]", 1, r"shape mismatch"),
]


@pytest.mark.parametrize("text,lineno,message", LANG_REJECT,
                         ids=[f"{i}:{r[0][:30]}" for i, r in enumerate(LANG_REJECT)])
def test_rejections(text, lineno, message):
    if message is None:
        eq(text, inputs={})
        return
    with pytest.raises(EquationError, match=message) as ei:
        eq(text, inputs={})
    if "only named constants" not in message and "no equations" not in message:
        assert f"lang.eq:{lineno}:" in str(ei.value)


# ---- the .eq example files ----

EXAMPLE_FILES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.eq"))


def test_there_are_eq_example_files() -> None:
    assert EXAMPLE_FILES, "examples/ should show the .eq format"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_eq_example_files_compile_everywhere_with_checked_gradients(path: Path) -> None:
    check_backends_and_gradients(parse_file(path, dtype="float64"))
