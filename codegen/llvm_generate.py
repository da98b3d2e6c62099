"""Text generation as one native call: the whole sampling loop of an llvm-compiled model.

``graphrnn.sample.generate`` on the Python path makes, per token, one ``CompiledCell.step`` per
layer (argument checks, pooled arrays, a ctypes call whose GEMMs are OpenBLAS ``sgemm`` calls
with M = 1, which pack the weights every call), a numpy head and a numpy softmax: about 350 us a
token for a 2-layer H = 256 char LSTM, of which the arithmetic is a small part. Here the loop
over tokens runs in one LLVM function (``gen``), built per model from the layers' Programs:

* per layer, the forward sweep emitted for T = B = 1 (``_GenEmitter``: ``ProgramEmitter`` with
  every ``x @ op(W)`` of one row as a GEMV of our own, ``_emit_gemv``, instead of the BLAS);
  GEMMs with a transposed left operand (none in a forward sweep we know) keep the BLAS;
* between layers, the output is copied into the next layer's input, and each state's final
  slab into its initial slab;
* the input is a one-hot row or a row of the embedding table; the head is the same GEMV plus the
  bias; the next token is the argmax (the first maximum, as ``np.argmax``) or a draw from
  ``softmax(z / temperature)`` computed in float64.

With ``threads=n`` the loop runs on n threads (``llvm_threads.TEAM``, each with its ``ctx``):
every GEMV is split by output columns, so each core keeps its share of the weights in its own L2
from token to token, and thread 0 does the glue between spin barriers (about ten a token for a
2-layer LSTM). The default is one thread (see ``NativeGenerator.threads``).

The GEMV skips the rows of ``W`` whose multiplier is exactly zero, so a one-hot input reads one
row of the input weights instead of all of them. That equals the full product only when ``W`` is
finite (``0 * inf`` is NaN): ``NativeGenerator.run`` checks the parameters and refuses
non-finite ones (the caller then takes the Python path, which gives IEEE's answer).

Randomness: draw ``i`` (``i = 0, 1, ...`` over the sampled tokens) uses the ``i``-th output of
SplitMix64 seeded with ``seed`` (Steele, Lea, Flood 2014), as a float64 in [0, 1) from its top
53 bits. The same seed gives the same text on every run and machine with the same logits, but
not the text numpy's ``default_rng(seed)`` gives on the Python path. Argmax does not draw: its
text is the Python path's whenever the logits agree in their order (the GEMVs sum in another
order than OpenBLAS, so a near tie, within float rounding, may break the other way).
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from llvmlite import ir

from graphrnn.errors import BackendError, RuntimeInputError
from graphrnn.program import Gemm, Program, Ref
from graphrnn.runtime import fixed_view

from .llvm_blas import blas_info
from .llvm_kernels import ELEMENTWISE, FAST, I64, PTR, VOID, for_range, ftype
from .llvm_load import jit_module
from .llvm_program import ENTRY_TYPE, ProgramEmitter, View, c64
from .llvm_threads import ENTRY, TEAM
from .mangle import mangle

F64 = ir.DoubleType()
SETTER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
GAMMA = 0x9E3779B97F4A7C15   # SplitMix64's increment


def splitmix64(seed: int, i: int) -> int:
    """The i-th output (i = 0, 1, ...) of SplitMix64 seeded with seed: what draw i uses."""
    m = (1 << 64) - 1
    z = (seed + (i + 1) * GAMMA) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def uniform(seed: int, i: int) -> float:
    """Draw i as the native loop sees it: a float64 in [0, 1)."""
    return (splitmix64(seed, i) >> 11) * 2.0 ** -53


# ---- the GEMV ----

GROUP = 4   # rows of W per pass over y in the GEMV (measured: 4 and 8 alike, 1 and 2 slower)


def _emit_gemv(module: ir.Module, name: str, dtype: str) -> ir.Function:
    """``gemv(K, N, a, W, ldw, trans, y, acc)``: ``y[0:N] (+)= a[0:K] @ op(W)``, op(W) = W
    (K x N, rows ldw apart) or, with ``trans``, Wᵀ (W is N x K).

    Without ``trans``: the indices k of the nonzero ``a[k]`` are listed first (a one-hot input
    reads one row of W), then y is updated GROUP rows at a time, ``y[n] = fma(a[k3], W[k3, n],
    fma(a[k2], ...))``: each column still sums its terms in k order, so the result does not
    depend on the grouping, and the loop over columns vectorizes with no reassociation while
    y is loaded and stored once per GROUP rows (the GEMV is bound by reading W). With
    ``trans`` each y[n] is a dot product (reassociated, as a BLAS does)."""
    t = ftype(dtype)
    fn = ir.Function(module, ir.FunctionType(VOID, [I64, I64, PTR, PTR, I64, I64, PTR, I64]),
                     name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    K, N, a, W, ldw, trans, y, acc = fn.args
    for p in (a, W, y):
        p.attributes.add("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = ir.Constant(t, 0.0)
    s = b.alloca(t)
    nnz = b.alloca(I64)
    is_acc = b.icmp_signed("!=", acc, c64(0))
    with b.if_else(b.icmp_signed("!=", trans, c64(0))) as (tr, plain):
        with tr:
            with for_range(b, c64(0), N, "tn") as n:
                row = b.gep(W, [b.mul(n, ldw)], source_etype=t)
                b.store(zero, s)
                with for_range(b, c64(0), K, "tk") as k:
                    p = b.fmul(b.load(b.gep(a, [k], source_etype=t), typ=t),
                               b.load(b.gep(row, [k], source_etype=t), typ=t), flags=FAST)
                    b.store(b.fadd(b.load(s, typ=t), p, flags=FAST), s)
                yp = b.gep(y, [n], source_etype=t)
                tot = b.load(s, typ=t)
                old = b.select(is_acc, b.load(yp, typ=t), zero)
                b.store(b.select(is_acc, b.fadd(old, tot, flags=FAST), tot), yp)
        with plain:
            with b.if_then(b.not_(is_acc)):
                with for_range(b, c64(0), N, "zn") as n:
                    b.store(zero, b.gep(y, [n], source_etype=t))
            # the nonzero multipliers' indices, in order (a stack array of K int64s)
            idx = b.alloca(I64, size=K)
            b.store(c64(0), nnz)
            with for_range(b, c64(0), K, "nz") as k:
                with b.if_then(b.fcmp_unordered("!=", b.load(b.gep(a, [k], source_etype=t),
                                                             typ=t), zero)):
                    c = b.load(nnz, typ=I64)
                    b.store(k, b.gep(idx, [c], source_etype=I64))
                    b.store(b.add(c, c64(1)), nnz)
            count = b.load(nnz, typ=I64)
            full = b.mul(b.sdiv(count, c64(GROUP)), c64(GROUP))

            def rows(g: ir.Value, m: int) -> list[tuple[ir.Value, ir.Value]]:
                out = []
                for j in range(m):
                    k = b.load(b.gep(idx, [b.add(g, c64(j))], source_etype=I64), typ=I64)
                    out.append((b.load(b.gep(a, [k], source_etype=t), typ=t),
                                b.gep(W, [b.mul(k, ldw)], source_etype=t)))
                return out

            def update(rs: list[tuple[ir.Value, ir.Value]], name: str) -> None:
                with for_range(b, c64(0), N, name) as n:
                    yp = b.gep(y, [n], source_etype=t)
                    v = b.load(yp, typ=t)
                    for ak, row in rs:
                        w = b.load(b.gep(row, [n], source_etype=t), typ=t)
                        v = b.fadd(v, b.fmul(ak, w, flags=ELEMENTWISE), flags=ELEMENTWISE)
                    b.store(v, yp)

            with for_range(b, c64(0), full, "g", step=GROUP) as g:
                update(rows(g, GROUP), "gn")
            with for_range(b, full, count, "r") as g:
                update(rows(g, 1), "rn")
    b.ret_void()
    return fn


class _GenEmitter(ProgramEmitter):
    """A layer's forward sweep for T = B = 1 in a shared module: one-row GEMMs are GEMVs, each
    thread taking its share of the output columns (so its share of the weights stays in its
    own cache from token to token); the barrier function is the module's one."""

    def __init__(self, program: Program, prefix: str, module: ir.Module, gemv: ir.Function,
                 fallback_gemm: bool, barrier: ir.Function | None) -> None:
        super().__init__(program, prefix, fallback_gemm=fallback_gemm, diagonal=False,
                         own_packed=False)
        self.module = module
        self.gemv = gemv
        self._barrier_fn = barrier

    def _gemm(self, b: ir.IRBuilder, s: Gemm, out: View, a: View, bv: View) -> None:
        if s.trans_a:   # not a forward product: the BLAS
            self._blas_gemm(b, s, out, a, bv)
            return
        n = bv.rows if s.trans_b else c64(bv.cols)
        with b.if_else(b.icmp_signed("==", a.rows, c64(1))) as (one, many):
            with one:
                lo, hi = self._chunk(b, n, self.tile.lanes)
                w = b.gep(bv.ptr, [b.mul(lo, bv.ld) if s.trans_b else lo], source_etype=self.t)
                b.call(self.gemv, [c64(a.cols), b.sub(hi, lo), a.ptr, w, bv.ld,
                                   c64(int(s.trans_b)), b.gep(out.ptr, [lo], source_etype=self.t),
                                   c64(int(s.accumulate))])
            with many:
                self._blas_gemm(b, s, out, a, bv)


