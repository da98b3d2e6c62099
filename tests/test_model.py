"""RNNModel: gradients vs float64 finite differences, masking vs one sequence at a time,
dropout placement, initialization and overrides."""

from __future__ import annotations

import numpy as np
import pytest

from graphrnn.errors import GraphError, RuntimeInputError
from graphrnn.model import RNNModel, apply_overrides, masked_cell, stack

V = 7


def _model(layers=2, bidir=False, inp="embedding", dropout=0.0, cell="lstm", hidden=4, embed=3):
    in_size = V if inp == "onehot" else embed
    cells = stack(cell, layers, in_size, hidden, bidirectional=bidir, dtype="float64")
    return RNNModel(cells, n_classes=V, vocab_size=V, input=inp, embed_size=embed,
                    dropout=dropout, backend="ref", dtype="float64")


def _data(T=4, Bn=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (T, Bn)), rng.integers(0, V, (T, Bn))


def _check_grads(model, params, loss_fn, grads, eps=1e-6, tol=1e-6):
    """Directional derivative per parameter: <g, t> vs central differences along t."""
    rng = np.random.default_rng(123)
    assert set(grads) == set(params)
    for name, p in params.items():
        t = rng.standard_normal(p.shape)
        old = p.copy()
        p[...] = old + eps * t
        lp = loss_fn()
        p[...] = old - eps * t
        lm = loss_fn()
        p[...] = old
        fd = (lp - lm) / (2 * eps)
        an = float(np.sum(grads[name] * t))
        assert abs(fd - an) <= tol * max(1.0, abs(fd)), (name, fd, an)


@pytest.mark.parametrize("kind", ["stacked", "bidir", "onehot", "gru"])
def test_gradients_match_finite_differences(kind):
    model = {"stacked": lambda: _model(2), "bidir": lambda: _model(2, bidir=True),
             "onehot": lambda: _model(1, inp="onehot"),
             "gru": lambda: _model(2, cell="gru")}[kind]()
    params = model.init_params(seed=1, scale=0.5)
    ids, tg = _data()
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 1], [1, 0, 0]], float) \
        if kind == "bidir" else None
    h0 = [[np.random.default_rng(5).standard_normal(s.shape) * 0.3 for s in layer]
          for layer in model.zero_state(3)] if kind != "bidir" else None
    r = model.loss_and_grads(params, ids, tg, state=h0, mask=mask)

    def loss():
        return model.loss_and_grads(params, ids, tg, state=h0, mask=mask).loss
    _check_grads(model, params, loss, r.grads)
    if kind == "onehot":
        assert "embed" not in params


def test_dropout_gradients_with_fixed_masks():
    model = _model(2, dropout=0.4).train()
    params = model.init_params(seed=2, scale=0.5)
    ids, tg = _data()
    r = model.loss_and_grads(params, ids, tg, rng=np.random.default_rng(9))

    def loss():
        return model.loss_and_grads(params, ids, tg, rng=np.random.default_rng(9)).loss
    _check_grads(model, params, loss, r.grads)


def test_dropout_only_on_non_recurrent_connections_and_off_in_eval():
    model = _model(2, dropout=0.5)
    params = model.init_params(seed=0)
    ids, tg = _data()
    model.train()
    _, _, cache = model.forward(params, ids, rng=np.random.default_rng(0))
    drops = cache["drops"]
    # one mask per layer input and one before the head: L + 1, never on the recurrence
    assert len(drops) == 3 and all(d is not None for d in drops)
    assert set(np.unique(drops[1])) <= {0.0, 2.0}
    a = model.forward(params, ids, rng=np.random.default_rng(0))[0]
    b = model.forward(params, ids, rng=np.random.default_rng(1))[0]
    assert not np.allclose(a, b)
    model.eval()
    e1 = model.forward(params, ids)[0]
    e2 = model.forward(params, ids, rng=np.random.default_rng(1))[0]
    np.testing.assert_array_equal(e1, e2)
    with pytest.raises(ValueError, match="rng"):
        model.train().forward(params, ids)


