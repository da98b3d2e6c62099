"""The in-loop GEMM whose right operand is a parameter: weights packed once per call.

Inside a time loop, ``h @ W_h`` (forward) and ``dZ @ W_hᵀ`` (backward) multiply a small left
operand (B rows) by the same weight matrix at every step. OpenBLAS re-packs that matrix on every
call: 17-20% of an LSTM training step in the profiles of ARCHITECTURE.md. Here the weights are
packed once per sweep into column panels of ``NR`` columns (``K x NR`` floats each, zero-padded
past N), and a register-blocked microkernel computes ``MR x NR`` blocks of C with ``MR * NR /
lanes`` vector accumulators (AVX-512: 8 x 32 floats in 16 zmm registers; AVX2: 6 x 16 in 12 ymm).
Panels are the unit of work of a thread: the caller gives each thread its own panel range for
both packing and computing, so no thread ever reads another's packed panels.

Two functions per dtype, both internal to the program's module:

* ``pack(k, n, w, ldw, trans, dst, p0, p1)``: panels p0 .. p1-1 of op(W) (k x n; op(W) = Wᵀ
  when trans) into dst; panel p at ``dst + p * k * NR``;
* ``gemm(m, k, a, lda, wp, p0, p1, n, c, ldc, accumulate)``: ``C[:, p0*NR : min(p1*NR, n)]
  (+)= A @ op(W)`` for all m rows; any m and n (blocks of MR rows, then single rows; the last
  panel stores only the columns that exist).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

from llvmlite import ir

from .forkguard import hold_across_fork
from .llvm_kernels import FAST, I64, PTR, VOID, for_range, ftype
from .llvm_load import jit_module


@dataclass(frozen=True)
class Tile:
    lanes: int   # elements per vector register
    mr: int      # rows of C per block
    nr: int      # columns per panel (two vectors)

    def panels(self, n: int) -> int:
        return -(-n // self.nr)

    def packed_elems(self, k: int, n: int) -> int:
        return self.panels(n) * k * self.nr


@cache
def host_vector_bits() -> int:
    feats = set(jit_module().host_cpu()[1].split(","))
    if "+avx512f" in feats:
        return 512
    if "+avx" in feats:
        return 256
    return 128


def tile_for(dtype: str, vector_bits: int | None = None) -> Tile:
    bits = vector_bits if vector_bits is not None else host_vector_bits()
    lanes = bits // (32 if dtype == "float32" else 64)
    # accumulators + 2 weight vectors + 1 broadcast must fit the register file: 32 vector
    # registers with AVX-512, 16 with AVX/AVX2 and SSE
    mr = 8 if bits == 512 else 6
    return Tile(lanes, mr, 2 * lanes)


def c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def emit_pack(module: ir.Module, name: str, dtype: str, tile: Tile) -> ir.Function:
    t = ftype(dtype)
    fn = ir.Function(module, ir.FunctionType(VOID, [I64, I64, PTR, I64, I64, PTR, I64, I64]),
                     name)
    fn.linkage = "internal"
    fn.attributes.add("optsize")   # runs once per sweep: compile time matters more (0.13 s)
    fn.attributes.add("noinline")
    k, n, w, ldw, trans, dst, p0, p1 = fn.args
    w.attributes.add("noalias")
    dst.attributes.add("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    nr = c64(tile.nr)
    is_t = b.icmp_signed("!=", trans, c64(0))
    zero = ir.Constant(t, 0.0)

    def at(ptr: ir.Value, idx: ir.Value) -> ir.Value:
        return b.gep(ptr, [idx], source_etype=t)

    with for_range(b, p0, p1, "pk_p") as p:
        panel = at(dst, b.mul(b.mul(p, k), nr))
        j0 = b.mul(p, nr)
        full = b.icmp_signed("<=", b.add(j0, nr), n)
        with b.if_else(full) as (whole, last):
            with whole:
                with b.if_else(is_t) as (tr, plain):
                    with tr:      # panel column c is row j0 + c of W: read rows contiguously
                        with for_range(b, c64(0), nr, "pk_tc") as col:
                            src = at(w, b.mul(b.add(j0, col), ldw))
                            with for_range(b, c64(0), k, "pk_tk") as kk:
                                b.store(b.load(at(src, kk), typ=t),
                                        at(panel, b.add(b.mul(kk, nr), col)))
                    with plain:   # NR contiguous values per row of W: vector copies
                        with for_range(b, c64(0), k, "pk_k") as kk:
                            src = at(w, b.add(b.mul(kk, ldw), j0))
                            row = at(panel, b.mul(kk, nr))
                            with for_range(b, c64(0), nr, "pk_c") as col:
                                b.store(b.load(at(src, col), typ=t), at(row, col))
            with last:    # the last panel: columns past n are zeros
                with for_range(b, c64(0), k, "pk_lk") as kk:
                    row = at(panel, b.mul(kk, nr))
                    with for_range(b, c64(0), nr, "pk_lc") as col:
                        j = b.add(j0, col)
                        inside = b.icmp_signed("<", j, n)
                        # clamp the index so that the (discarded) load past n stays inside W
                        jj = b.select(inside, j, c64(0))
                        idx = b.select(is_t, b.add(b.mul(jj, ldw), kk),
                                       b.add(b.mul(kk, ldw), jj))
                        v = b.load(at(w, idx), typ=t)
                        b.store(b.select(inside, v, zero), at(row, col))
    b.ret_void()
    return fn


def emit_packed_gemm(module: ir.Module, name: str, dtype: str, tile: Tile) -> ir.Function:
    t = ftype(dtype)
    vec = ir.VectorType(t, tile.lanes)
    nv = tile.nr // tile.lanes
    fma_name = f"llvm.fma.v{tile.lanes}{'f32' if dtype == 'float32' else 'f64'}"
    fma = module.globals.get(fma_name) or ir.Function(module, ir.FunctionType(vec, [vec] * 3),
                                                      fma_name)
    fn = ir.Function(module, ir.FunctionType(
        VOID, [I64, I64, PTR, I64, PTR, I64, I64, I64, PTR, I64, I64]), name)
    fn.linkage = "internal"
    # the block is written out by hand: optsize keeps LLVM from unrolling and vectorizing it
    # again (measured: compile 0.22 s -> 0.07 s, same GFLOP/s)
    fn.attributes.add("optsize")
    fn.attributes.add("noinline")   # inlined, it would be optimized again at every call site
    m, k, a, lda, wp, p0, p1, n, c, ldc, accumulate = fn.args
    for arg in (a, wp, c):
        arg.attributes.add("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    # the accumulators live in the entry block: mem2reg makes them registers
    accs = [[b.alloca(vec) for _h in range(nv)] for _r in range(tile.mr)]
    zero = ir.Constant(vec, [0.0] * tile.lanes)
    splat = ir.Constant(ir.VectorType(ir.IntType(32), tile.lanes), [0] * tile.lanes)
    undef = ir.Constant(vec, ir.Undefined)
    acc_on = b.icmp_signed("!=", accumulate, c64(0))
    nr = c64(tile.nr)
    mfull = b.mul(b.sdiv(m, c64(tile.mr)), c64(tile.mr))

    def block(i0: ir.Value, rows: int, panel: ir.Value, j0: ir.Value, ncols: ir.Value) -> None:
        for r in range(rows):
            for h in range(nv):
                b.store(zero, accs[r][h])
        with for_range(b, c64(0), k, "mk") as kk:
            wrow = b.gep(panel, [b.mul(kk, nr)], source_etype=t)
            ws = [b.load(b.gep(wrow, [c64(h * tile.lanes)], source_etype=t), typ=vec, align=4)
                  for h in range(nv)]
            for r in range(rows):
                av = b.load(b.gep(a, [b.add(b.mul(b.add(i0, c64(r)), lda), kk)],
                                  source_etype=t), typ=t)
                av = b.shuffle_vector(b.insert_element(undef, av, ir.Constant(ir.IntType(32), 0)),
                                      undef, splat)
                for h in range(nv):
                    b.store(b.call(fma, [av, ws[h], b.load(accs[r][h], typ=vec)]), accs[r][h])
        crows = [b.gep(c, [b.add(b.mul(b.add(i0, c64(r)), ldc), j0)], source_etype=t)
                 for r in range(rows)]
        full = b.icmp_signed("==", ncols, nr)
        with b.if_else(full) as (whole, part):
            with whole:
                for r, crow in enumerate(crows):
                    for h in range(nv):
                        ptr = b.gep(crow, [c64(h * tile.lanes)], source_etype=t)
                        v = b.load(accs[r][h], typ=vec)
                        # C is read even without accumulate (the select drops it): no branch
                        old = b.load(ptr, typ=vec, align=4)
                        b.store(b.select(acc_on, b.fadd(v, old, flags=FAST), v), ptr, align=4)
            with part:   # the last panel: only ncols < NR columns of C exist
                for r, crow in enumerate(crows):
                    vs = [b.load(accs[r][h], typ=vec) for h in range(nv)]
                    with for_range(b, c64(0), ncols, "mt") as j:
                        ptr = b.gep(crow, [j], source_etype=t)
                        # element j of the row's accumulators (out-of-range picks are dropped)
                        v = b.extract_element(vs[0], b.trunc(j, ir.IntType(32)))
                        for h in range(1, nv):
                            jh = b.trunc(b.sub(j, c64(h * tile.lanes)), ir.IntType(32))
                            v = b.select(b.icmp_signed(">=", j, c64(h * tile.lanes)),
                                         b.extract_element(vs[h], jh), v)
                        old = b.load(ptr, typ=t)
                        b.store(b.select(acc_on, b.fadd(v, old, flags=FAST), v), ptr)

    with for_range(b, p0, p1, "mp") as p:
        panel = b.gep(wp, [b.mul(b.mul(p, k), nr)], source_etype=t)
        j0 = b.mul(p, nr)
        rest = b.sub(n, j0)
        ncols = b.select(b.icmp_signed("<", rest, nr), rest, nr)
        with for_range(b, c64(0), mfull, "mi", step=tile.mr) as i0:
            block(i0, tile.mr, panel, j0, ncols)
        # leftover rows one at a time: one more copy of the block, not MR - 1 (each copy is
        # LLVM compile time; B % MR != 0 is rare in training)
        with for_range(b, mfull, m, "mr1") as i:
            block(i, 1, panel, j0, ncols)
    b.ret_void()
    return fn


def helper_module(dtype: str, tile: Tile, triple: str) -> str:
    """``graphrnn_pack_f??`` and ``graphrnn_pgemm_f??`` as a module of their own: the JIT
    compiles it once per process and dtype and hands the addresses to every cell's module."""
    sfx = dtype[-2:]
    mod = ir.Module(f"graphrnn_packed_f{sfx}")
    mod.triple = triple
    for f in (emit_pack(mod, f"graphrnn_pack_f{sfx}", dtype, tile),
              emit_packed_gemm(mod, f"graphrnn_pgemm_f{sfx}", dtype, tile)):
        f.linkage = "external"
    return str(mod)


_helpers: dict[str, tuple[Any, int, int]] = {}
_helpers_lock = threading.Lock()
hold_across_fork(_helpers_lock, 10)   # after llvm_load's lock: the order the compile path takes


def packed_helpers(dtype: str, cache: bool = True) -> tuple[int, int]:
    """Addresses of the pack and packed GEMM for dtype, compiled once per process (they do not
    depend on the cell) and installed in every cell module."""
    with _helpers_lock:
        if dtype not in _helpers:
            llvm_jit = jit_module()
            tm = llvm_jit.target_machine()
            j = llvm_jit.jit(helper_module(dtype, tile_for(dtype), tm.triple), use_cache=cache)
            sfx = dtype[-2:]
            _helpers[dtype] = (j, j.address(f"graphrnn_pack_f{sfx}"),
                               j.address(f"graphrnn_pgemm_f{sfx}"))
        return _helpers[dtype][1], _helpers[dtype][2]


def ready_helpers() -> frozenset[str]:
    """The dtypes whose helpers are compiled in this process."""
    return frozenset(_helpers)