# ---- the plan: where each layer's values live for T = B = 1 ----

@dataclass
class _LayerPlan:
    program: Program
    prefix: str
    x: tuple[int, int, int]                  # input: (buffer, element offset, width)
    out: tuple[int, int, int]                # first output
    states: list[tuple[int, int, int]]       # (buffer, cols): slab 1 -> slab 0
    zero: list[tuple[int, int]]              # (buffer, elements) zeroed before each step


def _offset(p: Program, r: Ref) -> tuple[int, int, int]:
    """(buffer index, first element, width) of a one-row view at T = B = 1."""
    buf = p.buffer_map[r.buf]
    c0, c1 = r.cols if r.cols is not None else (0, buf.cols)
    if buf.fixed:
        raise BackendError(f"llvm generate: {r} is a parameter-shaped buffer; expected a row")
    slab = r.t * buf.cols if buf.kind == "seq" else 0
    return [b.name for b in p.buffers].index(r.buf), slab + c0, c1 - c0


def _layer_plan(cc: Any, i: int) -> _LayerPlan:
    p: Program = cc.program
    names = [b.name for b in p.buffers]
    (_xn, xbuf), = p.inputs
    x = (names.index(xbuf), 0, p.buffer_map[xbuf].cols)
    out = _offset(p, p.outputs[0][1])
    states = [(names.index(bn), p.buffer_map[bn].cols) for _n, bn in p.states]
    whole = cc._no_zero["forward"]   # written whole before they are read: no zeroing
    zero = [(names.index(b.name), int(np.prod(b.shape(1, 1)))) for b in p.buffers
            if b.kind in ("mat", "carry") and b.name not in whole]
    return _LayerPlan(p, f"gen{i}_{mangle(p.cell_name)}_f{p.dtype[-2:]}", x, out, states, zero)


