"""Locks held across ``os.fork``, so a child is never born while another thread is inside LLVM.

A thread compiling (llvmlite's library lock, our own ``llvm_jit`` and helper locks) at the moment
another thread forks leaves the child with those locks taken by a thread that does not exist
there: the child's first compile waits forever (3 of 4 runs in issue 13). ``os.register_at_fork``
runs ``_before`` in the forking thread, which waits for every registered lock, in one fixed
order (outermost first, the order the compile path takes them), and releases them on both sides
of the fork. Registering happens once, here, so the order never depends on which module was
imported first.
"""

from __future__ import annotations

import os
import threading
from typing import Any

# (rank, lock): taken in increasing rank, released in reverse
_locks: list[tuple[int, Any]] = []
_guard = threading.Lock()   # guards _locks itself; held across the fork too, outermost


def hold_across_fork(lock: Any, rank: int) -> None:
    """Hold ``lock`` (anything with acquire/release) while the process forks. ``rank`` is its
    place in the compile path's lock order: a lock taken while another is held ranks higher."""
    with _guard:
        if all(lk is not lock for _, lk in _locks):
            _locks.append((rank, lock))
            _locks.sort(key=lambda e: e[0])


_held: list[Any] = []


def _before() -> None:
    _guard.acquire()
    for _, lk in _locks:
        lk.acquire()
        _held.append(lk)


def _after() -> None:
    while _held:
        _held.pop().release()
    _guard.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after, after_in_child=_after)
