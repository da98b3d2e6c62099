"""Data-parallel training of a graphrnn module with PyTorch's DistributedDataParallel (gloo).

    .venv/bin/python examples/torch_ddp.py                  # 2 processes on this machine
    .venv/bin/python examples/torch_ddp.py --world 3 --steps 50

Each process builds the same model (the same seed: DDP also broadcasts rank 0's parameters at
construction), takes its shard of every global batch, and DDP all-reduces (averages) the
gradients during the backward: ``graphrnn.torch.Module``'s parameters are ordinary
``nn.Parameter``s whose gradients autograd accumulates, so DDP's hooks see them like any
other. With a loss that is a mean over the batch, the averaged gradient is the gradient of the
mean over the global batch, the same as one process on the concatenated batch
(``tests/test_torch_bridge.py`` checks it). Each process keeps PyTorch (and so graphrnn's calls,
which run on PyTorch's pool) at ``--threads`` threads, so N processes do not oversubscribe the
cores. On several machines, set ``MASTER_ADDR``/``MASTER_PORT`` and start one process per rank
with ``torchrun`` instead of ``--world``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphrnn.torch as gt  # noqa: E402

IN, HIDDEN, T = 4, 16, 12


class Model(nn.Module):
    """An LSTM (graphrnn) and a linear read-out of its last state."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = gt.Module("lstm", IN, HIDDEN)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _ys, (h, _c) = self.rnn(x)
        return self.head(h[-1])


def make_model(seed: int = 0) -> Model:
    torch.manual_seed(seed)
    return Model()


def global_batch(step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's global batch (the same on every rank): x (T, size, IN), y (size, 1) = the sum
    of the first feature over time, a target an LSTM learns quickly."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(T, size, IN, generator=g)
    return x, x[:, :, :1].sum(0) / T ** 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker(rank: int, world: int, port: int, steps: int, per_rank: int, threads: int,
           out_dir: str | None) -> None:
    """One rank: DDP training for ``steps``; with ``out_dir``, writes the first step's averaged
    gradients and the final parameters as ``rank{r}.npz``."""
    torch.set_num_threads(threads)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = make_model()
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
        saved: dict[str, np.ndarray] = {}
        for step in range(steps):
            x, y = global_batch(step, per_rank * world)
            shard = slice(rank * per_rank, (rank + 1) * per_rank)
            opt.zero_grad()
            loss = nn.functional.mse_loss(ddp(x[:, shard]), y[shard])
            loss.backward()          # DDP averages the gradients over the ranks here
            if step == 0:
                saved.update({f"grad/{k}": p.grad.numpy().copy()
                              for k, p in model.named_parameters()})
            opt.step()
            if rank == 0 and (step + 1) % max(1, steps // 5) == 0:
                print(f"step {step + 1}: loss on rank 0's shard {loss.item():.4f}", flush=True)
        # the replicas must still be identical: compare a checksum of the parameters
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        sums = [torch.zeros(2, dtype=torch.float64) for _ in range(world)]
        dist.all_gather(sums, torch.stack([flat.double().sum(), flat.double().abs().sum()]))
        if any(not torch.equal(s, sums[0]) for s in sums):
            raise RuntimeError(f"rank {rank}: parameters differ between ranks: {sums}")
        if rank == 0:
            print(f"{world} ranks, {steps} steps: parameters identical on every rank", flush=True)
        if out_dir is not None:
            saved.update({f"param/{k}": p.detach().numpy().copy()
                          for k, p in model.named_parameters()})
            np.savez(Path(out_dir) / f"rank{rank}.npz", **saved)
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--per-rank", type=int, default=16, help="batch rows per rank")
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads per rank")
    a = ap.parse_args(argv)
    mp.spawn(worker, args=(a.world, free_port(), a.steps, a.per_rank, a.threads, None),
             nprocs=a.world, join=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
