"""What the JAX bridge (``graphrnn.jax``) costs on top of graphrnn alone, and whether XLA's
thread pool gets in the way of graphrnn's threads.

    .venv/bin/python benchmarks/bench_jax_bridge.py                 # LSTM H=256 B=32 T=50
    .venv/bin/python benchmarks/bench_jax_bridge.py --cell gru --hidden 128 --rounds 40
    .venv/bin/python benchmarks/bench_jax_bridge.py --processes 4   # the XLA pool policies

In one process, interleaved round by round (medians of ``--rounds``):

- ``callback``: an empty ``jax.pure_callback`` in a jitted function (an array of 4 floats in and
  out): the fixed price of leaving XLA for Python and back;
- ``train``: graphrnn alone (``forward_train`` + ``backward`` of <ys, dy>) against the bridge
  (``jax.jit(jax.grad(...))`` of the same loss), and ``infer``: ``forward`` against
  ``jax.jit(f)``.

``--processes N`` runs that N times in fresh interpreters for each XLA thread policy (XLA's
default pool, and ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``),
alternating policies, and prints the medians of the per-process medians. Each time is given as
wall time and as the CPU time of the whole process (``... cpu``).
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POLICIES = {"xla default pool": "",
            "xla 1 thread": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def measure(cell: str, H: int, B: int, T: int, rounds: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    import graphrnn
    import graphrnn.jax as gjax
    from graphrnn.cells import zoo_cell

    cc = graphrnn.compile(zoo_cell(cell, H, H, "float32"), backend="llvm", dtype="float32")
    params = cc.init_params(seed=0, scale=0.1)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((T, B, H)) * 0.5).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    f = gjax.rnn(cc)
    jp = {k: jnp.asarray(v) for k, v in params.items()}
    jx, jdy = jnp.asarray(x), jnp.asarray(dy)
    b_inf = jax.jit(lambda p, xx: f(p, xx)[0][0])
    b_grad = jax.jit(jax.grad(lambda p, xx, d: jnp.vdot(f(p, xx)[0][0], d)))
    small = jnp.ones(4, jnp.float32)
    empty = jax.jit(lambda v: jax.pure_callback(lambda a: np.asarray(a), jax.ShapeDtypeStruct(
        (4,), jnp.float32), v, vmap_method="expand_dims"))

    def alone_train() -> None:
        _, _, res = cc.forward_train(params, x)
        cc.backward(params, res, [dy])

    fns = {"callback": lambda: empty(small).block_until_ready(),
           "train graphrnn": alone_train,
           "train bridge": lambda: jax.block_until_ready(b_grad(jp, jx, jdy)),
           "infer graphrnn": lambda: cc.forward(params, x),
           "infer bridge": lambda: b_inf(jp, jx).block_until_ready()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    names = list(fns)
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
    # wall time, and the CPU time of the whole process (every thread: graphrnn's, XLA's): on
    # a shared machine wall time is mostly other people's load, CPU time is what we burn
    return {**{k: statistics.median(v) * 1e3 for k, v in times.items()},
            **{f"{k} cpu": statistics.median(v) * 1e3 for k, v in cpu.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--processes", type=int, default=0,
                    help="fresh processes per XLA thread policy (0: this process only)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if not a.processes:
        ms = measure(a.cell, a.hidden, a.batch, a.T, a.rounds)
        if a.json:
            print(json.dumps(ms))
            return 0
        print(f"{a.cell} H={a.hidden} B={a.batch} T={a.T}, medians of {a.rounds} rounds "
              f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})")
        for k, v in ms.items():
            print(f"  {k:<16} {v:9.3f} ms")
        for mode in ("train", "infer"):
            print(f"  {mode}: bridge / graphrnn alone = "
                  f"{ms[mode + ' bridge'] / ms[mode + ' graphrnn']:.3f} (wall), "
                  f"{ms[mode + ' bridge cpu'] / ms[mode + ' graphrnn cpu']:.3f} (process CPU)")
        return 0
    per: dict[str, list[dict[str, float]]] = {p: [] for p in POLICIES}
    args = [sys.executable, __file__, "--json", "--cell", a.cell, "--hidden", str(a.hidden),
            "--batch", str(a.batch), "--T", str(a.T), "--rounds", str(a.rounds)]
    for _ in range(a.processes):
        for policy, flags in POLICIES.items():
            env = dict(os.environ)
            env.pop("XLA_FLAGS", None)
            if flags:
                env["XLA_FLAGS"] = flags
            out = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
            per[policy].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{a.cell} H={a.hidden} B={a.batch} T={a.T}: medians over {a.processes} processes "
          f"per policy (each the median of {a.rounds} interleaved rounds), ms")
    keys = list(per[next(iter(POLICIES))][0])
    print("| XLA policy | " + " | ".join(keys) + " | train bridge/alone | infer bridge/alone |")
    print("|---" * (len(keys) + 3) + "|")
    for policy, runs in per.items():
        med = {k: statistics.median(r[k] for r in runs) for k in keys}
        ratio = {m + c: statistics.median(r[f"{m} bridge{c}"] / r[f"{m} graphrnn{c}"]
                                          for r in runs)
                 for m in ("train", "infer") for c in ("", " cpu")}
        print(f"| {policy} | " + " | ".join(f"{med[k]:.3f}" for k in keys)
              + f" | {ratio['train']:.3f} (CPU {ratio['train cpu']:.3f}) | "
              f"{ratio['infer']:.3f} (CPU {ratio['infer cpu']:.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
