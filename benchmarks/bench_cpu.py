"""CPU benchmark: graphrnn's ``llvm`` backend against ``ref``, PyTorch and (if installed) JAX.

    .venv/bin/python benchmarks/bench_cpu.py                  # the full grid (slow: minutes)
    .venv/bin/python benchmarks/bench_cpu.py --quick          # H=128, B=32, few repetitions
    .venv/bin/python benchmarks/bench_cpu.py --cells lstm,mut1 --hidden 256 --batch 64
    .venv/bin/python benchmarks/bench_cpu.py --cells lstm --hidden 256 --compile-runs 10
                                                  # compile time only, in fresh processes
    .venv/bin/python benchmarks/bench_cpu.py --alone 5    # also each implementation alone

For each cell (LSTM, the lectures' GRU, peephole LSTM, MUT1), T=50, B in {32, 64} and
H = I in {128, 256, 1024}, float32, it times

- ``train``: forward keeping residuals + BPTT to every parameter gradient, and
- ``infer``: the forward over the whole sequence,

for graphrnn ``llvm``, graphrnn ``ref`` (only at H=128, B=32: it is an interpreter),
``torch.nn.LSTM``/``torch.nn.GRU`` (LSTM and GRU rows; nn.GRU computes PyTorch's GRU, which
costs the same GEMMs as the lectures' GRU), the same cell written in PyTorch eagerly and under
TorchScript (``torch.jit.script`` of the whole loop), and JAX ``jit`` + ``lax.scan`` when JAX is
installed (``pip install jax``; not a dependency of graphrnn). Before timing, each PyTorch
loop and JAX version is checked against graphrnn on the same weights (outputs and every
parameter gradient; a line ``check ... ok`` per configuration; one that disagrees is left out).
Implementations are interleaved round by round in one process; each cell shows the
median milliseconds and the spread (min-max over rounds), the achieved GFLOP/s (GEMM FLOPs of
the cell's math: forward 2·T·B·K·N per matrix product, training three times that) and its
fraction of this machine's sgemm peak, measured in the same run with numpy's BLAS (the one
graphrnn calls). Compile times (cold: no cache; warm: from the disk cache) are listed per cell.
The output is a markdown table.

Interleaved figures flatter whoever runs after a quiet neighbour: thread pools keep spinning
after a call (OpenMP's, XLA's, graphrnn's own) and slow the next implementation. ``--alone R``
therefore also times each implementation alone, in a fresh process of its own that builds and
runs nothing else, R alternating rounds per configuration, and judges the targets on those
figures too (the table gains "alone ms" and "alone / llvm alone").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CELLS = ("lstm", "gru", "peephole_lstm", "mut1")
LABEL = {"lstm": "LSTM", "gru": "GRU (lecture)", "peephole_lstm": "peephole LSTM",
         "mut1": "MUT1"}


# ---- timing ----

def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, budget_s: float
                ) -> dict[str, list[float]]:
    """Run every fn once per round, in a rotating order, until rounds or the time budget is
    spent (at least 3 rounds). Returns seconds per call, by name."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    if not names:
        return times
    for n in names:          # warm-up: TorchScript's profiling executor optimizes on run 2-3
        for _ in range(3):
            fns[n]()
    t_start = time.perf_counter()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
        if r >= 2 and time.perf_counter() - t_start > budget_s:
            break
    return times


def sgemm_peak(reps: int = 9) -> float:
    """GFLOP/s of float32 n x n x n products (n = 1024, 2048) through numpy's BLAS, the best
    of reps: on a shared machine the best run is the closest to the hardware's peak."""
    best = 0.0
    rng = np.random.default_rng(0)
    for n in (1024, 2048):
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        c = np.empty((n, n), np.float32)
        np.matmul(a, b, out=c)
        for _ in range(reps):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def gemm_flops(cell: str, T: int, B: int, H: int) -> float:
    """Forward GEMM FLOPs of the cell's math (I = H)."""
    per_row = {"lstm": 2 * (2 * H) * 4 * H, "peephole_lstm": 2 * (2 * H) * 4 * H,
               "gru": 2 * (2 * H) * 2 * H + 2 * (2 * H) * H,
               "mut1": 2 * (H * H) * 2 + 2 * H * H * 2}[cell]
    return float(T * B * per_row)


