"""Microbenchmark of the LLVM backend's fused elementwise kernels, one thread.

    PYTHONPATH=. python benchmarks/bench_kernels.py [--rows 64] [--cols 4096] [--reps 200]

Prints nanoseconds per element for one-op kernels (sigmoid, tanh, exp, log, softplus) and for an
LSTM cell's elementwise part, in float32 and float64: the best of several timed batches, timed
with the calling thread's CPU time (``time.thread_time``), so that other processes on a shared
machine disturb the numbers as little as possible (a loaded machine still shares caches).
"""

from __future__ import annotations

import argparse
import ctypes
import time

import numpy as np
from llvmlite import ir

from codegen import llvm_jit
from codegen.llvm_kernels import emit_kernel
from graphrnn.ops import Ops
from graphrnn.scalar import ScalarProgram

I64, VP = ctypes.c_int64, ctypes.c_void_p

# inputs zi zf zg zo c; outputs h' and c'
LSTM = ScalarProgram(5, (
    (Ops.SIGMOID, (0,), None), (Ops.SIGMOID, (1,), None), (Ops.TANH, (2,), None),
    (Ops.SIGMOID, (3,), None), (Ops.MUL, (6, 4), None), (Ops.MUL, (5, 7), None),
    (Ops.ADD, (9, 10), None), (Ops.TANH, (11,), None), (Ops.MUL, (8, 12), None)), (13, 11))


def one_op(op: Ops) -> ScalarProgram:
    return ScalarProgram(1, ((op, (0,), None),), (1,))


def time_kernel(prog: ScalarProgram, dtype: str, rows: int, cols: int, reps: int) -> float:
    """Best-of-7 nanoseconds per element of ``prog`` over a (rows, cols) domain."""
    m = ir.Module("bench")
    emit_kernel(m, "k", prog, dtype)
    j = llvm_jit.jit(str(m), use_cache=False)
    n_ptr = prog.n_inputs + len(prog.outputs)
    fn = ctypes.CFUNCTYPE(None, I64, I64, *([VP, I64] * n_ptr))(j.address("k"))
    rng = np.random.default_rng(0)
    ins = [rng.uniform(-12, 12, (rows, cols)).astype(dtype) for _ in range(prog.n_inputs)]
    outs = [np.empty((rows, cols), dtype) for _ in prog.outputs]
    args: list[int] = []
    for a in ins + outs:
        args += [a.ctypes.data, cols]
    fn(rows, cols, *args)
    best = float("inf")
    for _ in range(7):
        t0 = time.thread_time()
        for _ in range(reps):
            fn(rows, cols, *args)
        best = min(best, (time.thread_time() - t0) / reps)
    del j
    return best / (rows * cols) * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=200)
    a = ap.parse_args()
    cases = [(op.name.lower(), one_op(op)) for op in
             (Ops.SIGMOID, Ops.TANH, Ops.EXP, Ops.LOG, Ops.SOFTPLUS)] + [("lstm", LSTM)]
    print(f"ns/element, ({a.rows}, {a.cols}) domain, best of 7 x {a.reps} calls, one thread, "
          "CPU time")
    print(f"{'kernel':<10}{'float32':>10}{'float64':>10}")
    for name, prog in cases:
        t = [time_kernel(prog, dt, a.rows, a.cols, a.reps) for dt in ("float32", "float64")]
        print(f"{name:<10}{t[0]:>10.3f}{t[1]:>10.3f}")


if __name__ == "__main__":
    main()
