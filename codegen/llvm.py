"""The ``llvm`` backend: a cell's whole forward and BPTT as native code, through llvmlite.

    cc = graphrnn.compile(cell, backend="llvm", dtype="float32")
    ys, hT, res = cc.forward_train(params, xs, h0)      # one native call for all T steps
    grads = cc.backward(params, res, d_ys, d_hT)         # one native call for BPTT

The optimizer's ``Program`` (graphrnn/program.py) is emitted as one LLVM module
(``llvm_program``): fused kernels become vectorized loops (``llvm_kernels``), GEMMs call numpy's
OpenBLAS through a function pointer (``llvm_blas``), and the module is compiled once per cell and
dtype and cached on disk (``llvm_jit``). ``T`` and ``B`` are runtime arguments, so nothing is
recompiled for a new sequence length or batch size.

``export(cell, outdir)`` writes the same module as LLVM IR text, an object file, a shared
library (linked with the system ``cc``) and a C header documenting the ABI.

Options: ``graphrnn.compile(cell, backend="llvm", cache=False)`` skips the disk cache;
``blas=False`` keeps the naive GEMM fallback (for tests); ``diagonal=False`` keeps the
step-by-step time loop of a diagonal recurrence (``llvm_program.diagonal_loop``), which by
default runs as one loop over batch rows (``cc.diagonal_loops`` says which sweeps do).
``threads=n`` fixes the threads per call (default: numpy's OpenBLAS setting, see
``llvm_threads``; calls smaller than ``THREAD_MIN_FLOPS`` run on one); ``packed=False`` keeps
the BLAS for the products with a weight (``llvm_gemm``, ``llvm_program.packed_gemms``; used
when ``T * B`` reaches ``PACK_MIN_ROWS``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from graphrnn import program_json
from graphrnn.api import CompiledCell, Grads, Residuals, data_address
from graphrnn.errors import BackendError, RuntimeInputError
from graphrnn.ir import Cell
from graphrnn.program import Gather, Program, Scatter, reads_writes, sweep_flops
from graphrnn.runtime import (
    batch_view,
    check_residual_buffers,
    fixed_view,
    gradients,
    seq_view,
)
from graphrnn.threads import current as thread_policy

from .llvm_blas import blas_info
from .llvm_gemm import packed_helpers, ready_helpers
from .llvm_load import jit_module, load_in_background
from .llvm_program import collapsed_buffers, diagonal_loop, emit_program, workspace_bytes
from .llvm_threads import ENTRY, TEAM, default_threads
from .llvm_threads import matmul as threads_matmul
from .mangle import mangle


def start_llvm_load(dtype: str | None = None, cache: bool = True) -> None:
    """Load LLVM, and compile the packed-GEMM helpers for dtype, in a background thread
    (``llvm_load``; measured: a cold LSTM compile 0.05 s faster for the load alone)."""
    if dtype in ready_helpers() or (dtype is None and "codegen.llvm_jit" in sys.modules):
        return
    load_in_background(None if dtype is None else lambda: packed_helpers(dtype, cache))


SETTER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
PACKED_SETTER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)




def module_prefix(cell_name: str, dtype: str) -> str:
    # mangled, not "non-word characters to _": the JIT looks symbols up as ASCII, and two cell
    # names (a-b, a_b) must not share a symbol (codegen/mangle.py)
    return f"grnn_{mangle(cell_name)}_f{dtype[-2:]}"


class ArrayPool:
    """Recycled buffers, by shape and dtype. Fresh multi-megabyte arrays cost page faults on
    every call (measured: 7 ms of a 30 ms LSTM forward at H=256, B=32); a training loop
    allocates the same shapes each step, so arrays whose contents nobody can see any more (the
    residuals of a finished step, the backward's scratch) are kept for the next call."""

    def __init__(self, per_key: int = 3) -> None:
        self.per_key = per_key
        # keyed by np.dtype objects: ``a.dtype.name`` costs ~3 us a call, ``a.dtype`` nothing
        self.free: dict[tuple[tuple[int, ...], np.dtype], list[np.ndarray]] = {}

    def take(self, shape: tuple[int, ...], dtype: np.dtype, zero: bool) -> np.ndarray:
        lst = self.free.get((shape, dtype))
        if lst:
            try:
                a = lst.pop()
            except IndexError:   # another thread took it
                a = np.empty(shape, dtype)
            if zero:
                a.fill(0)
            return a
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)

    def give(self, arrays: Sequence[np.ndarray]) -> None:
        for a in arrays:
            lst = self.free.setdefault((a.shape, a.dtype), [])
            if len(lst) < self.per_key:
                lst.append(a)


