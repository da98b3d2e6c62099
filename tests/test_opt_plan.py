"""The optimizer's plans: step counts per phase (the issue's targets), the Program executor
against the reference interpreter (float64, 1e-10), explain(), GRAPHRNN_DEBUG."""

from __future__ import annotations

import numpy as np
import pytest

import graphrnn
from frontends.trace import CellBuilder, sigmoid, tanh
from graphrnn.fuse import is_convex
from graphrnn.program import Gemm, Kernel, Reduce, validate
from graphrnn.schedule import compile_plan

I, H = 3, 4


def lecture_lstm8(dtype: str = "float64") -> graphrnn.Cell:
    """The lecture LSTM: 8 separate per-gate Linears (each with a bias)."""
    cb = CellBuilder("lstm8", dtype)
    x, h, c = cb.input("x", I), cb.state("h", H), cb.state("c", H)

    def gate(n: str) -> graphrnn.Node:
        return cb.linear(x, H, f"Wx{n}") + cb.linear(h, H, f"Wh{n}")
    i, f, o, g = sigmoid(gate("i")), sigmoid(gate("f")), sigmoid(gate("o")), tanh(gate("g"))
    c2 = f * c + i * g
    h2 = o * tanh(c2)
    return cb.build([h2], {"h": h2, "c": c2})


def fused_lstm(dtype: str = "float64") -> graphrnn.Cell:
    """char-rnn's form: one 4H Linear per operand, then gate slices."""
    cb = CellBuilder("lstm4h", dtype)
    x, h, c = cb.input("x", I), cb.state("h", H), cb.state("c", H)
    z = cb.linear(x, 4 * H, "W_x") + cb.linear(h, 4 * H, "W_h")
    i, f = sigmoid(z[:, 0:H]), sigmoid(z[:, H:2 * H])
    o, g = sigmoid(z[:, 2 * H:3 * H]), tanh(z[:, 3 * H:])
    c2 = f * c + i * g
    h2 = o * tanh(c2)
    return cb.build([h2], {"h": h2, "c": c2})


def lecture_gru(dtype: str = "float64") -> graphrnn.Cell:
    """GRU with r applied to h before the matmul: W · [r*h, x]."""
    from frontends.trace import concat
    cb = CellBuilder("gru_lecture", dtype)
    x, h = cb.input("x", I), cb.state("h", H)
    Wz, Wr, W = (cb.param(n, (H + I, H)) for n in ("Wz", "Wr", "W"))
    hx = concat([h, x])
    z, r = sigmoid(hx @ Wz), sigmoid(hx @ Wr)
    hc = tanh(concat([r * h, x]) @ W)
    h2 = (1.0 - z) * h + z * hc
    return cb.build([h2], {"h": h2})


def diagonal_cell(dtype: str = "float64") -> graphrnn.Cell:
    """h' = tanh(u * h + x W + b): no matmul on the state."""
    cb = CellBuilder("diag", dtype)
    x, h = cb.input("x", I), cb.state("h", H)
    u = cb.param("u", (1, H))
    h2 = tanh(u * h + cb.linear(x, H, "W"))
    return cb.build([h2], {"h": h2})


def counts(sweep: object, phase: str) -> tuple[int, int, int]:
    return tuple(sweep.count(phase, k) for k in (Gemm, Kernel, Reduce))  # type: ignore


def compare(cell: graphrnn.Cell, T: int = 4, B: int = 3, seed: int = 0,
            tol: float = 1e-10, **opts: object) -> graphrnn.CompiledCell:
    ref = graphrnn.compile(cell, backend="ref", dtype="float64")
    pb = graphrnn.compile(cell, backend="program", dtype="float64", **opts)
    params = ref.init_params(seed=seed + 1, scale=0.5)
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((T, B, int(x.shape[1]))) for x in ref.cell.inputs]
    h0 = [rng.standard_normal((B, int(s.shape[1]))) for s in ref.cell.states]
    y1, s1, r1 = ref.forward_train(params, xs, h0)
    y2, s2, r2 = pb.forward_train(params, xs, h0)
    for a, b in zip(y1 + s1, y2 + s2, strict=True):
        np.testing.assert_allclose(b, a, atol=tol, rtol=0)
    dy = [rng.standard_normal(y.shape) for y in y1]
    dh = [rng.standard_normal(h.shape) for h in s1]
    g1 = ref.backward(params, r1, dy, dh)
    g2 = pb.backward(params, r2, dy, dh)
    assert set(g1.params) == set(g2.params)
    for k in g1.params:
        np.testing.assert_allclose(g2.params[k], g1.params[k], atol=tol, rtol=0, err_msg=k)
    for a, b in zip(g1.inputs + g1.states, g2.inputs + g2.states, strict=True):
        np.testing.assert_allclose(b, a, atol=tol, rtol=0)
    # no cotangent for the final state: the None path
    g3 = pb.backward(params, r2, dy, None)
    g4 = ref.backward(params, r1, dy, None)
    for k in g4.params:
        np.testing.assert_allclose(g3.params[k], g4.params[k], atol=tol, rtol=0)
    return pb


