"""The zoo cells (``graphrnn.cells``, written with the trace frontend) written again with the
nngraph frontend and the equations frontend: once their weights are mapped, the forms compute
the same function.

"The same function" is checked over a T-step sequence in float64 at 1e-12: the outputs, the
final states, and the gradients of a random loss (on every output and on the final states) with
respect to the inputs, the initial states and the parameters (the parameter gradients pulled
back through the weight mapping). Deliberately wrong mappings make the same comparison fail, so
the comparison can fail.

- The LSTM in seven forms: ``cells.lstm`` in PyTorch's gate order (the reference), in char-rnn's
  and Zaremba's orders (weights moved with ``convert.convert_lstm_gate_order``), the lecture's
  nngraph ``make_lstm_step`` (eight Linears, mapped block by block), char-rnn's fused nngraph
  form (the same arrays as ``cells.lstm(gate_order="char-rnn")``), Zaremba's nngraph form (the
  same arrays as ``cells.lstm(gate_order="zaremba")``), and two equation forms (one matrix per
  operand, and the lectures' ``W · [h, x]``).
- Every other zoo cell as an nngraph graph (the lecture GRU with ``nn.JoinTable`` for
  ``[r * h, x]``, the peephole LSTM with ``nn.CMul`` peepholes, ...), its parameters named by
  ``annotate(name=...)`` and mapped to the zoo's by name.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphrnn
from frontends import equations
from graphrnn import cells, convert, nn

I, H, B, T = 3, 4, 2, 5
TOL = {"rtol": 1e-12, "atol": 1e-12}
KEYS = ("outputs", "final states", "d inputs", "d initial states")


# ---------------------------------------------------------------------------------------------
# running a cell and comparing two runs
# ---------------------------------------------------------------------------------------------

def random_params(cell, seed=0, scale=0.7):
    rng = np.random.default_rng(seed)
    return {p.arg: rng.uniform(-scale, scale, size=p.shape) for p in cell.params}


def run(cell, params, seed=1, grads=True):
    """Forward over T steps from random initial states, then the gradients of
    ``sum(dy * y) + sum(dh * h_T)`` for random dy, dh. The random data depend only on the
    shapes and the seed, so two cells with the same inputs and states get the same data."""
    assert cell.param_shapes() == {k: np.shape(v) for k, v in params.items()}, \
        "the mapped parameters must be exactly the cell's"
    cc = graphrnn.compile(cell, backend="ref", dtype="float64")
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((T, B, int(cell.inputs[0].shape[1])))
    h0 = [rng.uniform(-0.9, 0.9, (B, int(s.shape[1]))) for s in cell.states]
    ys, hT, res = cc.forward_train(params, xs, h0)
    out = {"states": [s.arg for s in cell.states], "outputs": ys, "final states": hT}
    if grads:
        d_ys = [rng.standard_normal(y.shape) for y in ys]
        d_hT = [rng.standard_normal(h.shape) for h in hT]
        g = cc.backward(params, res, d_ys, d_hT)
        out.update({"d inputs": g.inputs, "d initial states": g.states, "d params": g.params})
    return out


def assert_same(a, b, keys=KEYS):
    """Two runs agree on ``keys`` (and, where both have them, on the parameter gradients)."""
    assert a["states"] == b["states"]
    for key in keys:
        assert len(a[key]) == len(b[key]), key
        for k, (u, v) in enumerate(zip(a[key], b[key], strict=True)):
            np.testing.assert_allclose(v, u, err_msg=f"{key}[{k}]", **TOL)
    if "d params" in a and "d params" in b:
        ga, gb = a["d params"], b["d params"]
        assert sorted(ga) == sorted(gb)
        for name in ga:
            np.testing.assert_allclose(gb[name], ga[name], err_msg=f"d params[{name!r}]", **TOL)


# ---------------------------------------------------------------------------------------------
# (1) the LSTM in seven forms
# ---------------------------------------------------------------------------------------------

def blk(a, gate, order="ifgo"):
    """Column block of one gate of a fused (rows, 4H) array."""
    k = order.index(gate)
    return a[:, k * H:(k + 1) * H]


def join(blocks):
    return np.concatenate(blocks, axis=1)


# make_lstm_step creates its Linears gate by gate: (i2h, h2h) of i, f, the tanh candidate g, o
LECTURE_LINEARS = {"i": (1, 2), "f": (3, 4), "g": (5, 6), "o": (7, 8)}


def to_lecture(p, r):
    """Zoo ``lstm`` params (gate order ifgo) -> the lecture's eight Linears. The zoo's one bias
    is split between the i2h and h2h Linears (h2h gets ``r``), so both biases are exercised."""
    out = {}
    for gate, (kx, kh) in LECTURE_LINEARS.items():
        out[f"Linear_{kx}_W"] = blk(p["W_x"], gate)
        out[f"Linear_{kx}_b"] = blk(p["b"], gate) - blk(r, gate)
        out[f"Linear_{kh}_W"] = blk(p["W_h"], gate)
        out[f"Linear_{kh}_b"] = blk(r, gate)
    return out


def from_lecture_grads(g):
    """The lecture's parameter gradients as gradients of the zoo's params (gate order ifgo).
    Both biases of a gate enter the same sum, so their gradients must be equal."""
    for kx, kh in LECTURE_LINEARS.values():
        np.testing.assert_allclose(g[f"Linear_{kx}_b"], g[f"Linear_{kh}_b"], **TOL)
    return {"W_x": join([g[f"Linear_{LECTURE_LINEARS[q][0]}_W"] for q in "ifgo"]),
            "W_h": join([g[f"Linear_{LECTURE_LINEARS[q][1]}_W"] for q in "ifgo"]),
            "b": join([g[f"Linear_{LECTURE_LINEARS[q][0]}_b"] for q in "ifgo"])}


def to_fused(p, r, order, names):
    """Zoo params (ifgo) -> a fused nngraph form in ``order``: i2h/h2h Linear weights are the
    converted W_x/W_h themselves (our Linear W is (in, out)), the bias split as in
    ``to_lecture``."""
    q = convert.convert_lstm_gate_order(p, "ifgo", order)
    rq = convert.reorder_gates(r, "ifgo", order)
    wx, bx, wh, bh = names
    return {wx: q["W_x"], bx: q["b"] - rq, wh: q["W_h"], bh: rq}


def from_fused_grads(g, order, names):
    wx, bx, wh, bh = names
    np.testing.assert_allclose(g[bx], g[bh], **TOL)
    return convert.convert_lstm_gate_order({"W_x": g[wx], "W_h": g[wh], "b": g[bx]}, order,
                                           "ifgo")


CHARRNN_NAMES = ("i2h_1_W", "i2h_1_b", "h2h_1_W", "h2h_1_b")
ZAREMBA_NAMES = ("Linear_1_W", "Linear_1_b", "Linear_2_W", "Linear_2_b")

LSTM_EQUATIONS = """
i = sigmoid(W_xi @ x + W_hi @ h + b_i)
f = sigmoid(W_xf @ x + W_hf @ h + b_f)
g = tanh(W_xg @ x + W_hg @ h + b_g)
o = sigmoid(W_xo @ x + W_ho @ h + b_o)
c_next = f * c + i * g
h_next = o * tanh(c_next)
"""

# the lectures' notation: one matrix per gate on the concatenation [h_{t-1}, x_t]
LSTM_EQUATIONS_CONCAT = """
i = sigmoid(W_i @ [h, x] + b_i)
f = sigmoid(W_f @ [h, x] + b_f)
g = tanh(W_g @ [h, x] + b_g)
o = sigmoid(W_o @ [h, x] + b_o)
c_next = f * c + i * g
h_next = o * tanh(c_next)
"""


def to_equations(p):
    """Zoo params -> the equations' W @ x form: per gate, W (out, in) is a transposed block."""
    out = {}
    for q in "ifgo":
        out[f"W_x{q}"] = blk(p["W_x"], q).T
        out[f"W_h{q}"] = blk(p["W_h"], q).T
        out[f"b_{q}"] = blk(p["b"], q)
    return out


