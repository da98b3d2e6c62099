"""The LLVM backend on hand-written Programs (independent of the optimizer): every step kind,
both sweeps, inference collapsing, BLAS and the naive fallback, against the ref backend."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_all_close

from codegen.llvm import LLVMBackend
from codegen.ref import RefBackend
from frontends.trace import CellBuilder, tanh
from graphrnn.ops import Ops
from graphrnn.program import (
    Buffer,
    Gemm,
    Kernel,
    KernelDef,
    ParamPiece,
    Program,
    Reduce,
    Ref,
    Sweep,
    validate,
)
from graphrnn.scalar import ScalarProgram


def rnn_cell(I: int, H: int, dtype: str):  # noqa: E741, N803
    cb = CellBuilder("rnn", dtype)
    x, h = cb.input("x", I), cb.state("h", H)
    h2 = tanh(x @ cb.param("Wx", (I, H)) + h @ cb.param("Wh", (H, H)) + cb.param("b", (1, H)))
    return cb.build([h2], {"h": h2})


def rnn_program(I: int, H: int, dtype: str) -> Program:  # noqa: E741, N803
    """h' = tanh(x Wx + h Wh + b) as the optimizer would schedule it: the input projection
    hoisted before the loop, weight gradients as GEMMs after it, the bias gradient a Reduce."""
    # h' = tanh(z + xw + b) and the residual da = 1 - h'^2, saved for the backward
    fwd_k = KernelDef("tanh3", ScalarProgram(3, (
        (Ops.ADD, (0, 1), None), (Ops.ADD, (3, 2), None), (Ops.TANH, (4,), None),
        (Ops.MUL, (5, 5), None), (Ops.CONST, (), 1.0), (Ops.SUB, (7, 6), None)), (5, 8)),
        dtype, ("full", "full", "row"))
    # dz = (dy + dh) * da
    bwd_k = KernelDef("dtanh", ScalarProgram(3, (
        (Ops.ADD, (0, 1), None), (Ops.MUL, (3, 2), None)), (4,)), dtype, ("full",) * 3)
    bufs = (Buffer("Wx", "param", dtype, H, I), Buffer("Wh", "param", dtype, H, H),
            Buffer("b", "param", dtype, H, 1), Buffer("x", "seq", dtype, I),
            Buffer("h", "seq", dtype, H, extra=1), Buffer("xw", "seq", dtype, H),
            Buffer("z", "temp", dtype, H), Buffer("da", "seq", dtype, H),
            Buffer("dy", "seq", dtype, H),
            Buffer("dh", "carry", dtype, H), Buffer("dz", "seq", dtype, H),
            Buffer("dx", "seq", dtype, I), Buffer("dWx", "grad", dtype, H, I),
            Buffer("dWh", "grad", dtype, H, H), Buffer("db", "grad", dtype, H, 1))
    fwd = Sweep(pre=(Gemm(Ref("xw"), Ref("x"), Ref("Wx")),),
                step=(Gemm(Ref("z"), Ref("h"), Ref("Wh")),
                      Kernel(fwd_k, (Ref("z"), Ref("xw"), Ref("b")),
                             (Ref("h", 1), Ref("da")))))
    bwd = Sweep(step=(Kernel(bwd_k, (Ref("dy"), Ref("dh"), Ref("da")), (Ref("dz"),)),
                      Gemm(Ref("dh"), Ref("dz"), Ref("Wh"), trans_b=True)),
                post=(Gemm(Ref("dWx"), Ref("x"), Ref("dz"), trans_a=True),
                      Gemm(Ref("dWh"), Ref("h"), Ref("dz"), trans_a=True),
                      Reduce(Ref("db"), Ref("dz"), "sum", 0),
                      Gemm(Ref("dx"), Ref("dz"), Ref("Wx"), trans_b=True)),
                reverse=True)
    pieces = (ParamPiece("Wx", (0, I), (0, H), Ref("Wx")), ParamPiece("Wh", (0, H), (0, H),
                                                                       Ref("Wh")),
              ParamPiece("b", (0, 1), (0, H), Ref("b")))
    grads = tuple(ParamPiece(pc.name, pc.rows, pc.cols, Ref("d" + pc.ref.buf)) for pc in pieces)
    p = Program("rnn", dtype, bufs, fwd, bwd, inputs=(("x", "x"),), states=(("h", "h"),),
                outputs=(("y", Ref("h", 1)),), param_pieces=pieces,
                d_outputs=(("y", "dy"),), d_final=(("h", "dh"),), d_states=(("h", Ref("dh")),),
                d_inputs=(("x", Ref("dx")),), grad_pieces=grads, residuals=("da",),
                param_shapes=(("Wx", (I, H)), ("Wh", (H, H)), ("b", (1, H))))
    validate(p)
    return p


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-9), ("float32", 1e-4)])
@pytest.mark.parametrize("blas", [True, False])
@pytest.mark.parametrize("T, B, I, H", [(5, 3, 4, 6), (1, 1, 3, 9), (7, 2, 17, 5)])
def test_handwritten_rnn_program(dtype: str, rtol: float, blas: bool, T: int, B: int, I: int,  # noqa: E741,E501
                                 H: int) -> None:
    cell = rnn_cell(I, H, dtype)
    ref = RefBackend(cell, dtype)
    cc = LLVMBackend(cell, dtype, program=rnn_program(I, H, dtype), blas=blas, cache=False)
    assert cc.uses_blas == blas or not blas
    params = ref.init_params(seed=1, scale=0.5)
    rng = np.random.default_rng(T * B)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    ys, hT, res = cc.forward_train(params, x, h0)
    rys, rhT, rres = ref.forward_train(params, x, h0)
    atol = rtol * 1e-2
    assert_all_close(ys + hT, rys + rhT, rtol=rtol, atol=atol)
    ys2, hT2 = cc.forward(params, x, h0)          # the inference entry point
    assert_all_close(ys2 + hT2, rys + rhT, rtol=rtol, atol=atol)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dhT = rng.standard_normal((B, H)).astype(dtype)
    g = cc.backward(params, res, [dy], [dhT])
    rg = ref.backward(params, rres, [dy], [dhT])
    assert_all_close([g.params[k] for k in sorted(rg.params)],
                     [rg.params[k] for k in sorted(rg.params)], rtol=rtol, atol=atol)
    assert_all_close(g.inputs + g.states, rg.inputs + rg.states, rtol=rtol, atol=atol)
    # one step for sampling
    y1, h1 = cc.step(params, x[0], h0)
    assert_all_close(y1 + h1, [rys[0][0], rys[0][0]], rtol=rtol, atol=atol)


def test_inference_collapses_residual_history() -> None:
    from codegen.llvm_program import collapsed_buffers
    # da is written in the loop at offset 0 and read only by the backward: one slab suffices
    assert collapsed_buffers(rnn_program(3, 4, "float64")) == frozenset({"da"})


def rotate_program(n: int, dtype: str) -> Program:
    """A diagonal loop whose stages pass values between columns of a row (which CUDA's
    one-thread-per-element loop kernel must refuse): with h = [u | v],
    a = tanh(v + x), then h' = [a | 0.5 u]."""
    k1 = KernelDef("tanh_add", ScalarProgram(2, ((Ops.ADD, (0, 1), None),
                                                 (Ops.TANH, (2,), None)), (3,)),
                   dtype, ("full", "full"))
    k2 = KernelDef("rotate", ScalarProgram(2, ((Ops.CONST, (), 0.5),
                                               (Ops.MUL, (2, 1), None)), (0, 3)),
                   dtype, ("full", "full"))
    bufs = (Buffer("x", "seq", dtype, n), Buffer("h", "seq", dtype, 2 * n, extra=1),
            Buffer("a", "temp", dtype, n), Buffer("W", "param", dtype, 2 * n, n))
    fwd = Sweep(step=(Kernel(k1, (Ref("h", 0, (n, 2 * n)), Ref("x")), (Ref("a"),)),
                      Kernel(k2, (Ref("a"), Ref("h", 0, (0, n))),
                             (Ref("h", 1, (0, n)), Ref("h", 1, (n, 2 * n))))))
    p = Program("rotate", dtype, bufs, fwd, Sweep(reverse=True), inputs=(("x", "x"),),
                states=(("h", "h"),), outputs=(("y", Ref("h", 1)),), param_pieces=(),
                d_outputs=(), d_final=(), d_states=(), d_inputs=(), grad_pieces=(),
                param_shapes=(("W", (n, 2 * n)),))
    validate(p)
    return p