@pytest.mark.parametrize("make", [lecture_lstm8, fused_lstm])
def test_lstm_targets(make: object) -> None:
    p = compile_plan(make()).program  # type: ignore[operator]
    assert counts(p.forward, "pre") == (1, 0, 0)       # x @ [Wi|Wf|Wo|Wg] over T·B rows
    assert counts(p.forward, "step") == (1, 1, 0)      # h @ U, one fused kernel
    assert counts(p.forward, "post") == (0, 0, 0)
    assert counts(p.backward, "step") == (1, 1, 0)     # kernel -> dZ, d_h = dZ @ Uᵀ
    assert counts(p.backward, "pre") == (0, 0, 0)
    g, k, _r = counts(p.backward, "post")
    assert g <= 3 and k == 0                           # d_x, dW, dU (+ bias reductions)
    assert p.residual_values_per_row() <= 5 * H
    assert not p.forward.diagonal
    # the pre GEMM runs over all steps: its output is a seq buffer
    (pre,) = p.forward.pre
    assert p.buffer(pre.out.buf).kind == "seq"


def test_lecture_and_charrnn_forms_give_the_same_plan() -> None:
    a = compile_plan(lecture_lstm8()).program
    b = compile_plan(fused_lstm()).program
    for sa, sb in ((a.forward, b.forward), (a.backward, b.backward)):
        for ph in ("pre", "step", "post"):
            assert counts(sa, ph)[:2] == counts(sb, ph)[:2], ph
    assert a.residual_values_per_row() == b.residual_values_per_row()


def test_lecture_lstm_packs_the_eight_linears() -> None:
    plan = compile_plan(lecture_lstm8())
    packed = [n for n in plan.layout if n.startswith("__pack")]
    assert len(packed) == 2
    users = sorted(pc.user for n in packed for pc in plan.layout[n])
    assert users == sorted([f"Wx{g}" for g in "ifog"] + [f"Wh{g}" for g in "ifog"])
    # every user parameter has exactly one home and gets its gradient back
    prog = plan.program
    names = {pc.name for pc in prog.param_pieces}
    assert names == {n for n, _s in prog.param_shapes}


def test_gru_lecture_form() -> None:
    p = compile_plan(lecture_gru()).program
    g, k, _ = counts(p.forward, "step")
    assert g <= 2 and k <= 2                     # h@[Wz_h|Wr_h]; kernel r; (r*h)@W_h; kernel
    assert counts(p.forward, "pre")[0] == 1      # the x-parts of all three: one GEMM
    compare(lecture_gru())


def test_diagonal_recurrence_is_one_kernel() -> None:
    p = compile_plan(diagonal_cell()).program
    assert counts(p.forward, "step") == (0, 1, 0)
    assert p.forward.diagonal and p.backward.diagonal
    assert counts(p.forward, "pre") == (1, 0, 0)
    compare(diagonal_cell())


@pytest.mark.parametrize("make", [lecture_lstm8, fused_lstm])
def test_lstm_matches_reference(make: object) -> None:
    compare(make())  # type: ignore[operator]


def test_lstm_without_sympy_kernels_matches() -> None:
    compare(fused_lstm(), use_sympy=False)


def test_float32_program_runs() -> None:
    cell = fused_lstm("float32")
    ref = graphrnn.compile(cell, backend="ref")
    pb = graphrnn.compile(cell, backend="program")
    params = ref.init_params(seed=0)
    xs = np.random.default_rng(0).standard_normal((3, 2, I)).astype(np.float32)
    y1, _ = ref.forward(params, xs)
    y2, _ = pb.forward(params, xs)
    assert y2[0].dtype == np.float32
    np.testing.assert_allclose(y2[0], y1[0], atol=1e-5)


