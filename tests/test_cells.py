"""The cell zoo: each cell matches an independent numpy implementation of its published
equations at one step, and no two cells compute the same function."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphrnn
from graphrnn import cells
from graphrnn.cells import SQUARE_INPUT, ZOO, zoo_cell
from graphrnn.errors import ShapeError

B, H = 3, 5


def sizes(name: str) -> tuple[int, int]:
    return (H, H) if name in SQUARE_INPUT else (4, H)


def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


# ---- independent numpy implementations, written from the papers' equations in W @ x form:
# each takes params in our (in, out) layout, transposes them to the paper's (out, in) layout and
# works on column vectors (features, batch).

def col(p, *names):
    return [p[n].T for n in names]


def ref_rnn_tanh(p, x, h):
    Wx, Wh, b = col(p, "W_x", "W_h", "b")
    return [np.tanh(Wx @ x + Wh @ h + b)]


def ref_lstm(p, x, h, c, order="ifgo", forget_bias=0.0):
    Wx, Wh, b = col(p, "W_x", "W_h", "b")
    n = h.shape[0]
    blk = {g: slice(k * n, (k + 1) * n) for k, g in enumerate(order)}
    pre = {g: Wx[blk[g]] @ x + Wh[blk[g]] @ h + b[blk[g]] for g in "ifgo"}
    i, f = sig(pre["i"]), sig(pre["f"] + forget_bias)
    g, o = np.tanh(pre["g"]), sig(pre["o"])
    c2 = f * c + i * g
    return [o * np.tanh(c2), c2]


def ref_lstm_no_forget(p, x, h, c):
    Wx, Wh, b = col(p, "W_x", "W_h", "b")
    n = h.shape[0]
    i = sig(Wx[:n] @ x + Wh[:n] @ h + b[:n])
    g = np.tanh(Wx[n:2 * n] @ x + Wh[n:2 * n] @ h + b[n:2 * n])
    o = sig(Wx[2 * n:] @ x + Wh[2 * n:] @ h + b[2 * n:])
    c2 = c + i * g
    return [o * np.tanh(c2), c2]


def ref_peephole(p, x, h, c):
    Wx, Wh, b, pi, pf, po = col(p, "W_x", "W_h", "b", "p_i", "p_f", "p_o")
    n = h.shape[0]
    pre = [Wx[k * n:(k + 1) * n] @ x + Wh[k * n:(k + 1) * n] @ h + b[k * n:(k + 1) * n]
           for k in range(4)]
    i = sig(pre[0] + pi * c)
    f = sig(pre[1] + pf * c)
    g = np.tanh(pre[2])
    c2 = f * c + i * g
    o = sig(pre[3] + po * c2)
    return [o * np.tanh(c2), c2]


def ref_cifg(p, x, h, c):
    Wx, Wh, b = col(p, "W_x", "W_h", "b")
    n = h.shape[0]
    pre = [Wx[k * n:(k + 1) * n] @ x + Wh[k * n:(k + 1) * n] @ h + b[k * n:(k + 1) * n]
           for k in range(3)]
    i, g, o = sig(pre[0]), np.tanh(pre[1]), sig(pre[2])
    c2 = (1 - i) * c + i * g
    return [o * np.tanh(c2), c2]


def ref_gru(p, x, h):
    Wg, bg, Wc, bc = col(p, "W_g", "b_g", "W_c", "b_c")
    n = h.shape[0]
    hx = np.vstack([h, x])
    z = sig(Wg[:n] @ hx + bg[:n])
    r = sig(Wg[n:] @ hx + bg[n:])
    cand = np.tanh(Wc @ np.vstack([r * h, x]) + bc)
    return [(1 - z) * h + z * cand]


def ref_gru_torch(p, x, h):
    # PyTorch's documented equations, gate by gate
    Wi, Wh, bi, bh = col(p, "W_x", "W_h", "b_x", "b_h")
    n = h.shape[0]
    R, Z, N = slice(0, n), slice(n, 2 * n), slice(2 * n, 3 * n)
    r = sig(Wi[R] @ x + bi[R] + Wh[R] @ h + bh[R])
    z = sig(Wi[Z] @ x + bi[Z] + Wh[Z] @ h + bh[Z])
    nn_ = np.tanh(Wi[N] @ x + bi[N] + r * (Wh[N] @ h + bh[N]))
    return [(1 - z) * nn_ + z * h]


def ref_mut1(p, x, h):
    Wxz, Wxr, Whr, Whh, bz, br, bh = col(p, "W_xz", "W_xr", "W_hr", "W_hh", "b_z", "b_r", "b_h")
    z = sig(Wxz @ x + bz)
    r = sig(Wxr @ x + Whr @ h + br)
    return [np.tanh(Whh @ (r * h) + np.tanh(x) + bh) * z + h * (1 - z)]


def ref_mut2(p, x, h):
    Wxz, Whz, Whr, Whh, Wxh, bz, br, bh = col(p, "W_xz", "W_hz", "W_hr", "W_hh", "W_xh", "b_z",
                                              "b_r", "b_h")
    z = sig(Wxz @ x + Whz @ h + bz)
    r = sig(x + Whr @ h + br)
    return [np.tanh(Whh @ (r * h) + Wxh @ x + bh) * z + h * (1 - z)]


def ref_mut3(p, x, h):
    Wxz, Whz, Wxr, Whr, Whh, Wxh, bz, br, bh = col(p, "W_xz", "W_hz", "W_xr", "W_hr", "W_hh",
                                                   "W_xh", "b_z", "b_r", "b_h")
    z = sig(Wxz @ x + Whz @ np.tanh(h) + bz)
    r = sig(Wxr @ x + Whr @ h + br)
    return [np.tanh(Whh @ (r * h) + Wxh @ x + bh) * z + h * (1 - z)]


def ref_mrnn(p, x, h):
    Wmx, Wmh, Whm, Whx, b = col(p, "W_mx", "W_mh", "W_hm", "W_hx", "b")
    # the paper's input-dependent recurrent matrix W_hm diag(W_mx x) W_mh, one per example
    outs = []
    for k in range(x.shape[1]):
        W_hh = Whm @ np.diag(Wmx @ x[:, k]) @ Wmh
        outs.append(np.tanh(W_hh @ h[:, k] + Whx @ x[:, k] + b[:, 0]))
    return [np.stack(outs, axis=1)]


def ref_indrnn(p, x, h):
    W, u, b = col(p, "W", "u", "b")
    return [np.maximum(W @ x + u * h + b, 0.0)]


REFS = {
    "rnn_tanh": ref_rnn_tanh, "lstm": ref_lstm, "lstm_no_forget": ref_lstm_no_forget,
    "peephole_lstm": ref_peephole, "cifg_lstm": ref_cifg, "gru": ref_gru,
    "gru_torch": ref_gru_torch, "mut1": ref_mut1, "mut2": ref_mut2, "mut3": ref_mut3,
    "mrnn": ref_mrnn, "indrnn": ref_indrnn,
}


def random_params(cell, seed=0, scale=0.6):
    rng = np.random.default_rng(seed)
    return {p.arg: rng.uniform(-scale, scale, size=p.shape) for p in cell.params}


def one_step(cell, params, x, hs):
    cc = graphrnn.compile(cell, backend="ref", dtype="float64")
    ys, new = cc.step(params, x, hs)
    return new


def ref_step(ref, params, x, hs, **kw):
    out = ref(params, x.T, *[h.T for h in hs], **kw)
    return [o.T for o in out]


def inputs_for(cell, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, cell.inputs[0].shape[1]))
    hs = [rng.uniform(-0.9, 0.9, (B, s.shape[1])) for s in cell.states]
    return x, hs


def test_zoo_and_refs_cover_the_same_cells():
    assert set(ZOO) == set(REFS)
    assert len(ZOO) >= 12


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_cell_matches_numpy_equations(name):
    cell = zoo_cell(name, *sizes(name), dtype="float64")
    assert isinstance(cell, graphrnn.Cell)
    assert [s.arg for s in cell.states] in (["h"], ["h", "c"])
    assert cell.outputs[0] is cell.next_states[0]  # the output is h'
    params = random_params(cell)
    x, hs = inputs_for(cell)
    got = one_step(cell, params, x, hs)
    want = ref_step(REFS[name], params, x, hs)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["ifgo", "ifog", "igfo", "pytorch", "char-rnn", "zaremba",
                                   "ogif"])
def test_lstm_gate_orders_and_forget_bias(order):
    letters = cells.canonical_gate_order(order)
    for fb in (0.0, 1.0):
        cell = cells.lstm(4, H, dtype="float64", gate_order=order, forget_bias=fb)
        params = random_params(cell, seed=3)
        x, hs = inputs_for(cell, seed=4)
        got = one_step(cell, params, x, hs)
        want = ref_step(ref_lstm, params, x, hs, order=letters, forget_bias=fb)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_lstm_gate_orders_are_different_functions():
    outs = []
    for order in ("ifgo", "ifog", "igfo"):
        cell = cells.lstm(4, H, dtype="float64", gate_order=order)
        params = random_params(cell, seed=3)  # same arrays, different meaning
        x, hs = inputs_for(cell, seed=4)
        outs.append(one_step(cell, params, x, hs)[0])
    for a, b in itertools.combinations(outs, 2):
        assert not np.allclose(a, b, atol=1e-3)


def test_forget_bias_changes_the_function():
    a, b = cells.lstm(4, H, "float64"), cells.lstm(4, H, "float64", forget_bias=1.0)
    params = random_params(a)
    x, hs = inputs_for(a)
    assert not np.allclose(one_step(a, params, x, hs)[1], one_step(b, params, x, hs)[1],
                           atol=1e-3)


def test_no_two_zoo_cells_compute_the_same_function():
    """A builder that built the wrong cell cannot pass by accident: every reference whose
    parameters fit another cell gives a different answer on that cell."""
    built = {n: zoo_cell(n, *sizes(n), dtype="float64") for n in ZOO}
    compared = 0
    for a, b in itertools.permutations(ZOO, 2):
        ca, cb = built[a], built[b]
        same_leaves = (ca.param_shapes() == cb.param_shapes() and sizes(a) == sizes(b)
                       and len(ca.states) == len(cb.states))
        if not same_leaves:
            continue
        params = random_params(ca, seed=5)
        x, hs = inputs_for(ca, seed=6)
        got = one_step(ca, params, x, hs)[0]
        other = ref_step(REFS[b], params, x, hs)[0]
        assert not np.allclose(got, other, atol=1e-3), (a, b)
        compared += 1
    # lstm/lstm_no_forget/cifg share shapes pairwise only partly; at least these pairs exist
    assert compared >= 2
    # and on shared inputs every cell's first output differs from every other's
    outs = {}
    for n, c in built.items():
        if n in SQUARE_INPUT:
            continue
        x, hs = inputs_for(c, seed=7)
        outs[n] = one_step(c, random_params(c, seed=8), x, hs)[0]
    for a, b in itertools.combinations(outs, 2):
        assert not np.allclose(outs[a], outs[b], atol=1e-3), (a, b)


def test_lecture_gru_differs_from_torch_gru_with_mapped_weights():
    from graphrnn import convert
    torch_cell, lec_cell = cells.gru_torch(4, H, "float64"), cells.gru(4, H, "float64")
    p = random_params(torch_cell, seed=9, scale=0.8)
    sd = convert.gru_torch_to_torch(p)
    lec = convert.gru_from_torch(sd, exact=False)
    x, hs = inputs_for(torch_cell, seed=10)
    a, b = one_step(torch_cell, p, x, hs)[0], one_step(lec_cell, lec, x, hs)[0]
    assert not np.allclose(a, b, atol=1e-3)


def test_mut1_mut2_need_square_inputs():
    for name in ("mut1", "mut2"):
        with pytest.raises(ShapeError, match="input_size must equal hidden_size"):
            zoo_cell(name, 3, 4)
    zoo_cell("mut3", 3, 4)  # MUT3 has no such term


def test_bad_arguments():
    with pytest.raises(KeyError, match="no zoo cell named 'lstmm'"):
        zoo_cell("lstmm", 3, 4)
    with pytest.raises(ShapeError, match="hidden_size must be a positive int"):
        cells.lstm(3, 0)
    with pytest.raises(ValueError, match="permutation of 'ifgo'"):
        cells.lstm(3, 4, gate_order="iffo")
    with pytest.raises(ValueError, match="relu' or 'tanh"):
        cells.indrnn(3, 4, activation="sigmoid")


def test_builders_take_keyword_sizes_and_dtype():
    for name, build in ZOO.items():
        i, h = sizes(name)
        cell = build(input_size=i, hidden_size=h, dtype="float32")
        assert cell.dtype == "float32"
        assert cell.inputs[0].shape == ("B", i)
        assert all(s.shape == ("B", h) for s in cell.states)
        assert cell.__doc__ or build.__doc__


def test_indrnn_has_no_matmul_on_the_state():
    from graphrnn.ir import toposort
    from graphrnn.ops import Ops
    cell = cells.indrnn(3, 4)
    h = cell.states[0]
    for n in toposort(cell.roots):
        if n.op is Ops.MATMUL:
            assert h not in toposort([n]), "the recurrence must be elementwise"


def test_mrnn_factor_size():
    cell = cells.mrnn(3, 4, "float64", factor_size=6)
    assert cell.param_shapes()["W_mx"] == (3, 6)
    params = random_params(cell)
    x, hs = inputs_for(cell)
    np.testing.assert_allclose(one_step(cell, params, x, hs)[0],
                               ref_step(ref_mrnn, params, x, hs)[0], rtol=1e-12, atol=1e-12)


# ---- every zoo cell written again with the equations frontend (W @ x, W (out, in)) ----

def _t(a):
    return np.ascontiguousarray(a.T)


def _split(a, n, k):
    """Column block k of width n of a fused (in, G*n) array, as an (out, in) matrix or a bias."""
    blk = a[:, k * n:(k + 1) * n]
    return blk if a.shape[0] == 1 else _t(blk)


def _gate_map(p, letters, names=("W_x", "W_h", "b"), kinds=("W_x{}", "W_h{}", "b_{}")):
    out = {}
    for k, g in enumerate(letters):
        for src, kind in zip(names, kinds, strict=True):
            out[kind.format(g)] = _split(p[src], H, k)
    return out


def _transpose_all(p):
    return {k: (_t(v) if v.shape[0] != 1 else v) for k, v in p.items()}


LSTM_EQS = """
i = sigmoid(W_xi @ x + W_hi @ h + b_i)
f = sigmoid(W_xf @ x + W_hf @ h + b_f{fb})
g = tanh(W_xg @ x + W_hg @ h + b_g)
o = sigmoid(W_xo @ x + W_ho @ h + b_o)
c_next = f * c + i * g
h_next = o * tanh(c_next)
"""

EQUATIONS = {
    "rnn_tanh": ("h_next = tanh(W_x @ x + W_h @ h + b)", _transpose_all),
    "lstm": (LSTM_EQS.format(fb=""), lambda p: _gate_map(p, "ifgo")),
    "lstm_no_forget": ("""
        i = sigmoid(W_xi @ x + W_hi @ h + b_i)
        g = tanh(W_xg @ x + W_hg @ h + b_g)
        o = sigmoid(W_xo @ x + W_ho @ h + b_o)
        c_next = c + i * g
        h_next = o * tanh(c_next)
        """, lambda p: _gate_map(p, "igo")),
    "peephole_lstm": ("""
        i = sigmoid(W_xi @ x + W_hi @ h + b_i + p_i * c)
        f = sigmoid(W_xf @ x + W_hf @ h + b_f + p_f * c)
        g = tanh(W_xg @ x + W_hg @ h + b_g)
        c_next = f * c + i * g
        o = sigmoid(W_xo @ x + W_ho @ h + b_o + p_o * c_next)
        h_next = o * tanh(c_next)
        """, lambda p: {**_gate_map(p, "ifgo"), "p_i": p["p_i"], "p_f": p["p_f"],
                        "p_o": p["p_o"]}),
    "cifg_lstm": ("""
        i = sigmoid(W_xi @ x + W_hi @ h + b_i)
        f = 1 - i
        g = tanh(W_xg @ x + W_hg @ h + b_g)
        o = sigmoid(W_xo @ x + W_ho @ h + b_o)
        c_next = f * c + i * g
        h_next = o * tanh(c_next)
        """, lambda p: _gate_map(p, "igo")),
    "gru": ("""
        z = sigmoid(W_z @ [h, x] + b_z)
        r = sigmoid(W_r @ [h, x] + b_r)
        hc = tanh(W_c @ [r * h, x] + b_c)
        h_next = (1 - z) * h + z * hc
        """, lambda p: {"W_z": _split(p["W_g"], H, 0), "W_r": _split(p["W_g"], H, 1),
                        "b_z": _split(p["b_g"], H, 0), "b_r": _split(p["b_g"], H, 1),
                        "W_c": _t(p["W_c"]), "b_c": p["b_c"]}),
    "gru_torch": ("""
        r = sigmoid(W_ir @ x + b_ir + W_hr @ h + b_hr)
        z = sigmoid(W_iz @ x + b_iz + W_hz @ h + b_hz)
        n = tanh(W_in @ x + b_in + r * (W_hn @ h + b_hn))
        h_next = (1 - z) * n + z * h
        """, lambda p: _gate_map(p, "rzn", ("W_x", "W_h", "b_x", "b_h"),
                                 ("W_i{}", "W_h{}", "b_i{}", "b_h{}"))),
    "mut1": ("""
        z = sigmoid(W_xz @ x + b_z)
        r = sigmoid(W_xr @ x + W_hr @ h + b_r)
        h_next = tanh(W_hh @ (r * h) + tanh(x) + b_h) * z + h * (1 - z)
        """, _transpose_all),
    "mut2": ("""
        z = sigmoid(W_xz @ x + W_hz @ h + b_z)
        r = sigmoid(x + W_hr @ h + b_r)
        h_next = tanh(W_hh @ (r * h) + W_xh @ x + b_h) * z + h * (1 - z)
        """, _transpose_all),
    "mut3": ("""
        z = sigmoid(W_xz @ x + W_hz @ tanh(h) + b_z)
        r = sigmoid(W_xr @ x + W_hr @ h + b_r)
        h_next = tanh(W_hh @ (r * h) + W_xh @ x + b_h) * z + h * (1 - z)
        """, _transpose_all),
    "mrnn": ("""
        m = (W_mx @ x) * (W_mh @ h)
        h_next = tanh(W_hm @ m + W_hx @ x + b)
        """, _transpose_all),
    "indrnn": ("h_next = relu(W @ x + u * h + b)", _transpose_all),
}


def _sequence(cell, params, seed=11, T=4):
    cc = graphrnn.compile(cell, backend="ref", dtype="float64")
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((T, B, cell.inputs[0].shape[1]))
    h0 = [rng.uniform(-0.8, 0.8, (B, int(s.shape[1]))) for s in cell.states]
    ys, hT, res = cc.forward_train(params, xs, h0)
    dy = rng.standard_normal(ys[0].shape)
    g = cc.backward(params, res, [dy])
    return ys + hT + g.inputs + g.states


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_cell_agrees_with_its_equations(name):
    equations = pytest.importorskip("frontends.equations")
    text, mapping = EQUATIONS[name]
    i, h = sizes(name)
    ours = zoo_cell(name, i, h, "float64")
    states = {"h": h, "c": h} if len(ours.states) == 2 else {"h": h}
    shapes = {"W_mx": (h, i)} if name == "mrnn" else None  # the factor size is not inferable
    eq = equations.cell_from_equations(text, inputs={"x": i}, states=states, dtype="float64",
                                       name=name, params=shapes)
    p = random_params(ours, seed=12)
    q = mapping(p)
    assert eq.param_shapes() == {k: v.shape for k, v in q.items()}
    for a, b in zip(_sequence(ours, p), _sequence(eq, q), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["ifog", "igfo"])
def test_lstm_gate_orders_and_forget_bias_agree_with_equations(order):
    equations = pytest.importorskip("frontends.equations")
    ours = cells.lstm(4, H, "float64", gate_order=order, forget_bias=1.0)
    eq = equations.cell_from_equations(LSTM_EQS.format(fb=" + 1"), inputs={"x": 4},
                                       states={"h": H, "c": H}, dtype="float64")
    p = random_params(ours, seed=13)
    for a, b in zip(_sequence(ours, p), _sequence(eq, _gate_map(p, order)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


GATED = [("lstm", {}), ("lstm", {"gate_order": "char-rnn"}), ("lstm", {"gate_order": "zaremba"}),
         ("lstm", {"gate_order": "ogif"}), ("peephole_lstm", {}), ("lstm_no_forget", {}),
         ("cifg_lstm", {})]


@pytest.mark.parametrize(("name", "kw"), GATED)
def test_gate_metadata_names_the_blocks_the_cell_computes_with(name, kw):
    """Each letter of ``meta["gates"]`` is checked by computation: with every parameter 0 but
    that gate's block of the bias (set to v), x = h = 0 and c = 1, the gates are sigmoid(0),
    tanh(0) = 0 or the one moved gate, which pins c' and h' for each letter."""
    cell = ZOO[name](4, H, dtype="float64", **kw)
    gates, biases = cell.meta["gates"], cell.meta["gate_biases"]
    assert biases == ("b",)
    if name == "lstm":
        assert gates == cells.canonical_gate_order(kw.get("gate_order", "ifgo"))
    cc = graphrnn.compile(cell, "ref")
    v = 0.7
    for k, letter in enumerate(gates):
        p = {n: np.zeros(s) for n, s in cell.param_shapes().items()}
        p["b"][0, k * H:(k + 1) * H] = v
        _, (h2, c2) = cc.step(p, np.zeros((B, 4)), [np.zeros((B, H)), np.ones((B, H))])
        z = {g: (v if g == letter else 0.0) for g in "ifgo"}
        i, g, o = sig(z["i"]), np.tanh(z["g"]), sig(z["o"])
        f = {"lstm_no_forget": 1.0, "cifg_lstm": 1.0 - i}.get(name, sig(z["f"]))
        want_c = f * 1.0 + i * g
        np.testing.assert_allclose(c2, want_c, rtol=1e-12, err_msg=letter)
        np.testing.assert_allclose(h2, o * np.tanh(want_c), rtol=1e-12, err_msg=letter)


def test_cell_meta_is_read_only_kept_by_with_dtype_and_compile_and_not_in_equality():
    a = cells.lstm(4, H, "float32", gate_order="zaremba")
    assert dict(a.meta) == {"gates": "igfo", "gate_biases": ("b",)}
    with pytest.raises(TypeError):
        a.meta["gates"] = "ifgo"  # type: ignore[index]
    assert a.with_dtype("float64").meta == a.meta
    assert graphrnn.compile(a, "ref", "float64").cell.meta == a.meta
    b = a.with_meta(note="x")
    assert b.meta["note"] == "x" and "note" not in a.meta and b.meta["gates"] == "igfo"
    # the graph is the function: metadata changes neither equality nor the hash
    assert b == a and hash(b) == hash(a)
    src = {"gates": "ifgo"}
    c = type(a).make(a.inputs, a.states, a.outputs, a.next_states, a.name, a.output_names, src)
    src["gates"] = "oops"
    assert c.meta["gates"] == "ifgo"
    assert not cells.gru(4, H).meta
