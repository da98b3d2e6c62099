"""Compile time of a zoo cell, each figure from its own fresh interpreter, kinds alternated.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_compile.py --cell lstm --hidden 256 \
        --runs 9
    # the same against another source tree (an older commit: git archive C | tar -x -C DIR)
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_compile.py --root DIR

Kinds, one fresh process each per round, in this order every round:

* ``cold``: ``graphrnn.compile(cell, backend=..., cache=False)``: the optimizer, IR emission
  and LLVM, with every import they bring (networkx, llvmlite), nothing from a disk cache;
* ``new``: a cell this cache has not seen (hidden size H+1, H+2, ... one per round) with the
  disk cache on: the optimizer and LLVM run for the cell, the packed-GEMM helpers (the same for
  every cell of a dtype on this CPU) come from the cache, as for a user's second cell;
* ``disk``: the same call with a disk cache that an earlier process filled (the Program and the
  machine code are read back);
* ``memory``: the second compile of the same cell in one process (the first one filled the
  caches).

Each figure is the ``compile()`` call alone, after ``import graphrnn`` (reported separately as
``import``: sympy and numpy) and building the cell. Python's bytecode cache is used as a user's
installation would (``PYTHONDONTWRITEBYTECODE`` is removed from the children's environment;
``--no-bytecode`` keeps it, and every import then compiles its source). Medians and ranges over
the rounds; the machine's load is printed too: on a shared machine run it when it is quiet and
compare trees side by side (``--root`` twice in one run is not supported: run the script once
per tree, alternately).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
import graphrnn
from graphrnn.cells import zoo_cell
t1 = time.perf_counter()
name, h, kind, backend = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cell = zoo_cell(name, h, h, "float32")
cache = kind != "cold"
t2 = time.perf_counter()
cc = graphrnn.compile(cell, backend=backend, dtype="float32", cache=cache)
t3 = time.perf_counter()
if kind == "memory":
    cc = graphrnn.compile(cell, backend=backend, dtype="float32", cache=cache)
    t2, t3 = t3, time.perf_counter()
s = dict(getattr(cc, "compile_seconds", {"program": cc.program_seconds}))
s.update(total=t3 - t2, imports=t1 - t0,
         program_hit=float(getattr(cc, "program_cache_hit", False)),
         networkx=float("networkx" in sys.modules))
print(json.dumps(s))
"""

KINDS = ("cold", "new", "disk", "memory")


def run_one(root: str, env: dict[str, str], cell: str, h: int, kind: str,
            backend: str) -> dict[str, float]:
    res = subprocess.run([sys.executable, "-c", SNIPPET, cell, str(h), kind, backend],
                         capture_output=True, text=True, env=env, cwd=root)
    if res.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--backend", default="llvm")
    ap.add_argument("--runs", type=int, default=7, help="rounds (one process per kind each)")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]),
                    help="the source tree to measure (default: this one)")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE: every import compiles its source")
    ap.add_argument("--json", help="also write the raw runs here")
    args = ap.parse_args()
    root = str(Path(args.root).resolve())
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, GRAPHRNN_CACHE_DIR=d, PYTHONPATH=root)
        env.pop("GRAPHRNN_DEBUG", None)
        if not args.no_bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        # fill the disk cache (and the bytecode cache), not counted
        run_one(root, env, args.cell, args.hidden, "disk", args.backend)
        for r in range(args.runs):
            for kind in KINDS:
                h = args.hidden + 1 + r if kind == "new" else args.hidden
                rows[kind].append(run_one(root, env, args.cell, h, kind, args.backend))
    load = os.getloadavg()
    print(f"{args.cell} H={args.hidden} {args.backend} float32, tree {root}, {args.runs} rounds, "
          f"bytecode cache {'off' if args.no_bytecode else 'on'}, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    cols = ["total", "program", "emit", "llvm"]
    print("| kind | compile s: median (min-max) | optimizer s | emit s | LLVM s | Program hit "
          "| networkx loaded | import graphrnn s |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        med = {c: statistics.median(r.get(c, float("nan")) for r in rows[kind]) for c in cols}
        tot = [r["total"] for r in rows[kind]]
        hit = statistics.mean(r["program_hit"] for r in rows[kind])
        nx = statistics.mean(r["networkx"] for r in rows[kind])
        imp = statistics.median(r["imports"] for r in rows[kind])
        print(f"| {kind} | {med['total']:.3f} ({min(tot):.3f}-{max(tot):.3f}) | "
              f"{med['program']:.3f} | {med['emit']:.3f} | {med['llvm']:.3f} | {hit:.0%} | "
              f"{nx:.0%} | {imp:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
