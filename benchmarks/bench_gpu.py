"""GPU benchmark: graphrnn's ``cuda`` backend against cuDNN and PyTorch custom cells.

    .venv/bin/python benchmarks/bench_gpu.py                 # the full grid below
    .venv/bin/python benchmarks/bench_gpu.py --quick         # one small size, few repetitions
    .venv/bin/python benchmarks/bench_gpu.py --json out.json
    .venv/bin/python benchmarks/bench_gpu.py --budget 300   # start no new size after 300 s

For LSTM, GRU (PyTorch's "reset after" GRU, the function cuDNN computes), peephole LSTM and
MUT1, at T=100, B in {32, 64}, H in {256, 1024} (input size = H), float32, it times

- inference: the forward pass over the whole sequence, and
- a training step: forward keeping residuals plus the full backward (BPTT, all gradients),

for graphrnn (``cuda_graph=True`` and ``False``), cuDNN through ``torch.nn.LSTM``/``nn.GRU``
(LSTM and GRU only), and the same cell written in PyTorch three ways: eager, TorchScript
(``torch.jit.script`` of the whole loop) and ``torch.compile`` of the step function. It prints
the median of each (milliseconds) and ``ratio`` = best PyTorch route / graphrnn (above 1:
graphrnn is faster), all from one run. Without a GPU (or without CuPy or CUDA torch) it says so
and exits with status 2.

Float32 math is the same on both sides: ``--math fp32`` (the default) turns TF32 off in PyTorch
for cuDNN's RNNs and for matrix products (cuDNN RNNs use TF32 by default) and graphrnn uses plain
float32 GEMMs; ``--math tf32`` lets both use TF32 tensor cores (graphrnn's ``tf32=True``).

The grid runs size by size (B=32, H=256 first), every cell at each, each row printed and (with
``--json``) written as soon as it is measured, so that a run cut short by ``--budget`` or a time
limit keeps what it has and covers every cell.
``torch.compile`` is compiled afresh for every size (its recompile limit is raised so that a
later size is never silently run eagerly).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CELLS = ("lstm", "gru_torch", "peephole_lstm", "mut1")
LABEL = {"lstm": "LSTM", "gru_torch": "GRU", "peephole_lstm": "peephole", "mut1": "MUT1"}


def gpu_or_exit() -> tuple[Any, Any]:
    try:
        import cupy as cp
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - ImportError or a CUDA runtime error
        print(f"bench_gpu: no GPU available here ({type(e).__name__}: {e}); nothing measured. "
              "Run this on a machine with an NVIDIA GPU, CuPy and CUDA PyTorch.")
        sys.exit(2)
    if n < 1:
        print("bench_gpu: CuPy sees no GPU; nothing measured.")
        sys.exit(2)
    try:
        import torch
    except ImportError:
        print("bench_gpu: PyTorch is not installed; nothing measured.")
        sys.exit(2)
    if not torch.cuda.is_available():
        print("bench_gpu: this PyTorch has no CUDA (CPU wheel?); nothing measured.")
        sys.exit(2)
    return cp, torch


def set_torch_math(torch: Any, math: str) -> None:
    """TF32 on ("tf32") or off ("fp32") for PyTorch's matrix products and cuDNN's RNNs, with
    the per-backend ``fp32_precision`` knobs where this PyTorch has them (mixing them with the
    older ``allow_tf32`` flags is an error there), else with those flags."""
    rnn = getattr(getattr(torch.backends.cudnn, "rnn", None), "fp32_precision", None)
    if rnn is not None:
        value = "tf32" if math == "tf32" else "ieee"
        torch.backends.cudnn.rnn.fp32_precision = value
        torch.backends.cuda.matmul.fp32_precision = value
    else:
        torch.backends.cudnn.allow_tf32 = math == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = math == "tf32"


def median_ms(fn: Callable[[], Any], sync: Callable[[], None], reps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ---- the cells in PyTorch, with our parameter layout (x @ W, W (in, out)) ----

def torch_cells(torch: Any) -> dict[str, Any]:
    sig, tanh = torch.sigmoid, torch.tanh

    def lstm(x, h, c, p: dict[str, Any]):
        z = x @ p["W_x"] + h @ p["W_h"] + p["b"]
        i, f, g, o = z.chunk(4, 1)
        c2 = sig(f) * c + sig(i) * tanh(g)
        return o.sigmoid() * tanh(c2), c2

    def peephole_lstm(x, h, c, p: dict[str, Any]):
        z = x @ p["W_x"] + h @ p["W_h"] + p["b"]
        zi, zf, zg, zo = z.chunk(4, 1)
        c2 = sig(zf + p["p_f"] * c) * c + sig(zi + p["p_i"] * c) * tanh(zg)
        return sig(zo + p["p_o"] * c2) * tanh(c2), c2

    def gru_torch(x, h, c, p: dict[str, Any]):
        a = x @ p["W_x"] + p["b_x"]
        u = h @ p["W_h"] + p["b_h"]
        ar, az, an = a.chunk(3, 1)
        ur, uz, un = u.chunk(3, 1)
        r, z = sig(ar + ur), sig(az + uz)
        n = tanh(an + r * un)
        return (1 - z) * n + z * h, c

    def mut1(x, h, c, p: dict[str, Any]):
        z = sig(x @ p["W_xz"] + p["b_z"])
        r = sig(x @ p["W_xr"] + h @ p["W_hr"] + p["b_r"])
        return tanh((r * h) @ p["W_hh"] + tanh(x) + p["b_h"]) * z + h * (1 - z), c

    return {"lstm": lstm, "peephole_lstm": peephole_lstm, "gru_torch": gru_torch, "mut1": mut1}


def bench_one(cp: Any, torch: Any, name: str, T: int, B: int, H: int, reps: int,
              warmup: int, torch_device: str = "cuda", tf32: bool = False) -> dict[str, Any]:
    """One row. ``torch_device`` is where the PyTorch routes run: "cuda" here; the tests run
    the same code with "cpu" (and a stand-in for CuPy) to find its bugs without a GPU."""
    import graphrnn
    from graphrnn.cells import zoo_cell

    cell = zoo_cell(name, H, H, "float32")
    row: dict[str, Any] = {"cell": LABEL[name], "T": T, "B": B, "H": H}
    dev = torch.device(torch_device)
    sync_cp = cp.cuda.Device().synchronize
    sync_t = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)

    # ---- graphrnn ----
    for graph in (True, False):
        cc = graphrnn.compile(cell, "cuda", "float32", cuda_graph=graph, tf32=tf32)
        params = {k: cp.asarray(v) for k, v in cc.init_params(seed=0).items()}
        xs = cp.random.standard_normal((T, B, H), dtype=cp.float32)
        dys = cp.random.standard_normal((T, B, H), dtype=cp.float32)
        key = "graphrnn" if graph else "graphrnn_nograph"

        def infer(cc=cc, params=params, xs=xs):
            cc.forward(params, xs)

        def train(cc=cc, params=params, xs=xs, dys=dys):
            _ys, _h, res = cc.forward_train(params, xs)
            cc.backward(params, res, dys)

        row[f"{key}_infer"] = median_ms(infer, sync_cp, reps, warmup)
        row[f"{key}_train"] = median_ms(train, sync_cp, reps, warmup)

    # ---- PyTorch ----
    np_params = graphrnn.compile(cell, "ref", "float32").init_params(seed=0)
    tp = {k: torch.tensor(v, device=dev, requires_grad=True) for k, v in np_params.items()}
    x = torch.randn(T, B, H, device=dev)
    dy = torch.randn(T, B, H, device=dev)
    step = torch_cells(torch)[name]

    def loop(step_fn: Any) -> Callable[[Any, dict[str, Any]], Any]:
        def run(x: Any, p: dict[str, Any]) -> Any:
            h = torch.zeros(B, H, device=dev)
            c = torch.zeros(B, H, device=dev)
            ys = []
            for t in range(T):
                h, c = step_fn(x[t], h, c, p)
                ys.append(h)
            return torch.stack(ys)
        return run

    routes: dict[str, Callable[[Any, dict[str, Any]], Any]] = {"eager": loop(step)}
    try:
        routes["torchscript"] = torch.jit.script(loop_script(torch, name, T, B, H))
    except Exception as e:  # noqa: BLE001 - report and go on
        row["torchscript_error"] = str(e)[:200]
    try:
        dyn = torch._dynamo.config   # a recompile over the limit would fall back to eager
        for knob in ("cache_size_limit", "recompile_limit"):
            if hasattr(dyn, knob):
                setattr(dyn, knob, max(getattr(dyn, knob), 256))
        routes["torch_compile"] = loop(torch.compile(step))
    except Exception as e:  # noqa: BLE001
        row["torch_compile_error"] = str(e)[:200]
    if name in ("lstm", "gru_torch"):
        mod = (torch.nn.LSTM(H, H) if name == "lstm" else torch.nn.GRU(H, H)).to(dev)
        routes["cudnn"] = lambda x, p, mod=mod: mod(x)[0]

    for route, fn in routes.items():
        def t_infer(fn=fn):
            with torch.no_grad():
                fn(x, tp)

        def t_train(fn=fn):
            (fn(x, tp) * dy).sum().backward()

        try:
            row[f"{route}_infer"] = median_ms(t_infer, sync_t, reps, warmup)
            row[f"{route}_train"] = median_ms(t_train, sync_t, reps, warmup)
        except Exception as e:  # noqa: BLE001 - e.g. torch.compile failing on this setup
            row[f"{route}_error"] = str(e)[:200]
    for mode in ("infer", "train"):
        torch_best = [row[k] for k in row if k.endswith(f"_{mode}") and
                      not k.startswith("graphrnn")]
        if torch_best:
            row[f"ratio_{mode}"] = min(torch_best) / row[f"graphrnn_{mode}"]
        if f"cudnn_{mode}" in row:
            row[f"ratio_cudnn_{mode}"] = row[f"cudnn_{mode}"] / row[f"graphrnn_{mode}"]
    return row


def loop_script(torch: Any, name: str, T: int, B: int, H: int) -> Any:
    """The whole loop as a TorchScript-able function of (x, params dict)."""

    Tensor = torch.Tensor

    if name == "lstm":
        def run(x: Tensor, p: dict[str, Tensor]) -> Tensor:
            h = torch.zeros(x.size(1), p["W_h"].size(0), device=x.device)
            c = torch.zeros_like(h)
            ys = []
            for t in range(x.size(0)):
                z = x[t] @ p["W_x"] + h @ p["W_h"] + p["b"]
                i, f, g, o = z.chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                ys.append(h)
            return torch.stack(ys)
    elif name == "peephole_lstm":
        def run(x: Tensor, p: dict[str, Tensor]) -> Tensor:
            h = torch.zeros(x.size(1), p["W_h"].size(0), device=x.device)
            c = torch.zeros_like(h)
            ys = []
            for t in range(x.size(0)):
                z = x[t] @ p["W_x"] + h @ p["W_h"] + p["b"]
                zi, zf, zg, zo = z.chunk(4, 1)
                c = (torch.sigmoid(zf + p["p_f"] * c) * c
                     + torch.sigmoid(zi + p["p_i"] * c) * torch.tanh(zg))
                h = torch.sigmoid(zo + p["p_o"] * c) * torch.tanh(c)
                ys.append(h)
            return torch.stack(ys)
    elif name == "gru_torch":
        def run(x: Tensor, p: dict[str, Tensor]) -> Tensor:
            h = torch.zeros(x.size(1), p["W_h"].size(0), device=x.device)
            ys = []
            for t in range(x.size(0)):
                a = x[t] @ p["W_x"] + p["b_x"]
                u = h @ p["W_h"] + p["b_h"]
                ar, az, an = a.chunk(3, 1)
                ur, uz, un = u.chunk(3, 1)
                r = torch.sigmoid(ar + ur)
                z = torch.sigmoid(az + uz)
                h = (1 - z) * torch.tanh(an + r * un) + z * h
                ys.append(h)
            return torch.stack(ys)
    else:
        def run(x: Tensor, p: dict[str, Tensor]) -> Tensor:
            h = torch.zeros(x.size(1), p["W_hh"].size(0), device=x.device)
            ys = []
            for t in range(x.size(0)):
                z = torch.sigmoid(x[t] @ p["W_xz"] + p["b_z"])
                r = torch.sigmoid(x[t] @ p["W_xr"] + h @ p["W_hr"] + p["b_r"])
                h = torch.tanh((r * h) @ p["W_hh"] + torch.tanh(x[t]) + p["b_h"]) * z + h * (1 - z)
                ys.append(h)
            return torch.stack(ys)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="B=32, H=256, few repetitions")
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated zoo names")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", help="also write the rows to this file (after each row)")
    ap.add_argument("--math", choices=("fp32", "tf32"), default="fp32",
                    help="float32 GEMMs on both sides (default), or TF32 tensor cores on both")
    ap.add_argument("--budget", type=float, default=0.0,
                    help="seconds: start no new row after this long (0: no limit)")
    args = ap.parse_args(argv)
    cp, torch = gpu_or_exit()
    T = 100
    sizes = [(32, 256)] if args.quick else [(B, H) for B in (32, 64) for H in (256, 1024)]
    reps, warmup = (5, 2) if args.quick else (args.reps, 3)
    gpu = torch.cuda.get_device_name(0)
    set_torch_math(torch, args.math)
    print(f"GPU: {gpu}; torch {torch.__version__}; cupy {cp.__version__}; T={T}, float32 "
          f"({args.math} GEMMs on both sides), median of {reps} (ms); ratio = best PyTorch "
          "route / graphrnn")
    rows = []
    cols = ["graphrnn", "graphrnn_nograph", "cudnn", "eager", "torchscript", "torch_compile"]
    print(f"{'cell':9} {'B':>3} {'H':>5} {'mode':5} " + " ".join(f"{c:>16}" for c in cols)
          + f" {'ratio':>6} {'vs cuDNN':>8}")
    t0 = time.perf_counter()
    skipped = []
    for B, H in sizes:   # every cell at the first size before any at the next: cut short by
        for name in args.cells.split(","):   # the budget, the run still covers every cell
            if args.budget and time.perf_counter() - t0 > args.budget:
                skipped.append(f"{LABEL[name]} B={B} H={H}")
                continue
            row = bench_one(cp, torch, name, T, B, H, reps, warmup, tf32=args.math == "tf32")
            row["math"] = args.math
            rows.append(row)
            for mode in ("infer", "train"):
                vals = " ".join(f"{row.get(f'{c}_{mode}', float('nan')):16.3f}" for c in cols)
                print(f"{row['cell']:9} {B:3d} {H:5d} {mode:5} {vals} "
                      f"{row.get(f'ratio_{mode}', float('nan')):6.2f} "
                      f"{row.get(f'ratio_cudnn_{mode}', float('nan')):8.2f}", flush=True)
            errors = {k: v for k, v in row.items() if k.endswith("_error")}
            if errors:
                print(f"  errors: {errors}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"gpu": gpu, "rows": rows}, indent=1))
    if skipped:
        print(f"budget of {args.budget:.0f} s spent; not measured: {', '.join(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
