"""A/B timing of one training step (forward_train + backward) between two source trees.

    .venv/bin/python benchmarks/bench_step_ab.py OLD_TREE NEW_TREE [--rounds 8] [--threads 1]
        [--cell lstm | --cell examples/layer_norm_lstm.eq] [--hidden 256] [--batch 32]

``OLD_TREE`` and ``NEW_TREE`` are checkouts (e.g. ``git archive REV | tar -x -C /tmp/old``).
Each round runs one fresh process per tree, alternating, each timing 150 steps (after 20 of
warm-up) of the LSTM at H = I = 256, B = 32, T = 50, llvm, float32 (``--cell FILE.eq``: an
equations cell instead, every ``input``/``state`` header size set to ``--hidden``). Printed
per round and as the median over rounds: the median step's CPU time of the calling thread
(with ``--threads 1`` and ``OPENBLAS_NUM_THREADS=1`` that is all of the step's work, and it
hardly moves when other processes share the cores) and its wall time. ``--threads 0`` keeps
the default threads: wall time is then the number to read, on a quiet machine only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import re, statistics, sys, time
import numpy as np
import graphrnn
from graphrnn.cells import zoo_cell
H, B, T, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if sys.argv[5] == "lstm":
    cell = zoo_cell("lstm", H, H, "float32")
else:   # an equations file, its header sizes set to H
    from frontends.equations import cell_from_equations
    text = re.sub(r"(?m)^((?:input|state) .*)$",
                  lambda m: re.sub(r":\s*\d+", f": {H}", m.group(1)), open(sys.argv[5]).read())
    cell = cell_from_equations(text, dtype="float32")
cc = graphrnn.compile(cell, backend="llvm", dtype="float32", threads=threads or None)
params = cc.init_params(seed=0)
rng = np.random.default_rng(0)
x = rng.standard_normal((T, B, int(cell.inputs[0].shape[1]))).astype(np.float32)
dy = rng.standard_normal((T, B, int(cell.outputs[0].shape[1]))).astype(np.float32)
cpu, wall = [], []
for i in range(170):
    t0, c0 = time.perf_counter(), time.thread_time()
    ys, hT, res = cc.forward_train(params, x)   # res lives on into the next step, as in a loop
    g = cc.backward(params, res, [dy])
    c1, t1 = time.thread_time(), time.perf_counter()
    if i >= 20:
        cpu.append(c1 - c0)
        wall.append(t1 - t0)
print(statistics.median(cpu) * 1e3, statistics.median(wall) * 1e3)
"""


def run(tree: str, args: argparse.Namespace) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=tree)
    if args.threads:
        env["OPENBLAS_NUM_THREADS"] = "1"
    cell = args.cell if args.cell == "lstm" else os.path.abspath(args.cell)
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.hidden), str(args.batch),
                          str(args.T), str(args.threads), cell], env=env, cwd=tree, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="0: the default thread count")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--cell", default="lstm", help="lstm (the zoo's) or an equations file")
    args = ap.parse_args()
    res: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
            res[name].append(run(getattr(args, name), args))
        print(f"round {r + 1}: " + "  ".join(
            f"{n} cpu {res[n][-1][0]:6.2f} ms wall {res[n][-1][1]:6.2f} ms" for n in res),
            flush=True)
    for n in res:
        print(f"median {n}: cpu {statistics.median(c for c, _ in res[n]):.2f} ms, "
              f"wall {statistics.median(w for _, w in res[n]):.2f} ms")


if __name__ == "__main__":
    main()