# ---- the module ----

# the generation entry's argument block (int64 slots; pointers and the temperature's bits)
A_PRIME_N, A_PRIME, A_NEW, A_OUT, A_P, A_TEMP, A_ARGMAX, A_SEED, A_RESULT, A_STOP = range(10)
N_ARGS = 10


def _emit(plans: Sequence[_LayerPlan], dtype: str, onehot: bool, embed: int, hidden: int,
          classes: int, fallback_gemm: bool) -> tuple[str, list[str]]:
    """The module's IR text and the names of its layers' gemm setters. The entry
    ``grnn_generate(0, 0, args, ctx)`` has the sweeps' signature (``llvm_threads.ENTRY``): n
    threads call it at once with their ``ctx``, or one thread with ctx NULL. Thread 0 does the
    glue (the input row, copies between layers, the head and the draw); the layers' GEMVs are
    split by columns."""
    t = ftype(dtype)
    module = ir.Module(name="graphrnn_generate")
    gemv = _emit_gemv(module, "grnn_gen_gemv", dtype)
    sweeps, setters = [], []
    barrier = None
    for lp in plans:
        em = _GenEmitter(lp.program, lp.prefix, module, gemv, fallback_gemm, barrier)
        barrier = em._barrier()
        em._gemm_global(dtype)
        sweeps.append(em.emit_sweep("step", lp.program.forward))
        setters.append(f"{lp.prefix}_set_gemm_f{dtype[-2:]}")
    assert barrier is not None
    exp = ir.Function(module, ir.FunctionType(F64, [F64]), "exp")
    pick_fn = _emit_pick(module, dtype, exp)
    L = len(plans)
    fn = ir.Function(module, ENTRY_TYPE, "grnn_generate")
    _t, _b, args, ctx = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def slot(i: int) -> ir.Value:
        return b.gep(args, [c64(i)], source_etype=I64)

    def iarg(i: int) -> ir.Value:
        return b.load(slot(i), typ=I64)

    def parg(i: int) -> ir.Value:
        return b.inttoptr(iarg(i), PTR)

    n_prime, prime, n_new, out, P = iarg(A_PRIME_N), parg(A_PRIME), iarg(A_NEW), parg(A_OUT), \
        parg(A_P)
    temp = b.bitcast(iarg(A_TEMP), F64)
    argmax, seed = iarg(A_ARGMAX), iarg(A_SEED)
    has_ctx = b.icmp_unsigned("!=", ctx, ir.Constant(PTR, None))
    # ctx NULL: one thread (a fake ctx on the stack keeps every load below unconditional)
    solo = b.alloca(I64, size=4)
    for i, v in enumerate((0, 1, 0, 0)):
        b.store(c64(v), b.gep(solo, [c64(i)], source_etype=I64))
    cx = b.select(has_ctx, ctx, solo)
    tid = b.load(b.gep(cx, [c64(0)], source_etype=I64), typ=I64)
    nthr = b.load(b.gep(cx, [c64(1)], source_etype=I64), typ=I64)
    sync = b.inttoptr(b.load(b.gep(cx, [c64(2)], source_etype=I64), typ=I64), PTR)
    first = b.icmp_signed("==", tid, c64(0))

    def wait() -> None:
        b.call(barrier, [sync, nthr])

    def arg(i: int) -> ir.Value:
        return b.load(b.gep(P, [c64(i)], source_etype=PTR), typ=PTR)

    layer_bufs = [arg(i) for i in range(L)]
    table, head_w, head_b, logits = arg(L), arg(L + 1), arg(L + 2), arg(L + 3)

    def buf_ptr(layer: int, idx: int, off: int) -> ir.Value:
        base = b.load(b.gep(layer_bufs[layer], [c64(idx)], source_etype=PTR), typ=PTR)
        return b.gep(base, [c64(off)], source_etype=t)

    def copy(dst: ir.Value, src: ir.Value, n: int, name: str) -> None:
        with for_range(b, c64(0), c64(n), name) as j:
            b.store(b.load(b.gep(src, [j], source_etype=t), typ=t), b.gep(dst, [j], source_etype=t))

    tok = b.alloca(I64)
    done = b.alloca(I64)   # tokens written to out (thread 0)
    b.store(c64(0), done)
    b.store(b.load(prime, typ=I64), tok)
    with b.if_then(first):
        b.store(n_new, slot(A_RESULT))
        b.store(c64(0), slot(A_STOP))
    exit_blk = fn.append_basic_block("exit")
    with for_range(b, c64(0), b.sub(b.add(n_prime, n_new), c64(1)), "tok") as step:
        with b.if_then(first):
            cur = b.load(tok, typ=I64)
            x0 = buf_ptr(0, plans[0].x[0], plans[0].x[1])
            if onehot:
                with for_range(b, c64(0), c64(embed), "oh") as j:
                    b.store(ir.Constant(t, 0.0), b.gep(x0, [j], source_etype=t))
                b.store(ir.Constant(t, 1.0), b.gep(x0, [cur], source_etype=t))
            else:
                copy(x0, b.gep(table, [b.mul(cur, c64(embed))], source_etype=t), embed, "emb")
            for i, lp in enumerate(plans):
                for idx, n in lp.zero:
                    with for_range(b, c64(0), c64(n), f"z{i}") as j:
                        b.store(ir.Constant(t, 0.0),
                                b.gep(buf_ptr(i, idx, 0), [j], source_etype=t))
        wait()
        for i, lp in enumerate(plans):
            b.call(sweeps[i], [c64(1), c64(1), layer_bufs[i], ctx])   # ends with a barrier
            with b.if_then(first):
                if i + 1 < L:
                    nx = plans[i + 1].x
                    copy(buf_ptr(i + 1, nx[0], nx[1]), buf_ptr(i, lp.out[0], lp.out[1]), nx[2],
                         f"o{i}")
                for idx, n in lp.states:
                    copy(buf_ptr(i, idx, 0), buf_ptr(i, idx, n), n, f"s{i}")
            if i + 1 < L:
                wait()
        nxt_prime = b.add(step, c64(1))
        with b.if_then(first):
            with b.if_else(b.icmp_signed("<", nxt_prime, n_prime)) as (feed, sample):
                with feed:
                    b.store(b.load(b.gep(prime, [nxt_prime], source_etype=I64), typ=I64), tok)
                with sample:
                    top = buf_ptr(L - 1, plans[-1].out[0], plans[-1].out[1])
                    b.call(gemv, [c64(hidden), c64(classes), top, head_w, c64(classes), c64(0),
                                  logits, c64(0)])
                    with for_range(b, c64(0), c64(classes), "hb") as j:
                        zp = b.gep(logits, [j], source_etype=t)
                        bj = b.load(b.gep(head_b, [j], source_etype=t), typ=t)
                        b.store(b.fadd(b.load(zp, typ=t), bj), zp)
                    k = b.load(done, typ=I64)
                    pick = b.call(pick_fn, [c64(classes), logits, temp, argmax,
                                            _uniform(b, seed, k)])
                    with b.if_else(b.icmp_signed("<", pick, c64(0))) as (bad, good):
                        with bad:
                            b.store(b.sub(c64(-1), k), slot(A_RESULT))
                            b.store(c64(1), slot(A_STOP))
                        with good:
                            b.store(pick, b.gep(out, [k], source_etype=I64))
                            b.store(b.add(k, c64(1)), done)
                            b.store(pick, tok)
        wait()
        stop = b.icmp_signed("!=", b.load(slot(A_STOP), typ=I64), c64(0))
        with b.if_then(stop):
            b.branch(exit_blk)
    b.branch(exit_blk)
    b.position_at_end(exit_blk)
    b.ret_void()
    return str(module), setters


