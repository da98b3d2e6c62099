"""llvm equals ref on every zoo cell and on random cells, forward and backward; edge sizes;
finite differences through the float64 native build; the compiled LSTM's assembly."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import close_to_scale as close
from helpers import cotangents, fd_and_backward, sequences
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphrnn
from frontends.trace import CellBuilder, sigmoid, softplus, tanh
from graphrnn.cells import SQUARE_INPUT, ZOO, zoo_cell

TOL = {"float64": 1e-9, "float32": 1e-4}


def compare(cell, dtype: str, T: int, B: int, seed: int = 0, **options) -> None:
    rtol = TOL[dtype]
    cc = graphrnn.compile(cell, backend="llvm", dtype=dtype, **options)
    ref = graphrnn.compile(cell, backend="ref", dtype=dtype)
    params = ref.init_params(seed=seed, scale=0.4)
    rng = np.random.default_rng(seed)
    xs, h0 = sequences(ref, T, B, rng)
    ys, hT, res = cc.forward_train(params, xs, h0)
    rys, rhT, rres = ref.forward_train(params, xs, h0)
    for i, (a, b) in enumerate(zip(ys + hT, rys + rhT)):
        close(a, b, rtol, f"{cell.name} {dtype} forward value {i}")
    ys2, hT2 = cc.forward(params, xs, h0)                 # the inference entry point
    for i, (a, b) in enumerate(zip(ys2 + hT2, rys + rhT)):
        close(a, b, rtol, f"{cell.name} {dtype} inference value {i}")
    d_ys, d_hT = cotangents(ref, T, B, rng)
    g = cc.backward(params, res, d_ys, d_hT)
    rg = ref.backward(params, rres, d_ys, d_hT)
    assert set(g.params) == set(rg.params)
    for k in rg.params:
        close(g.params[k], rg.params[k], rtol, f"{cell.name} {dtype} d{k}")
    for i, (a, b) in enumerate(zip(g.inputs, rg.inputs)):
        close(a, b, rtol, f"{cell.name} {dtype} d_input {i}")
    for i, (a, b) in enumerate(zip(g.states, rg.states)):
        close(a, b, rtol, f"{cell.name} {dtype} d_state {i}")


def sizes(name: str, I: int, H: int) -> tuple[int, int]:  # noqa: E741
    return (H, H) if name in SQUARE_INPUT else (I, H)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_cell_matches_ref(name: str, dtype: str) -> None:
    I, H = sizes(name, 5, 11)  # noqa: E741
    compare(zoo_cell(name, I, H, dtype), dtype, T=4, B=3)


@pytest.mark.parametrize("T, B, I, H", [(1, 1, 3, 7), (3, 1, 9, 9), (1, 5, 17, 13),
                                        (6, 2, 2, 33)])
@pytest.mark.parametrize("name", ["lstm", "gru", "mut1", "peephole_lstm"])
def test_edge_sizes(name: str, T: int, B: int, I: int, H: int) -> None:  # noqa: E741
    I, H = sizes(name, I, H)  # noqa: E741
    compare(zoo_cell(name, I, H, "float64"), "float64", T, B, seed=T + B)


@pytest.mark.parametrize("name", ["lstm", "mut1", "gru"])
def test_finite_differences_through_native_float64(name: str) -> None:
    """<grad, v> from the native backward equals the central difference of the native forward
    loss in a random direction v (parameters and inputs together)."""
    I, H = sizes(name, 4, 6)  # noqa: E741
    cc = graphrnn.compile(zoo_cell(name, I, H, "float64"), backend="llvm", dtype="float64")
    params = cc.init_params(seed=3, scale=0.5)
    rng = np.random.default_rng(7)
    xs, h0 = sequences(cc, 5, 2, rng)
    _ys, _hT, res = cc.forward_train(params, xs, h0)
    d_ys, d_hT = cotangents(cc, 5, 2, rng)
    g = cc.backward(params, res, d_ys, d_hT)
    vp = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    vx = [rng.standard_normal(x.shape) for x in xs]
    fd, an = fd_and_backward(cc, params, xs, h0, d_ys, d_hT, g, dp=vp, dx=vx)
    assert fd == pytest.approx(an, rel=1e-6, abs=1e-8)


# ---- diagonal recurrences: the whole time loop inside a loop over row blocks ----

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation, T, B, I, H", [("relu", 5, 3, 4, 11), ("tanh", 4, 7, 3, 700),
                                                    ("relu", 1, 1, 2, 3)])
def test_indrnn_runs_as_one_loop_over_row_blocks(dtype: str, activation: str, T: int, B: int,
                                                  I: int, H: int) -> None:  # noqa: E741
    """H=700 makes blocks of 4096 // 700 = 5 rows: B=7 is one full block and a partial one."""
    from graphrnn.cells import indrnn
    cell = indrnn(I, H, dtype, activation=activation)
    cc = graphrnn.compile(cell, backend="llvm", dtype=dtype, cache=False)
    assert cc.diagonal_loops == {"forward": True, "backward": True}
    assert "diag_blk" in cc.ir_text
    compare(cell, dtype, T, B, seed=B, cache=False)
    # the step-by-step loop stays available and agrees
    plain = graphrnn.compile(cell, backend="llvm", dtype=dtype, cache=False, diagonal=False)
    assert plain.diagonal_loops == {"forward": False, "backward": False}
    assert "diag_blk" not in plain.ir_text
    params = cc.init_params(seed=2, scale=0.5)
    rng = np.random.default_rng(4)
    xs, h0 = sequences(cc, T, B, rng)
    ys, hT, res = cc.forward_train(params, xs, h0)
    ys2, hT2, res2 = plain.forward_train(params, xs, h0)
    dy = [rng.standard_normal(y.shape).astype(dtype) for y in ys]
    g, g2 = cc.backward(params, res, dy), plain.backward(params, res2, dy)
    for a, b in zip(ys + hT + g.inputs + g.states, ys2 + hT2 + g2.inputs + g2.states):
        close(a, b, TOL[dtype], "diagonal vs step by step")


