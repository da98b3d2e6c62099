"""Data-parallel training over MPI (mpi4py), for ``Trainer(dist=...)`` and ``mpiexec -n N
graphrnn train``.

Every rank holds the whole model and builds the same *global* batch (the data function and its
RNG are the same everywhere); ``shard`` keeps the rank's contiguous slice of the batch axis
(``split_bounds``: ``np.array_split``'s cut). Each rank computes the gradient of its slice's
*summed* loss times ``1 / global token weight``, and the gradients are **summed** over the ranks
(MPI SUM): the result is the gradient of the mean loss over the global batch, the same as one
process on the whole batch, whatever the ranks' token counts (masks may give them unequal
shares). That is not PyTorch DDP's mean of per-rank means, which differs when the counts
differ. Every rank then applies the same reduced gradient with the same optimizer, so the
parameters stay identical; ``check_params`` compares a CRC of them across ranks every
``check_every`` steps and raises ``DistributedError`` naming the ranks that disagree.

Reduction is bucketed: ``RNNModel.backward`` hands over each group of gradients as soon as it is
final (the head first, then each layer from the top, the embedding last: the weight-gradient
GEMMs after each layer's loop are the bucket boundaries); groups are packed into flat buckets
of at least ``bucket_mb`` MiB and each bucket's reduction is started nonblocking
(``Iallreduce``) while the layers below still run backward (``overlap=True``). MPICH moves a
nonblocking collective only inside MPI calls, so each later group polls the ones in flight
(``Testall``). ``docs/distributed.md`` has the measurements.

``deterministic=True`` reduces in a fixed rank order: each bucket is cut into N pieces, rank j
receives piece j of every rank (``Ialltoallv``), adds them in rank order 0, 1, ..., N-1 and
the sums are gathered back (``Allgatherv``): a reduce-scatter / allgather with an ordered sum,
the same bytes as a ring all-reduce, so two runs with the same N are bit-identical (an
``Iallreduce``'s association may depend on the algorithm MPICH picks). Either way N ranks
equal one process on the global batch to float rounding (dropout aside: each rank draws its
own masks).

Faults: no collective here blocks without a bound. Each is started nonblocking and polled;
after ``timeout`` seconds the rank prints which collective timed out and ends the whole job
with ``MPI_Abort`` (an exception that merely ended one process would leave the others waiting
in ``MPI_Finalize``, and a hung rank would keep mpiexec waiting; the command line aborts on
any error for the same reason). A rank that is killed outright ends the job through mpiexec
(hydra kills the remaining processes and reports the signal).

Only rank 0 writes checkpoints, logs and the progress bar. A checkpoint holds the carried state
of the global batch (``gather_state``) and no trace of N, so it resumes on any number of ranks
(``shard_state``). Every rank reads the data and, on ``--resume``, the checkpoint itself: on
several machines they must be at the same path on each (a shared folder, or copies).

Threads: ``threads`` per rank (default: this host's cores over the ranks on it); each rank is
pinned to its own cores when they fit, so ranks never share a core with another rank's threads.
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from typing import Any

import numpy as np

from .data import Batch
from .errors import GraphRNNError
from .model import Arrays, Result, RNNModel, State

# the environment variables an MPI launcher sets (MPICH/hydra, Open MPI, PMIx, Slurm)
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class DistributedError(GraphRNNError, RuntimeError):
    """A collective timed out, the ranks disagree, or MPI is missing or misused."""


def mpi_module() -> Any:
    """``mpi4py.MPI``, or a DistributedError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError("data-parallel training needs mpi4py and an MPI library: "
                               f"pip install 'graphrnn[mpi]' (mpi4py, mpich); {e}") from None
    return MPI


