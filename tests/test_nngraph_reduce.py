"""nn.Sum, nn.Mean, nn.Replicate, nn.Sqrt, nn.Narrow (negative offsets and lengths) and
nn.LayerNormalization in the nngraph mirror, as Torch defines them: values against numpy,
LayerNormalization against the paper's own Torch graph of primitive modules, and cells built from
them on every CPU backend against ref, with float64 gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TOL, assert_all_close, cotangents, fd_and_backward, flat, sequences

import graphrnn
from graphrnn import nn
from graphrnn.errors import ShapeError

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 6))


def run(module_or_fn, a: np.ndarray = A):  # type: ignore[no-untyped-def]
    x = nn.Identity()()
    y = module_or_fn(x)
    return nn.gModule([x], [y]).forward(a)


@pytest.mark.parametrize("make, want", [
    (lambda: nn.Sum(2), A.sum(1, keepdims=True)),
    (lambda: nn.Sum(1, 1), A.sum(1, keepdims=True)),
    (lambda: nn.Sum(-1), A.sum(1, keepdims=True)),
    (lambda: nn.Sum(2, None, True), A.mean(1, keepdims=True)),
    (lambda: nn.Mean(2), A.mean(1, keepdims=True)),
    (lambda: nn.Mean(1, 1), A.mean(1, keepdims=True)),
])
def test_sum_and_mean_reduce_the_features(make, want) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(run(make()), want, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("make", [lambda: nn.Sum(), lambda: nn.Sum(1), lambda: nn.Mean(1),
                                  lambda: nn.Sum(3)])
def test_reducing_the_batch_is_refused(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"only the features can be reduced: write nn\.(Sum|Mean)"
                                         r"\(2\)"):
        make()


def test_replicate_broadcasts_a_reduction_back() -> None:
    got = run(lambda x: nn.Replicate(6, 2)(nn.Mean(2)(x)))
    np.testing.assert_allclose(got, np.repeat(A.mean(1, keepdims=True), 6, axis=1), rtol=1e-14)
    with pytest.raises(ShapeError, match=r"one value per example, \(B, 1\)"):
        run(nn.Replicate(6, 2))
    with pytest.raises(ValueError, match="along the features"):
        nn.Replicate(6, 1)


@pytest.mark.parametrize("offset, length, cols", [
    (2, 3, slice(1, 4)), (1, 6, slice(0, 6)), (-1, 1, slice(5, 6)), (-3, 2, slice(3, 5)),
    (2, -1, slice(1, 6)), (1, -2, slice(0, 5)), (-4, -1, slice(2, 6)),
])
def test_narrow_counts_as_torch_does(offset: int, length: int, cols: slice) -> None:
    np.testing.assert_array_equal(run(nn.Narrow(2, offset, length)), A[:, cols])


@pytest.mark.parametrize("offset, length", [(5, 3), (-7, 1), (6, -3)])
def test_narrow_out_of_range(offset: int, length: int) -> None:
    with pytest.raises(ShapeError, match=r"selects features .* but the input is f64\[B,6\]"):
        run(nn.Narrow(2, offset, length))
    with pytest.raises(ValueError, match="non-zero integer"):
        nn.Narrow(2, 0, 1)


def kiros_layer_norm(x, n: int, eps: float, gain: nn.Module, bias: nn.Module):  # type: ignore
    """ryankiros/layer-norm's LayerNormalization.lua, module for module."""
    mean_rep = nn.Replicate(n, 2)(nn.Mean(2)(x))
    centre = nn.CSubTable()([x, mean_rep])
    std = nn.Sqrt()(nn.Mean(2)(nn.Square()(centre)))
    std_rep = nn.AddConstant(eps)(nn.Replicate(n, 2)(std))
    return bias(gain(nn.CDivTable()([centre, std_rep])))


