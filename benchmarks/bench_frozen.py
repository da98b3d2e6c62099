"""What a frozen reservoir saves: the echo-state network of ``examples/cells/esn.eq`` at a
realistic size, its training step (forward_train + backward) with the reservoir frozen (the cell
as written) and with every parameter trained (``cell.with_frozen([])``), on one backend:

    .venv/bin/python benchmarks/bench_frozen.py                 # llvm, H=1024, I=64, T=50, B=32
    .venv/bin/python benchmarks/bench_frozen.py --backend program --hidden 512
    .venv/bin/python benchmarks/bench_frozen.py --only frozen    # one alone in its process

The two are timed in interleaved rounds (one call of each per round, the order alternating), and
the medians and their ratio are printed with the Program's GEMM counts. The frozen W (H x H) and
W_in (H x I) lose their weight-gradient GEMMs over T·B rows after the backward loop.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphrnn  # noqa: E402
from graphrnn.equations import parse_file  # noqa: E402
from graphrnn.program import Gemm  # noqa: E402

ESN = Path(__file__).resolve().parents[1] / "examples" / "cells" / "esn.eq"


def gemms(cc: graphrnn.CompiledCell) -> int:
    p = graphrnn.pipeline.build_program(cc.cell, cc.dtype)
    return sum(isinstance(s, Gemm) for sw in (p.forward, p.backward)
               for _ph, steps in sw.phases() for s in steps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="llvm")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--input", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--only", choices=("frozen", "trained"),
                    help="time one of the two alone in this process")
    a = ap.parse_args(argv)
    text = ESN.read_text().replace("input x: 16", f"input x: {a.input}")
    text = text.replace("state h: 32", f"state h: {a.hidden}")
    text = text.replace("W_in: 32 x 16", f"W_in: {a.hidden} x {a.input}")
    text = text.replace("W: 32 x 32", f"W: {a.hidden} x {a.hidden}")
    text = text.replace("b: 32 frozen", f"b: {a.hidden} frozen")
    text = text.replace("W_out: 4 x 32", f"W_out: 4 x {a.hidden}")
    path = Path("/tmp") / f"bench_esn_{a.hidden}.eq"
    path.write_text(text)
    frozen = parse_file(path)
    cells = {"frozen": frozen, "all trained": frozen.with_frozen([])}
    if a.only:
        cells = {k: v for k, v in cells.items() if k.endswith(a.only)}
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((a.steps, a.batch, a.input)).astype(np.float32)]
    compiled = {k: graphrnn.compile(c, backend=a.backend) for k, c in cells.items()}
    params = graphrnn.init_params(frozen, seed=0, scale=0.5 / np.sqrt(a.hidden))
    dy = [rng.standard_normal((a.steps, a.batch, 4)).astype(np.float32)]

    def step(cc: graphrnn.CompiledCell) -> float:
        t0 = time.perf_counter()
        _, _, res = cc.forward_train(params, xs)
        cc.backward(params, res, dy)
        return time.perf_counter() - t0

    for cc in compiled.values():   # warm-up: compile, first-call allocations
        step(cc)
    times: dict[str, list[float]] = {k: [] for k in compiled}
    for r in range(a.rounds):
        order = list(compiled) if r % 2 == 0 else list(compiled)[::-1]
        for k in order:
            times[k].append(step(compiled[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"ESN {a.backend} float32 H={a.hidden} I={a.input} T={a.steps} B={a.batch}, "
          f"{a.rounds} interleaved rounds (median, min-max)")
    for k, v in times.items():
        print(f"  {k:12s} {med[k] * 1e3:8.2f} ms  ({min(v) * 1e3:.2f}-{max(v) * 1e3:.2f})  "
              f"{gemms(compiled[k])} GEMMs in the Program")
    if len(med) == 2:
        print(f"  all trained / frozen: {med['all trained'] / med['frozen']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
