"""Every zoo cell: BPTT gradients of a random scalar loss over T=7 steps match float64 central
finite differences, checked as adjoints in random directions (``<J t, c> = <t, J^T c>``, as JAX's
check_vjp does) with respect to the parameters, the inputs and the initial states, separately
and all together."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import fd_and_backward

import graphrnn
from graphrnn.cells import SQUARE_INPUT, ZOO, zoo_cell

T, B, I, H = 7, 2, 3, 4
EPS = 1e-5
RTOL = 1e-6


def setup(name):
    i = H if name in SQUARE_INPUT else I
    cc = graphrnn.compile(zoo_cell(name, i, H, "float64"), backend="ref", dtype="float64")
    rng = np.random.default_rng(sum(map(ord, name)))
    params = cc.init_params(seed=1, scale=0.5)
    xs = rng.standard_normal((T, B, i))
    h0 = [rng.uniform(-0.8, 0.8, (B, H)) for _ in cc.cell.states]
    # the loss is <ys, cy> + <h_T, ch>: a random linear functional of outputs and final states
    cy = [rng.standard_normal((T, B, H)) for _ in cc.cell.outputs]
    ch = [rng.standard_normal((B, H)) for _ in cc.cell.states]
    return cc, params, xs, h0, cy, ch, rng


@pytest.mark.parametrize("name", sorted(ZOO))
def test_bptt_gradients_match_finite_differences(name):
    cc, params, xs, h0, cy, ch, rng = setup(name)
    ys, hT, res = cc.forward_train(params, xs, h0)
    g = cc.backward(params, res, cy, ch)
    assert set(g.params) == set(params)
    assert g.inputs[0].shape == xs.shape and len(g.states) == len(h0)

    def check(dp, dx, dh):
        fd, an = fd_and_backward(cc, params, [xs], h0, cy, ch, g, dp, [dx], dh, eps=EPS)
        assert abs(an) > 1e-3, "a degenerate direction proves nothing"
        err = abs(fd - an) / max(abs(fd), abs(an))
        assert err < RTOL, f"{name}: finite differences {fd!r} vs backward {an!r} (rel {err:.2e})"

    def rand_like(a):
        return rng.standard_normal(np.shape(a))

    zp = {k: np.zeros_like(v) for k, v in params.items()}
    zx, zh = np.zeros_like(xs), [np.zeros_like(h) for h in h0]
    rp = {k: rand_like(v) for k, v in params.items()}
    rx, rh = rand_like(xs), [rand_like(h) for h in h0]
    check(rp, zx, zh)          # parameters only
    check(zp, rx, zh)          # inputs only
    check(zp, zx, rh)          # initial states only
    for k in params:           # each parameter on its own, so none can hide behind another
        check({**zp, k: rp[k]}, zx, zh)
    check(rp, rx, rh)          # all together