def launched_with_several_ranks() -> bool:
    """True when an MPI launcher started this process as one of several (read from the
    environment, without initializing MPI)."""
    for v in _SIZE_VARS:
        try:
            if int(os.environ.get(v, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def split_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """[lo, hi) of each rank's share of n rows: ``np.array_split``'s cut (the first n % size
    ranks get one more). Every rank needs at least one."""
    if n < size:
        raise DistributedError(f"a global batch of {n} sequences cannot be split over {size} "
                               f"ranks (each needs at least one): use a batch of at least {size}")
    q, r = divmod(n, size)
    cuts = [i * q + min(i, r) for i in range(size + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


class Distributed:
    """One rank's view of a data-parallel job. See the module docstring."""

    def __init__(self, comm: Any = None, *, deterministic: bool = False,
                 bucket_mb: float = 4.0, overlap: bool = True, timeout: float = 300.0,
                 check_every: int = 100, threads: int | None = None, pin: bool = True) -> None:
        MPI = mpi_module()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()
        if not timeout > 0:
            raise DistributedError(f"timeout must be positive seconds, got {timeout}")
        if not bucket_mb >= 0:
            raise DistributedError(f"bucket_mb must be >= 0, got {bucket_mb}")
        if check_every < 0:
            raise DistributedError(f"check_every must be >= 0, got {check_every}")
        self.deterministic, self.overlap = deterministic, overlap
        self.bucket_bytes = int(bucket_mb * (1 << 20))
        self.timeout, self.check_every = float(timeout), int(check_every)
        self.comm_seconds = 0.0      # time spent waiting for reductions (not overlapped)
        self.threads, self.cores = self._place(threads, pin)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # ---- threads and cores ----
    def _place(self, threads: int | None, pin: bool) -> tuple[int, list[int]]:
        """Threads per rank and the cores this rank is pinned to (all when not pinned)."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED, key=self.rank)
        lrank, lsize = local.Get_rank(), local.Get_size()
        local.Free()
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            list(range(os.cpu_count() or 1))
        if threads is not None and threads < 1:
            raise DistributedError(f"threads must be >= 1, got {threads}")
        per = threads or max(1, len(cpus) // lsize)
        if per * lsize > len(cpus):
            if per > 1:
                raise DistributedError(
                    f"--threads {per} x {lsize} ranks on this host needs {per * lsize} cores, "
                    f"it has {len(cpus)}: oversubscribed; use --threads "
                    f"{max(1, len(cpus) // lsize)} or fewer ranks per host")
            return 1, cpus   # more ranks than cores: one thread each, left to the scheduler
        mine = cpus[lrank * per:(lrank + 1) * per]
        if pin and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, mine)
        return per, mine

    # ---- data ----
    def shard(self, b: Batch) -> Batch:
        """This rank's contiguous slice of a global batch's batch axis."""
        lo, hi = split_bounds(b.ids.shape[1], self.size)[self.rank]

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:, lo:hi]

        return Batch(b.ids[:, lo:hi], b.targets[:, lo:hi], cut(b.mask), cut(b.weights), b.reset)

    def shard_state(self, state: State | None) -> State | None:
        """This rank's rows of a global carried state (as a checkpoint holds it)."""
        if state is None:
            return None
        lo, hi = split_bounds(state[0][0].shape[0], self.size)[self.rank]
        return [[np.ascontiguousarray(h[lo:hi]) for h in layer] for layer in state]

    def gather_state(self, state: State | None) -> State | None:
        """The global carried state from every rank's rows, in rank order (on every rank)."""
        if state is None:
            return None
        rows = self._allgather_obj_ints([state[0][0].shape[0]], "gather_state sizes")
        counts = [r[0] for r in rows]
        out: State = []
        for layer in state:
            glayer = []
            for h in layer:
                h = np.ascontiguousarray(h)
                width = int(np.prod(h.shape[1:]))
                g = np.empty((sum(counts),) + h.shape[1:], h.dtype)
                c = [n * width for n in counts]
                d = [sum(c[:i]) for i in range(len(c))]
                self._wait([self.comm.Iallgatherv(h, [g, (c, d), self._mpitype(h)])],
                           "gather_state")
                glayer.append(g)
            out.append(glayer)
        return out

    # ---- one step ----
    def loss_and_grads(self, model: RNNModel, params: Arrays, batch: Batch,
                       state: State | None, rng: np.random.Generator | None) -> Result:
        """Loss and gradients of the *global* batch's mean loss, reduced over the ranks; the
        state is this rank's own (carried between steps). The loss is the global mean."""
        local = self.shard(batch)
        total = batch.tokens
        red = _Reducer(self)
        r = model.loss_and_grads(params, local.ids, local.targets, state, local.mask,
                                 local.weights, rng, grad_scale=1.0 / max(total, 1e-12),
                                 grad_ready=red.ready if self.overlap else None)
        if not self.overlap:
            red.ready(r.grads)
        red.finish(r.grads)
        loss_sum = self.ordered_sum([r.loss * r.tokens], "loss")[0]
        return Result(loss_sum / max(total, 1e-12), r.grads, r.state, total, r.d_state0)

    def evaluate(self, model: RNNModel, params: Arrays, batch: Batch,
                 state: State | None) -> tuple[float, float, State]:
        """(summed loss, token weight, this rank's state) of a global batch, the sums over all
        ranks: validation split like training."""
        local = self.shard(batch)
        ls, n, st, _ = model.evaluate(params, local.ids, local.targets, state, local.mask,
                                      local.weights)
        s = self.ordered_sum([ls, n], "evaluate")
        return s[0], s[1], st

    def ordered_sum(self, values: list[float], what: str) -> list[float]:
        """Sums of a few float64 values over the ranks, added in rank order."""
        buf = np.asarray(values, np.float64)
        allv = np.empty((self.size, buf.size), np.float64)
        self._wait([self.comm.Iallgather(buf, allv)], what)
        acc = allv[0].copy()
        for i in range(1, self.size):
            acc += allv[i]
        return [float(v) for v in acc]

    def root_says(self, flag: bool) -> bool:
        """Rank 0's flag, on every rank (a decision all ranks must take together)."""
        buf = np.array([1 if flag else 0], np.int8)
        self._wait([self.comm.Ibcast(buf, root=0)], "broadcast of rank 0's decision")
        return bool(buf[0])

    # ---- consistency ----
    def check_params(self, params: Arrays, step: int) -> None:
        """Raise DistributedError when the parameters differ between ranks (CRC32 of their
        bytes, compared across ranks; about 1 ms per MB)."""
        crc = 0
        for k in sorted(params):
            crc = zlib.crc32(np.ascontiguousarray(params[k]).view(np.uint8), crc)
        crc = zlib.crc32(",".join(sorted(params)).encode(), crc)
        crcs = [r[0] for r in self._allgather_obj_ints([crc], "parameter checksum")]
        bad = [i for i, c in enumerate(crcs) if c != crcs[0]]
        if bad:
            raise DistributedError(f"the parameters differ between ranks at step {step}: ranks "
                                   f"{bad} disagree with rank 0 (CRC32 {crcs}); were they "
                                   "started from different checkpoints, seeds or data?")

    def after_step(self, params: Arrays, step: int) -> None:
        if self.check_every and step % self.check_every == 0:
            self.check_params(params, step)

    # ---- ending ----
    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (MPI_Abort): what an error on one rank must do, since
        the others would otherwise wait for it."""
        sys.stdout.flush()
        sys.stderr.flush()
        # mpiexec forwards a rank's output asynchronously and drops what is still on its way
        # when the job is killed: give the error message a moment to get out
        time.sleep(0.5)
        self.comm.Abort(code)

    # ---- MPI plumbing ----
    def _mpitype(self, a: np.ndarray) -> Any:
        return self.MPI._typedict[a.dtype.char]

    def _allgather_obj_ints(self, ints: list[int], what: str) -> list[list[int]]:
        buf = np.asarray(ints, np.int64)
        out = np.empty((self.size, buf.size), np.int64)
        self._wait([self.comm.Iallgather(buf, out)], what)
        return [[int(v) for v in row] for row in out]

    def _wait(self, reqs: list[Any], what: str) -> None:
        """Wait for requests for at most ``timeout`` seconds; then print which collective on
        which rank timed out and end the whole job (``abort``). The wait polls ``Testall``
        and yields the core between polls: MPICH moves a transfer only inside MPI calls, so
        sleeping between polls was measured 20x slower on an 18 MiB all-to-all, while
        MPICH's own blocking wait spins without yielding and, with more ranks than cores,
        takes the core from the rank it waits for."""
        t0 = time.perf_counter()
        Testall = self.MPI.Request.Testall
        deadline = t0 + self.timeout
        n = 0
        while not Testall(reqs):
            os.sched_yield()
            n += 1
            if n % 1024 == 0 and time.perf_counter() > deadline:
                print(f"graphrnn: error: rank {self.rank} of {self.size}: {what} did not "
                      f"complete within {self.timeout:g} s: another rank has died or hung "
                      "(see its error above). Restart from the last checkpoint with --resume "
                      "(any number of ranks)", file=sys.stderr, flush=True)
                self.abort(1)
        self.comm_seconds += time.perf_counter() - t0


class _Reducer:
    """The buckets of one step: packs the groups ``grad_ready`` hands over, starts each full
    bucket's reduction, writes the sums back into the gradients at ``finish``."""

    def __init__(self, dist: Distributed) -> None:
        self.d = dist
        self.pending: list[tuple[str, np.ndarray]] = []
        self.nbytes = 0
        # per bucket: names, shapes, flat buffer, request(s), and for the ordered mode the
        # alltoall receive buffer and the counts of the pieces
        self.buckets: list[dict[str, Any]] = []

    def ready(self, grads: Arrays) -> None:
        for k, g in grads.items():
            if self.pending and g.dtype != self.pending[0][1].dtype:
                self._flush()
            self.pending.append((k, g))
            self.nbytes += g.nbytes
        if self.nbytes >= self.d.bucket_bytes:
            self._flush()
        reqs = [r for b in self.buckets for r in b["reqs"]]
        if reqs:
            self.d.MPI.Request.Testall(reqs)   # moves the collectives in flight along

    def _flush(self) -> None:
        if not self.pending:
            return
        d = self.d
        names = [k for k, _ in self.pending]
        shapes = [g.shape for _, g in self.pending]
        buf = np.concatenate([np.ascontiguousarray(g).reshape(-1) for _, g in self.pending])
        b: dict[str, Any] = {"names": names, "shapes": shapes, "buf": buf}
        if d.deterministic:
            cuts = split_bounds(buf.size, d.size) if buf.size >= d.size else \
                [(0, buf.size)] + [(buf.size, buf.size)] * (d.size - 1)
            counts = [hi - lo for lo, hi in cuts]
            displs = [lo for lo, _ in cuts]
            mine = counts[d.rank]
            recv = np.empty(d.size * mine, buf.dtype)
            t = d._mpitype(buf)
            b["counts"], b["displs"], b["recv"] = counts, displs, recv
            b["reqs"] = [d.comm.Ialltoallv(
                [buf, (counts, displs), t],
                [recv, ([mine] * d.size, [i * mine for i in range(d.size)]), t])]
        else:
            b["reqs"] = [d.comm.Iallreduce(d.MPI.IN_PLACE, buf, op=d.MPI.SUM)]
        self.buckets.append(b)
        self.pending, self.nbytes = [], 0

    def finish(self, grads: Arrays) -> None:
        self._flush()
        d = self.d
        if d.deterministic:
            # the gathers are started in bucket order after all the alltoalls, the same order
            # on every rank (nonblocking collectives match in the order they are started)
            for i, b in enumerate(self.buckets):
                d._wait(b["reqs"], f"gradient bucket {i} (reduce-scatter)")
                mine = b["counts"][d.rank]
                parts = b["recv"].reshape(d.size, mine)
                acc = parts[0].copy()
                for j in range(1, d.size):
                    acc += parts[j]
                t = d._mpitype(b["buf"])
                b["reqs"] = [d.comm.Iallgatherv(acc, [b["buf"], (b["counts"], b["displs"]), t])]
                b["acc"] = acc   # alive until the gather completes
        d._wait([r for b in self.buckets for r in b["reqs"]], "gradient all-reduce")
        for b in self.buckets:
            off = 0
            for k, s in zip(b["names"], b["shapes"]):
                n = int(np.prod(s))
                # views of the bucket: no copy back (the gradients are the caller's to keep)
                grads[k] = b["buf"][off:off + n].reshape(s)
                off += n


def make_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """The dropout RNG of one rank at one step: its own stream (the trainer's RNG, which draws
    the data, must stay the same on every rank)."""
    return np.random.default_rng([seed, rank, step])

