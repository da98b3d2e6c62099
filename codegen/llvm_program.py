"""A whole ``graphrnn.program.Program`` as one LLVM module: one native call per sequence.

Every entry point has the C signature ``void f(int64_t T, int64_t B, void **bufs, int64_t *ctx)``:
``bufs[i]`` points at ``program.buffers[i]`` (row-major, C-contiguous, shapes as
``Buffer.shape(T, B)``). ``T`` and ``B`` are runtime values, so the code (and compile time) does
not depend on them. ``ctx`` may be NULL (one thread, no workspace); otherwise it is
``{tid, nthreads, sync, work}``: ``nthreads`` threads call the same entry at once with
``tid = 0 .. nthreads-1`` and the same ``sync`` (two int64 counters 64 bytes apart, zeroed) and
``work`` (``workspace_bytes`` bytes, 64-byte aligned, or NULL). Each step of the program is split
between the threads (GEMMs and sums over rows by output columns, kernels, gathers and sums over
columns by rows; scatters run on thread 0) and followed by a spin barrier. With ``work``, the
GEMMs whose right operand is a parameter (``packed_gemms``) use ``llvm_gemm``'s packed GEMM:
each thread packs its own panels of the weights once per sweep; without it they call the BLAS.

Entry points, for a module prefix ``p``:

* ``p_forward``   the forward sweep (pre-phase GEMMs, the time loop, post phase), writing every
                  residual the backward needs;
* ``p_infer``     the same sweep without the history of residuals: seq buffers that the forward
                  writes only for the backward (``collapsed_buffers``) are given a single (1, B, n)
                  slab that every step overwrites, so they stay in cache;
* ``p_backward``  the backward sweep (BPTT), reading what ``p_forward`` left in the buffers;
* ``p_step``      one inference step (``p_infer`` with T = 1), for sampling;
* ``p_set_gemm_f32`` / ``p_set_gemm_f64``: install an ILP64 ``cblas_?gemm`` (see llvm_blas).

A diagonal recurrence (only kernels in the loop, ``diagonal_loop``) runs its time loop inside a
loop over blocks of batch rows, the CPU form of CUDA's one-kernel loop (blocks ``diag_blk`` in
the IR). Kernels are internal functions (``emit_kernel``), not inlined; GEMMs go
through the module's gemm function pointer (or ``llvm_gemm``'s packed GEMM); reductions are
functions of their own too; gathers and scatters are short loops emitted inline. A row kernel
(``program.RowKernel``) gives each thread its share of rows and runs every part over a block of
about ROW_BLOCK elements before the next block, each row's reductions summed in the row loop:
one barrier for the group.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any, Sequence

from llvmlite import ir

from graphrnn.errors import BackendError
from graphrnn.program import (
    Buffer,
    Gather,
    Gemm,
    Kernel,
    Program,
    Reduce,
    Ref,
    RowKernel,
    Scatter,
    Sweep,
    overlap,
    reads_writes,
)

from .llvm_blas import NO_TRANS, ROW_MAJOR, TRANS, emit_naive_gemm, gemm_type
from .llvm_gemm import Tile, emit_pack, emit_packed_gemm, tile_for
from .llvm_kernels import (
    FAST,
    I32,
    I64,
    PTR,
    VOID,
    emit_kernel,
    for_range,
    ftype,
    load_function_pointer,
)
from .mangle import mangle

ENTRY_TYPE = ir.FunctionType(VOID, [I64, I64, PTR, PTR])
SYNC_STRIDE = 8   # int64s between the barrier's two counters: separate cache lines
# a diagonal loop's row block: about this many elements of each (rows, n) tile per step
DIAG_BLOCK = 4096
# a row kernel's block of rows: about this many elements of its widest part, so the block's
# values (a layer norm's row, its statistics, the gates after them) stay in L1 across its parts
ROW_BLOCK = 4096
BCAST_KIND = {"full": "vec", "row": "vec", "col": "col", "scalar": "col"}


def c64(v: int) -> ir.Constant:
    return ir.Constant(I64, int(v))


@dataclass
class View:
    ptr: ir.Value
    rows: ir.Value       # i64
    cols: int
    ld: ir.Value         # i64, elements between rows


def collapsed_buffers(p: Program) -> frozenset[str]:
    """Residual seq buffers the inference entry keeps as a single slab: written and read by the
    forward only inside the loop at time offset 0, and never bound to a user output."""
    bufs = p.buffer_map
    out_bufs = {r.buf for _n, r in p.outputs}
    fw = p.forward
    res = set()
    for name in p.residuals:
        b = bufs.get(name)
        if b is None or b.kind != "seq" or b.extra != 0 or name in out_bufs:
            continue
        ok = True
        for phase, steps in fw.phases():
            for s in steps:
                reads, writes = reads_writes(s)
                for r in reads + writes:
                    if r.buf == name and (phase != "step" or r.t != 0):
                        ok = False
        if ok:
            res.add(name)
    return frozenset(res)


def kernel_noalias(step: Kernel, bufs: dict[str, Buffer], in_loop: bool) -> bool:
    """Outputs may be declared ``noalias`` unless one overlaps an input other than element for
    element (the same full-shaped view: each element is read before it is written, in the same
    iteration, which no reordering can break) or overlaps another output."""
    for k, o in enumerate(step.outs):
        for r, bc in zip(step.ins, step.kernel.bcast):
            if overlap(o, r, bufs, in_loop) and not (r == o and bc == "full"):
                return False
        for o2 in step.outs[k + 1:]:
            if overlap(o, o2, bufs, in_loop):
                return False
    return True


def diagonal_loop(sw: Sweep, bufs: dict[str, Buffer]) -> bool:
    """May the sweep's time loop run inside a loop over blocks of batch rows
    (``for rows block: for t: stages on the block``) instead of ``for t: stages on all rows``?

    Only Kernel steps in the step phase (``Sweep.diagonal``), and every view row-aligned:
    outputs are batch-shaped (seq/carry/temp), batch-shaped inputs are ``full`` or ``col``
    (row r reads row r), fixed inputs are ``row``/``scalar`` broadcasts no step writes. Then no
    value flows between batch rows, and the swapped order runs every row's stages in the same
    order as before. CUDA's loop kernel (codegen/cuda_exec.loop_spec) gives each thread a single
    element, so it also needs one domain width and one column offset per written buffer; here
    one iteration owns a whole row over all columns, so flows between columns of a row (a
    stage reading what another wrote at other columns) stay in order and need no condition."""
    if not sw.diagonal:
        return False
    written = {r.buf for s in sw.step if isinstance(s, Kernel) for r in s.outs}
    for s in sw.step:
        if not isinstance(s, Kernel):
            return False
        if any(bufs[r.buf].fixed for r in s.outs):
            return False
        for r, bc in zip(s.ins, s.kernel.bcast):
            if bufs[r.buf].fixed:
                if bc not in ("row", "scalar") or r.buf in written:
                    return False
            elif bc not in ("full", "col"):
                return False
    return True


PackKey = tuple[str, tuple[int, int] | None, tuple[int, int] | None, bool]


def pack_key(s: Gemm) -> PackKey:
    """What a packed copy of a GEMM's right operand is keyed by: its view and transposition."""
    return (s.b.buf, s.b.rows, s.b.cols, s.trans_b)


