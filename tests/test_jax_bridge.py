"""graphrnn.jax: a compiled cell as a JAX function. Gradients through the bridge pass JAX's own
``check_grads`` (float64 finite differences, reverse mode) for every zoo cell and equal the
``ref`` backend's; the function works under jit, grad, vmap (the vmapped per-example function
equals the batched call) and in an optax step; residuals survive repeated and dropped
backwards; bad shapes and dtypes are errors naming the argument. Skipped without jax."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
from jax.test_util import check_grads  # noqa: E402

import graphrnn  # noqa: E402
from graphrnn.cells import SQUARE_INPUT, ZOO, zoo_cell  # noqa: E402
from graphrnn.errors import RuntimeInputError  # noqa: E402

gj = pytest.importorskip("graphrnn.jax")

T, B, I, H = 5, 3, 4, 6


@pytest.fixture(autouse=True)
def x64():
    """float64 in JAX for these tests only (the global flag would leak into other tests)."""
    with jax.enable_x64(True):
        yield


def setup(name, backend="llvm", dtype="float64", seed=0):
    i = H if name in SQUARE_INPUT else I
    cc = graphrnn.compile(zoo_cell(name, i, H, dtype), backend=backend, dtype=dtype)
    rng = np.random.default_rng(sum(map(ord, name)) + seed)
    params = cc.init_params(seed=1, scale=0.5)
    xs = rng.standard_normal((T, B, i)).astype(dtype)
    h0 = [rng.uniform(-0.8, 0.8, (B, H)).astype(dtype) for _ in cc.cell.states]
    return cc, params, xs, h0, rng


def jtree(params):
    return {k: jnp.asarray(v) for k, v in params.items()}


def test_import_graphrnn_does_not_import_jax():
    code = ("import sys, graphrnn, graphrnn.cells\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib',"
            " 'graphrnn.jax')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
    assert "graphrnn.jax" not in r.stdout


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_cell_check_grads_and_equals_ref(name):
    cc, params, xs, h0, rng = setup(name)
    f = gj.rnn(cc)
    p, x, h = jtree(params), jnp.asarray(xs), [jnp.asarray(v) for v in h0]
    # JAX's own check: reverse-mode VJPs against float64 finite differences in random
    # directions, with respect to the parameters, the inputs and the initial states
    check_grads(f, (p, x, h), order=1, modes=["rev"], eps=1e-5, atol=1e-6, rtol=1e-6)
    # the same numbers as the reference interpreter, values and every gradient
    ref = graphrnn.compile(cc.cell, backend="ref", dtype="float64")
    rys, rhT, res = ref.forward_train(params, xs, h0)
    cy = [rng.standard_normal(y.shape) for y in rys]
    ch = [rng.standard_normal(v.shape) for v in rhT]
    rg = ref.backward(params, res, cy, ch)

    def loss(p, x, h):
        ys, hT = f(p, x, h)
        return (sum(jnp.vdot(a, b) for a, b in zip(ys, cy))
                + sum(jnp.vdot(a, b) for a, b in zip(hT, ch)))

    ys, hT = f(p, x, h)
    for a, b in zip(ys + hT, rys + rhT):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-12)
    gp, gx, gh = jax.grad(loss, argnums=(0, 1, 2))(p, x, h)
    assert set(gp) == set(rg.params)
    for k in rg.params:
        np.testing.assert_allclose(np.asarray(gp[k]), rg.params[k], rtol=1e-9, atol=1e-12,
                                   err_msg=f"{name} d{k}")
    np.testing.assert_allclose(np.asarray(gx), rg.inputs[0], rtol=1e-9, atol=1e-12)
    for a, b in zip(gh, rg.states):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-12)
    assert len(f.saved) == 0, "every backward took its forward's residuals"


def test_jit_grad_equal_eager_and_repeat():
    cc, params, xs, h0, rng = setup("lstm")
    f = gj.rnn(cc)
    p, x = jtree(params), jnp.asarray(xs)
    d = jnp.asarray(rng.standard_normal((T, B, H)))

    def loss(p, x):
        return jnp.vdot(f(p, x)[0][0], d)

    eager = jax.grad(loss)(p, x)
    step = jax.jit(jax.value_and_grad(loss))
    for _ in range(3):   # the compiled step runs the callbacks again each time
        v, g = step(p, x)
        for k in p:
            np.testing.assert_array_equal(np.asarray(g[k]), np.asarray(eager[k]))
    np.testing.assert_allclose(float(v), float(loss(p, x)), rtol=1e-12)
    yj = jax.jit(f)(p, x)[0][0]
    np.testing.assert_array_equal(np.asarray(yj), cc.forward(params, xs)[0][0])
    assert len(f.saved) == 0
    # a different batch size and sequence length retrace and still agree with the cell
    x2 = jnp.asarray(rng.standard_normal((7, 2, I)))
    np.testing.assert_array_equal(np.asarray(jax.jit(f)(p, x2)[0][0]),
                                  cc.forward(params, np.asarray(x2))[0][0])


def test_pullback_twice_and_dropped_residuals_recompute():
    cc, params, xs, h0, rng = setup("gru")
    f = gj.rnn(cc, max_saved=2)
    p, x = jtree(params), jnp.asarray(xs)
    out, pull = jax.vjp(lambda p: f(p, x)[0][0], p)
    ct = jnp.asarray(rng.standard_normal(out.shape))
    first = pull(ct)[0]
    second = pull(ct)[0]        # the entry was taken by the first: recomputed, same answer
    for k in p:
        np.testing.assert_array_equal(np.asarray(first[k]), np.asarray(second[k]))
    # forwards whose backward never runs: the table keeps only the newest max_saved
    pulls = [jax.vjp(lambda p: f(p, x)[0][0], p)[1] for _ in range(5)]
    assert len(f.saved) == 2
    g0 = pulls[0](ct)[0]        # its entry was dropped: recomputed
    for k in p:
        np.testing.assert_array_equal(np.asarray(g0[k]), np.asarray(first[k]))
    # max_saved=0: nothing kept, every backward recomputes
    f0 = gj.rnn(cc, max_saved=0)
    g = jax.grad(lambda p: jnp.vdot(f0(p, x)[0][0], ct))(p)
    assert len(f0.saved) == 0
    for k in p:
        np.testing.assert_array_equal(np.asarray(g[k]), np.asarray(first[k]))


def test_vmap_over_examples_equals_the_batched_call():
    cc, params, xs, h0, rng = setup("peephole_lstm")
    f = gj.rnn(cc)
    p, x = jtree(params), jnp.asarray(xs)
    h = [jnp.asarray(v) for v in h0]
    ys, hT = f(p, x, h)

    def one(x1, h1):            # one sequence: x1 (T, I), h1 a list of (H,)
        return f(p, x1, h1)

    vys, vhT = jax.vmap(one, in_axes=(1, 0), out_axes=(1, 0))(x, h)
    for a, b in zip(ys + hT, vys + vhT):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-14)
    # under jit, nested vmap over two example axes: still the batched call's values
    x4 = jnp.asarray(rng.standard_normal((2, 2, T, I)))
    vv = jax.jit(jax.vmap(jax.vmap(lambda x1: f(p, x1)[0][0])))(x4)
    flat = f(p, jnp.transpose(x4.reshape(4, T, I), (1, 0, 2)))[0][0]
    np.testing.assert_allclose(np.asarray(vv).reshape(4, T, H),
                               np.transpose(np.asarray(flat), (1, 0, 2)), rtol=1e-12)
    d = jnp.asarray(rng.standard_normal((T, B, H)))

    def per_example_loss(p, x1, d1):
        return jnp.vdot(f(p, x1)[0][0], d1)

    # grad of a vmapped loss = grad of the batched loss
    g_b = jax.grad(lambda p: jnp.vdot(f(p, x)[0][0], d))(p)
    g_v = jax.jit(jax.grad(lambda p: jnp.sum(jax.vmap(per_example_loss, (None, 1, 1))(
        p, x, d))))(p)
    for k in p:
        np.testing.assert_allclose(np.asarray(g_v[k]), np.asarray(g_b[k]), rtol=1e-10)
    # per-example gradients (vmap of grad): each equals that example's own gradient
    g_pe = jax.vmap(jax.grad(per_example_loss), (None, 1, 1))(p, x, d)
    for b in range(B):
        g1 = jax.grad(per_example_loss)(p, x[:, b], d[:, b])
        for k in p:
            np.testing.assert_allclose(np.asarray(g_pe[k][b]), np.asarray(g1[k]), rtol=1e-10)
    assert len(f.saved) == 0


def test_vmap_over_parameters_an_ensemble():
    cc, params, xs, h0, rng = setup("rnn_tanh")
    f = gj.rnn(cc)
    x = jnp.asarray(xs)
    p2 = {k: jnp.stack([jnp.asarray(v), jnp.asarray(v) * 0.5]) for k, v in params.items()}
    ys = jax.vmap(lambda p: f(p, x)[0][0])(p2)
    for e in range(2):
        pe = {k: np.asarray(v[e]) for k, v in p2.items()}
        np.testing.assert_allclose(np.asarray(ys[e]), cc.forward(pe, xs)[0][0], rtol=1e-12)
    g = jax.vmap(jax.grad(lambda p: jnp.sum(f(p, x)[0][0] ** 2)))(p2)
    g1 = jax.grad(lambda p: jnp.sum(f(p, x)[0][0] ** 2))({k: v[1] for k, v in p2.items()})
    for k in params:
        np.testing.assert_allclose(np.asarray(g[k][1]), np.asarray(g1[k]), rtol=1e-12)


def test_optax_adamw_step_in_jit_trains():
    optax = pytest.importorskip("optax")
    cc, params, xs, h0, rng = setup("lstm", dtype="float32")
    f = gj.rnn(cc)
    p, x = jtree(params), jnp.asarray(xs)
    target = jnp.asarray(rng.uniform(-0.5, 0.5, (T, B, H)).astype(np.float32))
    opt = optax.adamw(3e-2)
    state = opt.init(p)

    def loss(p):
        return jnp.mean((f(p, x)[0][0] - target) ** 2)

    @jax.jit
    def step(p, state):
        v, g = jax.value_and_grad(loss)(p)
        updates, state = opt.update(g, state, p)
        return optax.apply_updates(p, updates), state, v

    losses = []
    p1 = p
    for _ in range(20):
        p1, state, v = step(p1, state)
        losses.append(float(v))
    assert all(p1[k].dtype == jnp.float32 for k in p1)
    assert all(not np.array_equal(np.asarray(p1[k]), params[k]) for k in params)
    assert losses[-1] < 0.7 * losses[0], losses


def test_float32_gradients_equal_the_cell():
    cc, params, xs, h0, rng = setup("mut1", dtype="float32")
    f = gj.rnn(cc)
    d = rng.standard_normal((T, B, H)).astype(np.float32)
    g = jax.jit(jax.grad(lambda p: jnp.vdot(f(p, jnp.asarray(xs), h0)[0][0], d)))(jtree(params))
    _, _, res = cc.forward_train(params, xs, h0)
    want = cc.backward(params, res, [d]).params
    for k in want:
        assert g[k].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(g[k]), want[k], rtol=1e-5, atol=1e-6)


def test_extra_params_are_ignored_and_get_zero_gradient():
    cc, params, xs, h0, rng = setup("rnn_tanh")
    f = gj.rnn(cc)
    p = {**jtree(params), "head": jnp.ones((H, 2))}
    g = jax.grad(lambda p: jnp.sum(f(p, jnp.asarray(xs))[0][0] @ p["head"] * 0)
                 + jnp.sum(f(p, jnp.asarray(xs))[0][0]))(p)
    assert set(g) == set(p)
    assert not np.any(np.asarray(g["head"]))


def test_bad_shapes_and_dtypes_name_the_argument():
    cc, params, xs, h0, rng = setup("lstm")
    f = gj.rnn(cc)
    p, x = jtree(params), jnp.asarray(xs)
    with pytest.raises(RuntimeInputError, match=r"missing parameter 'W_h'"):
        f({k: v for k, v in p.items() if k != "W_h"}, x)
    with pytest.raises(RuntimeInputError, match=r"parameter 'b': expected shape \(1, 24\), "
                                                r"got \(24,\)"):
        f({**p, "b": p["b"][0]}, x)
    with pytest.raises(TypeError, match=r"parameter 'W_x': expected dtype float64 .* got "
                                        r"float32"):
        f({**p, "W_x": p["W_x"].astype(jnp.float32)}, x)
    with pytest.raises(TypeError, match=r"input 'x': expected dtype float64 .* got float32"):
        f(p, x.astype(jnp.float32))
    with pytest.raises(RuntimeInputError, match=r"input 'x': expected \(T, B, n\) with n = 4, "
                                                r"got \(5, 3, 7\)"):
        f(p, jnp.zeros((T, B, 7)))
    with pytest.raises(RuntimeInputError, match=r"xs: expected \(T, B, n\) arrays"):
        f(p, jnp.zeros((2, T, B, I)))
    with pytest.raises(RuntimeInputError, match=r"state 'h': expected shape \(3, 6\), got "
                                                r"\(2, 6\)"):
        f(p, x, [jnp.zeros((2, H)), jnp.zeros((B, H))])
    with pytest.raises(RuntimeInputError, match=r"h0: expected 2 array\(s\)"):
        f(p, x, [jnp.zeros((B, H))])
    with pytest.raises(RuntimeInputError, match=r"params: expected a dict"):
        f([p], x)
    with pytest.raises(TypeError, match=r"takes a compiled cell"):
        gj.rnn(cc.cell)
    # float64 cell, JAX's 64-bit mode off: the message says how to turn it on
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match=r"jax_enable_x64"):
            f(jtree(params), jnp.asarray(xs))
    # the checks run while tracing: under jit too
    with pytest.raises(RuntimeInputError, match=r"input 'x'"):
        jax.jit(f)(p, jnp.zeros((T, B, 7)))


def test_partial_gradients_equal_ref():
    """Gradients of only some arguments, and losses that read only some outputs: the bridge
    asks the cell for what is differentiated and passes no cotangent for unread outputs."""
    cc, params, xs, h0, rng = setup("lstm")
    f = gj.rnn(cc)
    ref = graphrnn.compile(cc.cell, backend="ref", dtype="float64")
    p, x, h = jtree(params), jnp.asarray(xs), [jnp.asarray(v) for v in h0]
    cy = rng.standard_normal((T, B, H))
    ch = rng.standard_normal((B, H))
    _, _, res = ref.forward_train(params, xs, h0)
    only_ys = ref.backward(params, res, [cy])
    _, _, res = ref.forward_train(params, xs, h0)
    only_c = ref.backward(params, res, None, [None, ch])
    gx = jax.jit(jax.grad(lambda x: jnp.vdot(f(p, x, h)[0][0], cy)))(x)
    np.testing.assert_allclose(np.asarray(gx), only_ys.inputs[0], rtol=1e-9, atol=1e-12)
    gh = jax.grad(lambda h: jnp.vdot(f(p, x, h)[1][1], ch))(h)
    for a, b in zip(gh, only_c.states):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-12)
    gp = jax.grad(lambda p: jnp.vdot(f(p, x, h)[1][1], ch))(p)
    for k in params:
        np.testing.assert_allclose(np.asarray(gp[k]), only_c.params[k], rtol=1e-9, atol=1e-12)
    assert len(f.saved) == 0


def embedding_cell():
    """Two inputs, token ids (int64) and a float feature, and an embedding table inside."""
    from frontends.trace import tanh
    from graphrnn.ir import Cell, apply, input_, param, state
    from graphrnn.ops import Ops
    d = "float64"
    ids, x, h = input_("jb_ids", 1, "int64"), input_("jb_x", 2, d), state("jb_h", 3, d)
    e = apply(Ops.GATHER, param("jb_E", (7, 3), d), ids)
    hn = tanh(e + x @ param("jb_W", (2, 3), d) + h @ param("jb_U", (3, 3), d))
    return Cell.make([ids, x], [h], [hn], [hn], "jb_embed")


def test_token_id_inputs_get_no_gradient_and_match_ref():
    cell = embedding_cell()
    cc = graphrnn.compile(cell, backend="llvm", dtype="float64")
    ref = graphrnn.compile(cell, backend="ref", dtype="float64")
    rng = np.random.default_rng(3)
    params = cc.init_params(seed=2, scale=0.5)
    ids = rng.integers(0, 7, (T, B, 1))
    xs = rng.standard_normal((T, B, 2))
    f = gj.rnn(cc)
    p = jtree(params)
    for id_dtype in (jnp.int32, jnp.int64):
        check_grads(lambda p, x, t=id_dtype: f(p, [jnp.asarray(ids, t), x]), (p, jnp.asarray(xs)),
                    order=1, modes=["rev"], eps=1e-5, atol=1e-6, rtol=1e-6)
    cy = rng.standard_normal((T, B, 3))
    _, _, res = ref.forward_train(params, [ids, xs])
    want = ref.backward(params, res, [cy])
    gp, gx = jax.grad(lambda p, x: jnp.vdot(f(p, [jnp.asarray(ids), x])[0][0], cy),
                      argnums=(0, 1))(p, jnp.asarray(xs))
    for k in params:
        np.testing.assert_allclose(np.asarray(gp[k]), want.params[k], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(gx), want.inputs[1], rtol=1e-9, atol=1e-12)
    with pytest.raises(TypeError, match=r"input 'jb_ids': expected integer token ids, got "
                                        r"dtype float64"):
        f(p, [jnp.asarray(ids, jnp.float64), jnp.asarray(xs)])
