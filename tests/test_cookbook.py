"""The cookbook (``docs/cells.md``): every cell is read from the page itself (and the page's text
must equal its file under ``examples/``), compiles on ref, program and llvm with equal results,
has float64 gradients equal to finite differences, and equals its zoo cell where there is one
(the zoo stores weights as (in, out), the equations as (out, in): a transpose)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import TOL, assert_all_close, cotangents, fd_and_backward, flat, sequences

import graphrnn
from graphrnn.cells import zoo_cell
from graphrnn.convert import relayout
from graphrnn.equations import cell_from_equations

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cells.md"
BLOCK = re.compile(r"^`(examples/[^`]+\.eq)` \([^\n]*\):\n\n```eq\n(.*?)^```", re.M | re.S)
BLOCKS = {Path(path).stem: (path, text) for path, text in BLOCK.findall(DOC.read_text())}
# the cookbook cells that are also zoo cells (the same function and parameter names)
ZOO_TWINS = ["rnn_tanh", "lstm", "lstm_no_forget", "peephole_lstm", "cifg_lstm", "gru", "mut1",
             "mrnn", "indrnn"]
T, B = 5, 2


def cookbook_cell(name: str, dtype: str = "float64") -> graphrnn.Cell:
    path, text = BLOCKS[name]
    return cell_from_equations(text, dtype=dtype, filename=path)


def test_the_page_holds_the_files_it_names() -> None:
    assert len(BLOCKS) >= 10
    for name, (path, text) in BLOCKS.items():
        assert (ROOT / path).read_text(encoding="utf-8") == text, f"{path} differs from the page"
        assert text.startswith(f"# cell: {name}\n")
    on_disk = {p.stem for p in (ROOT / "examples" / "cells").glob("*.eq")}
    assert on_disk <= set(BLOCKS), f"files missing from the page: {on_disk - set(BLOCKS)}"
    for must in ("lstm", "lstm_no_forget", "peephole_lstm", "cifg_lstm", "gru", "mut1", "mlstm",
                 "layer_norm_lstm", "esn", "rnn_tanh"):
        assert must in BLOCKS


@pytest.mark.parametrize("backend", ["program", "llvm"])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_backends_equal_ref(name: str, backend: str) -> None:
    cell = cookbook_cell(name)
    ref = graphrnn.compile(cell, backend="ref", dtype="float64")
    cc = graphrnn.compile(cell, backend=backend, dtype="float64")
    params = ref.init_params(seed=1, scale=0.3)
    rng = np.random.default_rng(0)
    xs, h0 = sequences(ref, T, B, rng)
    dys, dhT = cotangents(ref, T, B, rng)
    y1, s1, r1 = ref.forward_train(params, xs, h0)
    g1 = ref.backward(params, r1, dys, dhT)
    y2, s2, r2 = cc.forward_train(params, xs, h0)
    g2 = cc.backward(params, r2, dys, dhT)
    assert set(g2.params) == set(g1.params) == set(cell.grad_shapes())
    assert_all_close(flat(y2, s2, g2), flat(y1, s1, g1), **TOL["float64"])


@pytest.mark.parametrize("backend", ["ref", "program"])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_gradients_equal_finite_differences(name: str, backend: str) -> None:
    cell = cookbook_cell(name)
    cc = graphrnn.compile(cell, backend=backend, dtype="float64")
    params = cc.init_params(seed=2, scale=0.3)
    rng = np.random.default_rng(sum(map(ord, name)))
    xs, h0 = sequences(cc, T, B, rng)
    dys, dhT = cotangents(cc, T, B, rng)
    _, _, res = cc.forward_train(params, xs, h0)
    g = cc.backward(params, res, dys, dhT)
    trained = sorted(cell.grad_shapes())

    def check(dp, dx, dh, what):  # type: ignore[no-untyped-def]
        fd, an = fd_and_backward(cc, params, xs, h0, dys, dhT, g, dp, dx, dh, eps=1e-5)
        assert abs(an) > 1e-4, f"{name} {what}: a degenerate direction proves nothing"
        err = abs(fd - an) / max(abs(fd), abs(an))
        assert err < 1e-6, f"{name} {what}: finite differences {fd!r} vs backward {an!r}"

    rp = {k: rng.standard_normal(params[k].shape) for k in trained}
    rx = [rng.standard_normal(x.shape) for x in xs]
    rh = [rng.standard_normal(h.shape) for h in h0]
    check(rp, rx, rh, "all together")
    if backend == "ref":
        for k in trained:      # each parameter alone, so none can hide behind another
            check({k: rp[k]}, None, None, k)
        check(None, rx, None, "inputs")
        check(None, None, rh, "initial states")


@pytest.mark.parametrize("name", ZOO_TWINS)
def test_equals_the_zoo_cell(name: str) -> None:
    cell = cookbook_cell(name)
    (x,) = cell.inputs
    zoo = zoo_cell(name, int(x.shape[1]), int(cell.states[0].shape[1]), "float64")
    zc = graphrnn.compile(zoo, backend="ref", dtype="float64")
    ec = graphrnn.compile(cell, backend="ref", dtype="float64")
    zp = zc.init_params(seed=3, scale=0.3)
    shapes = cell.param_shapes()
    assert set(shapes) == set(zp), "the same parameter names"
    # zoo weights are (in, out), the equations' (out, in); vectors are (1, n) in both
    assert set(zoo.weight_layouts().values()) == {"(in, out)"}
    assert set(cell.weight_layouts().values()) == {"(out, in)"}
    ep = relayout(zp, zoo, cell)
    assert all(ep[k].shape == shapes[k] for k in shapes)
    rng = np.random.default_rng(5)
    xs, h0 = sequences(zc, T, B, rng)
    dys, dhT = cotangents(zc, T, B, rng)
    y1, s1, r1 = zc.forward_train(zp, xs, h0)
    g1 = zc.backward(zp, r1, dys, dhT)
    y2, s2, r2 = ec.forward_train(ep, xs, h0)
    g2 = ec.backward(ep, r2, dys, dhT)
    g2.params = relayout(g2.params, cell, zoo)
    assert_all_close(flat(y2, s2, g2), flat(y1, s1, g1), rtol=1e-10, atol=1e-12)
