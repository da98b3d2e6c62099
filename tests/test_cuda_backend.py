"""The ``cuda`` backend's host-side logic, without a GPU: the cuBLAS call mapping for strided
row-major views (checked by emulating column-major GEMM on the same memory), the clear error
when CuPy or a GPU is missing, and the export of ``.cu`` and PTX."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import graphrnn
from codegen.cuda import cublas_gemm_args
from codegen.cuda_cpu import find_tool
from graphrnn.errors import BackendError


def colmajor_gemm(transa, transb, m, n, k, A, lda, B, ldb, beta, C, ldc):
    """What cublas<t>gemm does: C = op(A) op(B) + beta C, every matrix column-major with a
    leading dimension, read from the memory that starts at the given array's first element."""
    def mat(x, rows, cols, ld):
        it = x.itemsize
        return as_strided(x, shape=(rows, cols), strides=(it, ld * it), writeable=True)
    a = mat(A, *((m, k) if transa == 0 else (k, m)), lda)
    b = mat(B, *((k, n) if transb == 0 else (n, k)), ldb)
    c = mat(C, m, n, ldc)
    c[...] = (a if transa == 0 else a.T) @ (b if transb == 0 else b.T) + beta * c


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("acc", [False, True])
def test_cublas_mapping_on_strided_views(ta, tb, acc):
    rng = np.random.default_rng(int(ta) + 2 * int(tb) + 4 * int(acc))
    m, k, n = 7, 5, 3
    # operands are column blocks of wider packed buffers, as the Program's views are
    abuf = rng.standard_normal((k, 11) if ta else (m, 11))
    bbuf = rng.standard_normal((n, 9) if tb else (k, 9))
    obuf = rng.standard_normal((m, 8))
    a = abuf[:, 2:2 + (m if ta else k)]
    b = bbuf[:, 1:1 + (k if tb else n)]
    out = obuf[:, 4:4 + n]
    want = (out if acc else 0) + (a.T if ta else a) @ (b.T if tb else b)
    before = obuf.copy()
    opb, opa, M, N, K, ldb, lda, ldc = cublas_gemm_args(out, a, b, ta, tb)
    colmajor_gemm(opb, opa, M, N, K, b, ldb, a, lda, 1.0 if acc else 0.0, out, ldc)
    np.testing.assert_allclose(out, want, rtol=1e-12)
    untouched = np.ones_like(obuf, bool)
    untouched[:, 4:4 + n] = False
    assert np.array_equal(obuf[untouched], before[untouched])   # nothing outside the view


def test_cublas_mapping_refuses_what_does_not_fit():
    a, b = np.zeros((3, 4)), np.zeros((5, 2))
    with pytest.raises(BackendError, match="does not fit"):
        cublas_gemm_args(np.zeros((3, 2)), a, b, False, False)
    with pytest.raises(BackendError, match="not a row-major strided matrix"):
        cublas_gemm_args(np.zeros((3, 2)), np.zeros((4, 3)).T, np.zeros((4, 2)), False, False)
    assert cublas_gemm_args(np.zeros((3, 2)), np.zeros((3, 0)), np.zeros((0, 2)),
                            False, False) is None


def _gpu_count() -> int | None:
    """GPUs real CuPy sees here, or None where CuPy is not installed."""
    if importlib.util.find_spec("cupy") is None:
        return None
    import cupy
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - no driver, or a driver too old for this CuPy
        return 0


def test_constructing_without_cupy_is_a_clear_backend_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)   # what a machine without CuPy sees
    cell = graphrnn.cells.rnn_tanh(3, 4)
    with pytest.raises(BackendError, match="needs CuPy and an NVIDIA GPU: pip install cupy-cuda"):
        graphrnn.compile(cell, "cuda")


@pytest.mark.skipif(_gpu_count() != 0, reason="needs CuPy installed on a machine without a GPU")
def test_constructing_with_cupy_but_no_gpu_is_a_clear_backend_error():
    with pytest.raises(BackendError, match="found no usable GPU"):
        graphrnn.compile(graphrnn.cells.rnn_tanh(3, 4), "cuda")


