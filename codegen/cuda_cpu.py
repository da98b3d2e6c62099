"""Proof of the CUDA backend without a GPU: nvcc to PTX, ptxas register reports, and the same
kernel sources built as C++ through ``cuda_shim.h`` and run on the CPU.

- ``compile_ptx(source, arch)`` runs ``nvcc -ptx`` once for a whole module (many kernels);
  ``compile_nvrtc(source, arch)`` gives the same through NVRTC, the compiler CuPy uses on the GPU
  (CuPy's binding to the NVRTC library: no GPU or driver needed, only the library).
- ``ptxas_report(ptx, arch)`` runs ``ptxas -v`` and returns registers and spills per kernel.
- ``ShimLibrary`` builds a module's source (unchanged) plus a generated launcher per kernel with
  g++ into a shared library, loaded with ctypes. ``ShimLauncher`` runs kernels with it, walking
  the grid in forward, reversed or shuffled block order.
- ``FakeLauncher`` records every launch (grid, block, argument dtypes) and checks it against the
  kernel's generated signature and operand layouts before passing it on.

Builds are cached in a directory (default ``$TMPDIR/graphrnn-cuda-<uid>``) by a hash of source,
flags and compiler. A shared library from there is code we load, and a shared temp folder is
where another user could plant one first, so the directory and each entry are used only when
they are ours and nobody else may write them, and an entry is checked against a digest of its
key and bytes (``graphrnn.safefile``; PTX in the entry's header, a library in ``NAME.so.sum``);
anything else is rebuilt in a private temporary folder, with one warning. Writes are atomic.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from graphrnn.errors import BackendError
from graphrnn.safefile import (
    keyed_digest,
    make_private_dir,
    read_cache_file,
    read_keyed,
    warn_once,
    write_cache_file,
    write_keyed,
)

from .cuda_render import CTYPE, LoopSpec, RenderedKernel, extent, module_source

SHIM_HEADER = Path(__file__).with_name("cuda_shim.h")
NP_OF_CTYPE = {v: np.dtype(k) for k, v in CTYPE.items()}
ORDERS = ("forward", "reversed", "shuffled")


def find_tool(name: str) -> str | None:
    """A CUDA tool (nvcc, ptxas) on PATH or in the usual install place, or None."""
    found = shutil.which(name)
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.exists(os.path.join(root, "bin", name)):
            return os.path.join(root, "bin", name)
    return None


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"graphrnn-cuda-{os.getuid()}"


PTX_MAGIC = b"GRNNPTX1"
MAX_ENTRY_BYTES = 256 << 20


def _usable_cache(cache_dir: Path | None) -> Path | None:
    """The cache directory, created private, or None (after one warning) when it is not ours
    alone."""
    cache = Path(cache_dir or default_cache_dir())
    why = make_private_dir(cache)
    if why is not None:
        warn_once(f"graphrnn: not using the cache directory {cache}: {why}; building without "
                  "the disk cache")
        return None
    return cache


def _run(cmd: list[str], what: str, cwd: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if out.returncode != 0:
        raise BackendError(f"{what} failed ({' '.join(cmd)}):\n{out.stderr[-4000:]}")
    return out


# ---- nvcc / ptxas ----

def compile_ptx(source: str, arch: str = "sm_80", cache_dir: Path | None = None,
                options: Sequence[str] = ()) -> str:
    """PTX for a module source, by ``nvcc -ptx -arch=<arch>`` (cached by source and options)."""
    nvcc = find_tool("nvcc")
    if nvcc is None:
        raise BackendError("nvcc not found: install the CUDA toolkit or set CUDA_HOME (or pip "
                           "install cupy-cuda13x nvidia-cuda-nvrtc for NVRTC) to export PTX")
    cache = _usable_cache(cache_dir)
    key = hashlib.sha256("\0".join([source, arch, *options, nvcc]).encode()).hexdigest()[:24]
    out_path = cache / f"{key}.{arch}.ptx" if cache is not None else None
    if out_path is not None:
        data = read_keyed(out_path, PTX_MAGIC, key, MAX_ENTRY_BYTES)
        if data is not None:
            return data.decode()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "k.cu").write_text(source)
        _run([nvcc, "-ptx", f"-arch={arch}", *options, "k.cu", "-o", "k.ptx"],
             "nvcc", tmp)
        ptx = (Path(tmp) / "k.ptx").read_text()
    if out_path is not None:
        write_keyed(out_path, PTX_MAGIC, key, ptx.encode())
    return ptx


def nvrtc_version() -> tuple[int, int] | None:
    """NVRTC's version through CuPy's binding, or None where CuPy or the library is missing."""
    try:
        from cupy_backends.cuda.libs import nvrtc  # type: ignore[import-not-found]
        major, minor = nvrtc.getVersion()
    except Exception:  # noqa: BLE001 - ImportError, or the library not found at load
        return None
    return int(major), int(minor)


def compile_nvrtc(source: str, arch: str = "sm_80", options: Sequence[str] = (),
                  cubin: bool = False) -> str | bytes:
    """A module compiled by NVRTC, as CuPy's ``RawModule`` compiles it on a GPU: PTX for the
    virtual architecture of ``arch`` (``sm_80`` -> ``compute_80``), or with ``cubin`` machine
    code for ``arch`` itself, which is what CuPy loads when NVRTC knows the device."""
    if nvrtc_version() is None:
        raise BackendError("NVRTC not found: pip install cupy-cuda13x nvidia-cuda-nvrtc "
                           "(or install the CUDA toolkit for nvcc)")
    from cupy_backends.cuda.libs import nvrtc
    target = arch if cubin else arch.replace("sm_", "compute_")
    prog = nvrtc.createProgram(source, "graphrnn.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [*options, f"-arch={target}"])
        except Exception as e:  # noqa: BLE001 - NVRTCError; the log says what went wrong
            raise BackendError(f"NVRTC failed for {target}: {e}\n"
                               f"{nvrtc.getProgramLog(prog)[-4000:]}") from e
        if cubin:
            return bytes(nvrtc.getCUBIN(prog))
        ptx = nvrtc.getPTX(prog)
        return (ptx.decode() if isinstance(ptx, bytes) else str(ptx)).rstrip("\0")
    finally:
        nvrtc.destroyProgram(prog)


@dataclass(frozen=True)
class PtxasInfo:
    registers: int
    spill_stores: int
    spill_loads: int
    stack_frame: int


def ptxas_report(ptx: str, arch: str = "sm_80") -> dict[str, PtxasInfo]:
    """``ptxas -v`` on a PTX module: registers, spills and stack per entry function."""
    ptxas = find_tool("ptxas")
    if ptxas is None:
        raise BackendError("ptxas not found: install the CUDA toolkit or set CUDA_HOME")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "k.ptx").write_text(ptx)
        out = _run([ptxas, "-v", f"-arch={arch}", "k.ptx", "-o", os.devnull], "ptxas", tmp)
    report: dict[str, PtxasInfo] = {}
    name = None
    frame = stores = loads = 0
    for line in out.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                      r"(\d+) bytes spill loads", line)
        if m:
            frame, stores, loads = (int(g) for g in m.groups())
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and name is not None:
            report[name] = PtxasInfo(int(m.group(1)), stores, loads, frame)
            name = None
    return report


# ---- the C++ build through the shim ----

def _launcher_source(k: RenderedKernel) -> str:
    args = []
    for i, p in enumerate(k.params):
        if p.pointer:
            args.append(f"*({'const ' if p.const else ''}{p.ctype}* const*)args[{i}]")
        else:
            args.append(f"*(const {p.ctype}*)args[{i}]")
    return (f'extern "C" void grnn_launch_{k.name}(const unsigned* grid, const unsigned* block,'
            f" const unsigned* border, long nb, const unsigned* torder, long nt, void** args) "
            f"{{\n  GRNN_WALK(grid, block, border, nb, torder, nt, {k.name}("
            + ", ".join(args) + "));\n}\n")


def _cached_library(path: Path, key: str) -> bool:
    """Whether the library at ``path`` is ours, in our private directory, and the one built for
    ``key`` (its digest file says so): only then is it loaded."""
    so = read_cache_file(path, MAX_ENTRY_BYTES)
    if so is None:
        return False
    digest = read_cache_file(path.with_name(path.name + ".sum"), 64)
    return digest is not None and keyed_digest(key, so) == digest


class ShimLibrary:
    """Kernels built as C++ with g++ through cuda_shim.h, one shared library per module."""

    def __init__(self, kernels: Sequence[RenderedKernel], cache_dir: Path | None = None) -> None:
        cxx = shutil.which("g++") or shutil.which("c++")
        if cxx is None:
            raise BackendError("no C++ compiler (g++) found to build the CUDA shim")
        self.kernels = {k.name: k for k in kernels}
        src = module_source(list(self.kernels.values()))
        launchers = "\n".join(_launcher_source(k) for k in self.kernels.values())
        self.source = src + "\n/* ---- CPU launchers (not part of the CUDA module) ---- */\n" \
            + launchers
        flags = ["-std=c++17", "-O1", "-shared", "-fPIC", "-ffp-contract=off",
                 "-include", str(SHIM_HEADER)]
        shim = SHIM_HEADER.read_text()
        key = hashlib.sha256("\0".join([self.source, shim, cxx, *flags]).encode()).hexdigest()
        cache = _usable_cache(cache_dir)
        path = cache / f"shim_{key[:24]}.so" if cache is not None else None
        if path is not None and _cached_library(path, key):
            self.lib = ctypes.CDLL(str(path))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "k.cpp").write_text(self.source)
                _run([cxx, *flags, "k.cpp", "-o", "k.so"], "g++ (CUDA shim build)", tmp)
                so = (Path(tmp) / "k.so").read_bytes()
                # loaded from the private build folder, not from the cache: what we load is
                # what we built, whoever writes the cache entry afterwards
                self.lib = ctypes.CDLL(str(Path(tmp) / "k.so"))
            if path is not None and write_cache_file(path, so):
                write_cache_file(path.with_name(path.name + ".sum"), keyed_digest(key, so))
        self._fns: dict[str, Any] = {}
        for name in self.kernels:
            fn = getattr(self.lib, f"grnn_launch_{name}")
            fn.restype = None
            vp, n = ctypes.c_void_p, ctypes.c_long
            fn.argtypes = [vp, vp, vp, n, vp, n, vp]
            self._fns[name] = fn

    def fn(self, name: str) -> Any:
        return self._fns[name]


def _coords(dims: tuple[int, int, int], order: str, rng: np.random.Generator) -> np.ndarray:
    x, y, z = np.meshgrid(np.arange(dims[0]), np.arange(dims[1]), np.arange(dims[2]),
                          indexing="ij")
    c = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1).astype(np.uint32)
    if order == "reversed":
        c = c[::-1]
    elif order == "shuffled":
        c = c[rng.permutation(len(c))]
    elif order != "forward":
        raise ValueError(f"walk order must be one of {ORDERS}, got {order!r}")
    return np.ascontiguousarray(c)


def _byte_bounds(a: np.ndarray) -> tuple[int, int]:
    fn = getattr(np, "byte_bounds", None)
    if fn is None:
        from numpy.lib.array_utils import byte_bounds as fn  # numpy >= 2
    return fn(a)  # type: ignore[no-any-return]


def _ptr(a: Any) -> int:
    if isinstance(a, np.ndarray):
        return int(a.__array_interface__["data"][0])
    return int(a.data.ptr)  # a CuPy array


Dims = tuple[int, int, int]


def _dim3(v: int | Sequence[int]) -> Dims:
    t = (int(v),) if isinstance(v, (int, np.integer)) else tuple(int(x) for x in v)
    t = t + (1,) * (3 - len(t))
    if len(t) != 3 or min(t) < 1:
        raise BackendError(f"cuda launch: grid/block must be 1 to 3 positive sizes, got {v!r}")
    return t  # type: ignore[return-value]


class ShimLauncher:
    """Runs kernels from a ShimLibrary on numpy arrays, as a GPU launcher would."""

    def __init__(self, lib: ShimLibrary, order: str = "forward", seed: int = 0) -> None:
        self.lib = lib
        self.order = order
        self.rng = np.random.default_rng(seed)

    def launch(self, kernel: RenderedKernel, grid: int | Sequence[int],
               block: int | Sequence[int], args: Sequence[Any]) -> None:
        g, b = _dim3(grid), _dim3(block)
        border, torder = _coords(g, self.order, self.rng), _coords(b, self.order, self.rng)
        keep: list[Any] = []
        ptrs = (ctypes.c_void_p * len(args))()
        for i, (p, a) in enumerate(zip(kernel.params, args)):
            if p.pointer:
                cell = ctypes.c_void_p(_ptr(a))
            else:
                cell = ctypes.c_int(int(a))
            keep.append(cell)
            ptrs[i] = ctypes.cast(ctypes.pointer(cell), ctypes.c_void_p)
        gg = np.array(g, np.uint32)
        bb = np.array(b, np.uint32)
        self.lib.fn(kernel.name)(gg.ctypes.data, bb.ctypes.data, border.ctypes.data,
                                 len(border), torder.ctypes.data, len(torder), ptrs)


@dataclass
class LaunchRecord:
    kernel: str
    grid: Dims
    block: Dims
    arg_types: tuple[str, ...]   # numpy dtype names for arrays, "int" for scalars


@dataclass
class FakeLauncher:
    """Records launches and checks each against the kernel's signature before passing it on:
    argument count, array dtypes against the C types, ints for int parameters, no write into a
    read-only array, every touched element inside the array passed, outputs sharing memory with
    no other argument (the kernels declare ``__restrict__``), and a block no larger than the
    kernel's ``__launch_bounds__``."""
    inner: Any = None
    records: list[LaunchRecord] = field(default_factory=list)
    check_bounds: bool = True

    def launch(self, kernel: RenderedKernel, grid: int | Sequence[int],
               block: int | Sequence[int], args: Sequence[Any]) -> None:
        g, b = _dim3(grid), _dim3(block)
        where = f"kernel {kernel.name}"
        if b[0] * b[1] * b[2] > kernel.block:
            raise BackendError(f"{where}: block {b} exceeds its __launch_bounds__ "
                               f"({kernel.block})")
        if len(args) != len(kernel.params):
            raise BackendError(f"{where}: expected {len(kernel.params)} arguments "
                               f"({', '.join(p.name for p in kernel.params)}), got {len(args)}")
        types = []
        ints: dict[str, int] = {}
        for p, a in zip(kernel.params, args):
            if p.pointer:
                dt = getattr(a, "dtype", None)
                if dt is None or np.dtype(dt) != NP_OF_CTYPE[p.ctype]:
                    raise BackendError(f"{where}: argument {p.name} is {p.ctype}* but got "
                                       f"{type(a).__name__} of dtype {dt}")
                if not p.const and isinstance(a, np.ndarray) and not a.flags.writeable:
                    raise BackendError(f"{where}: output {p.name} got a read-only array")
                types.append(np.dtype(dt).name)
            else:
                if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
                    raise BackendError(f"{where}: argument {p.name} is int but got "
                                       f"{type(a).__name__} {a!r}")
                if not -2**31 <= int(a) < 2**31:
                    raise BackendError(f"{where}: argument {p.name}={a} does not fit an int")
                ints[p.name] = int(a)
                types.append("int")
        if self.check_bounds:
            self._check_memory(kernel, args, ints, where)
        self.records.append(LaunchRecord(kernel.name, g, b, tuple(types)))
        if self.inner is not None:
            self.inner.launch(kernel, g, b, args)

    @staticmethod
    def _check_memory(kernel: RenderedKernel, args: Sequence[Any], ints: dict[str, int],
                      where: str) -> None:
        spec = kernel.spec
        rows = ints.get("rows", 0)
        steps = ints.get("steps", 1) if isinstance(spec, LoopSpec) else 1
        if rows <= 0 or steps <= 0:
            return  # nothing is touched
        arrays = [(p, a) for p, a in zip(kernel.params, args) if p.pointer]
        for k, (p, a) in enumerate(arrays):
            need = extent(spec, k, rows, steps)
            if isinstance(a, np.ndarray):
                _lo, hi = _byte_bounds(a)
                have = (hi - _ptr(a)) // a.itemsize
            else:
                have = int(a.size)
            if need > have:
                raise BackendError(f"{where}: {p.name} touches {need} elements from its start "
                                   f"but the array passed holds {have} (rows={rows}, "
                                   f"cols={spec.cols}, steps={steps})")
            if not p.const and p.restrict and isinstance(a, np.ndarray):
                for q, other in arrays:
                    if q is not p and isinstance(other, np.ndarray) and \
                            np.shares_memory(a, other):
                        raise BackendError(f"{where}: output {p.name} shares memory with "
                                           f"{q.name}; the kernel's pointers are __restrict__")


def launch_shape(kernel: RenderedKernel, rows: int, max_blocks: int = 65535) -> tuple[int, int]:
    """(grid, block) for a grid-stride kernel over rows * cols points."""
    from .cuda_render import grid_for
    return grid_for(rows, kernel.spec.cols, kernel.block, max_blocks), kernel.block