def from_equations_grads(g):
    return {"W_x": join([g[f"W_x{q}"].T for q in "ifgo"]),
            "W_h": join([g[f"W_h{q}"].T for q in "ifgo"]),
            "b": join([g[f"b_{q}"] for q in "ifgo"])}


def to_equations_concat(p):
    """W_q (H, H+I) = [W_h block; W_x block]^T: the columns follow [h, x]."""
    out = {}
    for q in "ifgo":
        out[f"W_{q}"] = np.vstack([blk(p["W_h"], q), blk(p["W_x"], q)]).T
        out[f"b_{q}"] = blk(p["b"], q)
    return out


def from_equations_concat_grads(g):
    return {"W_x": join([g[f"W_{q}"].T[H:] for q in "ifgo"]),
            "W_h": join([g[f"W_{q}"].T[:H] for q in "ifgo"]),
            "b": join([g[f"b_{q}"] for q in "ifgo"])}


def lstm_equations(text):
    return equations.cell_from_equations(text, inputs={"x": I}, states={"h": H, "c": H},
                                         dtype="float64", name="lstm_equations")


# form -> (build the cell, map zoo ifgo params (and the h2h bias share r) to its params,
#          pull its parameter gradients back to the zoo's ifgo params)
LSTM_FORMS = {
    "zoo-pytorch": (lambda: cells.lstm(I, H, "float64"),
                    lambda p, r: p, lambda g: g),
    "zoo-char-rnn-order": (
        lambda: cells.lstm(I, H, "float64", gate_order="char-rnn"),
        lambda p, r: convert.convert_lstm_gate_order(p, "pytorch", "char-rnn"),
        lambda g: convert.convert_lstm_gate_order(g, "char-rnn", "pytorch")),
    "zoo-zaremba-order": (
        lambda: cells.lstm(I, H, "float64", gate_order="zaremba"),
        lambda p, r: convert.convert_lstm_gate_order(p, "pytorch", "zaremba"),
        lambda g: convert.convert_lstm_gate_order(g, "zaremba", "pytorch")),
    "nngraph-lecture": (lambda: nn.lecture_lstm(I, H, dtype="float64"),
                        to_lecture, from_lecture_grads),
    "nngraph-char-rnn": (lambda: nn.charrnn_lstm(I, H, dtype="float64"),
                         lambda p, r: to_fused(p, r, "ifog", CHARRNN_NAMES),
                         lambda g: from_fused_grads(g, "ifog", CHARRNN_NAMES)),
    "nngraph-zaremba": (lambda: nn.zaremba_lstm(I, H, dtype="float64"),
                        lambda p, r: to_fused(p, r, "igfo", ZAREMBA_NAMES),
                        lambda g: from_fused_grads(g, "igfo", ZAREMBA_NAMES)),
    "equations": (lambda: lstm_equations(LSTM_EQUATIONS),
                  lambda p, r: to_equations(p), from_equations_grads),
    "equations-concat": (lambda: lstm_equations(LSTM_EQUATIONS_CONCAT),
                         lambda p, r: to_equations_concat(p), from_equations_concat_grads),
}


