"""The LLVM backend's building blocks: scalar kernels, math approximations, GEMMs, the cache."""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest
from llvmlite import ir

from codegen import cuda_render, llvm_jit, llvm_kernels
from codegen.llvm_blas import NO_TRANS, ROW_MAJOR, TRANS, blas_info, emit_naive_gemm, gemm_type
from codegen.llvm_kernels import emit_kernel, load_function_pointer
from graphrnn.ops import GroupOp, Ops
from graphrnn.scalar import ScalarProgram, run_scalar_program

I64, VP = ctypes.c_int64, ctypes.c_void_p

# an LSTM cell's elementwise part: inputs zi zf zg zo c, outputs h' and c'
LSTM = ScalarProgram(5, (
    (Ops.SIGMOID, (0,), None), (Ops.SIGMOID, (1,), None), (Ops.TANH, (2,), None),
    (Ops.SIGMOID, (3,), None), (Ops.MUL, (6, 4), None), (Ops.MUL, (5, 7), None),
    (Ops.ADD, (9, 10), None), (Ops.TANH, (11,), None), (Ops.MUL, (8, 12), None)), (13, 11))


def one_op(op: Ops) -> ScalarProgram:
    arity = {Ops.ADD: 2, Ops.SUB: 2, Ops.MUL: 2, Ops.DIV: 2, Ops.MAX: 2, Ops.CMPGT: 2,
             Ops.WHERE: 3}.get(op, 1)
    return ScalarProgram(arity, ((op, tuple(range(arity)), None),), (arity,))


def build(prog: ScalarProgram, dtype: str, kinds: list[str] | None = None):
    m = ir.Module("k")
    emit_kernel(m, "k", prog, dtype, kinds)
    j = llvm_jit.jit(str(m), use_cache=False)
    n_ptr = prog.n_inputs + len(prog.outputs)
    fn = ctypes.CFUNCTYPE(None, I64, I64, *([VP, I64] * n_ptr))(j.address("k"))

    def run(ins: list[np.ndarray], lds: list[int] | None = None, rows: int | None = None,
            n: int | None = None) -> list[np.ndarray]:
        rows = rows if rows is not None else ins[0].shape[0]
        n = n if n is not None else ins[0].shape[1]
        outs = [np.full((rows, n), np.nan, dtype) for _ in prog.outputs]
        args: list[int] = []
        for k, a in enumerate(ins):
            args += [a.ctypes.data, lds[k] if lds else a.shape[1]]
        for o in outs:
            args += [o.ctypes.data, n]
        fn(rows, n, *args)
        run.keep = j  # the engine must outlive the call
        return outs
    return run


def reference(prog: ScalarProgram, ins: list[np.ndarray]) -> list[np.ndarray]:
    with np.errstate(all="ignore"):
        return run_scalar_program(prog, [np.asarray(x, np.float64) for x in ins], np.float64)


GRID = np.concatenate([np.linspace(-60, 60, 60001),
                       [1e-30, -1e-30, 1e-38, -1e-42, 0.0, 3e-4, 5e-4, 1e-7, 88.5, -87.5, -103]])


def test_llvm_and_cuda_lower_the_same_ops() -> None:
    """One row per elementwise op in each backend's table, so a new op fails here first."""
    assert set(llvm_kernels.OP_TABLE) == GroupOp.Elementwise
    for dtype, table in cuda_render.OP_TABLE.items():
        assert set(table) == GroupOp.Elementwise, dtype


@pytest.mark.parametrize("op, bound", [(Ops.TANH, 3e-7), (Ops.SIGMOID, 2e-7),
                                       (Ops.SOFTPLUS, 1e-6)])