@pytest.mark.parametrize("bidir", [False, True])
def test_masking_matches_each_sequence_alone(bidir):
    model = _model(2, bidir=bidir)
    params = model.init_params(seed=3, scale=0.5)
    T, lengths = 5, [5, 3, 1]
    rng = np.random.default_rng(4)
    ids = rng.integers(0, V, (T, 3))
    tg = rng.integers(0, V, (T, 3))
    mask = (np.arange(T)[:, None] < np.array(lengths)[None]).astype(float)
    # padding content must not matter
    ids[mask == 0] = 6
    r = model.loss_and_grads(params, ids, tg, mask=mask, grad_scale=1.0)
    total = 0.0
    gsum = {k: np.zeros_like(v) for k, v in params.items()}
    for b, L in enumerate(lengths):
        rb = model.loss_and_grads(params, ids[:L, b:b + 1], tg[:L, b:b + 1], grad_scale=1.0)
        total += rb.loss * L
        for k in gsum:
            gsum[k] += rb.grads[k]
        for lay_m, lay_b in zip(r.state, rb.state, strict=True):
            for hm, hb in zip(lay_m, lay_b, strict=True):
                np.testing.assert_allclose(hm[b], hb[0], atol=1e-12)
    np.testing.assert_allclose(r.loss * r.tokens, total, rtol=1e-12)
    assert r.tokens == sum(lengths)
    for k in gsum:
        np.testing.assert_allclose(r.grads[k], gsum[k], atol=1e-12, err_msg=k)


def test_masked_cell_with_all_ones_equals_plain_cell():
    cell = stack("lstm", 1, 3, 4, dtype="float64")[0]
    mc = masked_cell(cell)
    assert [n.arg for n in mc.inputs] == ["x", "mask"]
    import graphrnn
    a, b = graphrnn.compile(cell, "ref"), graphrnn.compile(mc, "ref")
    p = a.init_params(0, scale=0.5)
    xs = np.random.default_rng(0).standard_normal((3, 2, 3))
    ya, ha = a.forward(p, xs)
    yb, hb = b.forward(p, [xs, np.ones((3, 2, 1))])
    np.testing.assert_allclose(ya[0], yb[0])
    # a zero mask freezes the state
    h0 = [np.full((2, 4), 0.3), np.full((2, 4), -0.2)]
    _, hz = b.forward(p, [xs, np.zeros((3, 2, 1))], h0)
    np.testing.assert_array_equal(hz[0], h0[0])
    np.testing.assert_array_equal(hz[1], h0[1])


def test_init_schemes_and_forget_bias_override():
    model = _model(1, hidden=4)
    u = model.init_params(seed=0, scale=0.08)
    assert all(np.abs(v).max() <= 0.08 for k, v in u.items())
    o = model.init_params(seed=0, scheme="orthogonal")
    w = o["l0.W_h"]
    np.testing.assert_allclose(w[:, :4].T @ w[:, :4], np.eye(4), atol=1e-10)
    bias = [k for k in u if k.startswith("l0.b")][0]
    p = model.init_params(seed=0, overrides={bias.replace("l0", "l*") + "[4:8]": 1.0})
    np.testing.assert_array_equal(p[bias][..., 4:8], 1.0)
    np.testing.assert_array_equal(p[bias][..., :4], u[bias][..., :4])
    with pytest.raises(KeyError, match="matches no parameter"):
        apply_overrides(p, {"nope": 1.0})
    # same seed, same parameters
    np.testing.assert_array_equal(model.init_params(seed=0)["head.W"], u["head.W"])


def test_step_matches_forward():
    model = _model(2)
    params = model.init_params(seed=0, scale=0.5)
    ids, _ = _data(T=3)
    logits, _, _ = model.forward(params, ids, save=False)
    state = None
    for t in range(3):
        lt, state = model.step(params, ids[t], state)
        np.testing.assert_allclose(lt, logits[t], atol=1e-12)


def test_bad_inputs_give_clear_errors():
    model = _model(1)
    params = model.init_params(seed=0)
    with pytest.raises(RuntimeInputError, match=r"token ids must be in \[0, 7\)"):
        model.forward(params, np.full((2, 2), 9))
    with pytest.raises(RuntimeInputError, match="missing"):
        model.check_params({k: v for k, v in params.items() if k != "head.W"})
    cells = stack("lstm", 2, 3, 4, dtype="float64")
    with pytest.raises(GraphError, match="takes inputs of size 3"):
        RNNModel([cells[0], cells[0]], n_classes=V, vocab_size=V, embed_size=3,
                 backend="ref", dtype="float64")
    with pytest.raises(GraphError, match="cannot step"):
        _model(1, bidir=True).step(params, np.zeros(2, int))