def _uniform(b: ir.IRBuilder, seed: ir.Value, k: ir.Value) -> ir.Value:
    """``uniform(seed, k)`` in IR."""
    z = b.add(seed, b.mul(b.add(k, c64(1)), ir.Constant(I64, GAMMA - (1 << 64))))
    z = b.mul(b.xor(z, b.lshr(z, c64(30))), ir.Constant(I64, 0xBF58476D1CE4E5B9 - (1 << 64)))
    z = b.mul(b.xor(z, b.lshr(z, c64(27))), ir.Constant(I64, 0x94D049BB133111EB - (1 << 64)))
    z = b.xor(z, b.lshr(z, c64(31)))
    return b.fmul(b.uitofp(b.lshr(z, c64(11)), F64), ir.Constant(F64, 2.0 ** -53))


def _emit_pick(module: ir.Module, dtype: str, exp: ir.Function) -> ir.Function:
    """``pick(V, z, temperature, argmax, u)``: the next token from the logits z, -1 when one is
    NaN. argmax: the first maximum; else the first i whose running sum of
    ``exp(z_i / temperature - max)`` (float64) exceeds ``u`` times the total."""
    name = "grnn_gen_pick"
    if name in module.globals:
        return module.globals[name]  # type: ignore[no-any-return]
    t = ftype(dtype)
    fn = ir.Function(module, ir.FunctionType(I64, [I64, PTR, F64, I64, F64]), name)
    fn.linkage = "internal"
    V, z, temp, argmax, u = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    best, besti = b.alloca(F64), b.alloca(I64)
    b.store(ir.Constant(F64, float("-inf")), best)
    b.store(c64(0), besti)
    nan = fn.append_basic_block("nan")

    def zi(i: ir.Value) -> ir.Value:
        v = b.load(b.gep(z, [i], source_etype=t), typ=t)
        return v if dtype == "float64" else b.fpext(v, F64)

    with for_range(b, c64(0), V, "mx") as i:
        v = zi(i)
        with b.if_then(b.fcmp_unordered("uno", v, v)):
            b.branch(nan)
        with b.if_then(b.fcmp_ordered(">", v, b.load(best, typ=F64))):
            b.store(v, best)
            b.store(i, besti)
    with b.if_then(b.icmp_signed("!=", argmax, c64(0))):
        b.ret(b.load(besti, typ=I64))
    m = b.fdiv(b.load(best, typ=F64), temp)
    tot = b.alloca(F64)
    b.store(ir.Constant(F64, 0.0), tot)
    with for_range(b, c64(0), V, "se") as i:
        e = b.call(exp, [b.fsub(b.fdiv(zi(i), temp), m)])
        b.store(b.fadd(b.load(tot, typ=F64), e), tot)
    target = b.fmul(u, b.load(tot, typ=F64))
    run, last = b.alloca(F64), b.alloca(I64)
    b.store(ir.Constant(F64, 0.0), run)
    b.store(c64(0), last)
    with for_range(b, c64(0), V, "cs") as i:
        e = b.call(exp, [b.fsub(b.fdiv(zi(i), temp), m)])
        with b.if_then(b.fcmp_ordered(">", e, ir.Constant(F64, 0.0))):
            b.store(i, last)
        r = b.fadd(b.load(run, typ=F64), e)
        b.store(r, run)
        with b.if_then(b.fcmp_ordered("<", target, r)):
            b.ret(i)
    b.ret(b.load(last, typ=I64))   # u * total rounded up to the total
    b.position_at_end(nan)
    b.ret(c64(-1))
    return fn