def _written(sweep: Any) -> set[str]:
    return {r.buf for _ph, steps in sweep.phases() for s in steps for r in reads_writes(s)[1]}


def _written_whole_first(sweep: Any, bufs: dict[str, Any]) -> frozenset[str]:
    """Param-shaped buffers whose first use in the sweep, outside the time loop, is a write of
    the whole buffer that reads nothing of it (a GEMM with beta = 0, a kernel, a plain sum):
    they need no zeroing before the call (for T·B > 0; with K = T·B = 0 a GEMM writes nothing)."""
    seen: set[str] = set()
    out: set[str] = set()
    for ph, steps in sweep.phases():
        for s in steps:
            reads, writes = reads_writes(s)
            seen.update(r.buf for r in reads)
            for r in writes:
                if r.buf in seen:
                    continue
                seen.add(r.buf)
                buf = bufs[r.buf]
                if (ph != "step" and buf.fixed and not isinstance(s, (Scatter, Gather))
                        and r.rows in (None, (0, buf.rows)) and r.cols in (None, (0, buf.cols))):
                    out.add(r.buf)
    return frozenset(out)


class LLVMBackend(CompiledCell):
    backend_name = "llvm"
    runs_program = True
    cache_option = True
    # below these a call runs on one thread / without packing the weights: handing work to a
    # second thread costs tens of microseconds, packing costs one pass over the weights
    THREAD_MIN_FLOPS = 4e6
    PACK_MIN_ROWS = 32

    def __init__(self, cell: Cell, dtype: str, cache: bool = True, blas: bool = True,
                 program: Program | None = None, diagonal: bool = True,
                 threads: int | None = None, packed: bool = True) -> None:
        start_llvm_load(dtype, cache)   # while a directly constructed backend's optimizer runs
        super().__init__(cell, dtype, program)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise BackendError(f"llvm: threads must be a positive int or None, got {threads!r}")
        self.threads = threads
        self.packed = packed
        self.prefix = module_prefix(self.cell.name, dtype)
        self.uses_blas = bool(blas and blas_info().found)
        self._diagonal = diagonal
        self._ir_text: str | None = None
        self._emit_seconds = 0.0
        # which sweeps run their time loop as one loop over batch rows (diagonal recurrences)
        bufs = self.program.buffer_map
        self.diagonal_loops = {
            name: diagonal and diagonal_loop(sw, bufs)
            for name, sw in (("forward", self.program.forward),
                             ("backward", self.program.backward))}
        # the object is cached by what determines the IR, so a hit emits nothing
        module_id = self._module_id()
        self.jitted = jit_module().jit_keyed(module_id or self.ir_text, lambda: self.ir_text,
                                             use_cache=cache)
        self._compile_seconds = {"emit": self._emit_seconds,
                                 "llvm": self.jitted.stats.seconds - self._emit_seconds,
                                 "cache_hit": float(self.jitted.stats.cache_hit)}
        if self.uses_blas:
            info = blas_info()
            addr = info.sgemm if dtype == "float32" else info.dgemm
            SETTER(self.jitted.address(f"{self.prefix}_set_gemm_f{dtype[-2:]}"))(addr)
        setter = self.jitted.address(f"{self.prefix}_set_packed_f{dtype[-2:]}")
        if setter:   # the program has packed GEMMs
            PACKED_SETTER(setter)(*packed_helpers(dtype, cache))
        self._fwd = ENTRY(self.jitted.address(f"{self.prefix}_forward"))
        self._inf = ENTRY(self.jitted.address(f"{self.prefix}_infer"))
        self._bwd = ENTRY(self.jitted.address(f"{self.prefix}_backward"))
        self._collapsed = collapsed_buffers(self.program)
        self._bufs = self.program.buffer_map
        self._input_bufs = {b for _n, b in self.program.inputs}
        self._whole_params = self._whole_param_buffers()
        # (name, region of the parameter or None for all of it, buffer, ref): what backward
        # compares its params with (the forward's copies)
        self._param_checks = [
            (pc.name, None if pc.ref.buf in self._whole_params else pc.region, pc.ref.buf,
             pc.ref)
            for pc in self.program.param_pieces]
        self._pool = ArrayPool()
        # the gradients handed out: every parameter but the frozen ones
        self._param_shapes = {k: v for k, v in (dict(self.program.param_shapes)
                                                or self.cell.param_shapes()).items()
                              if k not in self.cell.frozen}
        for pc in self.program.grad_pieces:
            if not self._bufs[pc.ref.buf].fixed:
                raise BackendError(f"llvm: gradient piece of {pc.name} views a "
                                   f"{self._bufs[pc.ref.buf].kind} buffer; expected param-shaped")
        fw_written = _written(self.program.forward)
        self._bwd_written = _written(self.program.backward)
        bwd_read = {r.buf for _ph, steps in self.program.backward.phases() for st in steps
                    for r in reads_writes(st)[0]}
        # inputs the backward reads are copied by a training forward (the residuals own them;
        # the caller may reuse its array), the others are bound to the caller's array
        self._inputs_read = frozenset(b for _n, b in self.program.inputs if b in bwd_read)
        fixed_in = {b for _n, b in self.program.inputs} | {b for _n, b in self.program.states}
        d_out = {n for _o, n in self.program.d_outputs}
        # buffers the forward sweep never touches get a placeholder in the forward; the
        # backward allocates them (and everything else it writes) afresh
        fw_touched = {r.buf for _ph, steps in self.program.forward.phases() for st in steps
                      for r in reads_writes(st)[0] + reads_writes(st)[1]}
        fw_touched |= fixed_in | {pc.ref.buf for pc in self.program.param_pieces}
        fw_touched |= {r.buf for _n, r in self.program.outputs}
        self._fwd_unused = frozenset(b.name for b in self.program.buffers
                                     if b.name not in fw_touched)
        self._bwd_fresh = frozenset(
            b.name for b in self.program.buffers
            if (b.name in self._bwd_written or b.kind in ("grad", "carry")
                or b.name in self._fwd_unused)
            and b.name not in fw_written and b.name not in fixed_in and b.name not in d_out)
        self._placeholder = np.zeros(1, np.float64)
        # bound to user arrays (no allocation) in the inference forward; a training forward
        # copies the inputs the backward reads and every parameter (into pooled arrays: the
        # residuals own them, and backward checks the parameters it is given against them)
        self._fwd_bound = self._input_bufs | set(self._whole_params)
        self._train_bound = self._input_bufs - self._inputs_read
        self._buf_names = [b.name for b in self.program.buffers]
        self._plans: dict[tuple[int, int, str], list[Any]] = {}
        # zeroing them cost 2-3% of a training step at H <= 256 (memset in the profiles)
        self._no_zero = {"forward": _written_whole_first(self.program.forward, self._bufs),
                         "backward": _written_whole_first(self.program.backward, self._bufs)}
        self._no_zero["infer"] = self._no_zero["forward"]
        self._flops = {"forward": sweep_flops(self.program, self.program.forward),
                       "backward": sweep_flops(self.program, self.program.backward)}
        self._work_bytes = workspace_bytes(self.program)
        self._work: np.ndarray | None = None   # allocated at the first packed call
        self._work_addr = 0                     # its first 64-byte aligned address

    @property
    def ir_text(self) -> str:
        """The cell's LLVM module as text (emitted on first use: a cache hit needs none)."""
        if self._ir_text is None:
            t0 = time.perf_counter()
            # with BLAS the naive fallback is never called: leave it out of the module
            self._ir_text = str(emit_program(self.program, self.prefix,
                                             fallback_gemm=not self.uses_blas,
                                             diagonal=self._diagonal, own_packed=False))
            self._emit_seconds = time.perf_counter() - t0
        return self._ir_text

    def _module_id(self) -> str:
        """A text that determines ``ir_text``: the Program's digest, the emitter's options and
        the source of the code that emits it (codegen and the core), and the machine. The
        CPU, LLVM and llvmlite versions are added by ``llvm_jit.cache_key``. "" when the
        sources cannot be read: the IR text itself is the key then."""
        source = program_json.source_digest(str(Path(__file__).parent))
        compiler = program_json.compiler_digest()
        if not source or not compiler:
            return ""
        program = hashlib.sha256(program_json.dumps(self.program)).hexdigest()
        return (f"graphrnn-llvm-program:{program}:{self.prefix}:blas={self.uses_blas}:"
                f"diagonal={self._diagonal}:own_packed=False:{platform.machine()}:"
                f"{source}:{compiler}")

    @classmethod
    def prepare(cls, dtype: str, options: Mapping[str, Any]) -> None:
        """LLVM loads in a background thread while compile() runs the optimizer."""
        start_llvm_load(dtype, bool(options.get("cache", True)))

    @property
    def compile_seconds(self) -> dict[str, float]:
        """Seconds in the optimizer, in emitting IR, in LLVM (or loading its cached object)."""
        return {"program": self.program_seconds, **self._compile_seconds}

    def _run(self, fn: Any, sweep: str, T: int, B: int, ptrs: np.ndarray) -> None:
        """One native call, on as many threads as the work is worth."""
        pol = thread_policy()   # a bridge's call (graphrnn.threads) may fix the team size
        nthr = (self.threads if self.threads is not None else
                pol.threads if pol.threads is not None else default_threads())
        if T * B * self._flops[sweep] < self.THREAD_MIN_FLOPS:
            nthr = 1
        work = 0
        if self.packed and self._work_bytes and T * B >= self.PACK_MIN_ROWS:
            if self._work is None:
                self._work = np.empty(self._work_bytes + 64, np.uint8)
                self._work_addr = -self._work.ctypes.data % 64 + self._work.ctypes.data
            work = self._work_addr
        TEAM.run(fn, T, B, int(ptrs.ctypes.data), nthr, work)

    # ---- buffers ----
    def _whole_param_buffers(self) -> dict[str, str]:
        """param buffers that are exactly one user parameter: bound to the caller's array
        without a copy by an inference forward, copied by a training forward (the snapshot
        backward checks its params against)."""
        shapes = dict(self.program.param_shapes) or self.cell.param_shapes()
        count: dict[str, int] = {}
        for pc in self.program.param_pieces:
            count[pc.ref.buf] = count.get(pc.ref.buf, 0) + 1
        out = {}
        for pc in self.program.param_pieces:
            buf = self._bufs[pc.ref.buf]
            full = (pc.ref.rows in (None, (0, buf.rows)) and pc.ref.cols in (None, (0, buf.cols))
                    and pc.rows == (0, shapes[pc.name][0]) and pc.cols == (0, shapes[pc.name][1])
                    and (buf.rows, buf.cols) == tuple(shapes[pc.name]))
            if full and count[pc.ref.buf] == 1:
                out[pc.ref.buf] = pc.name
        return out

    def _alloc_plan(self, T: int, B: int, which: str) -> list[tuple[str, tuple[int, ...],
                                                                   np.dtype, bool]]:
        """(name, shape, dtype, zero-filled) of every array a sweep allocates, per (T, B):
        a training loop calls with the same sizes every step."""
        key = (T, B, which)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        if which == "backward":
            names = sorted(self._bwd_fresh)
        else:
            bound = self._fwd_bound if which == "infer" else self._train_bound
            names = [b.name for b in self.program.buffers
                     if b.name not in self._fwd_unused and b.name not in bound]
        plan = []
        for name in names:
            buf = self._bufs[name]
            shape = tuple(buf.shape(T, B))
            if which == "infer" and name in self._collapsed:
                shape = (1,) + shape[1:]
            zero = buf.kind in ("mat", "grad", "carry") and not (
                T * B > 0 and name in self._no_zero[which])
            plan.append((name, shape, np.dtype(buf.dtype), zero))
        if len(self._plans) > 32:   # many sequence lengths: keep the cache small
            self._plans.clear()
        self._plans[key] = plan
        # a training loop keeps one step's residuals alive while the next forward allocates:
        # keep twice a sweep's arrays of one shape, or the extra ones are fresh (page faults)
        # every step (measured: +0.4 ms of a 40 ms single-thread LSTM step at H=256, B=32)
        counts: dict[tuple[tuple[int, ...], np.dtype], int] = {}
        for _name, shape, dt, _zero in plan:
            counts[shape, dt] = counts.get((shape, dt), 0) + 1
        self._pool.per_key = max([self._pool.per_key] + [2 * c for c in counts.values()])
        return plan

    def _pointers(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.fromiter(map(data_address, map(arrays.__getitem__, self._buf_names)), np.uintp,
                           len(self._buf_names))

    def _check_ids(self, arrays: dict[str, np.ndarray]) -> None:
        """Token ids out of range would read or write outside a table: refuse them here."""
        for _ph, steps in self.program.backward.phases():
            for s in steps:
                if isinstance(s, Gather):
                    ids_ref, table = s.ids, s.table
                elif isinstance(s, Scatter):
                    ids_ref, table = s.ids, s.out
                else:
                    continue
                if ids_ref.buf not in self._input_bufs:
                    continue
                tb = self._bufs[table.buf]
                rows = (table.rows[1] - table.rows[0]) if table.rows else tb.rows
                ids = arrays[ids_ref.buf]
                if ids.size and (ids.min() < 0 or ids.max() >= rows):
                    name = next(n for n, b in self.program.inputs if b == ids_ref.buf)
                    raise RuntimeInputError(f"input {name!r}: token ids must be in [0, {rows}),"
                                            f" got values in [{ids.min()}, {ids.max()}]")

    # ---- the sweeps ----
    def _forward(self, params: dict[str, np.ndarray], xs: list[np.ndarray],
                 h0: list[np.ndarray], save: bool) -> tuple[list[np.ndarray],
                                                            list[np.ndarray], Any]:
        p = self.program
        T, B = int(xs[0].shape[0]), int(xs[0].shape[1])
        arrays: dict[str, np.ndarray] = dict.fromkeys(self._fwd_unused, self._placeholder)
        take = self._pool.take
        plan = self._alloc_plan(T, B, "forward" if save else "infer")
        for name, shape, dt, zero in plan:
            arrays[name] = take(shape, dt, zero)
        for (_name, bname), x in zip(p.inputs, xs):
            if bname in arrays:   # a training forward's own copy
                np.copyto(arrays[bname], x, casting="unsafe")
            else:
                arrays[bname] = np.ascontiguousarray(x, dtype=self._bufs[bname].dtype)
        whole = self._whole_params
        if not save:
            for bname, pname in whole.items():
                arrays[bname] = np.ascontiguousarray(params[pname], dtype=self.dtype)
        for pc in p.param_pieces:
            if pc.ref.buf in whole:
                if save:
                    np.copyto(arrays[pc.ref.buf], params[pc.name], casting="unsafe")
                continue
            fixed_view(arrays[pc.ref.buf], pc.ref)[...] = params[pc.name][pc.region]
        for (_name, bname), h in zip(p.states, h0):
            arrays[bname][0] = h
        # the forward's ids were checked with the other arguments (CompiledCell._inputs)
        ptrs = self._pointers(arrays)
        self._run(self._fwd if save else self._inf, "forward", T, B, ptrs)
        # copies: the backward reads these buffers (an output is often the state it saves),
        # so the caller must get arrays of its own to write into (~0.5% of an LSTM step)
        ys = [seq_view(arrays[r.buf], r, T).copy() for _n, r in p.outputs]
        hT = [arrays[bname][T].copy() for _n, bname in p.states]
        owned = [arrays[name] for name, _s, _d, _z in plan]
        if save:
            res = self._residuals(T, B, arrays)
            # the residuals' arrays go back to the pool for the next forward when they die
            weakref.finalize(res, self._pool.give, owned)
        else:
            res = None
            self._pool.give(owned)
        return ys, hT, res

    def _residual_shapes(self, T: int, B: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        key = (T, B, "residuals")
        shapes = self._plans.get(key)
        if shapes is None:
            shapes = {b.name: (tuple(b.shape(T, B)), np.dtype(b.dtype))
                      for b in self.program.buffers if b.name not in self._fwd_unused}
            self._plans[key] = shapes  # type: ignore[assignment]
        return shapes  # type: ignore[return-value]

    def _check_residuals(self, res: Residuals) -> dict[str, np.ndarray]:
        """Native code trusts T, B and every buffer's size: check the token's arrays against
        them (a few microseconds) rather than read or write out of bounds."""
        arrays = res._payload
        if not isinstance(arrays, dict):
            raise RuntimeInputError("backward: residuals were tampered with: expected the "
                                    f"buffers of this cell, got {type(arrays).__name__}")
        check_residual_buffers(arrays, self._residual_shapes(res.T, res.B), res.T, res.B,
                               contiguous=True)
        return arrays

    def _backward(self, params: dict[str, np.ndarray], residuals: Residuals,
                  d_ys: Sequence[np.ndarray | None],
                  d_final: Sequence[np.ndarray | None]) -> Grads:
        p = self.program
        T, B = residuals.T, residuals.B
        fwd = self._check_residuals(residuals)
        self._check_params_unchanged(residuals, params, lambda: [
            (name, None, fwd[buf]) if region is None else
            (name, region, fixed_view(fwd[buf], ref)) for name, region, buf, ref in
            self._param_checks])
        # what the backward writes is allocated afresh, so the arrays returned below (views
        # where possible) belong to the caller and a second backward cannot overwrite them
        arrays = dict(fwd)
        take = self._pool.take
        for name, shape, dt, zero in self._alloc_plan(T, B, "backward"):
            arrays[name] = take(shape, dt, zero)
        for (oname, bname), d in zip(p.d_outputs, d_ys):
            shape = self._bufs[bname].shape(T, B)
            if d is None:
                arrays[bname] = np.zeros(shape, self.dtype)
                continue
            if d.shape != shape:
                raise RuntimeInputError(f"backward: cotangent of output {oname!r} must be "
                                        f"{shape}, got {d.shape}")
            if bname in self._bwd_written:
                arrays[bname] = np.array(d, self.dtype, order="C")
            else:   # only read: the caller's array is used as it is
                arrays[bname] = np.ascontiguousarray(d, self.dtype)
        for (sname, bname), d in zip(p.d_final, d_final):
            buf = arrays[bname]
            if d is None:
                buf[...] = 0
            else:
                if d.shape != buf.shape:
                    raise RuntimeInputError(f"backward: cotangent of final state {sname!r} must"
                                            f" be {buf.shape}, got {d.shape}")
                buf[...] = d
        # residuals come back from the caller: their ids are checked again before native code
        self._check_ids(arrays)
        ptrs = self._pointers(arrays)
        self._run(self._bwd, "backward", T, B, ptrs)
        # a gradient that is one whole piece is its buffer (fresh for this call), not a copy;
        # exported: the buffers the returned arrays may view
        grads, exported = gradients(self._param_shapes, p.grad_pieces,
                                    lambda r: fixed_view(arrays[r.buf], r),
                                    lambda shape: np.zeros(shape, self.dtype),
                                    whole=np.ascontiguousarray)
        d_inputs = []
        for (_name, ref), x in zip(p.d_inputs, self.cell.inputs):
            if ref is None:
                d_inputs.append(np.zeros((T, B, int(x.shape[1])), self.dtype))
            else:
                v = seq_view(arrays[ref.buf], ref, T)
                d_inputs.append(np.ascontiguousarray(v) if ref.buf in self._bwd_fresh
                                else v.copy())
                exported.add(ref.buf)
        d_states = [np.array(batch_view(arrays[ref.buf], ref)) for _n, ref in p.d_states]
        self._pool.give([arrays[n] for n in self._bwd_fresh if n not in exported])
        return Grads(grads, d_inputs, d_states)

    # ---- introspection ----
    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` split over our threads once they hold the cores (``llvm_threads.matmul``)."""
        return threads_matmul(a, b)

    def assembly(self) -> str:
        return jit_module().assembly(self.ir_text)

    def generator(self, model: Any) -> Any:
        """The model's token loop as one native call (``llvm_generate``), or None when the
        model is not one it runs (bidirectional, dense input, a layer of another backend)."""
        from .llvm_generate import generator_for
        return generator_for(model)


# ---- export ----

_C_TYPES = {"float32": "float", "float64": "double", "int64": "int64_t"}


def _header(p: Program, prefix: str) -> str:
    up = prefix.upper()
    lines = [
        f"/* {prefix}.h: the C ABI of graphrnn cell {p.cell_name!r} ({p.dtype}), generated by",
        " * graphrnn.codegen.llvm.export. Do not edit.",
        " *",
        " * Every entry point takes (T, B, bufs, ctx): T time steps, B batch rows, an array of",
        f" * {len(p.buffers)} buffer pointers, bufs[i] -> buffer i below, and ctx: NULL runs on",
        " * the calling thread; otherwise n threads call the same entry at once, each with its",
        " * own int64_t ctx[4] = {tid (0..n-1), n, (int64_t)sync, (int64_t)work}: sync points at",
        " * 16 zeroed int64_t shared by the n threads (a spin barrier's counters), work at",
        f" * {up}_WORKSPACE_BYTES bytes, 64-byte aligned (weights packed for the GEMMs with",
        " * a weight operand), or 0 to call the installed GEMM for those too. Buffers are",
        " * row-major and C-contiguous; sizes in elements are given by "
        f"{prefix}_buffer_elems(i, T, B):",
        " *   param/grad/mat: rows x cols; seq: (T + extra) x B x cols; carry/temp: B x cols.",
        " * mat buffers must be zero before the forward; grad buffers zero before the backward.",
        " *",
        " * Forward: copy each parameter piece into its param buffer, the inputs into their",
        " * seq buffers, the initial states into slab 0 of their state buffers; call",
        f" * {prefix}_forward (keeps residuals for the backward) or {prefix}_infer.",
        " * After it, state buffer slab T holds the final state; outputs are the views listed.",
        " * Backward (after _forward on the same buffers): fill the d_output seq buffers and",
        f" * the d_final carry buffers, zero the grad buffers, call {prefix}_backward, then",
        " * add each gradient piece into the user gradient region it names.",
        " *",
        " * GEMMs run through a function pointer that starts at a naive loop; install an ILP64",
        " * row-major cblas_?gemm (64-bit M, N, K, lda, ...; e.g. OpenBLAS INTERFACE64 or numpy's",
        f" * scipy_cblas_sgemm64_) with {prefix}_set_gemm_f{p.dtype[-2:]}.",
        " *",
        " * Buffers (index: name kind dtype rows/extra cols):",
    ]
    for i, b in enumerate(p.buffers):
        dims = f"rows {b.rows}" if b.fixed else (f"extra {b.extra}" if b.kind == "seq" else "B")
        lines.append(f" *   {i:3d}: {b.name:<20} {b.kind:<6} {b.dtype:<8} {dims:<10} cols {b.cols}")
    lines.append(" *")
    lines.append(" * Binding:")
    for n, b in p.inputs:
        lines.append(f" *   input {n}: (T, B, n) -> seq buffer {b}")
    for n, b in p.states:
        lines.append(f" *   state {n}: h0 -> {b}[0], final -> {b}[T]")
    for n, r in p.outputs:
        lines.append(f" *   output {n}: {r} over t = 0..T-1")
    for pc in p.param_pieces:
        lines.append(f" *   param {pc.name}[{pc.rows[0]}:{pc.rows[1]}, {pc.cols[0]}:{pc.cols[1]}]"
                     f" -> {pc.ref}")
    for n, b in p.d_outputs:
        lines.append(f" *   d_output {n} -> seq buffer {b}")
    for n, b in p.d_final:
        lines.append(f" *   d_final {n} -> carry {b}")
    for n, r in p.d_states:
        lines.append(f" *   d_state {n} <- {r}")
    for n, r in p.d_inputs:
        lines.append(f" *   d_input {n} <- {r if r is not None else 'zero'}")
    for pc in p.grad_pieces:
        lines.append(f" *   grad {pc.name}[{pc.rows[0]}:{pc.rows[1]}, {pc.cols[0]}:{pc.cols[1]}]"
                     f" += {pc.ref}")
    if p.residuals:
        lines.append(" *   residual buffers (written by _forward for _backward): "
                     + ", ".join(p.residuals))
    lines += [" */", f"#ifndef {up}_H", f"#define {up}_H", "#include <stdint.h>", "",
              f"#define {up}_NBUFS {len(p.buffers)}",
              f"#define {up}_WORKSPACE_BYTES {workspace_bytes(p)}", ""]
    lines.append("enum {")
    enum = [re.sub(r"[^0-9A-Za-z_]", "_", b.name).upper() for b in p.buffers]
    # non-ASCII or case-only differences (hα, hβ; W, w) would give one constant twice, which
    # C rejects: those take their buffer index as a suffix
    seen = Counter(enum)
    for i, e in enumerate(enum):
        lines.append(f"    {up}_BUF_{e if seen[e] == 1 else f'{e}_{i}'} = {i},")
    lines.append("};")
    kinds = {"param": 0, "grad": 0, "mat": 0, "seq": 1, "carry": 2, "temp": 2}
    lines += ["",
              "/* per buffer: layout (0 fixed, 1 seq, 2 batch), rows, extra, cols, elem size */",
              f"static const int64_t {prefix}_buffer_info[{len(p.buffers)}][5] = {{"]
    for b in p.buffers:
        size = 4 if b.dtype == "float32" else 8
        lines.append(f"    {{{kinds[b.kind]}, {b.rows}, {b.extra}, {b.cols}, {size}}},")
    lines += ["};", "",
              f"static inline int64_t {prefix}_buffer_elems(int i, int64_t T, int64_t B) {{",
              f"    const int64_t *d = {prefix}_buffer_info[i];",
              "    if (d[0] == 0) return d[1] * d[3];",
              "    if (d[0] == 1) return (T + d[2]) * B * d[3];",
              "    return B * d[3];",
              "}", "",
              "#ifdef __cplusplus", 'extern "C" {', "#endif",
              f"void {prefix}_forward(int64_t T, int64_t B, void **bufs, const int64_t *ctx);",
              f"void {prefix}_infer(int64_t T, int64_t B, void **bufs, const int64_t *ctx);",
              f"void {prefix}_backward(int64_t T, int64_t B, void **bufs, const int64_t *ctx);",
              f"void {prefix}_step(int64_t B, void **bufs);  /* _infer with T = 1 */",
              f"void {prefix}_set_gemm_f{p.dtype[-2:]}(void *ilp64_cblas_gemm);",
              "#ifdef __cplusplus", "}", "#endif", f"#endif /* {up}_H */", ""]
    return "\n".join(lines)


def export(cell_or_compiled: Any, outdir: str | os.PathLike[str],
           emit: Sequence[str] = ("ir", "obj", "so", "header"),
           dtype: str | None = None) -> dict[str, Path]:
    """Write the cell's native module to outdir: ``<prefix>.ll`` (LLVM IR text), ``<prefix>.o``
    (position-independent object), ``lib<prefix>.so`` (linked with the system ``cc``) and
    ``<prefix>.h`` (the C ABI). Returns the paths written, by kind."""
    if isinstance(cell_or_compiled, LLVMBackend):
        program, prefix = cell_or_compiled.program, cell_or_compiled.prefix
        # the JIT's module may lack the naive GEMM; a library keeps it until the caller's BLAS
        ir_text = str(emit_program(program, prefix))
    else:
        cell = cell_or_compiled
        if not isinstance(cell, Cell):
            raise TypeError(f"export takes a Cell or an llvm-compiled cell, got "
                            f"{type(cell).__name__}")
        cell = cell.with_dtype(dtype or cell.dtype)
        # imported here: the optimizer's imports (networkx) are what LLVM's background load
        # overlaps with when compile() runs the pipeline after importing this module
        from graphrnn.pipeline import build_program
        program = build_program(cell)
        prefix = module_prefix(cell.name, cell.dtype)
        ir_text = str(emit_program(program, prefix))
    bad = set(emit) - {"ir", "obj", "so", "header"}
    if bad:
        raise ValueError(f"export: unknown kinds {sorted(bad)}; choose from ir, obj, so, header")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    llvm_jit = jit_module()
    written: dict[str, Path] = {}
    if "ir" in emit:   # LLVM's own printing, with the host triple and data layout
        written["ir"] = out / f"{prefix}.ll"
        written["ir"].write_text(str(llvm_jit.parse(ir_text, llvm_jit.target_machine())))
    if "header" in emit:
        written["header"] = out / f"{prefix}.h"
        written["header"].write_text(_header(program, prefix))
    if "obj" in emit or "so" in emit:
        tm = llvm_jit.target_machine(reloc="pic")
        obj = llvm_jit.compile_object(ir_text, tm)
        written["obj"] = out / f"{prefix}.o"
        written["obj"].write_bytes(obj)
        if "so" in emit:
            cc = shutil.which(os.environ.get("CC", "cc"))
            if cc is None:
                raise BackendError("export: no C compiler found to link the shared library "
                                   "(set CC or install cc)")
            so = out / f"lib{prefix}.so"
            r = subprocess.run([cc, "-shared", "-o", str(so), str(written["obj"]), "-lm"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise BackendError(f"export: linking {so.name} failed:\n{r.stderr}")
            written["so"] = so
    return written