def test_approximation_accuracy_abs(op: Ops, bound: float) -> None:
    x = GRID.astype(np.float32)[None]
    (y,) = build(one_op(op), "float32")([x])
    (r,) = reference(one_op(op), [x])
    err = np.abs(y - r).max()
    assert err <= bound, f"{op.name}: max abs error {err:.3g}"
    # relative error where the result is not tiny (softplus(14) rounds at 1 ulp of 14); sigmoid
    # is relative down to the smallest normal float32, its left tail included
    big = np.abs(r) > (1.2e-38 if op is Ops.SIGMOID else 1e-3)
    rel = (np.abs(y - r)[big] / np.abs(r[big])).max()
    assert rel <= 6e-7, f"{op.name}: max rel error {rel:.3g}"


def test_exp_log_relative_accuracy() -> None:
    x = GRID.astype(np.float32)[None]
    (y,) = build(one_op(Ops.EXP), "float32")([x])
    (r,) = reference(one_op(Ops.EXP), [x])
    ok = np.isfinite(r.astype(np.float32)) & (r > 1e-37)
    assert (np.abs(y - r)[ok] / r[ok]).max() <= 3e-7
    assert np.all(np.abs(y[~ok & (r < 1e-37)]) < 2e-38)      # underflow to (almost) 0
    xl = np.concatenate([np.geomspace(1e-44, 3e38, 20001), np.linspace(0.5, 2, 1001)])
    xl = xl.astype(np.float32)[None]
    (yl,) = build(one_op(Ops.LOG), "float32")([xl])
    (rl,) = reference(one_op(Ops.LOG), [xl])
    assert np.abs(yl - rl).max() <= 2e-7 * np.abs(rl).max()
    near1 = np.abs(xl - 1) < 0.5
    assert np.abs(yl - rl)[near1].max() <= 1.5e-7


@pytest.mark.parametrize("op", [Ops.TANH, Ops.SIGMOID, Ops.EXP, Ops.LOG, Ops.SOFTPLUS,
                                Ops.RELU, Ops.SQRT, Ops.MAX])
def test_nan_inf_semantics(op: Ops) -> None:
    """Fast math without nnan/ninf: NaN propagates, Inf behaves like numpy's float32."""
    vals = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0], np.float32)
    prog = one_op(op)
    ins = [vals[None]] + [np.full((1, vals.size), 0.5, np.float32)] * (prog.n_inputs - 1)
    (y,) = build(prog, "float32")(ins)
    (r,) = reference(prog, ins)
    assert np.array_equal(np.isnan(y), np.isnan(r)), (y, r)
    fin = ~np.isnan(r)
    np.testing.assert_allclose(y[fin], r[fin], rtol=1e-6, atol=1e-7)


def test_lstm_h_error_float32() -> None:
    """The issue's bar: max abs error <= 2e-6 on an LSTM's h, gate inputs including +-50 and
    tiny values, against float64 on the same float32 inputs."""
    rng = np.random.default_rng(0)
    rows, n = 64, 257
    special = np.array([50, -50, 1e-30, -1e-30, 1e-38, 0, 4e-4, -4e-4, 20, -20], np.float32)
    zs = []
    for _ in range(4):
        z = rng.uniform(-12, 12, (rows, n)).astype(np.float32)
        z.flat[rng.choice(z.size, 2000, replace=False)] = rng.choice(special, 2000)
        zs.append(z)
    c = rng.uniform(-3, 3, (rows, n)).astype(np.float32)
    h, c2 = build(LSTM, "float32")(zs + [c])
    rh, rc = reference(LSTM, zs + [c])
    assert np.abs(h - rh).max() <= 2e-6
    assert np.abs(c2 - rc).max() <= 2e-6