# ---- PyTorch versions of the cells ----

def torch_loops(torch: Any) -> dict[str, Callable[..., Any]]:

    Tensor = torch.Tensor

    def lstm(x: Tensor, h: Tensor, c: Tensor, p: dict[str, Tensor]) -> Tensor:
        ys: list[Tensor] = []
        for t in range(x.size(0)):
            z = x[t] @ p["W_x"] + h @ p["W_h"] + p["b"]
            i, f, g, o = z.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys)

    def peephole_lstm(x: Tensor, h: Tensor, c: Tensor, p: dict[str, Tensor]) -> Tensor:
        ys: list[Tensor] = []
        for t in range(x.size(0)):
            z = x[t] @ p["W_x"] + h @ p["W_h"] + p["b"]
            zi, zf, zg, zo = z.chunk(4, 1)
            i = torch.sigmoid(zi + p["p_i"] * c)
            f = torch.sigmoid(zf + p["p_f"] * c)
            c = f * c + i * torch.tanh(zg)
            h = torch.sigmoid(zo + p["p_o"] * c) * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys)

    def gru(x: Tensor, h: Tensor, c: Tensor, p: dict[str, Tensor]) -> Tensor:
        ys: list[Tensor] = []
        H = h.size(1)
        for t in range(x.size(0)):
            zr = torch.sigmoid(torch.cat([h, x[t]], 1) @ p["W_g"] + p["b_g"])
            z, r = zr[:, :H], zr[:, H:]
            hc = torch.tanh(torch.cat([r * h, x[t]], 1) @ p["W_c"] + p["b_c"])
            h = (1 - z) * h + z * hc
            ys.append(h)
        return torch.stack(ys)

    def mut1(x: Tensor, h: Tensor, c: Tensor, p: dict[str, Tensor]) -> Tensor:
        ys: list[Tensor] = []
        for t in range(x.size(0)):
            z = torch.sigmoid(x[t] @ p["W_xz"] + p["b_z"])
            r = torch.sigmoid(x[t] @ p["W_xr"] + h @ p["W_hr"] + p["b_r"])
            h = torch.tanh((r * h) @ p["W_hh"] + torch.tanh(x[t]) + p["b_h"]) * z + h * (1 - z)
            ys.append(h)
        return torch.stack(ys)

    return {"lstm": lstm, "peephole_lstm": peephole_lstm, "gru": gru, "mut1": mut1}


