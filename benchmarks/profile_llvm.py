"""Run LLVM training steps in a loop for ``perf record``, with the JIT's functions named.

    perf record -o perf.data .venv/bin/python benchmarks/profile_llvm.py lstm 1024 32 --seconds 15
    perf report -i perf.data --no-children --sort symbol

The module is compiled with internal linkage dropped (so every function has an address the
engine can report) and ``/tmp/perf-PID.map`` lists them with the process-wide packed-GEMM
helpers, which is where perf looks for names of JIT code (a function's size is taken as the
distance to the next one, so the last one's name may cover some unrelated code). The "where
the time goes" table of ARCHITECTURE.md comes from this script. It prints the median step time
at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphrnn  # noqa: E402
from codegen import llvm  # noqa: E402
from graphrnn.cells import ZOO, zoo_cell  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cell", choices=sorted(ZOO))
    ap.add_argument("hidden", type=int)
    ap.add_argument("batch", type=int)
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    jm = llvm.jit_module()
    real_jit, names = jm.jit, []

    def jit_named(ir_text: str, use_cache: bool = True):
        ir_text = ir_text.replace("define internal", "define")
        names.extend(re.findall(r'^define [^@]*@"?([\w.]+)"?\(', ir_text, re.M))
        return real_jit(ir_text, use_cache=False)

    jm.jit = jit_named
    H, B, T = args.hidden, args.batch, args.T
    cell = zoo_cell(args.cell, H, H, "float32")
    cc = graphrnn.compile(cell, backend="llvm", dtype="float32")
    addrs = sorted((cc.jitted.address(n), n) for n in set(names) if cc.jitted.address(n))
    # the packed GEMM and its packing live in a module of their own, shared by all cells
    helpers = [(a, f"graphrnn_{what}_f32") for what, a in
               zip(("pack", "pgemm"), llvm.packed_helpers("float32"))]
    addrs = sorted(addrs + helpers)
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as f:
        for (a, n), (nxt, _) in zip(addrs, addrs[1:] + [(addrs[-1][0] + 65536, "")]):
            f.write(f"{a:x} {nxt - a:x} {n}\n")
    params = cc.init_params(seed=0, scale=0.1)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((T, B, int(x.shape[1]))).astype("float32") for x in cell.inputs]
    h0 = [np.zeros((B, int(s.shape[1])), "float32") for s in cell.states]

    def step() -> None:
        ys, hT, res = cc.forward_train(params, xs, h0)
        cc.backward(params, res, [np.ones_like(ys[0])], [None] * len(hT))

    for _ in range(3):
        step()
    times = []
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"{args.cell} H={H} B={B} T={T}: median {1e3 * float(np.median(times)):.2f} ms "
          f"over {len(times)} training steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