def test_float64_kernels_are_accurate() -> None:
    rng = np.random.default_rng(1)
    ins = [rng.uniform(-40, 40, (9, 31)) for _ in range(4)] + [rng.uniform(-5, 5, (9, 31))]
    outs = build(LSTM, "float64")(ins)
    for o, r in zip(outs, reference(LSTM, ins)):
        np.testing.assert_allclose(o, r, rtol=1e-13, atol=1e-15)
    for op in (Ops.EXP, Ops.LOG, Ops.SOFTPLUS, Ops.SIGMOID, Ops.TANH):
        x = np.abs(GRID)[None] if op is Ops.LOG else GRID[None]
        (y,) = build(one_op(op), "float64")([x])
        (r,) = reference(one_op(op), [x])
        np.testing.assert_allclose(y, r, rtol=1e-13, atol=1e-300)


def test_broadcast_kinds_and_strides() -> None:
    """vec with ld=0 is a row broadcast, col is one value per row; odd sizes; a strided input."""
    prog = ScalarProgram(3, ((Ops.MUL, (0, 1), None), (Ops.ADD, (3, 2), None)), (4,))
    rng = np.random.default_rng(2)
    rows, n = 5, 13
    a = rng.standard_normal((rows, 2 * n))        # a column block of a wider buffer
    bias = rng.standard_normal((1, n))
    col = rng.standard_normal((rows, 1))
    run = build(prog, "float64", ["vec", "vec", "col"])
    (y,) = run([a, bias, col], lds=[2 * n, 0, 1], rows=rows, n=n)
    np.testing.assert_allclose(y, a[:, :n] * bias + col, rtol=1e-14, atol=1e-15)
    (y,) = run([a, bias, col], lds=[2 * n, 0, 0], rows=rows, n=n)   # col with ld 0: a scalar
    np.testing.assert_allclose(y, a[:, :n] * bias + col[0, 0], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("rows, n", [(1, 1), (3, 7), (2, 9), (1, 33)])
def test_edge_sizes(rows: int, n: int) -> None:
    rng = np.random.default_rng(rows * 100 + n)
    ins = [rng.standard_normal((rows, n)).astype(np.float32) for _ in range(5)]
    for o, r in zip(build(LSTM, "float32")(ins), reference(LSTM, ins)):
        np.testing.assert_allclose(o, r, atol=2e-6)
    outs = build(LSTM, "float32")(ins, rows=0)     # an empty domain writes nothing
    assert all(o.shape == (0, n) for o in outs)


def test_lstm_kernel_assembly_is_vectorized() -> None:
    m = ir.Module("k")
    emit_kernel(m, "lstm_kernel", LSTM, "float32")
    asm = llvm_jit.assembly(str(m))
    packed = re.findall(r"^\s*v\w+ps\s.*%[xyz]mm", asm, re.M)
    assert len(packed) > 50, "expected packed single-precision vector arithmetic"
    if "+avx2" in llvm_jit.host_cpu()[1]:
        # at least 8 lanes: ymm on AVX2 machines, ymm or zmm where AVX-512 exists
        assert re.search(r"%[yz]mm", asm)
    calls = re.findall(r"^\s*(?:call|jmp)\w*\s+(\S+)", asm, re.M)
    libm = [c for c in calls if re.search(r"tanh|exp|log", c)]
    assert not libm, f"libm calls in the kernel: {libm}"


# ---- GEMMs ----

def _gemm_fn(addr: int, dtype: str):
    t = ctypes.c_float if dtype == "float32" else ctypes.c_double
    return ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, I64, I64, I64,
                            t, VP, I64, VP, I64, t, VP, I64)(addr)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)])
def test_naive_gemm_fallback(dtype: str, ta: bool, tb: bool) -> None:
    m = ir.Module("g")
    emit_naive_gemm(m, "naive", dtype)
    j = llvm_jit.jit(str(m), use_cache=False)
    rng = np.random.default_rng(3)
    M, N, K = 5, 7, 3
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    c0 = rng.standard_normal((M, N)).astype(dtype)
    want = (a.T if ta else a) @ (b.T if tb else b)
    for beta in (0.0, 1.0):
        c = c0.copy() if beta else np.full((M, N), np.nan, dtype)   # beta 0 never reads C
        _gemm_fn(j.address("naive"), dtype)(ROW_MAJOR, TRANS if ta else NO_TRANS,
                                            TRANS if tb else NO_TRANS, M, N, K, 1.0,
                                            a.ctypes.data, a.shape[1], b.ctypes.data,
                                            b.shape[1], beta, c.ctypes.data, N)
        np.testing.assert_allclose(c, want + beta * c0, rtol=1e-5, atol=1e-5)


