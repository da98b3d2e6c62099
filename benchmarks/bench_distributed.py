"""Data-parallel training step over MPI: compute, communication and their ratio.

    mpiexec -n 2 python benchmarks/bench_distributed.py --hidden 1024 --batch 32 --rounds 5
    mpiexec -n 1 python benchmarks/bench_distributed.py --hidden 1024 --batch 32 --threads 2

One char-level LSTM training step (``RNNModel.loss_and_grads`` on the rank's share of a global
batch of ``--batch`` sequences of ``--seq-len``; llvm backend, float32) timed, in interleaved
rounds, five ways:

- ``compute``: the rank's forward + backward alone, no communication;
- ``overlap``: the step of ``graphrnn.distributed`` with buckets of ``--bucket-mb`` MiB started
  as the backward produces them (nonblocking ``Iallreduce``);
- ``one-bucket``: one ``Iallreduce`` of all gradients after the backward (no overlap);
- ``ordered``: the deterministic reduce-scatter / ordered sum / allgather, overlapped;
- ``reduce-sum`` and ``reduce-ordered``: the reduction of one step's gradients alone (one
  bucket), started right after a barrier: the communication cost without the wait for a
  slower rank.

Each line gives the median seconds per step over the rounds (each round ``--steps`` steps; a
round's time is the slowest rank's), and for the distributed steps the time spent waiting in
MPI (``comm wait``, which includes waiting for a rank that computed slower: on a shared
machine mostly that) and its fraction of the step. Rank 0 prints; ``--json FILE`` also
writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--vocab", type=int, default=96)
    p.add_argument("--batch", type=int, default=32, help="global batch (split over ranks)")
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--steps", type=int, default=3, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--bucket-mb", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--backend", default="llvm")
    p.add_argument("--json")
    a = p.parse_args()

    from codegen.llvm_blas import set_blas_threads
    from graphrnn.data import Batch
    from graphrnn.distributed import Distributed, _Reducer
    from graphrnn.model import RNNModel, stack

    base = Distributed(threads=a.threads, bucket_mb=a.bucket_mb)
    set_blas_threads(base.threads)
    comm, rank, size = base.comm, base.rank, base.size
    modes = {"overlap": base,
             "one-bucket": Distributed(threads=a.threads, overlap=False, bucket_mb=1e9),
             "ordered": Distributed(threads=a.threads, deterministic=True,
                                    bucket_mb=a.bucket_mb)}
    cells = stack("lstm", a.layers, a.vocab, a.hidden, dtype="float32")
    model = RNNModel(cells, n_classes=a.vocab, vocab_size=a.vocab, backend=a.backend)
    params = model.init_params(seed=0)
    nbytes = sum(v.nbytes for v in params.values())
    rng = np.random.default_rng(0)
    ids = rng.integers(0, a.vocab, (a.seq_len, a.batch))
    batch = Batch(ids, rng.integers(0, a.vocab, (a.seq_len, a.batch)))
    local = base.shard(batch)
    grads = model.loss_and_grads(params, local.ids, local.targets).grads
    reducers = {"reduce-sum": modes["one-bucket"],
                "reduce-ordered": Distributed(threads=a.threads, deterministic=True,
                                              bucket_mb=1e9)}
    # warm up: compile, pack weights, first touch of every buffer
    model.loss_and_grads(params, local.ids, local.targets)
    for d in modes.values():
        d.loss_and_grads(model, params, batch, None, None)
    comm.Barrier()
    times: dict[str, list[float]] = {k: [] for k in ("compute", *modes, *reducers)}
    comms: dict[str, list[float]] = {k: [] for k in modes}
    for _ in range(a.rounds):
        for name in times:
            comm.Barrier()
            t0 = time.perf_counter()
            c0 = modes[name].comm_seconds if name in modes else 0.0
            if name in reducers:
                comm.Barrier()
            for _ in range(a.steps):
                if name == "compute":
                    model.loss_and_grads(params, local.ids, local.targets)
                elif name in reducers:
                    red = _Reducer(reducers[name])
                    red.ready(grads)
                    red.finish(grads)
                else:
                    modes[name].loss_and_grads(model, params, batch, None, None)
            dt = (time.perf_counter() - t0) / a.steps
            # the slowest rank sets the pace
            dt = comm.allreduce(dt, op=base.MPI.MAX)
            times[name].append(dt)
            if name in modes:
                comms[name].append(comm.allreduce((modes[name].comm_seconds - c0) / a.steps,
                                                  op=base.MPI.MAX))
    if rank != 0:
        return
    med = {k: statistics.median(v) for k, v in times.items()}
    medc = {k: statistics.median(v) for k, v in comms.items()}
    print(f"{size} rank(s) x {base.threads} thread(s); LSTM {a.layers} x H={a.hidden}, vocab "
          f"{a.vocab}, global batch {a.batch} x {a.seq_len}; gradients {nbytes / 2**20:.1f} MiB "
          f"({nbytes} bytes); median of {a.rounds} rounds x {a.steps} steps")
    for k, v in med.items():
        extra = ""
        if k in medc:
            extra = f"  comm wait {medc[k] * 1e3:8.1f} ms = {medc[k] / v:5.1%} of the step"
        elif k in reducers:
            extra = f"  ({nbytes / v / 1e9:.2f} GB/s algorithm bandwidth)"
        print(f"  {k:<11} {v * 1e3:9.1f} ms/step{extra}")
    if a.json:
        Path(a.json).write_text(json.dumps({"ranks": size, "threads": base.threads,
                                            "hidden": a.hidden, "layers": a.layers,
                                            "vocab": a.vocab, "batch": a.batch,
                                            "seq_len": a.seq_len, "grad_bytes": nbytes,
                                            "rounds": times, "comm": comms}, indent=1))


if __name__ == "__main__":
    main()