def jax_loop(cell: str) -> Callable[..., Any] | None:
    """The cell in JAX: ``run(x, h, c, params) -> ys`` over the whole sequence with
    ``lax.scan`` (to be wrapped in ``jax.jit``), the same equations and parameter names as
    graphrnn's zoo cell; None when JAX is not installed."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    sig, tanh = jax.nn.sigmoid, jnp.tanh

    def step(carry: Any, xt: Any, p: dict[str, Any]) -> Any:
        h, c = carry
        if cell in ("lstm", "peephole_lstm"):
            z = xt @ p["W_x"] + h @ p["W_h"] + p["b"]
            zi, zf, zg, zo = jnp.split(z, 4, axis=1)
            if cell == "lstm":
                c = sig(zf) * c + sig(zi) * tanh(zg)
                h = sig(zo) * tanh(c)
            else:
                i, f = sig(zi + p["p_i"] * c), sig(zf + p["p_f"] * c)
                c = f * c + i * tanh(zg)
                h = sig(zo + p["p_o"] * c) * tanh(c)
        elif cell == "gru":
            H = h.shape[1]
            zr = sig(jnp.concatenate([h, xt], 1) @ p["W_g"] + p["b_g"])
            z, r = zr[:, :H], zr[:, H:]
            hc = tanh(jnp.concatenate([r * h, xt], 1) @ p["W_c"] + p["b_c"])
            h = (1 - z) * h + z * hc
        else:
            z = sig(xt @ p["W_xz"] + p["b_z"])
            r = sig(xt @ p["W_xr"] + h @ p["W_hr"] + p["b_r"])
            h = tanh((r * h) @ p["W_hh"] + tanh(xt) + p["b_h"]) * z + h * (1 - z)
        return (h, c), h

    def run(x: Any, h: Any, c: Any, p: dict[str, Any]) -> Any:
        _, ys = jax.lax.scan(lambda carry, xt: step(carry, xt, p), (h, c), x)
        return ys

    return run


# ---- checking the other implementations compute the same thing ----

def check_against(label: str, cc: Any, params: dict[str, np.ndarray], x: np.ndarray,
                  dy: np.ndarray, ys: np.ndarray, grads: dict[str, np.ndarray],
                  rtol: float = 2e-3) -> bool:
    """Does another implementation's output sequence and parameter gradients (of <ys, dy>,
    h0 = 0) equal graphrnn's on the same weights? Errors are relative to each array's largest
    value (float32, different summation orders over T steps). Prints one line either way; an
    implementation that disagrees is left out of the timings."""
    ref_ys = cc.forward(params, x)[0][0]
    _, _, res = cc.forward_train(params, x)
    ref_g = cc.backward(params, res, [dy]).params

    def err(a: np.ndarray, b: np.ndarray) -> float:
        if a.shape != b.shape:
            return float("inf")
        return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))

    e_y = err(np.asarray(ys, np.float32), ref_ys)
    missing = sorted(set(ref_g) ^ set(grads))
    e_g = max((err(np.asarray(grads[k], np.float32), ref_g[k]) for k in ref_g if k in grads),
              default=0.0)
    ok = e_y <= rtol and e_g <= rtol and not missing
    print(f"<!-- check {label} vs graphrnn llvm: outputs max rel err {e_y:.1e}, gradients "
          f"{e_g:.1e}{', missing ' + str(missing) if missing else ''}: "
          f"{'ok' if ok else 'MISMATCH, left out of the timings'} -->", flush=True)
    return ok


def match_threads(n: int = 0) -> int:
    """One thread count for every implementation: numpy's OpenBLAS (graphrnn's GEMMs; n = 0
    keeps its count, OPENBLAS_NUM_THREADS), torch, and XLA (single-threaded when n is 1; set
    before jax is first imported). torch's OpenMP pool left at 2 threads while the machine was
    busy measured 100x slower (2 s for an H=128 LSTM training step, 20 ms on 1 thread)."""
    from codegen.llvm_blas import blas_threads, set_blas_threads
    if n:
        set_blas_threads(n)
    n = blas_threads()
    if n == 1 and "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass
    return n


# ---- compile time in fresh processes ----

_COMPILE_SNIPPET = """
import sys, time
import graphrnn
from graphrnn.cells import zoo_cell
cell = zoo_cell(sys.argv[1], int(sys.argv[2]), int(sys.argv[2]), "float32")
t0 = time.perf_counter()
cc = graphrnn.compile(cell, backend="llvm", dtype="float32", cache=sys.argv[3] == "warm")
s = cc.compile_seconds
print(time.perf_counter() - t0, s["program"], s["emit"], s["llvm"], s["cache_hit"])
"""


def fresh_process_compiles(cell: str, H: int, runs: int) -> dict[str, list[list[float]]]:
    """The first ``graphrnn.compile(..., backend="llvm")`` of a process, after ``import
    graphrnn``, in ``runs`` fresh interpreters each: ``cold`` without the disk cache, ``warm``
    from a cache the first warm run fills (that run is not counted). Per run: total, then the
    optimizer (with its imports), IR emission and LLVM (or cache load) seconds."""
    import subprocess
    out: dict[str, list[list[float]]] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, GRAPHRNN_CACHE_DIR=d)
        root = str(Path(__file__).resolve().parents[1])
        for r in range(runs + 1):
            for kind in ("cold", "warm"):
                if kind == "cold" and r == runs:
                    continue
                res = subprocess.run([sys.executable, "-c", _COMPILE_SNIPPET, cell, str(H), kind],
                                     capture_output=True, text=True, env=env, cwd=root,
                                     check=True)
                vals = [float(v) for v in res.stdout.split()]
                if kind == "cold" or r > 0:
                    out[kind].append(vals)
    return out


def compile_table(cells: list[str], hs: list[int], runs: int) -> None:
    print("| cell | H | compile | total s: median (min-max) | optimizer s | emit s | LLVM s |")
    print("|---|---|---|---|---|---|---|")
    for cell in cells:
        for H in hs:
            for kind, rows in fresh_process_compiles(cell, H, runs).items():
                med = [statistics.median(col) for col in zip(*rows)]
                tot = [r[0] for r in rows]
                print(f"| {LABEL[cell]} | {H} | {kind} (fresh process, n={len(rows)}) | "
                      f"{med[0]:.3f} ({min(tot):.3f}-{max(tot):.3f}) | {med[1]:.3f} | "
                      f"{med[2]:.3f} | {med[3]:.3f} |", flush=True)


# ---- one configuration ----

def add_torch_bridge(fns: dict[str, dict[str, Callable[[], Any]]], torch: Any, cc: Any,
                     params: dict[str, np.ndarray], x: np.ndarray, dy: np.ndarray) -> None:
    """The row "graphrnn via torch bridge": the same compiled cell called as a PyTorch op
    (``graphrnn.torch.run``: the custom op, autograd, zero-copy views, the thread policy)."""
    import graphrnn.torch as gt
    tp = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params.items()}
    tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)

    def infer() -> Any:
        with torch.no_grad():
            return gt.run(cc, tp, tx)

    def train() -> Any:
        for v in tp.values():
            v.grad = None
        gt.run(cc, tp, tx)[0][0].backward(tdy)
    fns.get("infer", {})["graphrnn via torch bridge"] = infer
    fns.get("train", {})["graphrnn via torch bridge"] = train


def bench_config(cell: str, T: int, B: int, H: int, rounds: int, budget: float,
                 with_ref: bool, modes: list[str], only: str | None = None
                 ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Time every implementation of one configuration, interleaved; with ``only``, build and
    time that implementation alone (no other one runs in this process, not even the
    cross-checks, which the interleaved run makes)."""
    import graphrnn

    def want(name: str) -> bool:
        return only is None or name == only
    from graphrnn.cells import zoo_cell

    c = zoo_cell(cell, H, H, "float32")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32) * 0.5
    dy = rng.standard_normal((T, B, H)).astype(np.float32)

    # compile: cold (a fresh cache directory) and warm (the same directory again)
    compile_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        old = os.environ.get("GRAPHRNN_CACHE_DIR")
        os.environ["GRAPHRNN_CACHE_DIR"] = d
        try:
            t0 = time.perf_counter()
            cc = graphrnn.compile(c, backend="llvm", dtype="float32")
            compile_s["cold"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            graphrnn.compile(c, backend="llvm", dtype="float32")
            compile_s["warm"] = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("GRAPHRNN_CACHE_DIR", None)
            else:
                os.environ["GRAPHRNN_CACHE_DIR"] = old
    params = cc.init_params(seed=0, scale=0.1)
    fns: dict[str, dict[str, Callable[[], Any]]] = {m: {} for m in modes}

    def add_graphrnn(name: str, comp: Any) -> None:
        def infer() -> Any:
            return comp.forward(params, x)

        def train() -> Any:
            ys, hT, res = comp.forward_train(params, x)
            return comp.backward(params, res, [dy])
        fns.get("infer", {})[name] = infer
        fns.get("train", {})[name] = train

    if want("graphrnn llvm"):
        add_graphrnn("graphrnn llvm", cc)
    if with_ref and want("graphrnn ref"):
        add_graphrnn("graphrnn ref", graphrnn.compile(c, backend="ref", dtype="float32"))

    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.manual_seed(0)
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        h0 = torch.zeros(B, H)
        nn_name = f"torch.nn.{'LSTM' if cell == 'lstm' else 'GRU'}"
        if cell in ("lstm", "gru") and want(nn_name):
            mod = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(H, H)

            def nn_infer() -> Any:
                with torch.no_grad():
                    return mod(tx)

            def nn_train() -> Any:
                mod.zero_grad(set_to_none=True)
                y, _ = mod(tx)
                y.backward(tdy)
            fns.get("infer", {})[nn_name] = nn_infer
            fns.get("train", {})[nn_name] = nn_train
    if torch is not None and (want("torch eager") or want("TorchScript")):
        tparams = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params.items()}
        loops = torch_loops(torch)
        eager = loops[cell]
        same = True   # alone (``only``): the interleaved run made the cross-check
        if only is None:
            ty = eager(tx, h0, h0, tparams)
            ty.backward(tdy)
            same = check_against(f"PyTorch loop {LABEL[cell]} H={H} B={B}", cc, params, x, dy,
                                 ty.detach().numpy(),
                                 {k: v.grad.numpy() for k, v in tparams.items()})
        scripted = torch.jit.script(eager)
        routes = [r for r in (("torch eager", eager), ("TorchScript", scripted)) if want(r[0])]
        for label, fn in routes if same else ():
            def t_infer(fn: Any = fn) -> Any:
                with torch.no_grad():
                    return fn(tx, h0, h0, tparams)

            def t_train(fn: Any = fn) -> Any:
                for v in tparams.values():
                    v.grad = None
                fn(tx, h0, h0, tparams).backward(tdy)
            fns.get("infer", {})[label] = t_infer
            fns.get("train", {})[label] = t_train
    if torch is not None and want("graphrnn via torch bridge"):
        add_torch_bridge(fns, torch, cc, params, x, dy)
    run = jax_loop(cell) if want("JAX jit+scan") else None
    if run is not None:
        import jax
        import jax.numpy as jnp
        jp = {k: jnp.asarray(v) for k, v in params.items()}
        jx, jdy, jh = jnp.asarray(x), jnp.asarray(dy), jnp.zeros((B, H), jnp.float32)
        j_inf = jax.jit(run)
        # the training step: forward + BPTT to every parameter gradient of <ys, dy>
        j_grad = jax.jit(jax.grad(lambda p, xx, hh, d: jnp.sum(run(xx, hh, hh, p) * d)))
        if only is not None or check_against(
                f"JAX jit+scan {LABEL[cell]} H={H} B={B}", cc, params, x, dy,
                np.asarray(j_inf(jx, jh, jh, jp)),
                {k: np.asarray(v) for k, v in j_grad(jp, jx, jh, jdy).items()}):
            fns.get("infer", {})["JAX jit+scan"] = \
                lambda: j_inf(jx, jh, jh, jp).block_until_ready()
            fns.get("train", {})["JAX jit+scan"] = \
                lambda: jax.block_until_ready(j_grad(jp, jx, jh, jdy))

    if want("graphrnn via jax bridge"):
        add_jax_bridge(f"{LABEL[cell]} H={H} B={B}", cc, params, x, dy, fns)

    rows = []
    flops_fwd = gemm_flops(cell, T, B, H)
    for mode in modes:
        times = interleaved(fns[mode], rounds, budget)
        flops = flops_fwd * (3 if mode == "train" else 1)
        base = None
        for name, ts in times.items():
            med = statistics.median(ts)
            row = {"cell": LABEL[cell], "H": H, "B": B, "mode": mode, "impl": name,
                   "ms": med * 1e3, "min": min(ts) * 1e3, "max": max(ts) * 1e3, "n": len(ts),
                   "gflops": flops / med / 1e9}
            if name == "graphrnn llvm":
                base = med
            rows.append(row)
        for row in rows[-len(times):]:
            row["vs_llvm"] = row["ms"] / 1e3 / base if base else float("nan")
    return rows, compile_s


