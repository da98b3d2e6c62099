"""The one BLAS the LLVM backend calls: the OpenBLAS that numpy already loaded.

Generated code never links a BLAS. It calls GEMMs through a global function pointer per dtype
(``graphrnn_gemm_f32`` / ``graphrnn_gemm_f64``) whose type is the ILP64 CBLAS signature

    void gemm(i32 order, i32 transA, i32 transB, i64 M, i64 N, i64 K, T alpha,
              const T *A, i64 lda, const T *B, i64 ldb, T beta, T *C, i64 ldc)

(order 101 = row major, trans 111 = no, 112 = yes). Each pointer starts at a naive row-major
fallback written in LLVM IR (``emit_naive_gemm``, tested on its own); the JIT then points it at
numpy's BLAS. An exported shared library keeps the fallback until the C caller installs its own
ILP64 ``cblas_?gemm`` with ``graphrnn_set_gemm_f32/f64``.

Why numpy's BLAS: numpy 2.x wheels bundle scipy-openblas (ILP64, symbols prefixed
``scipy_cblas_sgemm64_``). It is already loaded and its thread pool already exists; loading a
second OpenBLAS (scipy's, or a system one) would start a second pool, and two pools spinning on a
2-core machine are catastrophic. So there is exactly one BLAS per process. Its thread count is
OpenBLAS's own: ``OPENBLAS_NUM_THREADS`` at start-up, or ``set_blas_threads(n)`` at run time
(``scipy_openblas_set_num_threads64_``); no threadpoolctl needed. If numpy's BLAS offers no ILP64
``cblas_?gemm`` (e.g. a build on Accelerate), the naive fallback is used and ``blas_info()`` says
so.
"""

from __future__ import annotations

import ctypes
import glob
import os
from dataclasses import dataclass
from functools import lru_cache

from llvmlite import ir

from .llvm_kernels import FAST, I32, I64, PTR, VOID, for_range, ftype

GEMM_GLOBAL = {"float32": "graphrnn_gemm_f32", "float64": "graphrnn_gemm_f64"}
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def gemm_type(dtype: str) -> ir.FunctionType:
    t = ftype(dtype)
    return ir.FunctionType(VOID, [I32, I32, I32, I64, I64, I64, t, PTR, I64, PTR, I64, t,
                                  PTR, I64])


@dataclass(frozen=True)
class BlasInfo:
    path: str | None
    sgemm: int       # function addresses, 0 when not found
    dgemm: int
    set_threads: int
    get_threads: int

    @property
    def found(self) -> bool:
        return bool(self.sgemm and self.dgemm)


def _numpy_blas_paths() -> list[str]:
    import numpy as np
    root = os.path.dirname(os.path.dirname(np.__file__))
    pats = [os.path.join(root, "numpy.libs", "*openblas*"),
            os.path.join(os.path.dirname(np.__file__), ".dylibs", "*openblas*")]
    return sorted(p for pat in pats for p in glob.glob(pat))


def _addr(lib: ctypes.CDLL, names: tuple[str, ...]) -> int:
    for n in names:
        try:
            return ctypes.cast(getattr(lib, n), ctypes.c_void_p).value or 0
        except AttributeError:
            continue
    return 0


@lru_cache(maxsize=1)
def blas_info() -> BlasInfo:
    """Addresses of numpy's ILP64 cblas gemms (the library is loaded once by numpy; dlopen of the
    same path returns the same handle, so no second thread pool is created)."""
    for path in _numpy_blas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        s = _addr(lib, ("scipy_cblas_sgemm64_", "cblas_sgemm64_"))
        d = _addr(lib, ("scipy_cblas_dgemm64_", "cblas_dgemm64_"))
        st = _addr(lib, ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_"))
        gt = _addr(lib, ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_"))
        if s and d:
            return BlasInfo(path, s, d, st, gt)
    return BlasInfo(None, 0, 0, 0, 0)


def set_blas_threads(n: int) -> None:
    """Set the thread count of numpy's OpenBLAS (the one the backend calls)."""
    info = blas_info()
    if info.set_threads:
        ctypes.CFUNCTYPE(None, ctypes.c_int)(info.set_threads)(int(n))


def blas_threads() -> int:
    info = blas_info()
    if not info.get_threads:
        return 1
    return int(ctypes.CFUNCTYPE(ctypes.c_int)(info.get_threads)())


def emit_naive_gemm(module: ir.Module, name: str, dtype: str) -> ir.Function:
    """The tested fallback: row-major C = alpha * op(A) @ op(B) + beta * C, i-k-j order so the
    inner loop is contiguous in C (and in B when B is not transposed). ``order`` must be 101."""
    t = ftype(dtype)
    fn = ir.Function(module, gemm_type(dtype), name)
    fn.attributes.add("nounwind")
    (_order, ta, tb, m, n, k, alpha, a, lda, bb, ldb, beta, c, ldc) = fn.args
    c.add_attribute("noalias")
    bld = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = ir.Constant(t, 0.0)
    ta_set = bld.icmp_signed("==", ta, ir.Constant(I32, TRANS))
    tb_set = bld.icmp_signed("==", tb, ir.Constant(I32, TRANS))
    beta_zero = bld.fcmp_ordered("==", beta, zero)
    with for_range(bld, ir.Constant(I64, 0), m, "gi") as i:
        crow = bld.gep(c, [bld.mul(i, ldc)], source_etype=t)
        with for_range(bld, ir.Constant(I64, 0), n, "gj0") as j:
            p = bld.gep(crow, [j], source_etype=t)
            # beta == 0 must not read C (it may hold NaN), as in BLAS
            old = bld.fmul(bld.load(p, typ=t), beta, flags=FAST)
            bld.store(bld.select(beta_zero, zero, old), p)
        with for_range(bld, ir.Constant(I64, 0), k, "gk") as kk:
            a_idx = bld.select(ta_set, bld.add(bld.mul(kk, lda), i), bld.add(bld.mul(i, lda), kk))
            aik = bld.fmul(alpha, bld.load(bld.gep(a, [a_idx], source_etype=t), typ=t), flags=FAST)
            with for_range(bld, ir.Constant(I64, 0), n, "gj") as j:
                b_idx = bld.select(tb_set, bld.add(bld.mul(j, ldb), kk),
                                   bld.add(bld.mul(kk, ldb), j))
                bv = bld.load(bld.gep(bb, [b_idx], source_etype=t), typ=t)
                p = bld.gep(crow, [j], source_etype=t)
                bld.store(bld.fadd(bld.load(p, typ=t), bld.fmul(aik, bv, flags=FAST), flags=FAST),
                          p)
    bld.ret_void()
    return fn


def declare_gemm_pointer(module: ir.Module, dtype: str, fallback: ir.Function,
                         linkage: str = "") -> ir.GlobalVariable:
    """The global function pointer generated code calls through, initialised to fallback."""
    g = ir.GlobalVariable(module, PTR, GEMM_GLOBAL[dtype])
    g.initializer = fallback
    if linkage:
        g.linkage = linkage
    return g
