"""LLVM for the llvm backend, loaded once per process, in a background thread when asked.

Most of importing ``llvmlite.binding`` (~70 ms) is the dlopen of its shared library, and
compiling is a ctypes call; both release the GIL, so they overlap with the optimizer's Python
work on another core. ``jit_module()`` is ``codegen.llvm_jit`` once LLVM is initialised; the
llvm modules that need LLVM reach it through here (below them all, so they import no cycle).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from .forkguard import hold_across_fork

_preload: threading.Thread | None = None
_preload_lock = threading.Lock()
_llvm_loaded = threading.Event()   # set when the background thread has loaded LLVM
# a child forked while the loader thread holds it would wait on it forever; the rank is the
# order the compile path takes the locks in (then llvm_gemm's, llvm_jit's, llvmlite's)
hold_across_fork(_preload_lock, 5)


def _load_llvm(then: Callable[[], object] | None) -> None:
    try:
        from . import llvm_jit
        llvm_jit.host_cpu()
    except Exception:   # noqa: BLE001 - jit_module() imports again and raises in the caller
        return
    finally:
        _llvm_loaded.set()
    if then is not None:
        try:
            then()
        except Exception:   # noqa: BLE001 - the cell's own call raises it again
            pass


def load_in_background(then: Callable[[], object] | None = None) -> None:
    """Load LLVM in a background thread, then run ``then`` there (unless one is loading)."""
    global _preload
    with _preload_lock:
        if _preload is None or not _preload.is_alive():
            _preload = threading.Thread(target=_load_llvm, args=(then,),
                                        name="graphrnn-llvm-load", daemon=True)
            _preload.start()


def jit_module() -> Any:
    """codegen.llvm_jit, with LLVM initialised (waits for the background thread to load it,
    not for what it may run after that)."""
    if _preload is not None:
        _llvm_loaded.wait()
    from . import llvm_jit
    return llvm_jit