# below this many output columns a GEMM outside the time loop keeps the BLAS: the packed GEMM
# splits the threads by panels of columns, and a few panels leave a thread idle
PACK_MIN_COLS_OUTSIDE_LOOP = 128


def packed_gemms(sw: Sweep, bufs: dict[str, Buffer]) -> dict[PackKey, tuple[int, int]]:
    """The sweep's GEMMs ``A @ op(W)`` with W a parameter (in the time loop, and outside it
    where op(W) has at least PACK_MIN_COLS_OUTSIDE_LOOP columns): (buffer, rows, cols, trans) ->
    (k, n) of op(W). Equal keys share one packed copy. One-thread speed, LSTM H=256 shapes:
    1.3-2.2x OpenBLAS at M = B, 1.07-1.16x at M = T·B (benchmarks/bench_packed_gemm.py)."""
    out: dict[PackKey, tuple[int, int]] = {}
    for ph, steps in sw.phases():
        for s in steps:
            if not (isinstance(s, Gemm) and not s.trans_a and bufs[s.b.buf].kind == "param"):
                continue
            buf = bufs[s.b.buf]
            r0, r1 = s.b.rows if s.b.rows is not None else (0, buf.rows)
            c0, c1 = s.b.cols if s.b.cols is not None else (0, buf.cols)
            kn = (c1 - c0, r1 - r0) if s.trans_b else (r1 - r0, c1 - c0)
            if ph == "step" or kn[1] >= PACK_MIN_COLS_OUTSIDE_LOOP:
                out[pack_key(s)] = kn
    return out