def test_importing_the_backend_imports_no_cupy():
    code = ("import sys, codegen.cuda, codegen.cuda_exec, codegen.cuda_cpu; "
            "print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def _needs_program():
    pytest.importorskip("graphrnn.pipeline")


def test_export_cuda_source_without_a_gpu():
    _needs_program()
    from codegen.cuda import cuda_source
    src = cuda_source(graphrnn.cells.lstm(5, 13), "float32")
    assert src.count('extern "C" __global__') >= 2       # forward and backward kernels
    assert "__restrict__" in src and "pow(" not in src and "atomicAdd" not in src


@pytest.mark.skipif(find_tool("nvcc") is None, reason="no nvcc")
def test_export_ptx_for_a_chosen_arch(tmp_path):
    _needs_program()
    from codegen.cuda import ptx
    text = ptx(graphrnn.cells.gru(5, 13), "sm_90", "float32")
    assert ".target sm_90" in text and ".entry grnn_" in text


# ---- the GPU benchmark: exits clearly without a GPU, and its PyTorch cells are the zoo's ----

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hide_cupy", [True, False])
def test_bench_gpu_says_no_gpu_and_exits_2(hide_cupy):
    if not hide_cupy and _gpu_count() != 0:
        pytest.skip("needs CuPy installed on a machine without a GPU")
    if hide_cupy and _gpu_count():
        pytest.skip("a GPU is here: the benchmark would run")
    bench = str(ROOT / "benchmarks" / "bench_gpu.py")
    code = (f"import runpy, sys; sys.argv = [{bench!r}, '--quick']; "
            + ("sys.modules['cupy'] = None; " if hide_cupy else "")
            + f"runpy.run_path({bench!r}, run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "no GPU available here" in out.stdout and "nothing measured" in out.stdout


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["lstm", "gru_torch", "peephole_lstm", "mut1"])
def test_bench_torch_routes_compute_the_zoo_cells(name):
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_gpu import loop_script, torch_cells
    finally:
        sys.path.pop(0)
    T, B, H = 4, 2, 6
    cell = graphrnn.cells.zoo_cell(name, H, H, "float32")
    ref = graphrnn.compile(cell, "ref", "float32")
    p = ref.init_params(seed=0, scale=0.5)
    x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
    want = ref.forward(p, x)[0][0]
    tp = {k: torch.tensor(v) for k, v in p.items()}
    scripted = torch.jit.script(loop_script(torch, name, T, B, H))
    np.testing.assert_allclose(scripted(torch.tensor(x), tp).numpy(), want, atol=1e-5)
    step = torch_cells(torch)[name]
    h = c = torch.zeros(B, H)
    for t in range(T):
        h, c = step(torch.tensor(x[t]), h, c, tp)
    np.testing.assert_allclose(h.numpy(), want[-1], atol=1e-5)


@pytest.mark.parametrize("math", ["fp32", "tf32"])
def test_bench_sets_the_same_float32_math_in_pytorch(math):
    """cuDNN's RNNs use TF32 by default: the benchmark turns it off (or on) for PyTorch as it
    does for graphrnn, through the knobs this PyTorch has."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_gpu import set_torch_math
    finally:
        sys.path.pop(0)
    rnn = getattr(getattr(torch.backends.cudnn, "rnn", None), "fp32_precision", None)
    old = (rnn, getattr(torch.backends.cuda.matmul, "fp32_precision", None))
    try:
        set_torch_math(torch, math)
        if rnn is not None:
            want = "tf32" if math == "tf32" else "ieee"
            assert torch.backends.cudnn.rnn.fp32_precision == want
            assert torch.backends.cuda.matmul.fp32_precision == want
        else:
            assert torch.backends.cudnn.allow_tf32 == (math == "tf32")
    finally:
        if rnn is not None:
            torch.backends.cudnn.rnn.fp32_precision, torch.backends.cuda.matmul.fp32_precision \
                = old
