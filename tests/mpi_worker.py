"""The program ``tests/test_distributed.py`` runs under ``mpiexec -n N``: one data-parallel job
on a small float64 LSTM, its results written by rank 0 as ``.npz`` files into OUT.

    mpiexec -n N python tests/mpi_worker.py MODE OUT [options]

MODE ``grads``: the reduced gradients of one global batch and the loss, in each of the
``GRAD_MODES`` (``grads-MODE.npz``).
MODE ``train``: ``--steps`` Trainer steps on a fixed stream of global batches; the final
parameters (``params.npz``) and, from every rank, its parameters' bytes compared to rank 0's.
``--kill-rank R --kill-step S`` makes rank R kill itself (SIGKILL) or stop (SIGSTOP,
``--stop``) at step S, to test that the job ends with a clear error instead of hanging;
``--perturb-rank R`` starts rank R from slightly different parameters.

Also importable: ``model()`` and ``batch(step)`` are what the test compares against in one
process.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphrnn.data import Batch  # noqa: E402
from graphrnn.model import RNNModel, stack  # noqa: E402
from graphrnn.optim import Adam  # noqa: E402
from graphrnn.train import TrainConfig, Trainer  # noqa: E402

V, T, B = 7, 6, 6


def model() -> RNNModel:
    cells = stack("lstm", 2, 4, 5, dtype="float64")
    return RNNModel(cells, n_classes=V, vocab_size=V, embed_size=4, backend="ref",
                    dtype="float64")


def batch(step: int) -> Batch:
    """The global batch of a step; a mask with unequal lengths, so that ranks get unequal
    token counts (the sum of scaled gradients must still equal the global mean)."""
    rng = np.random.default_rng(1000 + step)
    ids = rng.integers(0, V, (T, B))
    tg = rng.integers(0, V, (T, B))
    lengths = rng.integers(2, T + 1, B)
    mask = (np.arange(T)[:, None] < lengths[None, :]).astype(np.float64)
    return Batch(ids, tg, mask, reset=step % 5 == 0)


def trainer(dist: object | None, steps: int, checkpoint: str | None = None,
            perturb: bool = False) -> Trainer:
    m = model()
    params = m.init_params(seed=3, scale=0.3)
    if perturb:
        params["head.b"][0] += 1e-15
    return Trainer(m, params, Adam(lr=0.01),
                   lambda step, rng: batch(step), None,
                   TrainConfig(steps=steps, progress=False, checkpoint=checkpoint,
                               save_every=5 if checkpoint else 0),
                   dist=dist)


GRAD_MODES = {"overlap": {"bucket_mb": 0.0},
              "one-bucket": {"overlap": False, "bucket_mb": 1000.0},
              "deterministic": {"deterministic": True, "bucket_mb": 0.0}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("grads", "train"))
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--no-overlap", action="store_true")
    p.add_argument("--bucket-mb", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--kill-rank", type=int, default=-1)
    p.add_argument("--kill-step", type=int, default=3)
    p.add_argument("--stop", action="store_true")
    p.add_argument("--perturb-rank", type=int, default=-1)
    p.add_argument("--checkpoint")
    p.add_argument("--resume")
    a = p.parse_args()
    from graphrnn.distributed import Distributed
    d = Distributed(deterministic=a.deterministic, overlap=not a.no_overlap,
                    bucket_mb=a.bucket_mb, timeout=a.timeout, check_every=1)
    out = Path(a.out)
    try:
        if a.mode == "grads":
            # one launch, every way of reducing: overlapped small buckets, one bucket after
            # the backward, the ordered (deterministic) reduction
            for name, kw in GRAD_MODES.items():
                dm = Distributed(timeout=a.timeout, **kw)
                m = model()
                params = m.init_params(seed=3, scale=0.3)
                r = dm.loss_and_grads(m, params, batch(0), None, None)
                if d.is_root:
                    np.savez(out / f"grads-{name}.npz", loss=np.array(r.loss), **r.grads)
            return
        tr = trainer(d, a.steps, a.checkpoint, perturb=a.perturb_rank == d.rank)
        if a.resume:
            tr.load(a.resume)
        if a.kill_rank == d.rank:
            inner = tr.data

            def dying(step: int, rng: np.random.Generator) -> Batch:
                if step == a.kill_step:
                    print(f"rank {d.rank}: killing itself at step {step}", flush=True)
                    os.kill(os.getpid(), signal.SIGSTOP if a.stop else signal.SIGKILL)
                return inner(step, rng)

            tr.data = dying
        tr.run()
        # every rank's parameters, bit for bit, against rank 0's
        flat = np.concatenate([tr.params[k].ravel() for k in sorted(tr.params)])
        allp = np.empty((d.size, flat.size), flat.dtype)
        d.comm.Allgather(flat, allp)
        if d.is_root:
            same = all(np.array_equal(allp[0], allp[i]) for i in range(d.size))
            np.savez(out / "params.npz", same=np.array(same), step=np.array(tr.step),
                     **tr.params)
    except BaseException as e:
        print(f"rank {d.rank}: error: {e}", file=sys.stderr, flush=True)
        d.abort(1)


if __name__ == "__main__":
    main()