@pytest.fixture(scope="module")
def lstm_params():
    p = random_params(cells.lstm(I, H, "float64"), seed=2)
    r = np.random.default_rng(3).uniform(-0.5, 0.5, (1, 4 * H))   # the h2h bias share
    return p, r


@pytest.fixture(scope="module")
def lstm_runs(lstm_params):
    """Every LSTM form run on the same data, parameter gradients pulled back to the zoo's."""
    p, r = lstm_params
    runs = {}
    for name, (build, to_form, pull) in LSTM_FORMS.items():
        got = run(build(), to_form(p, r))
        got["d params"] = pull(got["d params"])
        runs[name] = got
    return runs


def test_every_lstm_form_has_input_x_and_states_h_c():
    for name, (build, _, _) in LSTM_FORMS.items():
        cell = build()
        assert [n.arg for n in cell.inputs] == ["x"], name
        assert [s.arg for s in cell.states] == ["h", "c"], name
        assert cell.outputs[0] is cell.next_states[0], name    # the output is h'


@pytest.mark.parametrize("a, b", list(itertools.combinations(LSTM_FORMS, 2)))
def test_lstm_forms_compute_the_same_function(lstm_runs, a, b):
    assert_same(lstm_runs[a], lstm_runs[b])


def test_charrnn_and_zaremba_graphs_hold_the_zoo_arrays_of_their_gate_order(lstm_params):
    """No reordering: char-rnn's i2h/h2h weights are ``cells.lstm(gate_order="char-rnn")``'s
    W_x/W_h as they are, Zaremba's those of ``gate_order="zaremba"``."""
    p, _ = lstm_params
    for order, build, names in (("char-rnn", nn.charrnn_lstm, CHARRNN_NAMES),
                                ("zaremba", nn.zaremba_lstm, ZAREMBA_NAMES)):
        zoo = cells.lstm(I, H, "float64", gate_order=order)
        q = random_params(zoo, seed=4)
        wx, bx, wh, bh = names
        same = {wx: q["W_x"], bx: q["b"], wh: q["W_h"], bh: np.zeros((1, 4 * H))}
        a, b = run(zoo, q), run(build(I, H, dtype="float64"), same)
        del a["d params"], b["d params"]
        assert_same(a, b)