def test_forget_bias_overrides_hit_the_forget_block_of_each_lstm():
    from graphrnn.model import forget_bias_overrides
    model = _model(2, hidden=4)
    ov = forget_bias_overrides(model, 1.0)
    assert ov == {"l0.b[4:8]": 1.0, "l1.b[4:8]": 1.0}  # zoo LSTM gate order i, f, g, o
    p = model.init_params(seed=0, overrides=ov)
    np.testing.assert_array_equal(p["l1.b"][0, 4:8], 1.0)
    assert np.abs(p["l1.b"][0, :4]).max() <= 0.08
    with pytest.raises(ValueError, match="layer 0: cell gru: no LSTM forget gate found"):
        forget_bias_overrides(_model(1, cell="gru"), 1.0)


def _lstm_form(form, I=3, H=4):
    """(cell, documented gate order, bias parameters whose sum is the gates' bias)."""
    from graphrnn import cells
    if form.startswith("zoo-"):
        order = form[4:]
        return (cells.lstm(I, H, "float64", gate_order=order),
                cells.canonical_gate_order(order), ("b",))
    if form == "peephole":
        return cells.peephole_lstm(I, H, "float64"), "ifgo", ("b",)
    if form == "nngraph-main-job":  # the main job's default cell: biases i2h_b, h2h_b
        from graphrnn.tools.cli_tools import nngraph_lstm
        return nngraph_lstm(I, H, "float64"), "ifog", ("i2h_b", "h2h_b")
    from frontends import nngraph
    if form == "nngraph-charrnn":  # frontends' char-rnn builder: i2h_1_b, h2h_1_b
        return nngraph.charrnn_lstm(I, H, dtype="float64"), "ifog", ("i2h_1_b", "h2h_1_b")
    assert form == "nngraph-zaremba+meta"  # Linear_1/2 names: only its metadata can tell
    cell = nngraph.zaremba_lstm(I, H, "float64").with_meta(
        gates="igfo", gate_biases=("Linear_1_b", "Linear_2_b"))
    return cell, "igfo", ("Linear_1_b", "Linear_2_b")


LSTM_FORMS = ["zoo-pytorch", "zoo-charrnn", "zoo-zaremba", "zoo-ifgo", "peephole",
              "nngraph-main-job", "nngraph-charrnn", "nngraph-zaremba+meta"]


@pytest.mark.parametrize("bidir", [False, True])
@pytest.mark.parametrize("form", LSTM_FORMS)
def test_forget_bias_override_sets_exactly_the_forget_gate_of_every_lstm_form(form, bidir):
    from graphrnn.model import forget_bias_overrides
    I, H, value = 3, 4, 1.5
    cell, order, biases = _lstm_form(form, I, H)
    model = RNNModel([(cell, cell)] if bidir else [cell], n_classes=V, vocab_size=V,
                     embed_size=I, backend="ref", dtype="float64")
    ov = forget_bias_overrides(model, value)
    plain = model.init_params(seed=3)
    got = model.init_params(seed=3, overrides=ov)
    f = slice(order.index("f") * H, (order.index("f") + 1) * H)
    prefixes = ("l0.", "l0r.") if bidir else ("l0.",)
    # the documented layout: only the forget blocks of the gate biases moved ...
    for k in got:
        keep = np.ones(got[k].shape, bool)
        if any(k == pre + b for pre in prefixes for b in biases):
            keep[..., f] = False
        np.testing.assert_array_equal(got[k][keep], plain[k][keep], err_msg=k)
    for pre in prefixes:
        # ... and their sum there is value
        total = sum(got[pre + b] for b in biases)
        np.testing.assert_allclose(total[0, f], value, rtol=0, atol=1e-15)
        # the function: with every parameter 0 but the overrides, x = h = 0 and c = 1 give
        # i = o = sigmoid(0), g = tanh(0) = 0, so c' = sigmoid(forget bias) * 1; the value in
        # any other gate's block would give 0.5 (i, o) or 0.5 + 0.5 tanh(value) (g)
        cc = model.layers[0].fwd
        zero = {k: np.zeros_like(v) for k, v in cc.init_params().items()}
        from graphrnn.model import apply_overrides
        apply_overrides(zero, {k[len(pre):]: v for k, v in ov.items() if k.startswith(pre)})
        states = {s.arg: np.zeros((2, H)) for s in cc.cell.states}
        states["c"] = np.ones((2, H))
        _, nxt = cc.step(zero, np.zeros((2, I)), [states[s.arg] for s in cc.cell.states])
        c_next = nxt[[s.arg for s in cc.cell.states].index("c")]
        np.testing.assert_allclose(c_next, 1 / (1 + np.exp(-value)), rtol=1e-12)


