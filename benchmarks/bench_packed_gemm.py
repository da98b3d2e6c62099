"""Microbenchmark of the LLVM backend's packed-weight GEMM (codegen/llvm_gemm.py) against
OpenBLAS's sgemm on the in-loop shapes of an LSTM, one thread each:

    .venv/bin/python benchmarks/bench_packed_gemm.py            # H = 128, 256, 1024; B = 32, 64

The time loop multiplies a B-row operand by the same weight matrix at every step: forward
``h @ W_h`` (M = B, K = H, N = 4H), backward ``dZ @ W_hᵀ`` (K = 4H, N = H); outside the loop the
same shapes come with M = T·B rows (the last four lines). OpenBLAS re-packs the weights on every
call; ``llvm_gemm`` packs them once per sweep. Both are called through
ctypes the same way and checked against numpy before timing; the packing itself is timed too.
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


from codegen import llvm  # noqa: E402
from codegen.llvm_blas import blas_info  # noqa: E402
from codegen.llvm_gemm import helper_module, tile_for  # noqa: E402

I64, VP = ctypes.c_int64, ctypes.c_void_p


def build() -> tuple[object, object, object, object]:
    """The helper module the JIT shares between cells (float32, this CPU's tile), jitted."""
    jm = llvm.jit_module()
    tile = tile_for("float32")
    jitted = jm.jit(helper_module("float32", tile, jm.target_machine().triple), use_cache=False)
    pack = ctypes.CFUNCTYPE(None, I64, I64, VP, I64, I64, VP, I64, I64)(
        jitted.address("graphrnn_pack_f32"))
    gemm = ctypes.CFUNCTYPE(None, I64, I64, VP, I64, VP, I64, I64, I64, VP, I64, I64)(
        jitted.address("graphrnn_pgemm_f32"))
    return tile, jitted, pack, gemm


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
    tile, _jitted, pack, gemm = build()
    info = blas_info()
    if not info.found:
        raise SystemExit("numpy's BLAS has no ILP64 cblas_sgemm: nothing to compare with")
    sg = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, I64, I64, I64,
                          ctypes.c_float, VP, I64, VP, I64, ctypes.c_float, VP, I64)(info.sgemm)
    print(f"CPU {llvm.jit_module().host_cpu()[0]}; tile {tile}; median of 7 rounds; GFLOP/s\n")
    print("| shape (M x K @ op(W), K x N) | OpenBLAS, 1 thread | llvm_gemm, 1 thread | ratio |"
          " packing W (ms) |\n|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    shapes = [(B, K, N, trans) for H in (128, 256, 1024) for B in (32, 64)
              for (K, N, trans) in ((H, 4 * H, False), (4 * H, H, True))]
    # outside the loop: x @ W_x for all T·B rows (T = 50, B = 32) and the backward's dZ @ W_xᵀ
    shapes += [(1600, K, N, trans) for H in (256, 1024)
               for (K, N, trans) in ((H, 4 * H, False), (4 * H, H, True))]
    for (M, K, N, trans) in shapes:
        A = rng.standard_normal((M, K)).astype(np.float32)
        W = rng.standard_normal((N, K) if trans else (K, N)).astype(np.float32)
        Wp = np.empty(tile.packed_elems(K, N), np.float32)
        C1 = np.zeros((M, N), np.float32)
        C2 = np.zeros((M, N), np.float32)
        panels = tile.panels(N)
        do_pack = functools.partial(pack, K, N, W.ctypes.data, W.shape[1], int(trans),
                                    Wp.ctypes.data, 0, panels)
        # cblas row-major, beta 0: what the backend calls without the workspace
        blas = functools.partial(sg, 101, 111, 112 if trans else 111, M, N, K, 1.0,
                                 A.ctypes.data, K, W.ctypes.data, W.shape[1], 0.0,
                                 C1.ctypes.data, N)
        ours = functools.partial(gemm, M, K, A.ctypes.data, K, Wp.ctypes.data, 0, panels,
                                 N, C2.ctypes.data, N, 0)
        do_pack()
        blas()
        ours()
        ref = A.astype(np.float64) @ (W.T if trans else W)
        for name, got in (("sgemm", C1), ("llvm_gemm", C2)):
            err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
            if err > 1e-5:
                raise SystemExit(f"{name} disagrees with numpy: {err:.2e}")
        flop = 2.0 * M * K * N
        reps = max(3, int(3e8 / flop))
        g1 = flop / best(blas, reps) / 1e9
        g2 = flop / best(ours, reps) / 1e9
        tp = best(do_pack, 3, rounds=3) * 1e3
        opw = "Wᵀ" if trans else "W"
        print(f"| {M} x {K} @ {opw}, {K} x {N} | {g1:.0f} | {g2:.0f} | {g2 / g1:.2f} | "
              f"{tp:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