def test_cells_with_a_matmul_on_the_state_keep_the_step_loop() -> None:
    cc = graphrnn.compile(zoo_cell("lstm", 3, 5, "float64"), backend="llvm", dtype="float64")
    assert cc.diagonal_loops == {"forward": False, "backward": False}
    assert "diag_blk" not in cc.ir_text


# ---- random cells (property-based) ----

UNARY = [tanh, sigmoid, softplus]


@st.composite
def random_cells(draw):
    I = draw(st.integers(1, 6))  # noqa: E741
    H = draw(st.integers(1, 9))
    ops = draw(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 99), st.integers(0, 99)),
                        min_size=1, max_size=6))
    dtype = draw(st.sampled_from(["float64", "float32"]))
    cb = CellBuilder("random", dtype)
    x, h = cb.input("x", I), cb.state("h", H)
    pool = [x @ cb.param("W", (I, H)) + cb.param("b", (1, H)), h @ cb.param("U", (H, H)), h]
    for kind, a, b in ops:
        u, v = pool[a % len(pool)], pool[b % len(pool)]
        if kind < 3:
            pool.append(UNARY[kind](u))
        elif kind == 3:
            pool.append(u * v)
        elif kind == 4:
            pool.append(u + v)
        else:
            pool.append(u - 0.5 * v)
    h2 = tanh(pool[-1] + pool[0])
    return cb.build([h2], {"h": h2}), dtype


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_cells())
def test_random_cells_match_ref(cell_dtype) -> None:
    cell, dtype = cell_dtype
    compare(cell, dtype, T=3, B=2)


# ---- the generated code ----

def test_compiled_lstm_is_vectorized_and_calls_no_libm() -> None:
    cc = graphrnn.compile(zoo_cell("lstm", 8, 16, "float32"), backend="llvm", dtype="float32")
    asm = cc.assembly()
    assert re.search(r"v\w+ps\s.*%[xy]mm", asm), "no packed float32 vector instructions"
    calls = re.findall(r"^\s*(?:call|jmp)\w*\s+(\S+)", asm, re.M)
    assert not [c for c in calls if re.search(r"tanh|exp|log", c)], calls
    assert cc.uses_blas == graphrnn_blas_found()


def graphrnn_blas_found() -> bool:
    from codegen.llvm_blas import blas_info
    return blas_info().found