@pytest.mark.parametrize("n, B", [(5, 3), (1500, 4)])
def test_diagonal_loop_with_flows_between_columns(n: int, B: int) -> None:
    from codegen.cuda_exec import loop_spec
    from codegen.llvm_program import diagonal_loop
    p = rotate_program(n, "float64")
    assert diagonal_loop(p.forward, p.buffer_map)
    assert loop_spec(p.forward, p.buffer_map, "float64", "rotate") is None
    cb = CellBuilder("rotate", "float64")
    x, h = cb.input("x", n), cb.state("h", 2 * n)
    h2 = tanh(h + x @ cb.param("W", (n, 2 * n)))
    cell = cb.build([h2], {"h": h2})
    rng = np.random.default_rng(n)
    T = 6
    xs = rng.standard_normal((T, B, n))
    h0 = rng.standard_normal((B, 2 * n))
    want, hh = [], h0
    for t in range(T):
        a = np.tanh(hh[:, n:] + xs[t])
        hh = np.concatenate([a, 0.5 * hh[:, :n]], axis=1)
        want.append(hh)
    params = {"W": np.zeros((n, 2 * n))}
    for diagonal in (True, False):
        cc = LLVMBackend(cell, "float64", program=p, cache=False, diagonal=diagonal)
        assert cc.diagonal_loops["forward"] == diagonal
        for ys, hT in (cc.forward(params, xs, h0), cc.forward_train(params, xs, h0)[:2]):
            np.testing.assert_allclose(ys[0], np.stack(want), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(hT[0], want[-1], rtol=1e-12, atol=1e-12)


def test_diagonal_loop_refuses_steps_that_couple_rows() -> None:
    from codegen.llvm_program import diagonal_loop
    dtype = "float64"
    copy = KernelDef("copy", ScalarProgram(1, (), (0,)), dtype, ("full",))
    bufs = {b.name: b for b in (Buffer("h", "seq", dtype, 4, extra=1),
                                Buffer("m", "mat", dtype, 4, 3))}
    ok = Sweep(step=(Kernel(copy, (Ref("h"),), (Ref("h", 1),)),))
    assert diagonal_loop(ok, bufs)
    assert not diagonal_loop(Sweep(step=(Kernel(copy, (Ref("h"),), (Ref("m"),)),)), bufs)
    assert not diagonal_loop(Sweep(step=(Kernel(copy, (Ref("m"),), (Ref("h", 1),)),)), bufs)
    assert not diagonal_loop(Sweep(step=ok.step + (Gemm(Ref("h", 1), Ref("h"), Ref("m")),)),
                             bufs)
    assert not diagonal_loop(rnn_program(3, 4, dtype).forward,
                             rnn_program(3, 4, dtype).buffer_map)
