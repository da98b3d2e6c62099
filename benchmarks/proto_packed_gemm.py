"""Prototype (not used by graphrnn yet): how fast can the in-loop product h @ W be on this CPU when
W is packed once, not by OpenBLAS on every call?

    .venv/bin/python benchmarks/proto_packed_gemm.py            # H = 128, 256, 1024; B = 32, 64

The profiles in ARCHITECTURE.md put 17-20% of an LSTM training step in OpenBLAS's packing
routines: the recurrent weights are re-packed twice per time step. This script emits, with
llvmlite, a single-threaded GEMM ``C (M x N) = A (M x K) @ W (K x N)`` whose W is packed once into
K x 32 column panels, with an 8 x 32 register block (16 accumulators of 16 floats), and times it
side by side with OpenBLAS's sgemm through the same ctypes call path, one thread each, on the
in-loop shapes of an LSTM (M = B, K = H, N = 4H) and of its backward (K = 4H, N = H). The result
says whether a pre-packed GEMM is worth building into the LLVM backend (it would also need its own
split over the two cores); it is checked against numpy before timing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy loads OpenBLAS

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llvmlite import ir  # noqa: E402

from codegen import llvm_jit  # noqa: E402
from codegen.llvm_blas import blas_info  # noqa: E402
from codegen.llvm_kernels import for_range  # noqa: E402

NR, MR, LANES = 32, 8, 16
F32 = ir.FloatType()
I64 = ir.IntType(64)
PTR = ir.PointerType()
VEC = ir.VectorType(F32, LANES)


def emit() -> str:
    """``void pgemm(i64 m, i64 n, i64 k, ptr a, i64 lda, ptr wp, ptr c, i64 ldc)``: C = A @ W
    with W packed by ``pack`` (n a multiple of 32, m a multiple of 8)."""
    mod = ir.Module("pgemm")
    mod.triple = llvm_jit.target_machine().triple
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [I64, I64, I64, PTR, I64, PTR, PTR, I64]),
                     "pgemm")
    m, n, k, a, lda, wp, c, ldc = fn.args
    fma = ir.Function(mod, ir.FunctionType(VEC, [VEC] * 3), f"llvm.fma.v{LANES}f32")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    # the 8 x 32 block's accumulators, in the entry block so that they become registers
    accs = [b.alloca(VEC) for _ in range(2 * MR)]
    zero = ir.Constant(VEC, [0.0] * LANES)
    splat = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
    c0 = ir.Constant(I64, 0)

    with for_range(b, c0, n, "j", step=NR) as j0:
        pbase = b.gep(wp, [b.mul(j0, k)], source_etype=F32)   # panel j0/32 starts at j0 * k
        with for_range(b, c0, m, "i", step=MR) as i0:
            for p in accs:
                b.store(zero, p)
            with for_range(b, c0, k, "k") as kk:
                wrow = b.gep(pbase, [b.mul(kk, ir.Constant(I64, NR))], source_etype=F32)
                w0 = b.load(wrow, typ=VEC, align=4)
                w1 = b.load(b.gep(wrow, [ir.Constant(I64, LANES)], source_etype=F32), typ=VEC,
                            align=4)
                for r in range(MR):
                    ar = b.load(b.gep(a, [b.add(b.mul(b.add(i0, ir.Constant(I64, r)), lda), kk)],
                                      source_etype=F32), typ=F32)
                    av = b.shuffle_vector(b.insert_element(ir.Constant(VEC, ir.Undefined), ar,
                                                           ir.Constant(ir.IntType(32), 0)),
                                          ir.Constant(VEC, ir.Undefined), splat)
                    for h, w in enumerate((w0, w1)):
                        acc = accs[2 * r + h]
                        b.store(b.call(fma, [av, w, b.load(acc, typ=VEC)]), acc)
            for r in range(MR):
                crow = b.gep(c, [b.add(b.mul(b.add(i0, ir.Constant(I64, r)), ldc), j0)],
                             source_etype=F32)
                for h in range(2):
                    b.store(b.load(accs[2 * r + h], typ=VEC),
                            b.gep(crow, [ir.Constant(I64, h * LANES)], source_etype=F32), align=4)
    b.ret_void()
    return str(mod)


def pack(w: np.ndarray) -> np.ndarray:
    """(K, N) -> N/32 panels of (K, 32), each contiguous."""
    kk, nn = w.shape
    return np.ascontiguousarray(w.reshape(kk, nn // NR, NR).transpose(1, 0, 2))


def best(fn, reps: int, rounds: int = 7) -> float:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        ts.append((time.perf_counter() - t0) / reps)
    return sorted(ts)[len(ts) // 2]


def main() -> int:
    jitted = llvm_jit.jit(emit(), use_cache=False)
    addr = jitted.address("pgemm")
    i64, vp = ctypes.c_int64, ctypes.c_void_p
    pgemm = ctypes.CFUNCTYPE(None, i64, i64, i64, vp, i64, vp, vp, i64)(addr)
    info = blas_info()
    lib = ctypes.CDLL(info.path)
    sg = getattr(lib, "scipy_cblas_sgemm64_", None) or lib.cblas_sgemm
    sg.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, ctypes.c_float, vp,
                   i64, vp, i64, ctypes.c_float, vp, i64]
    set_threads = getattr(lib, "scipy_openblas_set_num_threads64_", None) or getattr(
        lib, "openblas_set_num_threads", None)
    print(f"CPU {llvm_jit.host_cpu()[0]}; median of 7 rounds; GFLOP/s\n")
    print("| shape (M x K @ K x N) | OpenBLAS, 1 thread | packed-W prototype, 1 thread | ratio |"
          " OpenBLAS, 2 threads |\n|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for H in (128, 256, 1024):
        for B in (32, 64):
            for (M, K, N) in ((B, H, 4 * H), (B, 4 * H, H)):
                A = rng.standard_normal((M, K)).astype(np.float32)
                W = rng.standard_normal((K, N)).astype(np.float32)
                Wp = pack(W)
                C1 = np.zeros((M, N), np.float32)
                C2 = np.zeros((M, N), np.float32)
                pa, pw, pwp = A.ctypes.data, W.ctypes.data, Wp.ctypes.data
                p1, p2 = C1.ctypes.data, C2.ctypes.data

                # cblas row-major, no transposes, beta 0 (what the LLVM backend calls)
                blas = functools.partial(sg, 101, 111, 111, M, N, K, 1.0, pa, K, pw, N, 0.0, p1,
                                         N)
                proto = functools.partial(pgemm, M, N, K, pa, K, pwp, p2, N)

                blas()
                proto()
                ref = A.astype(np.float64) @ W
                for name, got in (("sgemm", C1), ("prototype", C2)):
                    err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
                    if err > 1e-5:
                        raise SystemExit(f"{name} disagrees with numpy: {err:.2e}")
                flop = 2.0 * M * K * N
                reps = max(3, int(3e8 / flop))
                g1 = flop / best(blas, reps) / 1e9
                g2 = flop / best(proto, reps) / 1e9
                g3 = float("nan")
                if set_threads is not None:
                    set_threads(2)
                    g3 = flop / best(blas, reps) / 1e9
                    set_threads(1)
                print(f"| {M} x {K} @ {K} x {N} | {g1:.0f} | {g2:.0f} | {g2 / g1:.2f} | "
                      f"{g3:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
