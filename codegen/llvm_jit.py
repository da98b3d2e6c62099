"""Turning LLVM IR into callable native code, with an on-disk object cache.

llvmlite 0.50 facts this file relies on: there is no ``llvm.initialize()`` (only the native
target and asm printer are initialised), optimisation uses the new pass manager
(``create_pipeline_tuning_options`` + ``create_pass_builder(tm, pto).getModulePassManager()``),
pointers are opaque, and every engine gets its own target machine.

Compiled objects are cached under ``$GRAPHRNN_CACHE_DIR`` (default ``~/.cache/graphrnn``) in
``llvm/<key>.o``, where the key hashes the unoptimised IR text (or, for ``jit_keyed``, a text
that determines it), the llvmlite and LLVM versions and the host CPU name and features. A file
holds a header (magic, key, SHA-256 of key and payload, so an entry is bound to its key) before
the object bytes; an entry whose header, key or
checksum does not match is rebuilt and overwritten. An entry is machine code we run, so it is
only read when it is a regular file (no symlink, never a FIFO) owned by us and not writable by
others, in a directory owned by us that nobody else may write (``graphrnn.safefile``);
otherwise the cell is compiled without the cache, with one warning. Writes are atomic
(``safefile.atomic_write``).

Forking while another thread compiles would leave the child with llvmlite's library lock held
by a thread that does not exist there; ``codegen.forkguard`` holds that lock and ours across
``os.fork``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import llvmlite
import llvmlite.binding as llvm
from llvmlite.binding import ffi

from graphrnn.safefile import read_keyed, write_keyed

from .forkguard import hold_across_fork

# version 2: the checksum covers the key too (version 1 entries are simply never looked up)
MAGIC = b"GRNNOBJ2"
# a cached object larger than this is not one we wrote (a big cell's module is a few MB)
MAX_ENTRY_BYTES = 256 << 20
_lock = threading.Lock()
# rank 20: taken inside codegen.llvm's helper lock (10), around llvmlite's own (30)
hold_across_fork(_lock, 20)
# llvmlite 0.50 wraps every C call in ``with lib._lock`` (an _LLVMLock around an RLock); the
# RLock is what a forked child would find taken
_llvmlite_lock = getattr(getattr(ffi.lib, "_lock", None), "_lock", None)
if _llvmlite_lock is not None:
    hold_across_fork(_llvmlite_lock, 30)


_ready = False


def _init() -> None:
    """Initialise LLVM's native target once per process (thread-safe: codegen.llvm may run
    this in a background thread while the optimizer works)."""
    global _ready
    if _ready:
        return
    with _lock:
        if not _ready:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _register_process_symbols()
            _ready = True


def _register_process_symbols() -> None:
    """libm/libc functions generated code may call (float64 tanh/log1p/exp/log, and memset/
    memcpy that LLVM may introduce), made known to the JIT linker explicitly."""
    names = {"m": ["tanh", "log1p", "exp", "log", "tanhf", "expf", "logf", "log1pf"],
             "c": ["memset", "memcpy", "memmove", "sched_yield"]}
    # the process itself first (Python links libc and libm): find_library runs ldconfig or a
    # compiler, 20-35 ms on the path of every compile that waits for LLVM
    here = ctypes.CDLL(None)
    for lib_name, syms in names.items():
        lib: ctypes.CDLL | None = None
        for s in syms:
            addr = _symbol(here, s)
            if not addr:
                if lib is None:
                    path = ctypes.util.find_library(lib_name)
                    lib = ctypes.CDLL(path) if path else here
                addr = _symbol(lib, s)
            if addr:
                llvm.add_symbol(s, addr)


def _symbol(lib: ctypes.CDLL, name: str) -> int:
    try:
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
    except AttributeError:
        return 0


@lru_cache(maxsize=1)
def host_cpu() -> tuple[str, str]:
    _init()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def target_machine(cpu: str | None = None, features: str | None = None,
                   reloc: str = "default") -> llvm.TargetMachine:
    """A fresh target machine for the host (one per engine)."""
    _init()
    hc, hf = host_cpu()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu if cpu is not None else hc,
                                        features=features if features is not None else hf,
                                        opt=3, reloc=reloc, codemodel="jitdefault")


def optimize(mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> None:
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    mpm = pb.getModulePassManager()
    mpm.run(mod, pb)


def parse(ir_text: str, tm: llvm.TargetMachine) -> llvm.ModuleRef:
    _init()
    mod = llvm.parse_assembly(ir_text)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    return mod


def compile_object(ir_text: str, tm: llvm.TargetMachine | None = None) -> bytes:
    tm = tm or target_machine()
    mod = parse(ir_text, tm)
    optimize(mod, tm)
    return bytes(tm.emit_object(mod))


def assembly(ir_text: str) -> str:
    """Optimised host assembly of an IR module (for tests and curious users)."""
    tm = target_machine()
    mod = parse(ir_text, tm)
    optimize(mod, tm)
    return str(tm.emit_assembly(mod))


def optimized_ir(ir_text: str) -> str:
    tm = target_machine()
    mod = parse(ir_text, tm)
    optimize(mod, tm)
    return str(mod)


# ---- the cache ----

def cache_dir() -> Path:
    root = os.environ.get("GRAPHRNN_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "graphrnn"
    return base / "llvm"


def cache_key(ir_text: str) -> str:
    """The key of an object: ``ir_text`` is the IR, or a description that determines it
    (``jit_keyed``)."""
    cpu, feats = host_cpu()
    h = hashlib.sha256()
    for part in (MAGIC.decode(), llvmlite.__version__, ".".join(map(str, llvm.llvm_version_info)),
                 cpu, feats, ir_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _read_entry(path: Path, key: str) -> bytes | None:
    return read_keyed(path, MAGIC, key, MAX_ENTRY_BYTES)


def _write_entry(path: Path, key: str, payload: bytes) -> None:
    write_keyed(path, MAGIC, key, payload)


@dataclass
class JitStats:
    cache_hit: bool = False
    seconds: float = 0.0
    key: str = ""
    path: str = ""


@dataclass
class Jitted:
    """A loaded native module: the engine must stay alive while its functions are used."""
    engine: llvm.ExecutionEngine
    tm: llvm.TargetMachine
    stats: JitStats = field(default_factory=JitStats)

    def address(self, name: str) -> int:
        return int(self.engine.get_function_address(name))

    def global_address(self, name: str) -> int:
        return int(self.engine.get_global_value_address(name))


def jit(ir_text: str, use_cache: bool = True) -> Jitted:
    """Compile (or load from the cache) and link ir_text into a fresh engine."""
    return jit_keyed(ir_text, lambda: ir_text, use_cache)


def jit_keyed(source_id: str, make_ir: Callable[[], str], use_cache: bool = True) -> Jitted:
    """``jit(make_ir())``, with the cache keyed by ``source_id`` instead of the IR: a text that
    determines the IR (the llvm backend's: a digest of the Program, the emitter's options and
    source), so that a hit does not emit the IR at all. ``make_ir`` runs only on a miss."""
    t0 = time.perf_counter()
    _init()
    stats = JitStats()
    key = cache_key(source_id)
    path = cache_dir() / f"{key}.o"
    stats.key, stats.path = key, str(path)
    tm = target_machine()
    obj = _read_entry(path, key) if use_cache else None
    stats.cache_hit = obj is not None
    if obj is None:
        obj = compile_object(make_ir(), tm)
        if use_cache:
            _write_entry(path, key, obj)  # a read-only home is not an error: no caching
    with _lock:
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
    stats.seconds = time.perf_counter() - t0
    return Jitted(engine, tm, stats)
