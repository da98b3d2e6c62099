"""The threads that run one native program call together (see llvm_program: every entry takes
``ctx = {tid, nthreads, sync, work}`` and splits each step between the threads).

The calling thread is thread 0; threads 1 .. n-1 are persistent daemon threads, one per extra
core, that wait on a queue. ctypes releases the GIL around native calls, so all of them run the
entry at once and meet at the generated code's spin barriers.

One pool of threads per process: the first threaded call takes the cores over from numpy's
OpenBLAS. It remembers OpenBLAS's thread count n (``OPENBLAS_NUM_THREADS`` or
``codegen.llvm_blas.set_blas_threads`` before that call), uses n threads from then on and leaves
OpenBLAS at one thread: each of our threads calls it for its share of the big GEMMs. Restoring
OpenBLAS's count after every call was measured to cost 4x at H = 128 (LSTM training step, 2
cores): after a parallel call OpenBLAS's idle threads spin (sched_yield) for about 0.1 s, on the
cores our threads need. ``matmul`` splits a numpy product over the same threads (numpy releases
the GIL), for the model's own GEMMs; ``release()`` gives the cores back to OpenBLAS.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import threading
from typing import Any, Callable

import numpy as np

from graphrnn.threads import current as current_policy

from .llvm_blas import blas_threads, set_blas_threads
from .llvm_program import SYNC_STRIDE

ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)


class _Worker:
    def __init__(self, index: int) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=f"graphrnn-llvm-{index}",
                                       daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                job()
                self.done.put(None)
            except BaseException as e:   # noqa: BLE001 - handed to the caller
                self.done.put(e)


class Team:
    """Runs entries on n threads; one call at a time (calls from several Python threads wait:
    the workspace of packed weights is one per compiled cell)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._sync = np.zeros(2 * SYNC_STRIDE, np.int64)

    def run(self, fn: Any, T: int, B: int, bufs: int, nthreads: int, work: int) -> None:
        if nthreads <= 1:
            ctx = np.array([0, 1, 0, work], np.int64)
            with self._lock if work else contextlib.nullcontext():
                fn(T, B, bufs, ctx.ctypes.data)
            return
        with self._lock:
            self._sync[:] = 0
            ctx = np.zeros((nthreads, 4), np.int64)
            ctx[:, 0] = np.arange(nthreads)
            ctx[:, 1] = nthreads
            ctx[:, 2] = self._sync.ctypes.data
            ctx[:, 3] = work
            take_over()
            jobs = [lambda a=int(ctx[i].ctypes.data): fn(T, B, bufs, a)
                    for i in range(nthreads)]
            if current_policy().pool == "openmp" and openmp_pool() is not None:
                run_on_openmp(jobs)
            else:
                self._run_jobs(jobs)

    def _run_jobs(self, jobs: list[Callable[[], None]]) -> None:
        """jobs[0] on this thread, the others on workers; re-raises a worker's error."""
        while len(self._workers) < len(jobs) - 1:
            self._workers.append(_Worker(len(self._workers) + 1))
        workers = self._workers[:len(jobs) - 1]
        for w, job in zip(workers, jobs[1:]):
            w.jobs.put(job)
        try:
            jobs[0]()
        finally:
            errors = [w.done.get() for w in workers]
        for e in errors:
            if e is not None:
                raise e

    def map(self, jobs: list[Callable[[], None]]) -> None:
        with self._lock:
            self._run_jobs(jobs)


TEAM = Team()


# ---- the process's OpenMP pool (PyTorch's), for graphrnn.threads' "openmp" policy ----

_PARALLEL_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_gomp: Any = None    # (GOMP_parallel, omp_get_thread_num), False when no libgomp is loaded


