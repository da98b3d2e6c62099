"""The optimizer's plans: step counts per phase (the issue's targets), the Program executor
against the reference interpreter (float64, 1e-10), explain(), GRAPHRNN_DEBUG."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import assert_all_close, cotangents, flat, sequences

import graphrnn
from frontends.trace import CellBuilder, sigmoid, tanh
from graphrnn.errors import BackendError
from graphrnn.fuse import is_convex
from graphrnn.ops import Ops
from graphrnn.pipeline import build_plan
from graphrnn.program import (
    Buffer,
    Gemm,
    Kernel,
    KernelDef,
    Program,
    Reduce,
    Ref,
    RowKernel,
    Sweep,
    row_kernel_problem,
    validate,
)
from graphrnn.runtime import Device, Executor
from graphrnn.scalar import ScalarProgram

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
    xs, h0 = sequences(ref, T, B, rng, h_scale=1.0)
    y1, s1, r1 = ref.forward_train(params, xs, h0)
    y2, s2, r2 = pb.forward_train(params, xs, h0)
    dy, dh = cotangents(ref, T, B, rng)
    g1 = ref.backward(params, r1, dy, dh)
    g2 = pb.backward(params, r2, dy, dh)
    assert set(g1.params) == set(g2.params)
    assert_all_close(flat(y2, s2, g2), flat(y1, s1, g1), atol=tol, rtol=0)
    # no cotangent for the final state: the None path
    g3 = pb.backward(params, r2, dy, None)
    g4 = ref.backward(params, r1, dy, None)
    for k in g4.params:
        np.testing.assert_allclose(g3.params[k], g4.params[k], atol=tol, rtol=0)
    return pb


@pytest.mark.parametrize("make", [lecture_lstm8, fused_lstm])
def test_lstm_targets(make: object) -> None:
    p = build_plan(make()).program  # type: ignore[operator]
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
    a = build_plan(lecture_lstm8()).program
    b = build_plan(fused_lstm()).program
    for sa, sb in ((a.forward, b.forward), (a.backward, b.backward)):
        for ph in ("pre", "step", "post"):
            assert counts(sa, ph) == counts(sb, ph), ph      # the 8 biases pack: 1 reduction
    assert a.residual_values_per_row() == b.residual_values_per_row()


def test_lecture_lstm_packs_the_eight_linears() -> None:
    plan = build_plan(lecture_lstm8())
    packed = [n for n in plan.layout if n.startswith("__pack")]
    assert len(packed) == 2
    users = sorted(pc.user for n in packed for pc in plan.layout[n])
    assert users == sorted([f"Wx{g}" for g in "ifog"] + [f"Wh{g}" for g in "ifog"])
    # every user parameter has exactly one home and gets its gradient back
    prog = plan.program
    names = {pc.name for pc in prog.param_pieces}
    assert names == {n for n, _s in prog.param_shapes}


def test_gru_lecture_form() -> None:
    p = build_plan(lecture_gru()).program
    g, k, _ = counts(p.forward, "step")
    assert g <= 2 and k <= 2                     # h@[Wz_h|Wr_h]; kernel r; (r*h)@W_h; kernel
    assert counts(p.forward, "pre")[0] == 1      # the x-parts of all three: one GEMM
    compare(lecture_gru())


def test_diagonal_recurrence_is_one_kernel() -> None:
    p = build_plan(diagonal_cell()).program
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
        plan = build_plan(make())
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
    build_plan(diagonal_cell())
    err = capsys.readouterr().err
    for title in ("input cell", "simplify", "merge gemms", "backward cell", "program"):
        assert f"---- {title}" in err


def test_every_zoo_cell_runs_through_the_pipeline() -> None:
    cells = pytest.importorskip("graphrnn.cells")
    for name, make in cells.ZOO.items():
        cell = make(4, 4, dtype="float64")
        compare(cell)
        p = build_plan(cell).program
        assert counts(p.forward, "pre")[0] >= 1, name   # the input projection is hoisted


# The plan of every zoo cell, as (GEMMs before the forward loop, forward step (GEMM, kernel),
# backward step (GEMM, kernel), after the backward loop (GEMM, reduce), residual values per row
# per step in units of H). Sizes: I = H = 4. Why each is the minimum for the cell's structure:
#
# * before the loop: every matmul on x alone is hoisted, and matmuls sharing x are packed into
#   one [W_1 | W_2 | ..] GEMM over T·B rows, so 1 for every cell.
# * forward step: one GEMM per *distinct left operand* that depends on h (matmuls sharing one
#   are packed); one kernel before each GEMM whose left operand is not h itself (r*h, m, tanh h
#   are elementwise and need a kernel first; independent ones share it) plus one kernel after
#   the last GEMM for the new state. A cell without a matmul on h is diagonal: 0 GEMM, 1 kernel.
# * backward step: the mirror. d(left operand) = dZ @ Wᵀ per forward GEMM; one kernel before
#   the first (the gate cotangents from dh' = dy + d_h) and one between dependent GEMMs. The
#   carried d_h = (elementwise part) + dZ @ Wᵀ costs no kernel of its own: the last kernel writes
#   the elementwise part into the carry and the GEMM accumulates (BLAS beta = 1).
# * after the loop: d_x = dZ_x @ W_xᵀ (1 GEMM: the x-weights are packed), dW_x = Xᵀ dZ_x (1),
#   plus one dW = Aᵀ dZ per distinct left operand A of the in-loop GEMMs (h, r*h, tanh h, m:
#   different operands cannot share a GEMM). One reduction per packed bias over its contiguous
#   block of gate cotangents (separate (1, H) biases added to the column blocks of one packed
#   GEMM are packed like it: merge.pack_biases); what cannot be packed (peepholes and IndRNN's
#   u multiply, a bias whose sum holds no packed GEMM) gets one each.
ZOO_PLANS = {
    # h' = tanh(x W_x + h W_h + b): GEMM h@W_h, kernel tanh; backward kernel dz, GEMM
    # d_h = dz W_hᵀ (h is not used elementwise); after: d_x, dW_x, dW_h; reduce b.
    # Residuals: none (tanh' = 1 - h'² reads the saved state h').
    "rnn_tanh": (1, (1, 1), (1, 1), (3, 1), 0),
    # all four gates read h through one packed (H, 4H) GEMM; c only elementwise: 1 + 1 both
    # ways; after: d_x, dW_x = Xᵀ dZ, dW_h = Hᵀ dZ and one reduction over the (1, 4H) bias.
    # Residuals: i, f, g, o and c (c is a state but not an output): 5H.
    "lstm": (1, (1, 1), (1, 1), (3, 1), 5),
    # 3 gates (i, g, o), the same structure; residuals i, g, o + c = 4H
    "lstm_no_forget": (1, (1, 1), (1, 1), (3, 1), 4),
    # peepholes p * c are elementwise: still 1 + 1; reductions: b (one packed block) + p_i,
    # p_f, p_o (three separate (1, H) parameters, each Σ d_gate * c)
    "peephole_lstm": (1, (1, 1), (1, 1), (3, 4), 5),
    # f = 1 - i: 3 gates, as lstm_no_forget
    "cifg_lstm": (1, (1, 1), (1, 1), (3, 1), 4),
    # lecture GRU: h~ reads (r*h) W_c, and r needs h W_g first: GEMM h@W_g_h, kernel (z, r, r*h),
    # GEMM (r*h)@W_c_h, kernel (h~, h'): 2 + 2. Backward: kernel (d_a~, dz), GEMM
    # d(rh) = d_a~ W_c_hᵀ, kernel (dr = d(rh) h r(1-r); writes dh'(1-z) + r d(rh) into the
    # carry), GEMM d_h += [dz|dr] W_g_hᵀ: the second GEMM reads dr, which needs the first GEMM's
    # output through a product, so 2 + 2 (was 2 + 3 with a separate kernel for the final sum).
    # After: d_x, dW_x (x-rows of W_g and W_c packed), dW_g_h = Hᵀ [dz|dr], dW_c_h = (r*h)ᵀ d_a~:
    # 4; reductions b_g (adjacent [dz|dr]) and b_c: 2. Residuals z, r, h~: 3H.
    "gru": (1, (2, 2), (2, 2), (4, 2), 3),
    # PyTorch GRU: r multiplies (h W_hn + b_hn) after the matmul: one (H, 3H) GEMM + 1 kernel.
    # Backward: one kernel writes dZ_h = [d_r, d_z, r d_n] and z dh' (into the carry), one GEMM
    # d_h += dZ_h W_hᵀ (was 1 + 2: the sum had its own kernel). After: d_x, dW_x = Xᵀ dZ_x,
    # dW_h = Hᵀ dZ_h: 3; reductions Σ dZ_x (b_x) and Σ dZ_h (b_h): 2 (their n-blocks differ).
    # Residuals r, z, n and h W_hn + b_hn (dr needs it): 4H.
    "gru_torch": (1, (1, 1), (1, 1), (3, 2), 4),
    # MUT1: z = sigm(x W_xz + b_z) reads x only, so it is computed before the loop (1 GEMM
    # x@[W_xz|W_xr] and a kernel); r reads h (GEMM h@W_hr), h' needs (r*h) W_hh: a kernel between
    # two dependent GEMMs, and one after: 2 + 2; backward the mirror 2 + 2. After: d_x, dW_x,
    # dW_hr = Hᵀ dr, dW_hh = (r*h)ᵀ d_a: 4; b_z and b_r sit on the blocks of x@[W_xz|W_xr] and
    # are packed (one Σ [dz|dr]); b_h's sum holds no packed GEMM ((r*h) W_hh + tanh x): 2.
    # Residuals z, r, h~.
    "mut1": (1, (2, 2), (2, 2), (4, 2), 3),
    # MUT2: z and r both read h: one packed GEMM h@[W_hz|W_hr], then (r*h) W_hh: 2 + 2, mirror
    # 2 + 2. After: d_x, dW_x = Xᵀ[dz|dh~], dW_h = Hᵀ[dz|dr], dW_hh = (r*h)ᵀ d_a: 4. Biases:
    # b_r can only join h@[W_hz|W_hr], b_h only x@[W_xz|W_xh], so at best one pair packs: 2.
    "mut2": (1, (2, 2), (2, 2), (4, 2), 3),
    # MUT3: z reads tanh(h) through a matmul and r reads h: two first-stage GEMMs with
    # different left operands (h, tanh h), then (r*h) W_hh: 3 GEMMs; one kernel (tanh h, r, r*h)
    # feeds both later GEMMs, one after: 3 + 2. Backward: kernel (d_a, dz), GEMMs d(rh) and
    # d(tanh h) (independent; both are multiplied elementwise afterwards, so neither can
    # accumulate into the carry), kernel (dr, the elementwise part of d_h into the carry), GEMM
    # d_h += dr W_hrᵀ: 3 + 2. After: d_x, dW_x, dW_hz = tanh(H)ᵀ dz, dW_hr = Hᵀ dr,
    # dW_hh = (r*h)ᵀ d_a: 5; the three biases sit on the blocks of x@[W_xz|W_xh|W_xr]: 1.
    "mut3": (1, (3, 2), (3, 2), (5, 1), 3),
    # mRNN: m = (x W_mx) * (h W_mh) is elementwise between GEMM h@W_mh and GEMM m@W_hm: 2 + 2.
    # Backward: kernel d_a, GEMM dm = d_a W_hmᵀ, kernel dm * (x W_mx), GEMM d_h = . W_mhᵀ (h is
    # not used elementwise: the GEMM writes the carry): 2 + 2. After: d_x, dW_x = Xᵀ[d_a|d(xW_mx)],
    # dW_mh = Hᵀ d(hW_mh), dW_hm = mᵀ d_a: 4; reduce b: 1. Residuals: the two GEMM results
    # x@[W_hx|W_mx] (2H) and h W_mh (H), which cannot be recomputed elementwise: 3H.
    "mrnn": (1, (2, 2), (2, 2), (4, 1), 3),
    # IndRNN: u * h is elementwise: no GEMM in the loop, 1 kernel (diagonal: the whole loop can
    # be one kernel), both ways. After: d_x, dW: 2; b and u are separate: 2. Residual: the
    # pre-activation (relu' needs its sign): 1H.
    "indrnn": (1, (0, 1), (0, 1), (2, 2), 1),
}


@pytest.mark.parametrize("name", sorted(ZOO_PLANS))
def test_zoo_plan_counts(name: str) -> None:
    cells = pytest.importorskip("graphrnn.cells")
    assert set(ZOO_PLANS) == set(cells.ZOO)          # every zoo cell has its row
    pre, fwd, bwd, post, res = ZOO_PLANS[name]
    p = build_plan(cells.ZOO[name](4, 4, dtype="float64")).program
    assert counts(p.forward, "pre")[0] == pre
    assert all(p.buffer(s.out.buf).kind == "seq" for s in p.forward.pre if isinstance(s, Gemm))
    assert counts(p.forward, "step")[:2] == fwd
    assert counts(p.forward, "post") == (0, 0, 0)
    assert counts(p.backward, "step")[:2] == bwd
    assert counts(p.backward, "pre")[0] == 0
    g, _k, r = counts(p.backward, "post")
    assert (g, r) == post
    assert counts(p.forward, "step")[2] == counts(p.backward, "step")[2] == 0
    assert p.forward.diagonal == p.backward.diagonal == (fwd[0] == 0)
    assert p.residual_values_per_row() == res * 4


def test_nngraph_lecture_and_charrnn_same_plan() -> None:
    nng = pytest.importorskip("frontends.nngraph")
    a = build_plan(nng.lecture_lstm(I, H, dtype="float64")).program
    b = build_plan(nng.charrnn_lstm(I, H, dtype="float64")).program
    for sa, sb in ((a.forward, b.forward), (a.backward, b.backward)):
        for ph in ("pre", "step", "post"):
            assert counts(sa, ph) == counts(sb, ph), ph
    assert counts(a.forward, "step") == (1, 1, 0)
    assert counts(a.backward, "post") == (3, 0, 1)
    compare(nng.lecture_lstm(I, H, dtype="float64"))
    compare(nng.charrnn_lstm(I, H, dtype="float64"))


# ---- accumulating GEMMs: a carried cotangent that is "elementwise part + dZ @ Wᵀ" ----

def test_gru_torch_backward_writes_the_carry_then_accumulates() -> None:
    cells = pytest.importorskip("graphrnn.cells")
    cell = cells.gru_torch(3, 4, dtype="float64")
    p = build_plan(cell).program
    (dh_name,) = [b for _n, b in p.d_final]
    k, g = p.backward.step
    # the kernel reads the old carry and writes z * dh' into it (element for element) ...
    assert isinstance(k, Kernel) and any(r.buf == dh_name for r in k.ins)
    assert any(r.buf == dh_name for r in k.outs)
    # ... and the GEMM adds dZ_h @ W_hᵀ to it
    assert isinstance(g, Gemm) and g.accumulate and g.out.buf == dh_name and g.trans_b
    compare(cell)
    compare(cell, B=1, T=1)


def test_lecture_gru_backward_is_two_gemms_two_kernels() -> None:
    p = build_plan(lecture_gru()).program
    kinds = [type(s).__name__ for s in p.backward.step]
    assert kinds == ["Kernel", "Gemm", "Kernel", "Gemm"]
    assert p.backward.step[-1].accumulate                # d_h += [dz|dr] @ W_g_hᵀ
    assert not p.backward.step[1].accumulate             # d(r*h) is read elementwise
    compare(lecture_gru())


def two_gemm_carry_cell() -> graphrnn.Cell:
    """d_h = 0.5 dh' + dA @ U1ᵀ + dS @ U2ᵀ: U1 is also used on x (so it is not packed with U2),
    and h is used elementwise: two GEMMs accumulate into the carry after one kernel."""
    cb = CellBuilder("two_acc", "float64")
    x, h = cb.input("x", H), cb.state("h", H)
    U1, U2, V = cb.param("U1", (H, H)), cb.param("U2", (H, H)), cb.param("V", (H, H))
    h2 = tanh(h @ U1 + x @ V) * sigmoid(h @ U2) + tanh(x @ U1) + 0.5 * h
    return cb.build([h2], {"h": h2})


def test_two_gemms_accumulate_into_one_carry() -> None:
    p = build_plan(two_gemm_carry_cell()).program
    (dh_name,) = [b for _n, b in p.d_final]
    assert counts(p.backward, "step") == (2, 1, 0)
    gemms = [s for s in p.backward.step if isinstance(s, Gemm)]
    assert all(s.accumulate and s.out.buf == dh_name for s in gemms)
    compare(two_gemm_carry_cell())


def test_tied_weight_gradient_accumulates_after_the_loop() -> None:
    # W is read by x @ W and h @ W: dW = Xᵀ dZ + Hᵀ dZ is one GEMM plus one accumulating GEMM
    cb = CellBuilder("tied", "float64")
    x, h = cb.input("x", H), cb.state("h", H)
    W = cb.param("W", (H, H))
    h2 = tanh(x @ W + h @ W)
    cell = cb.build([h2], {"h": h2})
    p = build_plan(cell).program
    post = [s for s in p.backward.post if isinstance(s, Gemm)]
    acc = [s for s in post if s.accumulate]
    assert len(acc) == 1 and p.buffer(acc[0].out.buf).kind == "grad"
    assert counts(p.backward, "post")[1] == 0            # no kernel adds the two products
    compare(cell)


def test_a_sum_read_elementwise_is_not_accumulated() -> None:
    # forward: x@W + h@U is read by tanh: the sum fuses into the kernel, no accumulation
    p = build_plan(fused_lstm()).program
    assert not any(s.accumulate for s in p.forward.step if isinstance(s, Gemm))


# ---- bias gradients: one reduction over a packed block ----

@pytest.mark.parametrize("order", ["pytorch", "char-rnn", "zaremba"])
@pytest.mark.parametrize("forget_bias", [0.0, 1.0])
def test_zoo_lstm_every_form_meets_the_targets(order: str, forget_bias: float) -> None:
    cells = pytest.importorskip("graphrnn.cells")
    cell = cells.lstm(I, H, dtype="float64", gate_order=order, forget_bias=forget_bias)
    p = build_plan(cell).program
    assert counts(p.forward, "pre") == (1, 0, 0)
    assert counts(p.forward, "step") == (1, 1, 0)
    assert counts(p.backward, "step") == (1, 1, 0)
    assert counts(p.backward, "post") == (3, 0, 1)       # d_x, dW_x, dW_h; Σ dZ for b
    (red,) = [s for s in p.backward.post if isinstance(s, Reduce)]
    assert red.src.cols is None and p.buffer(red.src.buf).cols == 4 * H   # the whole block
    assert p.residual_values_per_row() <= 5 * H
    compare(cell)


# ---- inspection ----

def test_explain_prints_totals_per_sweep() -> None:
    p = build_plan(fused_lstm()).program
    text = graphrnn.explain(p, batch=2)
    from graphrnn.explain import sweep_flops
    res = p.residual_bytes_per_step(2)
    assert f"forward total: {sweep_flops(p, p.forward, 2):,} FLOPs per step at B=2" in text
    assert f"writes {res:,} residual bytes per step for the backward" in text
    assert f"backward total: {sweep_flops(p, p.backward, 2):,} FLOPs per step at B=2" in text
    assert f"reads {res:,} residual bytes per step" in text
    # the backward loop stores dZ (4H per row) for the weight-gradient GEMMs
    assert f"its loop stores {4 * H * 2 * 8:,} bytes per step" in text
    assert res == 5 * H * 2 * 8
    # FLOPs grow linearly with the batch
    assert sweep_flops(p, p.forward, 4) == 2 * sweep_flops(p, p.forward, 2)


@pytest.mark.parametrize("level, titles, absent", [
    ("1", ("input cell", "simplify", "merge gemms", "backward cell"), ("program",)),
    ("2", ("input cell", "simplify", "merge gemms", "backward cell", "program"), ()),
    ("0", (), ("input cell", "program")),
    ("not a number", (), ("input cell", "program")),
])
def test_debug_levels(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                      level: str, titles: tuple[str, ...], absent: tuple[str, ...]) -> None:
    monkeypatch.setenv("GRAPHRNN_DEBUG", level)
    build_plan(diagonal_cell())
    err = capsys.readouterr().err
    for t in titles:
        assert f"---- {t}" in err
    for t in absent:
        assert f"---- {t}" not in err
    if level == "2":
        assert "forward total:" in err and "per time step: 0 GEMM, 1 kernel" in err
    if level == "1":
        assert "tanh" in err                     # the IR itself is printed


def test_debug_unset_prints_nothing(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GRAPHRNN_DEBUG", raising=False)
    build_plan(diagonal_cell())
    assert capsys.readouterr().err == ""


def test_program_repr_svg(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphrnn import viz
    p = build_plan(diagonal_cell()).program
    svg = p._repr_svg_()
    if svg is not None:                          # None when graphviz/dot is missing
        assert "<svg" in svg
    calls = []
    monkeypatch.setattr(viz, "plan_svg", lambda prog: calls.append(prog) or "<svg>x</svg>")
    assert p._repr_svg_() == "<svg>x</svg>" and calls == [p]

    def boom(prog: object) -> str:
        raise RuntimeError("no dot")
    monkeypatch.setattr(viz, "plan_svg", boom)
    assert p._repr_svg_() is None                # a failure never breaks Jupyter's display
    monkeypatch.delattr(viz, "plan_svg")
    assert p._repr_svg_() is None


# ---- the LSTM written as equations, W on the left (x @ Wᵀ in the IR) ----

# the same two texts the frontends test checks against the zoo LSTM
from test_zoo_frontends import LSTM_EQUATIONS, LSTM_EQUATIONS_CONCAT  # noqa: E402


@pytest.mark.parametrize("text", [LSTM_EQUATIONS, LSTM_EQUATIONS_CONCAT])
def test_equations_lstm_meets_the_targets(text: str) -> None:
    equations = pytest.importorskip("frontends.equations")
    cell = equations.cell_from_equations(text, inputs={"x": I}, states={"h": H, "c": H},
                                         dtype="float64", name="lstm_eq")
    plan = build_plan(cell)
    p = plan.program
    # W (out, in) used transposed: the packing stacks rows ([W_i; W_f; W_g; W_o] is (4H, in))
    packs = [n for n in plan.layout if n.startswith("__pack")]
    assert len(packs) == 2
    assert counts(p.forward, "pre") == (1, 0, 0)
    assert counts(p.forward, "step") == (1, 1, 0)
    assert counts(p.backward, "step") == (1, 1, 0)
    assert counts(p.backward, "post") == (3, 0, 1)     # the four b_g pack: one reduction
    assert p.residual_values_per_row() <= 5 * H
    compare(cell)


def test_bias_packing_keeps_every_user_parameter() -> None:
    plan = build_plan(lecture_lstm8())
    biases = [n for n in plan.layout if n.startswith("__bias")]
    assert len(biases) == 2                           # the x-side and the h-side Linears
    users = sorted(pc.user for n in biases for pc in plan.layout[n])
    assert users == sorted([f"bx{g}" for g in "ifog"] + [f"bh{g}" for g in "ifog"])
    for n in biases:                                  # each packed bias is tiled exactly
        cols = sorted(pc.pcols for pc in plan.layout[n])
        assert cols[0][0] == 0 and all(a[1] == b[0] for a, b in zip(cols, cols[1:]))
        assert cols[-1][1] == 4 * H
    # both packed biases get their gradient from the one reduction of dZ
    p = plan.program
    (red,) = [s for s in p.backward.post if isinstance(s, Reduce)]
    grads = {pc.ref.buf for pc in p.grad_pieces if pc.name in users}
    assert grads == {red.out.buf}


# ---- row kernels: reductions over the features fused with their elementwise neighbours ----

LN_LSTM_FILE = "examples/layer_norm_lstm.eq"


def ln_lstm(dtype: str = "float64") -> graphrnn.Cell:
    from pathlib import Path

    from frontends.equations import parse_file
    path = Path(__file__).resolve().parent.parent / LN_LSTM_FILE
    return parse_file(path, dtype=dtype)


def test_layer_norm_lstm_is_one_gemm_and_one_row_kernel_per_step() -> None:
    """The issue's target: ``graphrnn explain`` of the layer-norm LSTM shows 1 GEMM per step and
    at most 2 kernels per step in the forward. Why 1 + 1 is the minimum both ways:

    * forward step: h @ W_h is the only product on the state (1 GEMM, it must come first).
      Everything after it is row-local: LN(W_h h)'s mean and variance over the GEMM's row
      (B×1), the gates (B×H), c', LN(c')'s statistics, h'. A row kernel runs them all per
      block of rows (each row's statistics computed and used in it), so 1 kernel. Before the
      loop LN(W_x x) is 1 GEMM over T·B rows + 1 row kernel; the old plan had 8 kernels and 4
      reductions per step (each statistic split the kernel in three).
    * backward step: every cotangent up to dZ (the LN backward's row sums included) is
      row-local and comes before the one GEMM d_h = dZ W_h (h is read by the GEMM only, so the
      GEMM writes the carry): 1 row kernel + 1 GEMM (was 15 kernels and 5 reductions).
    """
    p = build_plan(ln_lstm()).program
    assert counts(p.forward, "pre") == (1, 1, 0)
    assert counts(p.forward, "step") == (1, 1, 0)
    assert counts(p.backward, "step") == (1, 1, 0)
    assert not p.forward.diagonal and not p.backward.diagonal
    text = graphrnn.explain(ln_lstm("float32"))
    assert "per time step: 1 GEMM, 1 kernel, 0 reduce" in text
    assert "rowkernel f_step_" in text and "reduce  f_step_reduce = sum(axis 1)" in text


def test_explain_cli_of_the_layer_norm_lstm_file(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from graphrnn.tools.cli import main
    main(["explain", str(Path(__file__).resolve().parent.parent / LN_LSTM_FILE)])
    out = capsys.readouterr().out
    fwd = out[out.index("forward ("):out.index("backward (")]
    assert "per time step: 1 GEMM, 1 kernel, 0 reduce" in fwd


@pytest.mark.parametrize("backend", ["program", "llvm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_layer_norm_lstm_row_kernels_match_ref(backend: str, dtype: str) -> None:
    """B = 70 rows: llvm runs each thread's rows in blocks of ROW_BLOCK // 128 = 32 (the last
    one short), the program executor in three blocks; results equal ref."""
    from helpers import TOL
    cell = ln_lstm(dtype)
    ref = graphrnn.compile(cell, backend="ref", dtype=dtype)
    cc = graphrnn.compile(cell, backend=backend, dtype=dtype)
    params = ref.init_params(seed=2, scale=0.5)
    rng = np.random.default_rng(2)
    xs, h0 = sequences(ref, 3, 70, rng, h_scale=1.0)
    y1, s1, r1 = ref.forward_train(params, xs, h0)
    y2, s2, r2 = cc.forward_train(params, xs, h0)
    dy, dh = cotangents(ref, 3, 70, rng)
    want = flat(y1, s1, ref.backward(params, r1, dy, dh))
    got = flat(y2, s2, cc.backward(params, r2, dy, dh))
    assert_all_close(got, want, **TOL[dtype])
    y3, s3 = cc.forward(params, xs, h0)
    assert_all_close(y3 + s3, y1 + s1, **TOL[dtype])


def test_row_kernel_executor_runs_blocks_of_rows() -> None:
    """The numpy executor runs a row kernel block by block, as native backends do: a group
    that is not row-local (a part reading a row another block writes) gives another result
    than its parts one after another, which is what validate() refuses."""
    neg = KernelDef("neg", ScalarProgram(1, ((Ops.NEG, (0,), None),), (1,)), "float64",
                    ("full",))
    bufs = (Buffer("X", "seq", "float64", 4), Buffer("Y", "seq", "float64", 4, extra=1),
            Buffer("Z", "seq", "float64", 1))
    # before the loop: Y[0:T] = -X, then Z = the row sums of Y[1:T+1]: row r reads the row
    # r + B that a later block writes
    parts = (Kernel(neg, (Ref("X"),), (Ref("Y", 0),)), Reduce(Ref("Z"), Ref("Y", 1), "sum", 1))
    assert "time offsets [0, 1]" in row_kernel_problem(parts, {b.name: b for b in bufs}, False)
    p = Program("t", "float64", bufs, Sweep(pre=(RowKernel("r", parts),)), Sweep(), (), (),
                (), (), (), (), (), (), ())
    ex, dev = Executor(p), Device()
    T, B = 3, 2
    a = {"X": np.arange(24.0).reshape(T, B, 4), "Y": np.zeros((T + 1, B, 4)),
         "Z": np.zeros((T, B, 1))}
    b = {k: v.copy() for k, v in a.items()}
    ex.run_sweep(dev, "forward", p.forward, a, T, B)
    for s in parts:
        ex.run_step(dev, s, b, "pre", 0, T, B)
    assert b["Z"][0, 0, 0] == -(8 + 9 + 10 + 11)  # the parts in order: -(row 2 of X)
    assert a["Z"][0, 0, 0] == 0                  # by blocks: row 2 not written yet


def test_validate_refuses_row_kernels_that_are_not_row_local() -> None:
    p = build_plan(ln_lstm()).program
    rk = next(s for s in p.forward.step if isinstance(s, RowKernel))
    for bad, msg in [
            (rk.parts + (Reduce(Ref("b_post_reduce_3"), rk.parts[0].src, "sum", 0),),
             "reduction over axis 0"),
            (rk.parts + (Gemm(rk.parts[0].out, rk.parts[0].src, Ref("p_W_h")),), "holds a Gemm")]:
        steps = tuple(RowKernel(rk.name, bad) if s is rk else s for s in p.forward.step)
        q = dataclasses.replace(p, forward=dataclasses.replace(p.forward, step=steps))
        with pytest.raises(BackendError, match=msg):
            validate(q)


# ---- issue 18's plan patterns, each with a cell of its own ----

def eq_cell(text: str, dtype: str = "float64") -> graphrnn.Cell:
    from frontends.equations import cell_from_equations
    return cell_from_equations("input x: 3\nstate h: 4\noutput h_next\nnext h: h_next\n" + text,
                               dtype=dtype)


# (d) a slice's cotangent is zero-padded to the full width: z = W_h h + W_x x feeds a mean over
# all 2H columns and the two halves a, b separately, so d z = [d_a, 0] + [0, d_b] - d_m / 2H.
ZERO_BLOCKS = "z = W_h @ h + W_x @ x\nm = mean(z)\na, b = split(z, 2)\n" \
    "h_next = tanh(a - m) * sigmoid(b)"
# (a) the bias b1 sits on one block of the GEMM's output: its gradient Σ_t d_a sums a block of
# the per-step gate cotangents dZ = [d_a | d_b] that the in-loop GEMM reads
BIAS_BLOCK = "z = W_h @ h + W_x @ x\na, b = split(z, 2)\nh_next = tanh(a + b1) * sigmoid(b)"


def test_zero_blocks_of_a_concatenation_are_not_filled_every_step() -> None:
    """Issue 18 (d). Minimum per backward step: dZ needs the mean's cotangent, a row sum, then
    every column: 1 row kernel; then d_h = dZ W_hᵀ: 1 GEMM. The zero blocks of the padded
    cotangents ([d_a, 0], [0, d_b]) were two fill_0 kernels every step (and the mean's
    statistics two more kernels and a reduction): now their buffer is a carry the binding
    zeroes once. In the layer-norm LSTM the padded blocks kept for after the loop are filled
    once over T·B rows before it."""
    p = build_plan(eq_cell(ZERO_BLOCKS)).program
    assert counts(p.backward, "step") == (1, 1, 0)
    flat_step = [s for s in p.backward.step for s in getattr(s, "parts", (s,))]
    assert not [s for s in flat_step if isinstance(s, Kernel) and s.kernel.name.startswith("fill")]
    assert any(b.kind == "carry" and b.name.startswith("b_step_concat") for b in p.buffers)
    compare(eq_cell(ZERO_BLOCKS))
    ln = build_plan(ln_lstm()).program
    fills = [s for s in ln.backward.pre for s in getattr(s, "parts", (s,))
             if isinstance(s, Kernel) and s.kernel.name.startswith("fill")]
    assert fills and all(ln.buffer(s.outs[0].buf).kind == "seq" for s in fills)
    assert not [s for s in ln.backward.step for s in getattr(s, "parts", (s,))
                if isinstance(s, Kernel) and s.kernel.name.startswith("fill")]


def test_a_bias_gradient_sums_the_block_its_kernel_writes() -> None:
    """Issue 18 (a). Minimum per backward step: 1 kernel (d_a, d_b from dh' = dy + d_h) and
    1 GEMM (d_h = dZ W_hᵀ; h is read only by the GEMM). The kernel writes d_a straight into
    its block of dZ, a sequence the GEMMs after the loop read too, and b1's gradient is one
    reduction over that block after the loop: no copy kernel per step."""
    p = build_plan(eq_cell(BIAS_BLOCK)).program
    assert counts(p.backward, "step") == (1, 1, 0)
    (k,) = [s for s in p.backward.step if isinstance(s, Kernel)]
    (g,) = [s for s in p.backward.step if isinstance(s, Gemm)]
    assert all(o.buf == g.a.buf for o in k.outs)
    (r,) = [s for s in p.backward.post if isinstance(s, Reduce)]
    assert r.src.buf == g.a.buf and r.axis == 0 and r.src.cols == (0, 4)
    compare(eq_cell(BIAS_BLOCK))


@pytest.mark.parametrize("text", [ZERO_BLOCKS, BIAS_BLOCK])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pattern_cells_match_ref_on_llvm(text: str, dtype: str) -> None:
    from helpers import TOL
    cell = eq_cell(text, dtype)
    ref = graphrnn.compile(cell, backend="ref", dtype=dtype)
    cc = graphrnn.compile(cell, backend="llvm", dtype=dtype)
    params = ref.init_params(seed=3, scale=0.5)
    rng = np.random.default_rng(3)
    xs, h0 = sequences(ref, 4, 37, rng, h_scale=1.0)
    dy, dh = cotangents(ref, 4, 37, rng)
    y1, s1, r1 = ref.forward_train(params, xs, h0)
    y2, s2, r2 = cc.forward_train(params, xs, h0)
    assert_all_close(flat(y2, s2, cc.backward(params, r2, dy, dh)),
                     flat(y1, s1, ref.backward(params, r1, dy, dh)), **TOL[dtype])


# (b) a projected LSTM (LSTMP): the next state h' = W_p m is itself a GEMM output (P = 2 < H)
PROJECTION = """input x: 3
state h: 2, c: 4
output h_next
next h: h_next
next c: c_next
z = W_x @ x + W_h @ h + b
i, f, o, u = split(z, 4)
c_next = sigmoid(f) * c + sigmoid(i) * tanh(u)
h_next = W_p @ (sigmoid(o) * tanh(c_next))"""


def test_a_projected_state_adds_its_output_cotangent_without_a_kernel() -> None:
    """Issue 18 (b). Minimum per backward step: dm = dh' W_p (1 GEMM), the gate cotangents
    (1 kernel), d_h = dZ W_hᵀ (1 GEMM): 2 + 1, as the forward. dh' = d_h + dy was a kernel of
    its own before the first GEMM (2 + 2); now dy W_p is one GEMM over T·B rows before the
    loop, the in-loop GEMM multiplies the carry alone and the kernel adds the two, and dh'
    (read by dW_p = Σ dh'ᵀ m after the loop) is written by the same row kernel."""
    from frontends.equations import cell_from_equations
    cell = cell_from_equations(PROJECTION, dtype="float64")
    p = build_plan(cell).program
    assert counts(p.backward, "step") == (2, 1, 0)
    assert counts(p.forward, "step") == (2, 1, 0)
    pre = [s for s in p.backward.pre if isinstance(s, Gemm)]
    assert [s.a.buf.startswith("dy_") for s in pre] == [True]
    compare(cell)
    compare(cell, T=3, B=37, tol=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_projection_cell_matches_ref_on_llvm(dtype: str) -> None:
    from helpers import TOL

    from frontends.equations import cell_from_equations
    cell = cell_from_equations(PROJECTION, dtype=dtype)
    ref = graphrnn.compile(cell, backend="ref", dtype=dtype)
    cc = graphrnn.compile(cell, backend="llvm", dtype=dtype)
    params = ref.init_params(seed=4, scale=0.5)
    rng = np.random.default_rng(4)
    xs, h0 = sequences(ref, 4, 37, rng, h_scale=1.0)
    dy, dh = cotangents(ref, 4, 37, rng)
    y1, s1, r1 = ref.forward_train(params, xs, h0)
    y2, s2, r2 = cc.forward_train(params, xs, h0)
    assert_all_close(flat(y2, s2, cc.backward(params, r2, dy, dh)),
                     flat(y1, s1, ref.backward(params, r1, dy, dh)), **TOL[dtype])