def test_layer_normalization_is_the_papers_torch_module() -> None:
    ln = nn.LayerNormalization(6, bias=0.25)
    got = run(ln)
    c = A - A.mean(1, keepdims=True)
    want = c / (np.sqrt((c * c).mean(1, keepdims=True)) + 1e-5) + 0.25
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    assert np.all(ln.params["g"] == 1.0)
    # with learned values, against the graph of primitives
    ln.params["g"][...] = RNG.standard_normal((1, 6))
    ln.params["b"][...] = RNG.standard_normal((1, 6))
    gain, bias = nn.CMul(6), nn.Add(6)
    gain.params["w"][...] = ln.params["g"]
    bias.params["b"][...] = ln.params["b"]
    np.testing.assert_allclose(run(ln), run(lambda x: kiros_layer_norm(x, 6, 1e-5, gain, bias)),
                               rtol=1e-13, atol=1e-13)
    plain = run(nn.LayerNormalization(6, eps=0.0, affine=False))
    np.testing.assert_allclose(plain, c / np.sqrt((c * c).mean(1, keepdims=True)), rtol=1e-13)
    with pytest.raises(ShapeError, match="expects 6 input features"):
        run(nn.LayerNormalization(6), RNG.standard_normal((2, 5)))


def layer_norm_rnn() -> graphrnn.Cell:
    """h' = tanh(LN(x W_x + h W_h)) + Narrow/Sum/Mean terms: every new module in one cell."""
    x, h = nn.Identity()(), nn.Identity()()
    pre = nn.CAddTable()([nn.Linear(3, 5)(x), nn.Linear(5, 5, bias=False)(h)])
    normed = nn.LayerNormalization(5, bias=0.1)(pre)
    centre = nn.CSubTable()([h, nn.Replicate(5, 2)(nn.Mean(2)(h))])
    h2 = nn.Tanh()(nn.CAddTable()([normed, nn.MulConstant(0.5)(centre)]))
    total = nn.Sum(2)(nn.Square()(h2))
    y = nn.JoinTable(2)([nn.Narrow(2, -2, -1)(h2), total])
    g = nn.gModule([x, h], [y, h2])
    return g.to_cell(inputs=[0], states=[1], next_states=[1], outputs=[0], dtype="float64")


@pytest.mark.parametrize("backend", ["program", "llvm"])
def test_cell_of_the_new_modules_equals_ref(backend: str) -> None:
    cell = layer_norm_rnn()
    ref = graphrnn.compile(cell, backend="ref", dtype="float64")
    cc = graphrnn.compile(cell, backend=backend, dtype="float64")
    params = ref.init_params(seed=1, scale=0.5)
    rng = np.random.default_rng(2)
    xs, h0 = sequences(ref, 5, 3, rng)
    dys, dhT = cotangents(ref, 5, 3, rng)
    y1, s1, r1 = ref.forward_train(params, xs, h0)
    y2, s2, r2 = cc.forward_train(params, xs, h0)
    g1 = ref.backward(params, r1, dys, dhT)
    g2 = cc.backward(params, r2, dys, dhT)
    assert_all_close(flat(y2, s2, g2), flat(y1, s1, g1), **TOL["float64"])


@pytest.mark.parametrize("backend", ["ref", "program"])
def test_cell_of_the_new_modules_gradients(backend: str) -> None:
    cell = layer_norm_rnn()
    assert {"LayerNormalization_1_g", "LayerNormalization_1_b"} <= set(cell.param_shapes())
    cc = graphrnn.compile(cell, backend=backend, dtype="float64")
    params = cc.init_params(seed=3, scale=0.5)
    rng = np.random.default_rng(4)
    xs, h0 = sequences(cc, 5, 3, rng)
    dys, dhT = cotangents(cc, 5, 3, rng)
    _, _, res = cc.forward_train(params, xs, h0)
    g = cc.backward(params, res, dys, dhT)
    for keys in [[k] for k in sorted(params)] + [sorted(params)]:
        dp = {k: rng.standard_normal(params[k].shape) for k in keys}
        dx = [rng.standard_normal(x.shape) for x in xs]
        dh = [rng.standard_normal(h.shape) for h in h0]
        fd, an = fd_and_backward(cc, params, xs, h0, dys, dhT, g, dp, dx, dh, eps=1e-5)
        assert abs(fd - an) <= 1e-6 * max(abs(fd), abs(an)), (keys, fd, an)