def openmp_pool() -> Any:
    """libgomp's entry points if the process has loaded it (PyTorch's CPU wheels do), else
    None. Only an already loaded library is used: loading one ourselves would start a second
    pool, the very oversubscription this avoids."""
    global _gomp
    if _gomp is None:
        _gomp = False
        path = None
        try:
            with open("/proc/self/maps") as f:
                for line in f:
                    if "libgomp" in line and line.rstrip().endswith(".so.1"):
                        path = line.split()[-1]
                        break
        except OSError:
            pass
        if path is not None:
            try:
                lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | os.RTLD_LAZY)
                par = lib.GOMP_parallel
                par.restype = None
                par.argtypes = [_PARALLEL_FN, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                tid = lib.omp_get_thread_num
                tid.restype = ctypes.c_int
                tid.argtypes = []
                inpar = lib.omp_in_parallel
                inpar.restype = ctypes.c_int
                inpar.argtypes = []
                _gomp = (par, tid, inpar)
            except (OSError, AttributeError):
                _gomp = False
    return _gomp or None


def run_on_openmp(jobs: list[Callable[[], None]]) -> None:
    """jobs[i] on OpenMP thread i of one parallel region of len(jobs) threads (the caller is
    thread 0). Each job calls a native entry through ctypes, which releases the GIL, so they
    run at once. A region may get fewer threads than asked (nested, or the pool's limit): then
    the call runs on graphrnn's own team instead (the entry's barriers wait for every job)."""
    par, tid, in_parallel = openmp_pool()
    errors: list[BaseException] = []
    ran = [False] * len(jobs)

    def body(_data: Any) -> None:
        i = tid()
        try:
            if 0 <= i < len(jobs):
                ran[i] = True
                jobs[i]()
        except BaseException as e:   # noqa: BLE001 - handed to the caller below
            errors.append(e)

    # the entry's barriers wait for every job: a region of fewer threads (inside another
    # region, or a pool capped lower) would hang, so those calls go to our own team
    if in_parallel() or _probe_size(par, len(jobs)) != len(jobs):
        TEAM._run_jobs(jobs)
        return
    par(_PARALLEL_FN(body), None, len(jobs), 0)
    if errors:
        raise errors[0]
    if not all(ran):
        raise RuntimeError("graphrnn: the OpenMP region ran fewer threads than asked")


_probed: dict[int, int] = {}


def _probe_size(par: Any, n: int) -> int:
    """How many threads a region of n gets in this process (asked once per n)."""
    if n not in _probed:
        seen: set[int] = set()
        lock = threading.Lock()
        tid = openmp_pool()[1]

        def body(_data: Any) -> None:
            with lock:
                seen.add(tid())
        par(_PARALLEL_FN(body), None, n, 0)
        _probed[n] = len(seen)
    return _probed[n]


def _after_fork_in_child() -> None:
    # a forked child has only the forking thread: forget the parent's workers (a job queued
    # for one would never run, and thread 0 would spin at the first barrier forever)
    TEAM._workers = []
    TEAM._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
_taken: int | None = None    # OpenBLAS's thread count when we took the cores over


def take_over() -> None:
    global _taken
    if _taken is None:
        _taken = max(1, blas_threads())
    set_blas_threads(1)


def release() -> None:
    """Give the cores back to numpy's OpenBLAS (its thread count from before the take-over)."""
    global _taken
    if _taken is not None:
        set_blas_threads(_taken)
        _taken = None


def default_threads() -> int:
    """Threads per call: OpenBLAS's thread count before the take-over (1 where unknown)."""
    return _taken if _taken is not None else max(1, blas_threads())


def matmul(a: np.ndarray, b: np.ndarray, min_flops: float = 4e6) -> np.ndarray:
    """``a @ b`` for 2-D arrays, its columns split over the threads once they are ours (plain
    ``a @ b`` before the take-over, or when small)."""
    n = b.shape[1]
    nthr = _taken or 1   # before the take-over OpenBLAS's own threads do it
    if nthr <= 1 or 2.0 * a.shape[0] * a.shape[1] * n < min_flops or n < 2 * nthr:
        return a @ b
    out = np.empty((a.shape[0], n), np.result_type(a, b))
    cuts = [n * i // nthr for i in range(nthr + 1)]
    TEAM.map([lambda lo=lo, hi=hi: np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])
              for lo, hi in zip(cuts, cuts[1:])])
    return out