def alone_rows(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Add ``row["alone"]`` to each row: the implementation timed alone in a fresh process
    (``--only``), ``args.alone`` rounds per configuration in a rotating order of
    implementations, so that no pool left spinning by another one slows it; the figure is the
    median over rounds of each process's median."""
    by_config: dict[tuple[str, int, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_config.setdefault((r["cell"], r["H"], r["B"], r["mode"]), []).append(r)
    cell_of = {v: k for k, v in LABEL.items()}
    for (label, H, B, mode), group in by_config.items():
        meds: dict[str, list[float]] = {r["impl"]: [] for r in group}
        names = list(meds)
        for k in range(args.alone):
            for name in names[k % len(names):] + names[:k % len(names)]:
                out = subprocess.run(
                    [sys.executable, __file__, "--cells", cell_of[label], "--hidden", str(H),
                     "--batch", str(B), "--T", str(args.T), "--modes", mode, "--rounds",
                     str(args.rounds), "--budget", str(args.budget), "--threads",
                     str(args.threads), "--only", name], capture_output=True, text=True)
                line = [x for x in out.stdout.splitlines() if x.startswith("ROWS ")]
                if out.returncode != 0 or not line:
                    raise RuntimeError(f"alone run of {name} failed:\n{out.stderr[-2000:]}")
                meds[name] += [o["ms"] for o in json.loads(line[0][5:])]
        base = statistics.median(meds["graphrnn llvm"]) if "graphrnn llvm" in meds else None
        for r in group:
            ms = statistics.median(meds[r["impl"]])
            r["alone"] = {"ms": ms, "gflops": r["gflops"] * r["ms"] / ms,
                          "vs_llvm": ms / base if base else float("nan")}
        print(f"<!-- alone: {label} H={H} B={B} {mode}: " + ", ".join(
            f"{n} {statistics.median(v):.2f} ms" for n, v in meds.items()) + " -->", flush=True)


def add_jax_bridge(label: str, cc: Any, params: dict[str, np.ndarray], x: np.ndarray,
                   dy: np.ndarray, fns: dict[str, dict[str, Callable[[], Any]]]) -> None:
    """The row "graphrnn via jax bridge": the same compiled cell as a JAX function
    (``graphrnn.jax.rnn``), its forward and its gradient of <ys, dy> each in one ``jax.jit``;
    checked against graphrnn first, left out when JAX is not installed."""
    try:
        import jax
        import jax.numpy as jnp

        import graphrnn.jax as gjax
    except ImportError:
        return
    f = gjax.rnn(cc)
    jp = {k: jnp.asarray(v) for k, v in params.items()}
    jx, jdy = jnp.asarray(x), jnp.asarray(dy)
    b_inf = jax.jit(lambda p, xx: f(p, xx)[0][0])
    b_grad = jax.jit(jax.grad(lambda p, xx, d: jnp.vdot(f(p, xx)[0][0], d)))
    if check_against(f"graphrnn via jax bridge {label}", cc, params, x, dy,
                     np.asarray(b_inf(jp, jx)),
                     {k: np.asarray(v) for k, v in b_grad(jp, jx, jdy).items()}, rtol=1e-6):
        fns.get("infer", {})["graphrnn via jax bridge"] = \
            lambda: b_inf(jp, jx).block_until_ready()
        fns.get("train", {})["graphrnn via jax bridge"] = \
            lambda: jax.block_until_ready(b_grad(jp, jx, jdy))


CUSTOM_RIVALS = ("torch eager", "TorchScript", "JAX jit+scan")


def target_table(rows: list[dict[str, Any]], peak: float) -> None:
    """The issue's training-step targets, each with what meeting it would take: the llvm time
    needed, as GFLOP/s and as a fraction of the sgemm peak (over 100%: out of reach here)."""
    train = [r for r in rows if r["mode"] == "train"]
    print("\n| cell | H | B | target (train step) | rival | rival ms | llvm ms | ratio | met |"
          " llvm would need |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in train:
        if r["impl"] != "graphrnn llvm":
            continue
        same = [o for o in train if (o["cell"], o["H"], o["B"]) == (r["cell"], r["H"], r["B"])]
        if r["cell"] == "LSTM":
            rivals = [o for o in same if o["impl"] == "torch.nn.LSTM"]
            goal = 2.0 if r["H"] == 128 else 1.0
            what = f"{goal:g}x torch.nn.LSTM"
        else:
            rivals = [o for o in same if o["impl"] in CUSTOM_RIVALS]
            goal, what = 1.5, "1.5x best of eager/TorchScript/JAX"
        if not rivals:
            continue
        best = min(rivals, key=lambda o: o["ms"])
        ratio = best["ms"] / r["ms"]
        need = r["gflops"] * r["ms"] / (best["ms"] / goal)
        print(f"| {r['cell']} | {r['H']} | {r['B']} | {what} | {best['impl']} | "
              f"{best['ms']:.2f} | {r['ms']:.2f} | {ratio:.2f} | "
              f"{'yes' if ratio >= goal else 'no'} | "
              f"{need:.0f} GFLOP/s ({100 * need / peak:.0f}% of peak) |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--hidden", default="128,256,1024", help="H = I values")
    ap.add_argument("--batch", default="32,64")
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--modes", default="train,infer")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per configuration")
    ap.add_argument("--quick", action="store_true", help="H=128, B=32, 5 rounds")
    ap.add_argument("--no-ref", action="store_true")
    ap.add_argument("--compile-runs", type=int, default=0,
                    help="only measure compile time: this many fresh processes per cell and H")
    ap.add_argument("--alone", type=int, default=0, metavar="ROUNDS",
                    help="also time each implementation alone in its own process: this many "
                         "alternating rounds of one fresh process per implementation; the "
                         "targets are then judged on the alone figures")
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)   # one --alone process
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for every implementation: numpy's OpenBLAS (graphrnn's), "
                         "torch.set_num_threads, XLA (1 thread or its default); default: "
                         "OpenBLAS's own count (OPENBLAS_NUM_THREADS)")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.batch, args.rounds, args.budget = "128", "32", 5, 5.0
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in cells if c not in CELLS]
    if bad:
        ap.error(f"unknown cells {bad}; choose from {','.join(CELLS)}")
    hs = [int(v) for v in args.hidden.split(",")]
    bs = [int(v) for v in args.batch.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    if args.compile_runs:
        compile_table(cells, hs, args.compile_runs)
        return 0

    from codegen.llvm_blas import blas_info, blas_threads
    match_threads(args.threads)
    if args.only is not None:   # one implementation, one configuration: its rows as JSON
        rows, _cs = bench_config(cells[0], args.T, bs[0], hs[0], args.rounds, args.budget,
                                 True, modes, only=args.only)
        print("ROWS " + json.dumps(rows))
        return 0
    peak = sgemm_peak()
    info = blas_info()
    try:
        import torch
        tv = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        tv = "torch not installed"
    try:
        import jax
        tv += f"; jax {jax.__version__} ({jax.devices()[0].platform})"
    except ImportError:
        tv += "; jax not installed"
    print(f"# graphrnn CPU benchmark\n\nmachine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; numpy BLAS {Path(info.path).name if info.path else 'none'} "
          f"({blas_threads()} threads); {tv}; sgemm peak at start {peak:.1f} GFLOP/s\n"
          f"command: {' '.join(['benchmarks/bench_cpu.py'] + (argv or sys.argv[1:]))}\n")
    compiles = []
    all_rows = []
    for cell in cells:
        for H in hs:
            for B in bs:
                with_ref = not args.no_ref and H <= 128 and B <= 32
                rows, cs = bench_config(cell, args.T, B, H, args.rounds, args.budget, with_ref,
                                        modes)
                compiles.append((LABEL[cell], H, B, cs))
                all_rows += rows
                print(f"<!-- done: {LABEL[cell]} H={H} B={B} -->", flush=True)
    if args.alone:
        alone_rows(all_rows, args)
    peak_end = sgemm_peak()
    peak = max(peak, peak_end)
    print(f"\nsgemm peak (best of start and end of the run): {peak:.1f} GFLOP/s\n")
    alone = "alone" in all_rows[0] if all_rows else False
    print("| cell | H | B | mode | implementation | median ms | spread (min-max) | GFLOP/s |"
          " % sgemm peak | time / llvm |" + (" alone ms | alone / llvm alone |" if alone else ""))
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if alone else ""))
    for r in all_rows:
        print(f"| {r['cell']} | {r['H']} | {r['B']} | {r['mode']} | {r['impl']} | "
              f"{r['ms']:.2f} | {r['min']:.2f}-{r['max']:.2f} | "
              f"{r['gflops']:.1f} | {100 * r['gflops'] / peak:.0f}% | "
              f"{r['vs_llvm']:.2f} |" + (f" {r['alone']['ms']:.2f} | "
                                         f"{r['alone']['vs_llvm']:.2f} |" if alone else ""))
    if alone:
        print("\nTargets judged on the interleaved figures:")
    target_table(all_rows, peak)
    if alone:
        print("\nTargets judged on the alone figures (each implementation in its own process):")
        target_table([{**r, **r["alone"]} for r in all_rows], peak)
    print("\n| cell | H | B | compile cold (s) | compile warm (s) |\n|---|---|---|---|---|")
    for label, H, B, cs in compiles:
        print(f"| {label} | {H} | {B} | {cs['cold']:.3f} | {cs['warm']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
