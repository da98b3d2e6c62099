"""Thread coexistence: one training step of an LSTM through ``graphrnn.torch`` inside a PyTorch
loop, under each way of sharing the cores with PyTorch's OpenMP pool, against graphrnn alone.

    .venv/bin/python benchmarks/bench_torch_threads.py                 # H=256, B=32, T=50
    .venv/bin/python benchmarks/bench_torch_threads.py --hidden 128 --rounds 7

Every option runs in a fresh process (OpenMP reads its environment once, at load), the
processes alternate round by round, and each prints the median step of its round; the table
shows the median over rounds and the spread. A step is: forward through the bridge, a mean
squared loss, backward, ``torch.optim.AdamW`` (the bridge options); forward_train + backward
(graphrnn alone, no torch imported).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (environment, policy passed to the child)
OPTIONS: dict[str, tuple[dict[str, str], str]] = {
    "graphrnn alone": ({}, "alone"),
    "bridge, no policy": ({}, "none"),
    "bridge, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, "none"),
    "bridge, torch.set_num_threads(1) for the whole run": ({}, "torch1"),
    "bridge, torch.set_num_threads(1) around each call": ({}, "around"),
    "bridge, graphrnn on 1 thread": ({}, "ours1"),
    "bridge, graphrnn on torch's OpenMP pool (default)": ({}, "omp"),
}


def child(policy: str, H: int, B: int, T: int, steps: int) -> None:
    import numpy as np

    import graphrnn
    from graphrnn.cells import lstm
    if policy == "alone":
        cc = graphrnn.compile(lstm(H, H), backend="llvm")
        params = cc.init_params(seed=0)
        x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)

        def step() -> None:
            ys, _hT, res = cc.forward_train(params, x)
            cc.backward(params, res, [2 * ys[0] / ys[0].size])
    else:
        import torch

        import graphrnn.threads as gthreads
        import graphrnn.torch as gt
        gthreads.set_policy({"omp": "openmp", "around": "shrink"}.get(policy, "own"),
                            threads=1 if policy == "ours1" else None)
        if policy == "torch1":
            torch.set_num_threads(1)
        torch.manual_seed(0)
        mod = gt.Module("lstm", H, H)
        opt = torch.optim.AdamW(mod.parameters(), lr=1e-3)
        x = torch.randn(T, B, H)

        def step() -> None:
            opt.zero_grad()
            ys, _ = mod(x)
            loss = (ys ** 2).mean()
            loss.backward()
            opt.step()
    for _ in range(5):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps(statistics.median(times) * 1e3))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated option numbers (0-based)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.hidden, args.batch, args.T, args.steps)
        return 0
    names = list(OPTIONS)
    if args.only:
        names = [names[int(i)] for i in args.only.split(",")]
    results: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            env_extra, policy = OPTIONS[name]
            env = {**os.environ, **env_extra, "PYTHONPATH": str(ROOT)}
            out = subprocess.run([sys.executable, __file__, "--child", policy,
                                  "--hidden", str(args.hidden), "--batch", str(args.batch),
                                  "--T", str(args.T), "--steps", str(args.steps)],
                                 env=env, capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    alone = statistics.median(results[names[0]]) if results.get(names[0]) else float("nan")
    print(f"LSTM H={args.hidden}, B={args.batch}, T={args.T}, float32; median of {args.rounds}"
          f" fresh processes (each: median of {args.steps} steps); {os.cpu_count()} cores\n")
    print("| option | ms per step (min-max) | / graphrnn alone |")
    print("|---|---|---|")
    for name in names:
        ts = results[name]
        if not ts:
            continue
        med = statistics.median(ts)
        print(f"| {name} | {med:.1f} ({min(ts):.1f}-{max(ts):.1f}) | {med / alone:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