def test_compile_once_then_cache_hit(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRAPHRNN_CACHE_DIR", str(tmp_path))
    cell = zoo_cell("lstm", 3, 5, "float32")
    a = graphrnn.compile(cell, backend="llvm", dtype="float32")
    b = graphrnn.compile(cell, backend="llvm", dtype="float32")
    assert not a.jitted.stats.cache_hit and b.jitted.stats.cache_hit
    params = a.init_params(seed=0)
    x = np.ones((2, 1, 3), np.float32)
    np.testing.assert_array_equal(a.forward(params, x)[0][0], b.forward(params, x)[0][0])


def test_bad_residuals_and_token_ids_are_refused() -> None:
    cc = graphrnn.compile(zoo_cell("rnn_tanh", 3, 4, "float64"), backend="llvm",
                          dtype="float64")
    params = cc.init_params()
    with pytest.raises(graphrnn.RuntimeInputError, match="residuals must come from"):
        cc.backward(params, ("not", "residuals"), [np.zeros((2, 1, 4))])
    other = graphrnn.compile(zoo_cell("rnn_tanh", 3, 4, "float64"), backend="llvm",
                             dtype="float64")
    _, _, res = other.forward_train(params, np.zeros((2, 1, 3)))
    with pytest.raises(graphrnn.RuntimeInputError, match="residuals"):
        cc.backward(params, res, [np.zeros((2, 1, 4))])


def test_recycled_buffers_never_leak_into_returned_arrays() -> None:
    """Residuals used out of order, results kept while later calls recycle scratch arrays."""
    import gc
    cell = zoo_cell("lstm", 3, 6, "float64")
    cc = graphrnn.compile(cell, backend="llvm", dtype="float64")
    ref = graphrnn.compile(cell, backend="ref", dtype="float64")
    params = cc.init_params(seed=5, scale=0.5)
    rng = np.random.default_rng(5)
    x1, x2 = rng.standard_normal((2, 4, 2, 3))
    dy = rng.standard_normal((4, 2, 6))
    ys1, _, r1 = cc.forward_train(params, x1)
    ys2, _, r2 = cc.forward_train(params, x2)
    g2 = cc.backward(params, r2, [dy])
    g1 = cc.backward(params, r1, [dy])
    del r1, r2
    gc.collect()
    for _ in range(3):   # churn the pool
        _, _, r = cc.forward_train(params, x2 * 3)
        cc.backward(params, r, [dy * 2])
        cc.forward(params, x1 * 2)
    for x, ys, g in ((x1, ys1, g1), (x2, ys2, g2)):
        rys, _, rres = ref.forward_train(params, x)
        rg = ref.backward(params, rres, [dy])
        close(ys[0], rys[0], 1e-9, "output")
        for k in rg.params:
            close(g.params[k], rg.params[k], 1e-9, k)
        close(g.inputs[0], rg.inputs[0], 1e-9, "d_x")


# ---- threads and the packed in-loop GEMM (llvm_threads, llvm_gemm) ----

@pytest.fixture
def always_parallel(monkeypatch):
    """Threads and packed weights even for the tiny sizes of these tests."""
    from codegen.llvm import LLVMBackend
    monkeypatch.setattr(LLVMBackend, "THREAD_MIN_FLOPS", 0)
    monkeypatch.setattr(LLVMBackend, "PACK_MIN_ROWS", 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_cell_matches_ref_on_threads_with_packed_weights(name: str, dtype: str,
                                                             always_parallel) -> None:
    # B = 11 leaves a row remainder after blocks of 8 (or 6); H = 37 a partial 32-column panel;
    # 3 threads on this 2-core machine also exercise the barrier's yield
    I, H = sizes(name, 6, 37)  # noqa: E741
    for threads in (2, 3):
        compare(zoo_cell(name, I, H, dtype), dtype, T=5, B=11, seed=threads, threads=threads)


def test_packed_path_replaces_the_loop_gemm_calls(always_parallel) -> None:
    """A counting GEMM installed in the module: with packed weights neither the time loop nor
    the hoisted input projection (4H = 160 columns) calls the BLAS; without, one call per step
    and thread, and two for the projection. Results agree either way."""
    import ctypes

    from codegen.llvm import SETTER
    from codegen.llvm_blas import blas_info
    if not blas_info().found:
        pytest.skip("no BLAS to forward to")
    args = [ctypes.c_int32] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_double, ctypes.c_void_p,
            ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_void_p,
            ctypes.c_int64]
    proto = ctypes.CFUNCTYPE(None, *args)
    real = proto(blas_info().dgemm)
    calls = []

    def counting(*a):
        calls.append(a[3:6])
        real(*a)

    hook = proto(counting)
    cell = zoo_cell("lstm", 8, 40, "float64")
    T, B = 6, 9
    out = {}
    for packed in (True, False):
        cc = graphrnn.compile(cell, backend="llvm", dtype="float64", threads=2, packed=packed)
        SETTER(cc.jitted.address(f"{cc.prefix}_set_gemm_f64"))(ctypes.cast(hook, ctypes.c_void_p)
                                                                .value)
        params = cc.init_params(seed=1, scale=0.5)
        rng = np.random.default_rng(0)
        xs, h0 = sequences(cc, T, B, rng)
        calls.clear()
        out[packed] = cc.forward(params, xs, h0)[0][0]
        loop_calls = [c for c in calls if c[0] == B]      # M = B: the per-step products
        assert len(loop_calls) == (0 if packed else 2 * T), (packed, calls)
        # x @ W_x for all T·B rows: packed too, or two halves through the BLAS
        assert len(calls) - len(loop_calls) == (0 if packed else 2)
    np.testing.assert_allclose(out[True], out[False], rtol=1e-12)


def test_threads_option_is_checked() -> None:
    with pytest.raises(graphrnn.BackendError, match="threads must be a positive int"):
        graphrnn.compile(zoo_cell("gru", 3, 4, "float64"), backend="llvm", threads=0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_embedding_and_log_softmax_on_threads(dtype: str, always_parallel) -> None:
    """Gathers (split by rows), the backward's scatter (thread 0) and row sums and maxima of a
    log-softmax (split by rows or columns) on 2 and 3 threads."""
    from graphrnn import nn
    ids, h = nn.Identity()(), nn.Identity()().annotate(name="h")
    e = nn.LookupTable(6, 20)(ids)
    h2 = nn.Tanh()(nn.CAddTable()([nn.Linear(20, 37)(e), nn.Linear(37, 37)(h)]))
    out = nn.LogSoftMax()(nn.Linear(37, 7)(h2)).annotate(name="logprobs")
    cell = nn.gModule([ids, h], [out, h2]).to_cell(
        inputs=[0], states=["h"], next_states=[1], outputs=["logprobs"], sizes={"h": 37})
    cell = cell.with_dtype(dtype)
    for threads in (2, 3):
        compare(cell, dtype, T=5, B=13, seed=threads, threads=threads)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_recycled_buffers_full_of_nan_do_not_leak_into_gradients(name: str) -> None:
    """Buffers the backward does not zero (written whole before any read) must really be written
    whole: after one step, every recycled array is filled with NaN, and the next step's
    gradients must still equal the reference."""
    I, H = sizes(name, 4, 9)  # noqa: E741
    cell = zoo_cell(name, I, H, "float64")
    cc = graphrnn.compile(cell, backend="llvm", dtype="float64")
    ref = graphrnn.compile(cell, backend="ref", dtype="float64")
    params = ref.init_params(seed=3, scale=0.4)
    rng = np.random.default_rng(3)
    xs, h0 = sequences(ref, 4, 3, rng)
    for step in range(2):
        ys, _hT, res = cc.forward_train(params, xs, h0)
        d_ys = [rng.standard_normal(y.shape) for y in ys]
        g = cc.backward(params, res, d_ys, None)
        rys, _rhT, rres = ref.forward_train(params, xs, h0)
        rg = ref.backward(params, rres, d_ys, None)
        for k in rg.params:
            close(g.params[k], rg.params[k], 1e-9, f"{name} step {step} d{k}")
        for arrays in cc._pool.free.values():
            for a in arrays:
                if a.dtype.kind == "f":
                    a.fill(np.nan)


@pytest.mark.parametrize("name", ["lstm", "gru", "mut1"])
def test_packed_weights_outside_the_loop_on_threads(name: str, always_parallel) -> None:
    # I = 130: the backward's d_x = dZ @ W_xᵀ has 130 columns, so it is packed (transposed)
    # after the loop, as x @ W_x is before it
    I, H = sizes(name, 130, 20)  # noqa: E741
    compare(zoo_cell(name, I, H, "float64"), "float64", T=3, B=5, seed=1, threads=2)
