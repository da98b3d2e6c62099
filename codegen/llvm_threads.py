"""The threads that run one native program call together (see llvm_program: every entry takes
``ctx = {tid, nthreads, sync, work}`` and splits each step between the threads).

The calling thread is thread 0; threads 1 .. n-1 are persistent daemon threads, one per extra
core, that wait on a queue. ctypes releases the GIL around native calls, so all of them run the
entry at once and meet at the generated code's spin barriers. While they run, numpy's OpenBLAS
(which each thread calls for its share of the big GEMMs) is set to one thread: its own pool on
the same cores would fight ours. How many threads: as many as OpenBLAS is set to
(``OPENBLAS_NUM_THREADS`` or ``codegen.llvm_blas.set_blas_threads``), so one knob controls both.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from typing import Any, Callable

import numpy as np

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
            if work:
                with self._lock:
                    fn(T, B, bufs, ctx.ctypes.data)
            else:
                fn(T, B, bufs, ctx.ctypes.data)
            return
        with self._lock:
            while len(self._workers) < nthreads - 1:
                self._workers.append(_Worker(len(self._workers) + 1))
            self._sync[:] = 0
            ctx = np.zeros((nthreads, 4), np.int64)
            ctx[:, 0] = np.arange(nthreads)
            ctx[:, 1] = nthreads
            ctx[:, 2] = self._sync.ctypes.data
            ctx[:, 3] = work
            blas = blas_threads()
            set_blas_threads(1)
            try:
                workers = self._workers[:nthreads - 1]
                for i, w in enumerate(workers, start=1):
                    w.jobs.put(lambda a=int(ctx[i].ctypes.data): fn(T, B, bufs, a))
                fn(T, B, bufs, ctx[0].ctypes.data)
                errors = [w.done.get() for w in workers]
            finally:
                set_blas_threads(blas)
            for e in errors:
                if e is not None:
                    raise e


TEAM = Team()


def default_threads() -> int:
    """Threads per call: numpy's OpenBLAS setting (1 where it cannot be read)."""
    return max(1, blas_threads())