def test_forget_gate_biases_of_multi_layer_charrnn_cell_and_cells_without_one():
    from frontends import nngraph
    from graphrnn import cells
    from graphrnn.model import forget_bias_overrides, forget_gate_biases
    two = nngraph.charrnn_lstm(3, 4, num_layers=2, dtype="float64")
    assert sorted(forget_gate_biases(two)) == [(("i2h_1_b", "h2h_1_b"), 4, 8),
                                               (("i2h_2_b", "h2h_2_b"), 4, 8)]
    with pytest.raises(ValueError, match="contradicts the cell's own gate order 'igfo'"):
        forget_gate_biases(cells.lstm(3, 4, gate_order="zaremba"), gate_order="pytorch")
    assert forget_gate_biases(cells.lstm(3, 4, gate_order="zaremba"), "igfo") == [(("b",), 8, 12)]
    with pytest.raises(ValueError, match=r"its gate_biases \['nope'\] are not parameters"):
        forget_gate_biases(cells.lstm(3, 4).with_meta(gate_biases=("nope",)))
    for name in ("lstm_no_forget", "cifg_lstm"):
        m = RNNModel([cells.zoo_cell(name, 3, 4, "float64")], V, V, embed_size=3,
                     backend="ref", dtype="float64")
        with pytest.raises(ValueError, match=f"cell {name} has no forget gate"):
            forget_bias_overrides(m, 1.0)
    # the lecture LSTM (one Linear pair per gate) records no layout: a clear error, not a guess
    with pytest.raises(ValueError, match="no LSTM forget gate found"):
        forget_gate_biases(nngraph.lecture_lstm(3, 4))
    # a fused b without metadata is used only when the caller names its gate order
    bare = cells.lstm(3, 4, gate_order="zaremba")
    bare = type(bare)(bare.inputs, bare.states, bare.outputs, bare.next_states, bare.params,
                      bare.name, bare.output_names)
    with pytest.raises(ValueError, match="no LSTM forget gate found"):
        forget_gate_biases(bare)
    assert forget_gate_biases(bare, "zaremba") == [(("b",), 8, 12)]


def test_head_gemms_are_asked_of_the_top_compiled_cell(monkeypatch):
    """The model's head multiplies through its top layer's ``CompiledCell.matmul`` (the llvm
    backend runs it on its threads), not through a backend module it looks up by name."""
    model = _model(layers=2)
    params = model.init_params(seed=0)
    ids, tg = _data()
    want = model.loss_and_grads(params, ids, tg)
    seen = []

    def mm(a, b):
        seen.append((a.shape, b.shape))
        return a @ b

    monkeypatch.setattr(model.layers[-1].fwd, "matmul", mm)
    got = model.loss_and_grads(params, ids, tg)
    assert len(seen) == 3   # logits, the head's weight gradient, the cotangent of its input
    assert got.loss == want.loss
    for k in want.grads:
        np.testing.assert_array_equal(got.grads[k], want.grads[k])


@pytest.mark.parametrize("bidir", [False, True])
def test_grad_ready_hands_over_every_gradient_once_head_first(bidir):
    """``loss_and_grads(grad_ready=...)`` (data-parallel buckets start from it): each group is
    final when handed over (equal to the returned gradients), every parameter comes exactly
    once, the head first, then the layers from the top, the embedding last."""
    m = _model(layers=2, bidir=bidir)
    params = m.init_params(seed=0, scale=0.3)
    rng = np.random.default_rng(0)
    ids, tg = rng.integers(0, 5, (4, 3)), rng.integers(0, 5, (4, 3))
    seen: list[tuple[str, np.ndarray]] = []
    r = m.loss_and_grads(params, ids, tg, grad_ready=lambda g: seen.extend(
        (k, v.copy()) for k, v in g.items()))
    names = [k for k, _ in seen]
    assert sorted(names) == sorted(params) and len(names) == len(set(names))
    assert names[:2] == ["head.W", "head.b"] and names[-1] == "embed"
    layer_of = [int(k[1]) for k in names if k.startswith("l")]
    assert layer_of == sorted(layer_of, reverse=True)
    for k, v in seen:
        np.testing.assert_array_equal(v, r.grads[k], err_msg=k)