def test_nngraph_gmodules_forward_one_step_like_the_zoo(lstm_params):
    """gModule.forward (the Torch-like path, parameters loaded into the modules) agrees too."""
    p, r = lstm_params
    rng = np.random.default_rng(5)
    x, h, c = rng.standard_normal((B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    cc = graphrnn.compile(cells.lstm(I, H, "float64"), backend="ref", dtype="float64")
    _, (h1, c1) = cc.step(p, x, [h, c])
    lec = nn.lecture_lstm_gmodule(I, H)
    lec.set_parameters(to_lecture(p, r))
    chr_ = nn.charrnn_lstm_gmodule(I, H, decoder=False)
    chr_.set_parameters(to_fused(p, r, "ifog", CHARRNN_NAMES))
    zar = nn.zaremba_lstm_gmodule(I, H)
    zar.set_parameters(to_fused(p, r, "igfo", ZAREMBA_NAMES))
    got = [lec.forward([x, h, c]),                    # {x, prev_h, prev_c} -> {next_h, next_c}
           chr_.forward([x, c, h])[::-1],             # {x, prev_c, prev_h} -> {next_c, next_h}
           zar.forward([x, c, h])[::-1]]
    for hh, cc_ in got:
        np.testing.assert_allclose(hh, h1, **TOL)
        np.testing.assert_allclose(cc_, c1, **TOL)


# ---- (3) wrong mappings make the comparison fail ----

def swap_gates(a, g1, g2, order="ifgo"):
    """The blocks of gates g1 and g2 of a fused array exchanged (a wrong gate order)."""
    letters = list(order)
    k1, k2 = letters.index(g1), letters.index(g2)
    letters[k1], letters[k2] = letters[k2], letters[k1]
    return convert.reorder_gates(a, order, "".join(letters))


def wrong_lstm_mappings(p, r):
    """(form, wrong params) pairs: each is a plausible mistake."""
    unconverted = {"W_x": p["W_x"], "W_h": p["W_h"], "b": p["b"]}
    lecture_fo = to_lecture({k: swap_gates(v, "f", "o") for k, v in p.items()}, r)
    lecture_no_share = to_lecture(p, r)
    lecture_no_share["Linear_1_b"] = blk(p["b"], "i")           # forgot to subtract h2h's share
    charrnn_pytorch_order = {CHARRNN_NAMES[0]: p["W_x"], CHARRNN_NAMES[1]: p["b"] - r,
                             CHARRNN_NAMES[2]: p["W_h"], CHARRNN_NAMES[3]: r}
    zaremba_charrnn_order = to_fused(p, r, "ifog", ZAREMBA_NAMES)
    equations_ig = to_equations(p)
    equations_ig["W_hi"], equations_ig["W_hg"] = equations_ig["W_hg"], equations_ig["W_hi"]
    # the rows of W_q stacked as [x, h] where the equations concatenate [h, x]
    concat_xh = {q: (np.vstack([blk(p["W_x"], q[-1]), blk(p["W_h"], q[-1])]).T
                     if q.startswith("W_") else v)
                 for q, v in to_equations_concat(p).items()}
    return [
        ("zoo-char-rnn-order", unconverted),          # no convert_lstm_gate_order
        ("zoo-zaremba-order", unconverted),
        ("nngraph-lecture", lecture_fo),              # forget and output Linears swapped
        ("nngraph-lecture", lecture_no_share),
        ("nngraph-char-rnn", charrnn_pytorch_order),  # PyTorch's order into char-rnn's graph
        ("nngraph-zaremba", zaremba_charrnn_order),   # char-rnn's order into Zaremba's graph
        ("equations", equations_ig),                  # W_hi and W_hg exchanged
        ("equations-concat", concat_xh),
    ]


def test_wrong_lstm_mappings_make_the_comparison_fail(lstm_params, lstm_runs):
    p, r = lstm_params
    ref = dict(lstm_runs["zoo-pytorch"])
    del ref["d params"]
    wrong = wrong_lstm_mappings(p, r)
    assert len(wrong) == 8
    for form, params in wrong:
        got = run(LSTM_FORMS[form][0](), params)
        del got["d params"]
        with pytest.raises(AssertionError, match="outputs"):
            assert_same(ref, got)


def test_a_wrong_pullback_of_parameter_gradients_fails(lstm_runs):
    """The parameter gradients are compared too: pulling the lecture's gradients back with the
    f and o blocks exchanged fails although outputs and other gradients agree."""
    a, b = lstm_runs["zoo-pytorch"], dict(lstm_runs["nngraph-lecture"])
    b["d params"] = {k: swap_gates(v, "f", "o") for k, v in b["d params"].items()}
    assert_same(a, {**b, "d params": lstm_runs["nngraph-lecture"]["d params"]})
    with pytest.raises(AssertionError, match="d params"):
        assert_same(a, b)


# ---------------------------------------------------------------------------------------------
# (2) the other zoo cells as nngraph graphs
# ---------------------------------------------------------------------------------------------
# Each builder returns (gModule with inputs annotated x, h[, c] and outputs [h'(, c')],
# {nngraph parameter name: zoo parameter name}, sizes for to_cell). A module's parameters are
# named after the annotate(name=...) of its node: Linear -> <name>_W, <name>_b; CMul -> <name>_w.

def one_minus(z):
    return nn.AddConstant(1)(nn.MulConstant(-1)(z))


def inputs(*names):
    return [nn.Identity()().annotate(name=n) for n in names]


def nn_rnn_tanh(i, h_size):
    x, h = inputs("x", "h")
    i2h = nn.Linear(i, h_size)(x).annotate(name="i2h")
    h2h = nn.Linear(h_size, h_size, bias=False)(h).annotate(name="h2h")
    next_h = nn.Tanh()(nn.CAddTable()([i2h, h2h]))
    return (nn.gModule([x, h], [next_h]),
            {"i2h_W": "W_x", "i2h_b": "b", "h2h_W": "W_h"}, None)


def nn_gru(i, h_size):
    """The lecture GRU: gates on JoinTable([h, x]), the candidate on JoinTable([r * h, x])."""
    x, h = inputs("x", "h")
    hx = nn.JoinTable(2)([h, x])
    zr = nn.Sigmoid()(nn.Linear(h_size + i, 2 * h_size)(hx).annotate(name="gates"))
    z, r = nn.SplitTable(2)(nn.Reshape(2, h_size)(zr)).split(2)
    rh_x = nn.JoinTable(2)([nn.CMulTable()([r, h]), x])
    cand = nn.Tanh()(nn.Linear(h_size + i, h_size)(rh_x).annotate(name="cand"))
    next_h = nn.CAddTable()([nn.CMulTable()([one_minus(z), h]), nn.CMulTable()([z, cand])])
    # nothing in the graph fixes the sizes of x and h (JoinTable takes any): give them
    return (nn.gModule([x, h], [next_h]),
            {"gates_W": "W_g", "gates_b": "b_g", "cand_W": "W_c", "cand_b": "b_c"},
            {"x": i, "h": h_size})


def nn_gru_torch(i, h_size):
    x, h = inputs("x", "h")
    a = nn.Linear(i, 3 * h_size)(x).annotate(name="i2h")
    u = nn.Linear(h_size, 3 * h_size)(h).annotate(name="h2h")
    a_r, a_z, a_n = nn.SplitTable(2)(nn.Reshape(3, h_size)(a)).split(3)
    u_r, u_z, u_n = nn.SplitTable(2)(nn.Reshape(3, h_size)(u)).split(3)
    r = nn.Sigmoid()(nn.CAddTable()([a_r, u_r]))
    z = nn.Sigmoid()(nn.CAddTable()([a_z, u_z]))
    n = nn.Tanh()(nn.CAddTable()([a_n, nn.CMulTable()([r, u_n])]))
    next_h = nn.CAddTable()([nn.CMulTable()([one_minus(z), n]), nn.CMulTable()([z, h])])
    return (nn.gModule([x, h], [next_h]),
            {"i2h_W": "W_x", "i2h_b": "b_x", "h2h_W": "W_h", "h2h_b": "b_h"}, None)


def _fused_sums(x, h, i, h_size, k):
    """i2h + h2h into k gate blocks (char-rnn style)."""
    i2h = nn.Linear(i, k * h_size)(x).annotate(name="i2h")
    h2h = nn.Linear(h_size, k * h_size, bias=False)(h).annotate(name="h2h")
    return nn.SplitTable(2)(nn.Reshape(k, h_size)(nn.CAddTable()([i2h, h2h]))).split(k)


FUSED = {"i2h_W": "W_x", "i2h_b": "b", "h2h_W": "W_h"}


def nn_peephole_lstm(i, h_size):
    """Peepholes as nn.CMul (learned diagonal weights); the output gate sees the new cell."""
    x, h, c = inputs("x", "h", "c")
    zi, zf, zg, zo = _fused_sums(x, h, i, h_size, 4)
    in_gate = nn.Sigmoid()(nn.CAddTable()([zi, nn.CMul(h_size)(c).annotate(name="p_i")]))
    forget_gate = nn.Sigmoid()(nn.CAddTable()([zf, nn.CMul(h_size)(c).annotate(name="p_f")]))
    next_c = nn.CAddTable()([nn.CMulTable()([forget_gate, c]),
                             nn.CMulTable()([in_gate, nn.Tanh()(zg)])])
    out_gate = nn.Sigmoid()(nn.CAddTable()([zo,
                                            nn.CMul(h_size)(next_c).annotate(name="p_o")]))
    next_h = nn.CMulTable()([out_gate, nn.Tanh()(next_c)])
    return (nn.gModule([x, h, c], [next_h, next_c]),
            {**FUSED, "p_i_w": "p_i", "p_f_w": "p_f", "p_o_w": "p_o"}, None)


def nn_lstm_no_forget(i, h_size):
    x, h, c = inputs("x", "h", "c")
    zi, zg, zo = _fused_sums(x, h, i, h_size, 3)
    next_c = nn.CAddTable()([c, nn.CMulTable()([nn.Sigmoid()(zi), nn.Tanh()(zg)])])
    next_h = nn.CMulTable()([nn.Sigmoid()(zo), nn.Tanh()(next_c)])
    return nn.gModule([x, h, c], [next_h, next_c]), FUSED, None


def nn_cifg_lstm(i, h_size):
    x, h, c = inputs("x", "h", "c")
    zi, zg, zo = _fused_sums(x, h, i, h_size, 3)
    in_gate = nn.Sigmoid()(zi)
    next_c = nn.CAddTable()([nn.CMulTable()([one_minus(in_gate), c]),
                             nn.CMulTable()([in_gate, nn.Tanh()(zg)])])
    next_h = nn.CMulTable()([nn.Sigmoid()(zo), nn.Tanh()(next_c)])
    return nn.gModule([x, h, c], [next_h, next_c]), FUSED, None


def _mut_update(h, r, z, xh_term, h_size, hh_bias):
    """tanh(W_hh (r * h) + xh_term) * z + h * (1 - z)"""
    hh = nn.Linear(h_size, h_size, bias=hh_bias)(nn.CMulTable()([r, h])).annotate(name="hh")
    cand = nn.Tanh()(nn.CAddTable()([hh, xh_term]))
    return nn.CAddTable()([nn.CMulTable()([cand, z]), nn.CMulTable()([h, one_minus(z)])])


def nn_mut1(i, h_size):
    x, h = inputs("x", "h")
    z = nn.Sigmoid()(nn.Linear(i, h_size)(x).annotate(name="xz"))
    r = nn.Sigmoid()(nn.CAddTable()([nn.Linear(i, h_size)(x).annotate(name="xr"),
                                     nn.Linear(h_size, h_size, bias=False)(h)
                                     .annotate(name="hr")]))
    next_h = _mut_update(h, r, z, nn.Tanh()(x), h_size, hh_bias=True)
    return (nn.gModule([x, h], [next_h]),
            {"xz_W": "W_xz", "xz_b": "b_z", "xr_W": "W_xr", "xr_b": "b_r", "hr_W": "W_hr",
             "hh_W": "W_hh", "hh_b": "b_h"}, None)


def nn_mut2(i, h_size):
    x, h = inputs("x", "h")
    z = nn.Sigmoid()(nn.CAddTable()([nn.Linear(i, h_size)(x).annotate(name="xz"),
                                     nn.Linear(h_size, h_size, bias=False)(h)
                                     .annotate(name="hz")]))
    # r = sigm(x + W_hr h + b_r): x itself is a term of the sum
    r = nn.Sigmoid()(nn.CAddTable()([x, nn.Linear(h_size, h_size)(h).annotate(name="hr")]))
    xh = nn.Linear(i, h_size)(x).annotate(name="xh")
    next_h = _mut_update(h, r, z, xh, h_size, hh_bias=False)
    return (nn.gModule([x, h], [next_h]),
            {"xz_W": "W_xz", "xz_b": "b_z", "hz_W": "W_hz", "hr_W": "W_hr", "hr_b": "b_r",
             "xh_W": "W_xh", "xh_b": "b_h", "hh_W": "W_hh"}, None)


def nn_mut3(i, h_size):
    x, h = inputs("x", "h")
    z = nn.Sigmoid()(nn.CAddTable()([nn.Linear(i, h_size)(x).annotate(name="xz"),
                                     nn.Linear(h_size, h_size, bias=False)(nn.Tanh()(h))
                                     .annotate(name="hz")]))
    r = nn.Sigmoid()(nn.CAddTable()([nn.Linear(i, h_size)(x).annotate(name="xr"),
                                     nn.Linear(h_size, h_size, bias=False)(h)
                                     .annotate(name="hr")]))
    xh = nn.Linear(i, h_size)(x).annotate(name="xh")
    next_h = _mut_update(h, r, z, xh, h_size, hh_bias=False)
    return (nn.gModule([x, h], [next_h]),
            {"xz_W": "W_xz", "xz_b": "b_z", "hz_W": "W_hz", "xr_W": "W_xr", "xr_b": "b_r",
             "hr_W": "W_hr", "xh_W": "W_xh", "xh_b": "b_h", "hh_W": "W_hh"}, None)


MRNN_FACTORS = 6   # != H, so that a mix-up of the factor and hidden sizes shows


def nn_mrnn(i, h_size):
    """m = (x W_mx) * (h W_mh); h' = tanh(m W_hm + x W_hx + b)."""
    x, h = inputs("x", "h")
    m = nn.CMulTable()([nn.Linear(i, MRNN_FACTORS, bias=False)(x).annotate(name="mx"),
                        nn.Linear(h_size, MRNN_FACTORS, bias=False)(h).annotate(name="mh")])
    next_h = nn.Tanh()(nn.CAddTable()([
        nn.Linear(MRNN_FACTORS, h_size, bias=False)(m).annotate(name="hm"),
        nn.Linear(i, h_size)(x).annotate(name="hx")]))
    return (nn.gModule([x, h], [next_h]),
            {"mx_W": "W_mx", "mh_W": "W_mh", "hm_W": "W_hm", "hx_W": "W_hx", "hx_b": "b"},
            None)


def nn_indrnn(i, h_size):
    """h' = relu(x W + u * h + b), the recurrence a learned diagonal (nn.CMul)."""
    x, h = inputs("x", "h")
    next_h = nn.ReLU()(nn.CAddTable()([nn.Linear(i, h_size)(x).annotate(name="W"),
                                       nn.CMul(h_size)(h).annotate(name="u")]))
    return nn.gModule([x, h], [next_h]), {"W_W": "W", "W_b": "b", "u_w": "u"}, None


NNGRAPH = {
    "rnn_tanh": nn_rnn_tanh, "gru": nn_gru, "gru_torch": nn_gru_torch,
    "peephole_lstm": nn_peephole_lstm, "lstm_no_forget": nn_lstm_no_forget,
    "cifg_lstm": nn_cifg_lstm, "mut1": nn_mut1, "mut2": nn_mut2, "mut3": nn_mut3,
    "mrnn": nn_mrnn, "indrnn": nn_indrnn,
}


def zoo_and_nngraph(name):
    """(zoo cell, nngraph cell, nngraph name -> zoo name) with the same sizes, float64."""
    i = H if name in cells.SQUARE_INPUT else I
    if name == "mrnn":
        zoo = cells.mrnn(i, H, "float64", factor_size=MRNN_FACTORS)
    else:
        zoo = cells.zoo_cell(name, i, H, "float64")
    g, names, sizes = NNGRAPH[name](i, H)
    two = len(zoo.states) == 2
    cell = g.to_cell(inputs=["x"], states=["h", "c"] if two else ["h"],
                     next_states=[0, 1] if two else [0], outputs=[0], sizes=sizes,
                     name=f"nngraph_{name}", dtype="float64")
    return zoo, cell, names


def test_the_zoo_is_covered():
    assert set(NNGRAPH) | {"lstm"} == set(cells.ZOO)


@pytest.mark.parametrize("name", sorted(NNGRAPH))
def test_zoo_cell_agrees_with_its_nngraph_form(name):
    zoo, cell, names = zoo_and_nngraph(name)
    # the mapping names every parameter of both cells once, with the same shapes
    assert sorted(names) == sorted(cell.param_shapes())
    assert sorted(names.values()) == sorted(zoo.param_shapes())
    assert all(cell.param_shapes()[k] == zoo.param_shapes()[v] for k, v in names.items())
    p = random_params(zoo, seed=6)
    a = run(zoo, p)
    b = run(cell, {k: p[v] for k, v in names.items()})
    b["d params"] = {names[k]: v for k, v in b["d params"].items()}
    assert_same(a, b)


@pytest.mark.parametrize("name", sorted(NNGRAPH))
def test_each_nngraph_parameter_matters(name):
    """Moving any one entry of any nngraph parameter by 1e-6 makes the comparison fail: every
    parameter is used, and the tolerance is tight enough to see it."""
    zoo, cell, names = zoo_and_nngraph(name)
    p = random_params(zoo, seed=6)
    ref = run(zoo, p, grads=False)
    q = {k: p[v] for k, v in names.items()}
    rng = np.random.default_rng(7)
    for k in q:
        bad = dict(q)
        bad[k] = q[k].copy()
        bad[k][tuple(rng.integers(0, s) for s in q[k].shape)] += 1e-6
        with pytest.raises(AssertionError, match=r"outputs\[0\]"):
            assert_same(ref, run(cell, bad, grads=False), keys=("outputs", "final states"))


def test_gru_with_z_and_r_swapped_fails():
    """The lecture GRU's gate blocks [z, r] read as [r, z]: a wrong mapping that fits."""
    zoo, cell, names = zoo_and_nngraph("gru")
    p = random_params(zoo, seed=6)
    q = {k: p[v] for k, v in names.items()}
    for k in ("gates_W", "gates_b"):
        q[k] = np.concatenate([q[k][:, H:], q[k][:, :H]], axis=1)
    with pytest.raises(AssertionError, match="outputs"):
        assert_same(run(zoo, p, grads=False), run(cell, q, grads=False),
                    keys=("outputs", "final states"))