def test_numpy_blas_is_found_and_called_through_a_pointer() -> None:
    info = blas_info()
    if not info.found:
        pytest.skip("numpy's BLAS has no ILP64 cblas gemm; the naive fallback is used")
    # generated code calling the BLAS through a global function pointer
    m = ir.Module("p")
    g = ir.GlobalVariable(m, ir.PointerType(), "gemm_ptr")
    g.initializer = ir.Constant(ir.PointerType(), None)
    f = ir.Function(m, gemm_type("float32"), "call_gemm")
    b = ir.IRBuilder(f.append_basic_block())
    fp = load_function_pointer(b, g, gemm_type("float32"))
    b.call(fp, list(f.args))
    b.ret_void()
    j = llvm_jit.jit(str(m), use_cache=False)
    ctypes.c_void_p.from_address(j.global_address("gemm_ptr")).value = info.sgemm
    rng = np.random.default_rng(4)
    a = rng.standard_normal((6, 4)).astype(np.float32)
    bb = rng.standard_normal((4, 5)).astype(np.float32)
    c = np.zeros((6, 5), np.float32)
    _gemm_fn(j.address("call_gemm"), "float32")(ROW_MAJOR, NO_TRANS, NO_TRANS, 6, 5, 4, 1.0,
                                                a.ctypes.data, 4, bb.ctypes.data, 5, 0.0,
                                                c.ctypes.data, 5)
    np.testing.assert_allclose(c, a @ bb, rtol=1e-5)


# ---- the object cache ----

def test_cache_hit_corruption_and_foreign_entries(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRAPHRNN_CACHE_DIR", str(tmp_path))
    m = ir.Module("c")
    emit_kernel(m, "k", one_op(Ops.TANH), "float64")
    text = str(m)

    def run(j: llvm_jit.Jitted) -> float:
        fn = ctypes.CFUNCTYPE(None, I64, I64, VP, I64, VP, I64)(j.address("k"))
        x, y = np.array([[0.5]]), np.zeros((1, 1))
        fn(1, 1, x.ctypes.data, 1, y.ctypes.data, 1)
        return float(y[0, 0])

    j1 = llvm_jit.jit(text)
    assert not j1.stats.cache_hit and run(j1) == pytest.approx(np.tanh(0.5), rel=1e-15)
    path = llvm_jit.cache_dir() / f"{j1.stats.key}.o"
    assert path.exists() and not list(path.parent.glob(".tmp-*"))
    j2 = llvm_jit.jit(text)
    assert j2.stats.cache_hit and run(j2) == pytest.approx(np.tanh(0.5), rel=1e-15)
    # flip a byte of the object: the checksum catches it, the entry is rebuilt
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    j3 = llvm_jit.jit(text)
    assert not j3.stats.cache_hit and run(j3) == pytest.approx(np.tanh(0.5), rel=1e-15)
    assert llvm_jit.jit(text).stats.cache_hit
    # a foreign entry (another key's header) under this name, and a truncated one
    other = bytearray(path.read_bytes())
    other[len(llvm_jit.MAGIC):len(llvm_jit.MAGIC) + 4] = b"ffff"
    path.write_bytes(bytes(other))
    assert not llvm_jit.jit(text).stats.cache_hit
    path.write_bytes(b"GRNN")
    j5 = llvm_jit.jit(text)
    assert not j5.stats.cache_hit and run(j5) == pytest.approx(np.tanh(0.5), rel=1e-15)
