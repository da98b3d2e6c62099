"""Who owns the cores while graphrnn's native code runs inside another framework's loop.

graphrnn's llvm backend runs a sweep on a team of threads that meet at spin barriers
(``codegen/llvm_threads.py``). Alone, its team owns the cores. Inside a PyTorch training loop
PyTorch's OpenMP pool is there too, and after every parallel region its workers keep spinning
(libgomp's default wait, ~milliseconds) on the cores our team needs: a spin barrier then waits
for a thread the kernel has descheduled, and an LSTM step (H=256, B=32, T=50, 2 cores) took
2.3x as long as graphrnn alone. The policy below decides, in this one place, how a bridge's
native call shares the cores; ``graphrnn.torch`` and ``graphrnn.jax`` wrap every call in
``native_call(framework)``, and the backend reads ``current()``.

Policies (``set_policy(name, threads=None, framework=None)``):

- ``"auto"`` (default): per framework, the measured best: PyTorch -> ``"openmp"``; anything
  else -> ``"own"``.
- ``"openmp"``: run the call's team *on the process's OpenMP pool* (libgomp's
  ``GOMP_parallel``: PyTorch's intra-op threads, ``torch.get_num_threads()`` of them): the
  threads that would spin are the ones doing our work, so nothing is oversubscribed. Falls back
  to ``"own"`` where no libgomp is loaded.
- ``"own"``: graphrnn's own team (``threads`` per call, default OpenBLAS's count as alone).
- ``"shrink"``: the framework's pool at one thread for the duration of the call, then back
  (``torch.set_num_threads(1)``; measured, kept for comparison: it does not stop workers that
  are already spinning).

``threads`` fixes the team size for native calls made through a bridge (None: the
framework's own thread count for ``"openmp"``, the backend's default otherwise). The numbers
behind the choice are in ``benchmarks/bench_torch_threads.py``'s table (README).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

POLICIES = ("auto", "own", "openmp", "shrink")


@dataclass(frozen=True)
class Policy:
    """What a native call does: ``pool`` is "own" or "openmp"; ``threads`` the team size
    (None: the backend's default); ``shrink`` whether the framework's own pool runs on one
    thread meanwhile."""
    pool: str = "own"
    threads: int | None = None
    shrink: bool = False


ALONE = Policy()
_settings: dict[str | None, tuple[str, int | None]] = {None: ("auto", None)}
_local = threading.local()


def set_policy(name: str = "auto", threads: int | None = None,
               framework: str | None = None) -> None:
    """Choose how bridges' native calls share the cores (for one framework, e.g. "torch" or
    "jax", or for all when ``framework`` is None)."""
    if name not in POLICIES:
        raise ValueError(f"thread policy must be one of {POLICIES}, got {name!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    if framework is None:
        _settings.clear()
    _settings[framework] = (name, threads)


def get_policy(framework: str | None = None) -> tuple[str, int | None]:
    """The (name, threads) set for ``framework`` (or for all)."""
    return _settings.get(framework, _settings.get(None, ("auto", None)))


def current() -> Policy:
    """The policy of the native call running on this thread (``ALONE`` outside a bridge)."""
    return getattr(_local, "policy", ALONE)  # type: ignore[no-any-return]


def resolve(framework: str, framework_threads: int | None = None) -> Policy:
    """The Policy a call from ``framework`` runs under (``framework_threads``: its own pool's
    size, e.g. ``torch.get_num_threads()``)."""
    name, threads = get_policy(framework)
    if name == "auto":
        name = "openmp" if framework == "torch" else "own"
    if name == "openmp":
        return Policy("openmp", threads or framework_threads)
    if name == "shrink":
        return Policy("own", threads, shrink=True)
    return Policy("own", threads)


@contextlib.contextmanager
def native_call(framework: str, framework_threads: int | None = None,
                set_framework_threads: Callable[[int], None] | None = None
                ) -> Iterator[Policy]:
    """Run the enclosed native call under ``framework``'s policy (see the module docstring).
    ``set_framework_threads`` resizes the framework's pool (for ``"shrink"``); graphrnn never
    imports the framework itself."""
    pol = resolve(framework, framework_threads)
    prev = getattr(_local, "policy", ALONE)
    shrink = pol.shrink and set_framework_threads is not None and framework_threads
    if shrink:
        set_framework_threads(1)   # type: ignore[misc]
    _local.policy = pol
    try:
        yield pol
    finally:
        _local.policy = prev
        if shrink:
            set_framework_threads(framework_threads)   # type: ignore[misc,arg-type]