# ---- the Python side ----

class NativeGenerator:
    """The native generation loop of one ``graphrnn.model.RNNModel`` whose layers are all
    llvm-compiled, unidirectional, with one-hot or embedding input (``supported`` says why
    not otherwise)."""

    def __init__(self, model: Any, cache: bool = True, threads: int | None = None) -> None:
        why = unsupported(model)
        if why:
            raise BackendError(f"llvm generate: {why}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise BackendError(f"llvm generate: threads must be a positive int or None, got "
                               f"{threads!r}")
        self.threads_option = threads
        self._lock = threading.Lock()   # one call at a time: the buffers are the generator's
        self.cells = tuple(lay.fwd for lay in model.layers)
        self.dtype = model.dtype
        self.onehot = model.input == "onehot"
        self.embed = int(model.embed_size)
        self.hidden = int(model.hidden_out)
        self.classes = int(model.n_classes)
        self.vocab = int(model.vocab_size)
        self.plans = [_layer_plan(cc, i) for i, cc in enumerate(self.cells)]
        uses_blas = blas_info().found
        ir_text, setters = _emit(self.plans, self.dtype, self.onehot, self.embed, self.hidden,
                                 self.classes, fallback_gemm=not uses_blas)
        self.jitted = jit_module().jit(ir_text, use_cache=cache)
        if uses_blas:
            info = blas_info()
            addr = info.sgemm if self.dtype == "float32" else info.dgemm
            for s in setters:
                SETTER(self.jitted.address(s))(addr)
        self._gen = ENTRY(self.jitted.address("grnn_generate"))
        dt = np.dtype(self.dtype)
        # every layer's buffers at T = B = 1, kept between calls
        self.bufs = [{b.name: np.zeros(b.shape(1, 1), b.dtype) for b in lp.program.buffers}
                     for lp in self.plans]
        self.ptrs = [np.array([a.ctypes.data for a in bufs.values()], np.uintp)
                     for bufs in self.bufs]
        self.logits = np.zeros(self.classes, dt)
        # the weights one token reads (the one-hot input's weights count whole)
        self.weight_bytes = dt.itemsize * (self.hidden * self.classes + sum(
            b.rows * b.cols for lp in self.plans for b in lp.program.buffers
            if b.kind == "param"))

    def threads(self) -> int:
        """Threads per call: the ``threads`` option, else one. Two threads split every GEMV by
        columns, so each core keeps its half of the weights in its own L2 from token to token
        (H = 256: 3.1 MB of float32 weights, 2 MB of L2 per core here), at ~10 barriers a
        token; on the shared 2-core machine they measured slower than one thread at every size
        (``benchmarks/bench_sample.py``, native2 vs native1), hence the default."""
        return self.threads_option if self.threads_option is not None else 1

    def accepts(self, params: dict[str, np.ndarray]) -> bool:
        """Whether every parameter the loop reads is finite (the GEMV's skipping of zero
        multipliers equals the full product only then: ``0 * inf`` is NaN)."""
        return all(np.isfinite(np.asarray(v)).all() for v in params.values())

    def _bind(self, params: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Copy each layer's parameters into its buffers; the head's and the table's arrays
        (contiguous, of this dtype) as the caller's pointers. Returns the arrays to keep alive."""
        dt = np.dtype(self.dtype)
        for i, (lp, bufs) in enumerate(zip(self.plans, self.bufs)):
            pre = f"l{i}."
            for pc in lp.program.param_pieces:
                v = np.asarray(params[pre + pc.name])
                fixed_view(bufs[pc.ref.buf], pc.ref)[...] = v[pc.region]
                if not np.isfinite(v).all():
                    raise RuntimeInputError(f"parameter {pre + pc.name!r} is not finite")
        keep = [np.ascontiguousarray(params["head.W"], dt),
                np.ascontiguousarray(params["head.b"], dt).reshape(-1)]
        if not self.onehot:
            keep.append(np.ascontiguousarray(params["embed"], dt))
        for name, a in zip(("head.W", "head.b", "embed"), keep):
            if not np.isfinite(a).all():
                raise RuntimeInputError(f"parameter {name!r} is not finite")
        return keep

    def run(self, params: dict[str, np.ndarray], prime: Sequence[int], length: int,
            temperature: float = 1.0, argmax: bool = False, seed: int = 0,
            state: Sequence[Sequence[np.ndarray]] | None = None) -> list[int]:
        """``length`` token ids after feeding ``prime`` (at least one id), from ``state`` (per
        layer, its cell's states, each (1, n)) or zeros."""
        prime_ids = np.ascontiguousarray(prime, np.int64).reshape(-1)
        if prime_ids.size == 0:
            raise RuntimeInputError("generate: the prime needs at least one token id")
        if prime_ids.min() < 0 or prime_ids.max() >= self.vocab:
            raise RuntimeInputError(f"generate: token ids must be in [0, {self.vocab}), got "
                                    f"{prime_ids.min()}..{prime_ids.max()}")
        if not argmax and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= seed < 1 << 64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        with self._lock:
            return self._run(params, prime_ids, length, temperature, argmax, seed, state)

    def _run(self, params: dict[str, np.ndarray], prime_ids: np.ndarray, length: int,
             temperature: float, argmax: bool, seed: int,
             state: Sequence[Sequence[np.ndarray]] | None) -> list[int]:
        keep = self._bind(params)
        if state is not None and len(state) != len(self.plans):
            raise RuntimeInputError(f"state has {len(state)} layers, the model {len(self.plans)}")
        for i, (lp, bufs) in enumerate(zip(self.plans, self.bufs)):
            if state is not None and len(state[i]) != len(lp.program.states):
                raise RuntimeInputError(f"state of layer {i}: expected "
                                        f"{len(lp.program.states)} arrays, got {len(state[i])}")
            for j, (name, bn) in enumerate(lp.program.states):
                slab = bufs[bn]
                if state is None:
                    slab[0] = 0
                    continue
                h = np.asarray(state[i][j])
                if h.shape != slab[0].shape:
                    raise RuntimeInputError(f"state {name!r} of layer {i}: expected shape "
                                            f"{slab[0].shape} (one row), got {h.shape}")
                slab[0] = h
        P = np.array([int(p.ctypes.data) for p in self.ptrs]
                     + [keep[2].ctypes.data if not self.onehot else 0, keep[0].ctypes.data,
                        keep[1].ctypes.data, self.logits.ctypes.data], np.uintp)
        out = np.zeros(max(length, 1), np.int64)
        a = np.zeros(N_ARGS, np.int64)
        a[[A_PRIME_N, A_PRIME, A_NEW, A_OUT, A_P, A_ARGMAX]] = [
            prime_ids.size, prime_ids.ctypes.data, length, out.ctypes.data, P.ctypes.data,
            int(bool(argmax))]
        a[A_TEMP] = np.float64(temperature if temperature > 0 else 1.0).view(np.int64)
        a[A_SEED] = np.uint64(seed).view(np.int64)
        TEAM.run(self._gen, 0, 0, int(a.ctypes.data), self.threads(), 0)
        r = int(a[A_RESULT])
        if r < 0:
            raise RuntimeInputError(f"generate: the logits of token {-r - 1} contain NaN")
        return [int(v) for v in out[:length]]


def unsupported(model: Any) -> str | None:
    """Why the native loop cannot run ``model`` (None: it can)."""
    if getattr(model, "bidirectional", False):
        return "a bidirectional model cannot step"
    if model.input not in ("onehot", "embedding"):
        return f"input {model.input!r}: the native loop feeds token ids (onehot or embedding)"
    if int(model.n_classes) > int(model.vocab_size):
        return "the model predicts more classes than its input has token ids"
    for i, lay in enumerate(model.layers):
        # by name, not isinstance: codegen.llvm imports this module
        if lay.fwd.backend_name != "llvm" or not hasattr(lay.fwd, "_no_zero"):
            return f"layer {i} is not llvm-compiled ({lay.fwd.backend_name})"
        p = lay.fwd.program
        if len(p.inputs) != 1 or not p.outputs:
            return f"layer {i}: expected one input and an output"
        if p.buffer_map[p.outputs[0][1].buf].fixed:
            return f"layer {i}: its output is not a per-row value"
    return None


_CACHE: weakref.WeakKeyDictionary[Any, NativeGenerator] = weakref.WeakKeyDictionary()


def generator_for(model: Any) -> NativeGenerator | None:
    """The model's native loop (built once, rebuilt when its layers change), or None when it has
    none (``unsupported``)."""
    if unsupported(model):
        return None
    g = _CACHE.get(model)
    cells = tuple(lay.fwd for lay in model.layers)
    if g is None or g.cells != cells or g.dtype != model.dtype:
        g = NativeGenerator(model)
        _CACHE[model] = g
    return g