def _pack_offsets(packs: dict[PackKey, tuple[int, int]], tile: Tile) -> dict[PackKey, int]:
    """Element offsets of each packed weight in the workspace (64-byte aligned)."""
    offs, at = {}, 0
    for key, (k, n) in packs.items():
        offs[key] = at
        at += -(-tile.packed_elems(k, n) // 16) * 16
    return offs


def workspace_bytes(program: Program, tile: Tile | None = None) -> int:
    """Bytes of the ``work`` buffer the packed GEMMs need (the larger of the two sweeps)."""
    tile = tile or tile_for(program.dtype)
    size = 8 if program.dtype == "float64" else 4
    need = 0
    for sw in (program.forward, program.backward):
        packs = packed_gemms(sw, program.buffer_map)
        offs = _pack_offsets(packs, tile)
        for key, (k, n) in packs.items():
            need = max(need, (offs[key] + tile.packed_elems(k, n)) * size)
    return need


class ProgramEmitter:
    def __init__(self, program: Program, prefix: str, fallback_gemm: bool = True,
                 diagonal: bool = True, own_packed: bool = True) -> None:
        if not prefix.isidentifier():
            raise BackendError(f"llvm: module prefix must be an identifier, got {prefix!r}")
        self.p = program
        self.prefix = prefix
        self.dtype = program.dtype
        self.t = ftype(self.dtype)
        self.bufs = program.buffer_map
        self.index = {b.name: i for i, b in enumerate(program.buffers)}
        self.module = ir.Module(name=prefix)
        self.kernels: dict[tuple[object, ...], ir.Function] = {}   # kernels and reductions
        self.gemm_ptr: dict[str, ir.GlobalVariable] = {}
        self.fallback_gemm = fallback_gemm
        self.diagonal = diagonal
        self.tile = tile_for(self.dtype)
        self.own_packed = own_packed
        self._barrier_fn: ir.Function | None = None
        self._pack_fns: tuple[ir.GlobalVariable, ir.GlobalVariable] | None = None
        # the sweep being emitted: thread id and count, barrier counters, workspace, packings
        self.tid: ir.Value = c64(0)
        self.nthr: ir.Value = c64(1)
        self.sync: ir.Value = ir.Constant(PTR, None)
        self.work: ir.Value = ir.Constant(PTR, None)
        self.packs: dict[PackKey, tuple[int, int]] = {}   # (k, n) of each packed op(W)
        self.pack_offs: dict[PackKey, int] = {}
        self.TB: ir.Value = c64(0)
        self._pro: ir.IRBuilder | None = None
        self._chunks: dict[object, tuple[ir.Value, ir.Value]] = {}

    # ---- module-level pieces ----
    def _gemm_global(self, dtype: str) -> ir.GlobalVariable:
        if dtype not in self.gemm_ptr:
            g = ir.GlobalVariable(self.module, PTR, f"{self.prefix}_gemm_{dtype[-2:]}")
            g.linkage = "internal"
            if self.fallback_gemm:
                naive = emit_naive_gemm(self.module, f"{self.prefix}_naive_gemm_{dtype[-2:]}",
                                        dtype)
                naive.linkage = "internal"
                g.initializer = naive
            else:   # the caller installs a BLAS gemm before any call (see emit_program)
                g.initializer = ir.Constant(PTR, None)
            self.gemm_ptr[dtype] = g
            setter = ir.Function(self.module, ir.FunctionType(VOID, [PTR]),
                                 f"{self.prefix}_set_gemm_f{dtype[-2:]}")
            b = ir.IRBuilder(setter.append_basic_block("entry"))
            b.store(setter.args[0], g)
            b.ret_void()
        return self.gemm_ptr[dtype]

    def _barrier(self) -> ir.Function:
        """``barrier(sync, nthr)``: a sense-counting spin barrier (one counter the threads
        increment, one generation the last arrival bumps). Threads spin with ``pause`` and
        yield the core every 64 spins, so more threads than cores still make progress (LSTM
        H=128 training step, 2 cores: 4 threads 32.6 ms when yielding every 4096 spins, 9-13 ms
        every 64; 2 threads 8.3 ms either way)."""
        if self._barrier_fn is not None:
            return self._barrier_fn
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, I64]), f"{self.prefix}_barrier")
        fn.linkage = "internal"
        fn.attributes.add("noinline")   # called after every step: keep one copy
        sync, nthr = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        arrive, done = fn.append_basic_block("arrive"), fn.append_basic_block("done")
        b.cbranch(b.icmp_signed("<=", nthr, c64(1)), done, arrive)
        b.position_at_end(arrive)
        gen_p = b.gep(sync, [c64(SYNC_STRIDE)], source_etype=I64)
        gen = b.load_atomic(gen_p, "acquire", 8, typ=I64)
        old = b.atomic_rmw("add", sync, c64(1), "acq_rel")
        last, wait = fn.append_basic_block("last"), fn.append_basic_block("wait")
        b.cbranch(b.icmp_signed("==", old, b.sub(nthr, c64(1))), last, wait)
        b.position_at_end(last)
        # atomic stores as exchanges (llvmlite's store_atomic wants typed pointers)
        b.atomic_rmw("xchg", sync, c64(0), "monotonic")
        b.atomic_rmw("xchg", gen_p, b.add(gen, c64(1)), "release")
        b.branch(done)
        b.position_at_end(wait)
        spins = b.phi(I64)
        spins.add_incoming(c64(0), arrive)
        spin = fn.append_basic_block("spin")
        b.cbranch(b.icmp_signed("!=", b.load_atomic(gen_p, "acquire", 8, typ=I64), gen), done,
                  spin)
        b.position_at_end(spin)
        if platform.machine().lower() in ("x86_64", "amd64"):
            pause = ir.Function(self.module, ir.FunctionType(VOID, []), "llvm.x86.sse2.pause")
            b.call(pause, [])
        nxt = b.add(spins, c64(1))
        with b.if_then(b.icmp_signed("==", b.and_(nxt, c64(63)), c64(0))):
            sched_yield = ir.Function(self.module, ir.FunctionType(I32, []), "sched_yield")
            b.call(sched_yield, [])
        spins.add_incoming(nxt, b.block)
        b.branch(wait)
        b.position_at_end(done)
        b.ret_void()
        self._barrier_fn = fn
        return fn

    def _sync(self, b: ir.IRBuilder) -> None:
        b.call(self._barrier(), [self.sync, self.nthr])

    def _chunk(self, b: ir.IRBuilder, total: ir.Value, align: int,
               hoist: bool = True) -> tuple[ir.Value, ir.Value]:
        """This thread's share [lo, hi) of 0 .. total-1, cut at multiples of align. Computed
        once per sweep in its prologue (``hoist``; total must be a constant, B or T·B there):
        recomputed at every step, the divisions were 25% of a cell's LLVM compile time."""
        if hoist:
            key = (("c", total.constant) if isinstance(total, ir.Constant) else id(total), align)
            if key not in self._chunks:
                assert self._pro is not None
                self._chunks[key] = self._chunk(self._pro, total, align, hoist=False)
            return self._chunks[key]
        units = b.sdiv(b.add(total, c64(align - 1)), c64(align))

        def edge(tid: ir.Value) -> ir.Value:
            e = b.mul(b.sdiv(b.mul(units, tid), self.nthr), c64(align))
            return b.select(b.icmp_signed("<", e, total), e, total)

        return edge(self.tid), edge(b.add(self.tid, c64(1)))

    def _packers(self, b: ir.IRBuilder) -> tuple[ir.Value, ir.Value]:
        """pack and packed GEMM, called through two function pointers: in the module itself
        (``own_packed``, for export) or installed by ``p_set_packed_f??`` (the JIT compiles them
        once per process and dtype, ``llvm.packed_helpers``: compiled into every cell, they
        were 0.1 s of its LLVM time)."""
        sfx = self.dtype[-2:]
        pack_t = ir.FunctionType(VOID, [I64, I64, PTR, I64, I64, PTR, I64, I64])
        gemm_t = ir.FunctionType(VOID, [I64, I64, PTR, I64, PTR, I64, I64, I64, PTR, I64, I64])
        if self._pack_fns is None:
            slots = []
            for what in ("pack", "pgemm"):
                g = ir.GlobalVariable(self.module, PTR, f"{self.prefix}_{what}_f{sfx}_fp")
                g.linkage = "internal"
                g.initializer = ir.Constant(PTR, None)
                slots.append(g)
            if self.own_packed:
                slots[0].initializer = emit_pack(self.module, f"{self.prefix}_pack_f{sfx}",
                                                 self.dtype, self.tile)
                slots[1].initializer = emit_packed_gemm(
                    self.module, f"{self.prefix}_pgemm_f{sfx}", self.dtype, self.tile)
            else:
                setter = ir.Function(self.module, ir.FunctionType(VOID, [PTR, PTR]),
                                     f"{self.prefix}_set_packed_f{sfx}")
                sb = ir.IRBuilder(setter.append_basic_block("entry"))
                sb.store(setter.args[0], slots[0])
                sb.store(setter.args[1], slots[1])
                sb.ret_void()
            self._pack_fns = (slots[0], slots[1])
        return (load_function_pointer(b, self._pack_fns[0], pack_t),
                load_function_pointer(b, self._pack_fns[1], gemm_t))

    def _kernel_fn(self, step: Kernel, in_loop: bool) -> ir.Function:
        k = step.kernel
        if k.dtype != self.dtype:
            raise BackendError(f"llvm: kernel {k.name} is {k.dtype} in a {self.dtype} program")
        kinds = tuple(BCAST_KIND[bc] for bc in k.bcast)
        noalias = kernel_noalias(step, self.bufs, in_loop)
        key = (k.name, kinds, noalias)
        fn = self.kernels.get(key)
        if fn is None:
            base = mangle(k.name)  # ASCII: the JIT looks symbols up as ASCII
            name = f"{self.prefix}_k{len(self.kernels)}_{base}"
            fn = emit_kernel(self.module, name, k.program, k.dtype, kinds, linkage="internal")
            # optimized once, not again inside every sweep that calls it (forward and infer
            # share kernels): 10-20% of a cell's LLVM time; a call per step costs nothing
            fn.attributes.add("noinline")
            if not noalias:
                for a in fn.args:
                    a.attributes.discard("noalias")
            self.kernels[key] = fn
        return fn

    # ---- views ----
    def _view(self, b: ir.IRBuilder, env: dict[str, ir.Value], r: Ref, t: ir.Value | None,
              T: ir.Value, B: ir.Value, collapsed: frozenset[str]) -> View:
        buf = self.bufs[r.buf]
        et = I64 if buf.dtype == "int64" else self.t
        base = env[r.buf]
        c0, c1 = r.cols if r.cols is not None else (0, buf.cols)
        ld = c64(buf.cols)
        if buf.fixed:
            r0, r1 = r.rows if r.rows is not None else (0, buf.rows)
            ptr = b.gep(base, [c64(r0 * buf.cols + c0)], source_etype=et)
            return View(ptr, c64(r1 - r0), c1 - c0, ld)
        if buf.kind == "seq":
            slab = b.mul(B, c64(buf.cols))
            if t is None:
                rows = self.TB
                off = b.mul(c64(r.t), slab)
            else:
                rows = B
                tt = c64(0) if r.buf in collapsed else b.add(t, c64(r.t))
                off = b.mul(tt, slab)
            ptr = b.gep(base, [b.add(off, c64(c0))], source_etype=et)
            return View(ptr, rows, c1 - c0, ld)
        ptr = b.gep(base, [c64(c0)], source_etype=et)
        return View(ptr, B, c1 - c0, ld)

    # ---- steps ----
    def _gemm(self, b: ir.IRBuilder, s: Gemm, out: View, a: View, bv: View) -> None:
        key = pack_key(s)
        if key in self.packs:
            with b.if_else(b.icmp_unsigned("!=", self.work, ir.Constant(PTR, None))) as (pk, bl):
                with pk:
                    self._packed_gemm(b, s, out, a, key)
                with bl:
                    self._blas_gemm(b, s, out, a, bv)
        else:
            self._blas_gemm(b, s, out, a, bv)

    def _blas_gemm(self, b: ir.IRBuilder, s: Gemm, out: View, a: View, bv: View) -> None:
        """This thread's columns of C through the BLAS (called single-threaded by each)."""
        m = c64(a.cols) if s.trans_a else a.rows
        k = a.rows if s.trans_a else c64(a.cols)
        n = bv.rows if s.trans_b else c64(bv.cols)
        lo, hi = self._chunk(b, n, self.tile.lanes)
        n = b.sub(hi, lo)
        bptr = b.gep(bv.ptr, [b.mul(lo, bv.ld) if s.trans_b else lo], source_etype=self.t)
        cptr = b.gep(out.ptr, [lo], source_etype=self.t)
        g = self._gemm_global(self.dtype)
        fp = load_function_pointer(b, g, gemm_type(self.dtype))
        one = ir.Constant(self.t, 1.0)
        beta = ir.Constant(self.t, 1.0 if s.accumulate else 0.0)
        # skip empty products (T = 0 or B = 0, or no columns for this thread): some BLAS
        # reject a zero leading size
        nonempty = b.icmp_signed(">", b.mul(m, n), c64(0))
        with b.if_then(nonempty):
            b.call(fp, [ir.Constant(I32, ROW_MAJOR),
                        ir.Constant(I32, TRANS if s.trans_a else NO_TRANS),
                        ir.Constant(I32, TRANS if s.trans_b else NO_TRANS),
                        m, n, k, one, a.ptr, a.ld, bptr, bv.ld, beta, cptr, out.ld])

    def _pack_range(self, b: ir.IRBuilder, n: int) -> tuple[ir.Value, ir.Value]:
        """This thread's panels of an n-column op(W), the same for packing and multiplying."""
        return self._chunk(b, c64(self.tile.panels(n)), 1)

    def _packed_gemm(self, b: ir.IRBuilder, s: Gemm, out: View, a: View, key: PackKey) -> None:
        k, n = self.packs[key]
        p0, p1 = self._pack_range(b, n)
        wp = b.gep(self.work, [c64(self.pack_offs[key])], source_etype=self.t)
        b.call(self._packers(b)[1], [a.rows, c64(k), a.ptr, a.ld, wp, p0, p1, c64(n), out.ptr,
                                    out.ld, c64(int(s.accumulate))])

    def _kernel(self, b: ir.IRBuilder, s: Kernel, ins: Sequence[View],
                outs: Sequence[View], in_loop: bool) -> None:
        fn = self._kernel_fn(s, in_loop)
        args: list[ir.Value] = [outs[0].rows, c64(outs[0].cols)]
        for v, bc in zip(ins, s.kernel.bcast):
            args += [v.ptr, c64(0) if bc in ("row", "scalar") else v.ld]
        for v in outs:
            args += [v.ptr, v.ld]
        b.call(fn, args)

    def _reduce(self, b: ir.IRBuilder, s: Reduce, out: View, src: View) -> None:
        """This thread's share: columns for a sum over rows, rows for a sum over columns."""
        if s.axis == 0:
            lo, hi = self._chunk(b, c64(src.cols), self.tile.lanes)
            out = View(b.gep(out.ptr, [lo], source_etype=self.t), out.rows, out.cols, out.ld)
            src = View(b.gep(src.ptr, [lo], source_etype=self.t), src.rows, src.cols, src.ld)
            self._reduce_part(b, s, out, src, b.sub(hi, lo))
        else:
            lo, hi = self._chunk(b, src.rows, 1)
            rows = b.sub(hi, lo)
            self._reduce_part(b, s, self._split_rows(b, out, lo, rows),
                              self._split_rows(b, src, lo, rows), c64(src.cols))

    def _reduce_part(self, b: ir.IRBuilder, s: Reduce, out: View, src: View,
                     n: ir.Value) -> None:
        key = ("reduce", s.op, s.axis, s.accumulate)
        fn = self.kernels.get(key)
        if fn is None:
            fn = self._emit_reduce(f"{self.prefix}_reduce{len(self.kernels)}", s)
            self.kernels[key] = fn
        b.call(fn, [src.rows, n, src.ptr, src.ld, out.ptr, out.ld])

    def _emit_reduce(self, name: str, s: Reduce) -> ir.Function:
        """``reduce(rows, n, src, ld_src, out, ld_out)``: a function of its own, so that it is
        vectorized even though the sweeps are optimized for size."""
        t = self.t
        fn = ir.Function(self.module, ir.FunctionType(VOID, [I64, I64, PTR, I64, PTR, I64]),
                         name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        rows, n, src_p, src_ld, out_p, out_ld = fn.args
        src_p.attributes.add("noalias")
        out_p.attributes.add("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        is_max = s.op == "max"
        init = ir.Constant(t, float("-inf") if is_max else 0.0)
        acc = b.alloca(t)

        def combine(acc: ir.Value, v: ir.Value) -> ir.Value:
            if is_max:   # numpy max propagates NaN
                r = b.select(b.fcmp_unordered(">", v, acc), v, acc)
                return b.select(b.fcmp_unordered("uno", acc, acc), acc, r)
            return b.fadd(acc, v, flags=FAST)

        def at(ptr: ir.Value, ld: ir.Value, r: ir.Value, j: ir.Value) -> ir.Value:
            return b.gep(ptr, [b.add(b.mul(r, ld), j)], source_etype=t)

        if s.axis == 0:   # out (1, n): rows outer, columns inner (vectorizes)
            if not s.accumulate:
                with for_range(b, c64(0), n, "rz") as j:
                    b.store(init, at(out_p, out_ld, c64(0), j))
            with for_range(b, c64(0), rows, "rr") as r:
                with for_range(b, c64(0), n, "rj") as j:
                    p = at(out_p, out_ld, c64(0), j)
                    b.store(combine(b.load(p, typ=t), b.load(at(src_p, src_ld, r, j), typ=t)),
                            p)
        else:             # out (rows, 1)
            with for_range(b, c64(0), rows, "rr") as r:
                b.store(init, acc)
                with for_range(b, c64(0), n, "rj") as j:
                    b.store(combine(b.load(acc, typ=t),
                                    b.load(at(src_p, src_ld, r, j), typ=t)), acc)
                p = at(out_p, out_ld, r, c64(0))
                v = b.load(acc, typ=t)
                if s.accumulate:
                    v = b.fadd(b.load(p, typ=t), v, flags=FAST)
                b.store(v, p)
        b.ret_void()
        return fn

    def _gather(self, b: ir.IRBuilder, out: View, table: View, ids: View) -> None:
        t = self.t
        with for_range(b, c64(0), out.rows, "gr") as r:
            idx = b.load(b.gep(ids.ptr, [b.mul(r, ids.ld)], source_etype=I64), typ=I64)
            src = b.gep(table.ptr, [b.mul(idx, table.ld)], source_etype=t)
            dst = b.gep(out.ptr, [b.mul(r, out.ld)], source_etype=t)
            with for_range(b, c64(0), c64(out.cols), "gj") as j:
                b.store(b.load(b.gep(src, [j], source_etype=t), typ=t),
                        b.gep(dst, [j], source_etype=t))

    def _scatter(self, b: ir.IRBuilder, s: Scatter, out: View, ids: View, src: View) -> None:
        t = self.t
        if not s.accumulate:
            with for_range(b, c64(0), out.rows, "sz") as r:
                with for_range(b, c64(0), c64(out.cols), "szj") as j:
                    b.store(ir.Constant(t, 0.0),
                            b.gep(out.ptr, [b.add(b.mul(r, out.ld), j)], source_etype=t))
        with for_range(b, c64(0), src.rows, "sr") as r:
            idx = b.load(b.gep(ids.ptr, [b.mul(r, ids.ld)], source_etype=I64), typ=I64)
            dst = b.gep(out.ptr, [b.mul(idx, out.ld)], source_etype=t)
            srow = b.gep(src.ptr, [b.mul(r, src.ld)], source_etype=t)
            with for_range(b, c64(0), c64(out.cols), "sj") as j:
                p = b.gep(dst, [j], source_etype=t)
                v = b.load(b.gep(srow, [j], source_etype=t), typ=t)
                b.store(b.fadd(b.load(p, typ=t), v, flags=FAST), p)

    def _split_rows(self, b: ir.IRBuilder, v: View, lo: ir.Value, rows: ir.Value,
                    broadcast: bool = False, etype: ir.Type | None = None) -> View:
        """Rows lo .. lo + rows - 1 of v (of element type etype, default the float type)."""
        if broadcast:   # a row or scalar operand: the same for every row
            return v
        return View(b.gep(v.ptr, [b.mul(lo, v.ld)], source_etype=etype or self.t), rows, v.cols,
                    v.ld)

    def _steps(self, b: ir.IRBuilder, env: dict[str, ir.Value], steps: Sequence[object],
               t: ir.Value | None, T: ir.Value, B: ir.Value, collapsed: frozenset[str]) -> None:
        def v(r: Ref) -> View:
            return self._view(b, env, r, t, T, B, collapsed)

        for s in steps:
            if isinstance(s, Gemm):
                self._gemm(b, s, v(s.out), v(s.a), v(s.b))
            elif isinstance(s, Kernel):
                outs = [v(r) for r in s.outs]
                lo, hi = self._chunk(b, outs[0].rows, 1)
                rows = b.sub(hi, lo)
                ins = [self._split_rows(b, v(r), lo, rows, bc in ("row", "scalar"))
                       for r, bc in zip(s.ins, s.kernel.bcast)]
                self._kernel(b, s, ins, [self._split_rows(b, o, lo, rows) for o in outs],
                             in_loop=t is not None)
            elif isinstance(s, Reduce):
                self._reduce(b, s, v(s.out), v(s.src))
            elif isinstance(s, RowKernel):
                self._row_kernel(b, s, v, in_loop=t is not None)
            elif isinstance(s, Gather):
                out, ids = v(s.out), v(s.ids)
                lo, hi = self._chunk(b, out.rows, 1)
                rows = b.sub(hi, lo)
                self._gather(b, self._split_rows(b, out, lo, rows), v(s.table),
                             self._split_rows(b, ids, lo, rows, etype=I64))
            else:
                # scatters (embedding gradients) add rows in id order: thread 0 runs them
                with b.if_then(b.icmp_signed("==", self.tid, c64(0))):
                    if isinstance(s, Scatter):
                        self._scatter(b, s, v(s.out), v(s.ids), v(s.src))
                    else:
                        raise BackendError(f"llvm: unknown program step {s!r}")
            self._sync(b)

    def _row_kernel(self, b: ir.IRBuilder, s: RowKernel, v: Any, in_loop: bool) -> None:
        """This thread's rows, block by block: every part on a block, then the next."""
        views = []
        width = 1
        for part in s.parts:
            if isinstance(part, Kernel):
                views.append(([v(r) for r in part.ins], [v(r) for r in part.outs]))
                width = max(width, views[-1][1][0].cols)
            else:
                views.append(([v(part.src)], [v(part.out)]))
                width = max(width, views[-1][0][0].cols)
        first = views[0][1][0]
        lo, hi = self._chunk(b, first.rows, 1)
        rb = max(1, ROW_BLOCK // width)
        with for_range(b, lo, hi, "rowblk", step=rb) as row:
            rest = b.sub(hi, row)
            n = b.select(b.icmp_signed("<", rest, c64(rb)), rest, c64(rb))
            for part, (ins, outs) in zip(s.parts, views):
                if isinstance(part, Kernel):
                    self._kernel(b, part, [self._split_rows(b, x, row, n, bc in ("row", "scalar"))
                                           for x, bc in zip(ins, part.kernel.bcast)],
                                 [self._split_rows(b, o, row, n) for o in outs], in_loop)
                else:
                    self._reduce_part(b, part, self._split_rows(b, outs[0], row, n),
                                      self._split_rows(b, ins[0], row, n), c64(ins[0].cols))

    def _diagonal_steps(self, b: ir.IRBuilder, env: dict[str, ir.Value], steps: Sequence[object],
                        t: ir.Value, row: ir.Value, nrows: ir.Value, T: ir.Value, B: ir.Value,
                        collapsed: frozenset[str]) -> None:
        """The step phase's kernels at time t on batch rows row .. row + nrows - 1."""
        def v(r: Ref) -> View:
            buf = self.bufs[r.buf]   # a fixed buffer is a row/scalar broadcast here
            return self._split_rows(b, self._view(b, env, r, t, T, B, collapsed), row, nrows,
                                    broadcast=buf.fixed,
                                    etype=I64 if buf.dtype == "int64" else None)

        for s in steps:
            assert isinstance(s, Kernel)
            self._kernel(b, s, [v(r) for r in s.ins], [v(r) for r in s.outs], in_loop=True)

    def emit_sweep(self, name: str, sw: Sweep,
                   collapsed: frozenset[str] = frozenset()) -> ir.Function:
        fn = ir.Function(self.module, ENTRY_TYPE, f"{self.prefix}_{name}")
        # the sweep is glue around kernels, GEMMs and a few short loops: optimizing it for
        # size cut a cell's LLVM time by 20% (GRU: 0.19 -> 0.15 s) at the same run time
        fn.attributes.add("optsize")
        T, B, bufs, ctx = fn.args
        T.name, B.name, bufs.name, ctx.name = "T", "B", "bufs", "ctx"
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        # ctx NULL: one thread, no workspace
        read, merge = fn.append_basic_block("ctx"), fn.append_basic_block("ctx.done")
        b.cbranch(b.icmp_unsigned("==", ctx, ir.Constant(PTR, None)), merge, read)
        b.position_at_end(read)
        loaded = [b.load(b.gep(ctx, [c64(i)], source_etype=I64), typ=I64) for i in range(4)]
        b.branch(merge)
        b.position_at_end(merge)
        field = []
        for val, alone in zip(loaded, (0, 1, 0, 0)):
            phi = b.phi(I64)
            phi.add_incoming(c64(alone), fn.entry_basic_block)
            phi.add_incoming(val, read)
            field.append(phi)
        self.tid, self.nthr = field[0], field[1]
        self.sync, self.work = b.inttoptr(field[2], PTR), b.inttoptr(field[3], PTR)
        # the prologue: per-thread shares of rows and columns, filled in as steps ask for them
        pro, body = fn.append_basic_block("prologue"), fn.append_basic_block("body")
        b.branch(pro)
        self._pro = pb = ir.IRBuilder(pro)
        pb.position_before(pb.branch(body))
        self._chunks = {}
        self.TB = pb.mul(T, B)
        b.position_at_end(body)
        env = {buf.name: b.load(b.gep(bufs, [c64(i)], source_etype=PTR), typ=PTR,
                                name=f"buf_{i}")
               for i, buf in enumerate(self.p.buffers)}
        self.packs = packs = packed_gemms(sw, self.bufs)
        self.pack_offs = _pack_offsets(packs, self.tile)
        if packs:   # each thread packs the panels it will multiply by: no barrier needed
            with b.if_then(b.icmp_unsigned("!=", self.work, ir.Constant(PTR, None))):
                for key, (k, n) in packs.items():
                    w = self._view(b, env, Ref(key[0], rows=key[1], cols=key[2]), None, T, B,
                                   collapsed)
                    p0, p1 = self._pack_range(b, n)
                    b.call(self._packers(b)[0], [
                        c64(k), c64(n), w.ptr, w.ld, c64(int(key[3])),
                        b.gep(self.work, [c64(self.pack_offs[key])], source_etype=self.t),
                        p0, p1])
        self._steps(b, env, sw.pre, None, T, B, collapsed)
        if self.diagonal and diagonal_loop(sw, self.bufs):
            # a diagonal recurrence: each block of batch rows walks the whole time loop, so its
            # state tile (~DIAG_BLOCK elements) stays in L1 across steps. Single rows (a stride
            # of B·n between steps, which defeats the prefetchers) measured 5-50% slower than
            # step by step; blocks measured equal within noise (the loop streams memory).
            # Threads take contiguous runs of blocks and meet once, after the loop.
            width = max(r.cols[1] - r.cols[0] if r.cols else self.bufs[r.buf].cols
                        for st in sw.step for r in st.outs)   # type: ignore[union-attr]
            rb = c64(max(1, DIAG_BLOCK // width))
            nblk = b.sdiv(b.add(B, b.sub(rb, c64(1))), rb)
            lo, hi = self._chunk(b, nblk, 1, hoist=False)
            with for_range(b, lo, hi, "diag_blk") as blk:
                row = b.mul(blk, rb)
                rest = b.sub(B, row)
                nrows = b.select(b.icmp_signed("<", rest, rb), rest, rb)
                with for_range(b, c64(0), T, "diag_s") as s:
                    t = b.sub(b.sub(T, c64(1)), s) if sw.reverse else s
                    self._diagonal_steps(b, env, sw.step, t, row, nrows, T, B, collapsed)
            self._sync(b)
        elif sw.step:
            with for_range(b, c64(0), T, "s") as s:
                t = b.sub(b.sub(T, c64(1)), s) if sw.reverse else s
                self._steps(b, env, sw.step, t, T, B, collapsed)
        self._steps(b, env, sw.post, None, T, B, collapsed)
        b.ret_void()
        return fn

    def emit(self) -> ir.Module:
        self._gemm_global(self.dtype)
        self.emit_sweep("forward", self.p.forward)
        infer = self.emit_sweep("infer", self.p.forward, collapsed_buffers(self.p))
        self.emit_sweep("backward", self.p.backward)
        step = ir.Function(self.module, ir.FunctionType(VOID, [I64, PTR]), f"{self.prefix}_step")
        b = ir.IRBuilder(step.append_basic_block("entry"))
        b.call(infer, [c64(1), step.args[0], step.args[1], ir.Constant(PTR, None)])
        b.ret_void()
        return self.module


def emit_program(program: Program, prefix: str, fallback_gemm: bool = True,
                 diagonal: bool = True, own_packed: bool = True) -> ir.Module:
    """The module for program. ``fallback_gemm=False`` leaves out the naive GEMM: the gemm
    pointer starts null and the caller must install a BLAS gemm with ``p_set_gemm_f??`` before
    calling anything. The JIT does so when it found numpy's BLAS: the fallback, vectorized and
    unrolled by the optimizer, was about 40% of the LLVM compile time of an LSTM module.
    ``diagonal=False`` keeps the step-by-step loop even where ``diagonal_loop`` allows one loop
    over rows (for tests and benchmarks). ``own_packed=False`` leaves out the packed GEMM and
    its packing function: the caller installs them with ``p_set_packed_f??`` (see
    ``llvm.packed_helpers``) before any call with a workspace."""
    return ProgramEmitter(program, prefix, fallback_gemm, diagonal, own_packed).emit()
