"""Tokens per second of text generation (B = 1, one token at a time), three ways:

* ``python``: ``graphrnn.sample.generate(..., native=False)``, the step path of ``graphrnn sample``
  before the native loop (one ``RNNModel.step`` per token: a ``CompiledCell.step`` per layer, a
  numpy head and softmax, ``rng.choice``);
* ``native``: ``generate`` on the llvm backend, the native loop of ``codegen.llvm_generate``
  (threads as its policy chooses; ``native1``, ``native2``: forced to one or two threads);
* ``torch``: a PyTorch step loop: ``nn.LSTM`` (2 layers) + ``nn.Linear`` + ``softmax`` +
  ``torch.multinomial``, one call per token, under ``torch.no_grad()``, its default threads
  (``torch1``: ``torch.set_num_threads(1)``).

The model is the main job's (``scripts/main.sh``, ``graphrnn/tools/train_charlm.py``): char-rnn's
2-layer LSTM (nngraph frontend) with one-hot input over a 96-character vocabulary, float32,
temperature 0.8, at hidden sizes 128, 256 and 512 (``--hidden``).

    .venv/bin/python benchmarks/bench_sample.py                 # interleaved + alone, 5 rounds
    .venv/bin/python benchmarks/bench_sample.py --rounds 9 --hidden 256 --json out.json

Two figures per implementation, both medians over ``--rounds`` rounds: *interleaved* (all
implementations in one process, taking turns within each round) and *alone* (each round runs
every implementation in a fresh process of its own, one after the other, in a rotating order;
nothing else is built or run in that process). Each timing is wall time over a whole
``generate`` call of ``--seconds`` worth of tokens (the length is set from a first short call).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

V = 96
IMPLS = ("python", "native", "native1", "native2", "torch", "torch1")


def _model(H: int) -> tuple[Any, dict[str, np.ndarray], Any]:
    from graphrnn.data import Vocab
    from graphrnn.tools.train_charlm import build_model
    vocab = Vocab([chr(32 + i) for i in range(V - 1)] + ["\n"])
    model = build_model({"cell": "nngraph-lstm", "layers": 2, "hidden": H, "vocab_size": V,
                         "embed": 0, "backend": "llvm", "dtype": "float32"})
    return model, model.init_params(0), vocab


def runner(impl: str, H: int) -> Callable[[int], None]:
    """A function that generates n tokens with impl (built and warmed up here)."""
    if impl in ("torch", "torch1"):
        import torch
        torch.manual_seed(0)
        nthr = 1 if impl == "torch1" else torch.get_num_threads()
        lstm = torch.nn.LSTM(V, H, num_layers=2)
        head = torch.nn.Linear(H, V)

        def run_torch(n: int) -> None:
            was = torch.get_num_threads()
            torch.set_num_threads(nthr)
            with torch.no_grad():
                x = torch.zeros(1, 1, V)
                state = None
                tok = 0
                for _ in range(n):
                    x.zero_()
                    x[0, 0, tok] = 1.0
                    y, state = lstm(x, state)
                    p = torch.softmax(head(y[0, 0]) / 0.8, dim=-1)
                    tok = int(torch.multinomial(p, 1))
            torch.set_num_threads(was)
        run_torch(20)
        return run_torch
    from graphrnn.sample import generate
    model, params, vocab = _model(H)
    if impl == "python":
        def run_py(n: int) -> None:
            generate(model, params, vocab, n, temperature=0.8, seed=0, native=False)
        run_py(20)
        return run_py
    from codegen.llvm_generate import NativeGenerator, generator_for
    g = NativeGenerator(model, threads=int(impl[-1])) if impl[-1].isdigit() \
        else generator_for(model)
    assert g is not None

    def run_native(n: int) -> None:
        g.run(params, [0], n, temperature=0.8, seed=0)
    run_native(20)
    return run_native


def tokens_per_s(run: Callable[[int], None], n: int) -> float:
    t = time.perf_counter()
    run(n)
    return n / (time.perf_counter() - t)


def calibrate(run: Callable[[int], None], seconds: float) -> int:
    rate = tokens_per_s(run, 50)
    return max(50, int(rate * seconds))


def interleaved(H: int, impls: list[str], rounds: int, seconds: float) -> dict[str, float]:
    runs = {i: runner(i, H) for i in impls}
    lengths = {i: calibrate(r, seconds) for i, r in runs.items()}
    rates: dict[str, list[float]] = {i: [] for i in impls}
    for k in range(rounds):
        for i in impls[k % len(impls):] + impls[:k % len(impls)]:
            rates[i].append(tokens_per_s(runs[i], lengths[i]))
    return {i: statistics.median(r) for i, r in rates.items()}


def only(impl: str, H: int, seconds: float) -> float:
    """One implementation alone in this process: the median of 3 timings."""
    run = runner(impl, H)
    n = calibrate(run, seconds)
    return statistics.median(tokens_per_s(run, n) for _ in range(3))


def alone(H: int, impls: list[str], rounds: int, seconds: float) -> dict[str, float]:
    rates: dict[str, list[float]] = {i: [] for i in impls}
    env = dict(os.environ)
    for k in range(rounds):
        for i in impls[k % len(impls):] + impls[:k % len(impls)]:
            out = subprocess.run([sys.executable, __file__, "--only", i, "--hidden", str(H),
                                  "--seconds", str(seconds)], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            rates[i].append(float(out[-1]))
    return {i: statistics.median(r) for i, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5, help="per timing")
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--no-alone", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.only:
        print(only(a.only, a.hidden[0], a.seconds))
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        a.impls = [i for i in a.impls if not i.startswith("torch")]
    print(f"# bench_sample: 2-layer char-rnn LSTM, V={V}, float32, B=1, medians of {a.rounds} "
          f"rounds; load average at start {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    results: dict[str, Any] = {}
    for H in a.hidden:
        inter = interleaved(H, a.impls, a.rounds, a.seconds)
        al = {} if a.no_alone else alone(H, a.impls, a.rounds, a.seconds)
        results[str(H)] = {"interleaved": inter, "alone": al}
        print(f"\nH={H}    tokens/s: interleaved | alone   (x python, x the faster torch)")
        for i in a.impls:
            line = f"  {i:8s} {inter[i]:10.0f} ({inter[i] / inter['python']:5.1f}x, "
            best = max((inter[t] for t in ("torch", "torch1") if t in inter), default=0)
            line += f"{inter[i] / best:4.2f}x)" if best else "    -)"
            if al:
                line += f" | {al[i]:10.0f} ({al[i] / al['python']:5.1f}x"
                best = max((al[t] for t in ("torch", "torch1") if t in al), default=0)
                line += f", {al[i] / best:4.2f}x)" if best else ")"
            print(line, flush=True)
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