def test_groups_are_convex_and_programs_validate() -> None:
    for make in (lecture_lstm8, fused_lstm, lecture_gru, diagonal_cell):
        plan = compile_plan(make())
        validate(plan.program)
        for groups, deps in ((plan.forward_groups, plan.forward_deps),
                             (plan.backward_groups, plan.backward_deps)):
            assert groups
            for grp in groups:
                assert is_convex(grp, deps)


def test_explain_lists_phases_gemm_shapes_and_residuals() -> None:
    text = graphrnn.explain(fused_lstm(), batch=8)
    assert "before the loop" in text and "per time step" in text and "after the loop" in text
    assert "TBx3 @ 3x16 -> TBx16" in text          # the hoisted input projection
    assert "Bx4 @ 4x16 -> Bx16" in text            # the recurrent GEMM
    assert "FLOPs per step at B=8" in text
    assert f"{5 * H} values per row per step" in text
    cc = graphrnn.compile(fused_lstm(), backend="program")
    assert "per time step: 1 GEMM, 1 kernel" in cc.explain()
    assert "v" in cc.explain(kernels=True)          # kernel bodies print as SSA


def test_debug_env_prints_each_pass(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRAPHRNN_DEBUG", "2")
    compile_plan(diagonal_cell())
    err = capsys.readouterr().err
    for title in ("input cell", "simplify", "merge gemms", "backward cell", "program"):
        assert f"---- {title}" in err


def test_every_zoo_cell_runs_through_the_pipeline() -> None:
    cells = pytest.importorskip("graphrnn.cells")
    for name, make in cells.ZOO.items():
        cell = make(4, 4, dtype="float64")
        compare(cell)
        p = compile_plan(cell).program
        assert counts(p.forward, "pre")[0] >= 1, name   # the input projection is hoisted


def test_zoo_minimal_counts() -> None:
    cells = pytest.importorskip("graphrnn.cells")
    ZOO = cells.ZOO
    want = {
        # one recurrent matrix (all gates read h through one packed GEMM); every gate is
        # elementwise after it: 1 GEMM + 1 kernel per step, both ways
        "rnn_tanh": (1, 1), "lstm": (1, 1), "lstm_no_forget": (1, 1), "cifg_lstm": (1, 1),
        # peepholes are elementwise products with c: still 1 + 1
        "peephole_lstm": (1, 1),
        # PyTorch GRU: r multiplies (h W_hn + b_hn) after the matmul: 1 + 1
        "gru_torch": (1, 1),
        # lecture GRU: r*h feeds a second matmul: 2 GEMMs, a kernel before and after it
        "gru": (2, 2),
        # mRNN: m = (x Wmx) * (h Wmh) then h' = f(m Wh + x W): two dependent GEMMs on h
        "mrnn": (2, 2),
        # IndRNN: diagonal recurrence: no GEMM, one kernel
        "indrnn": (0, 1),
    }
    for name, (g, k) in want.items():
        if name not in ZOO:
            continue
        p = compile_plan(ZOO[name](4, 4, dtype="float64")).program
        assert counts(p.forward, "step")[:2] == (g, k), name
        assert p.forward.diagonal == (g == 0), name
    # MUT1-3: each has a gate (r) multiplying h before a second matmul, so 2 dependent GEMM
    # stages; MUT3's z also reads tanh(h) through a matmul: one more GEMM in the first stage
    for name, g in (("mut1", 2), ("mut2", 2), ("mut3", 3)):
        if name in ZOO:
            p = compile_plan(ZOO[name](4, 4, dtype="float64")).program
            assert counts(p.forward, "step") == (g, 2, 0), name


def test_nngraph_lecture_and_charrnn_same_plan() -> None:
    nng = pytest.importorskip("frontends.nngraph")
    a = compile_plan(nng.lecture_lstm(I, H, dtype="float64")).program
    b = compile_plan(nng.charrnn_lstm(I, H, dtype="float64")).program
    for sa, sb in ((a.forward, b.forward), (a.backward, b.backward)):
        for ph in ("pre", "step", "post"):
            assert counts(sa, ph)[:2] == counts(sb, ph)[:2], ph
    assert counts(a.forward, "step") == (1, 1, 0)
    compare(nng.lecture_lstm(I, H, dtype="float64"))
    compare(nng.charrnn_lstm(I, H, dtype="float64"))
