"""LLVM IR for fused elementwise kernels: a ScalarProgram becomes a vectorizable loop.

``emit_kernel`` turns a ``graphrnn.scalar.ScalarProgram`` into an LLVM function

    void name(i64 rows, i64 n, ptr in0, i64 ld_in0, ..., ptr noalias out0, i64 ld_out0, ...)

that runs the program over a (rows, n) domain of row-major matrices. Each input is one of two
kinds, fixed at compile time: ``"vec"`` (contiguous along the columns; pass ``ld = 0`` for a
(1, n) row broadcast to every row) or ``"col"`` (one value per row, broadcast along the columns;
``ld = 0`` makes it a scalar). Outputs are separate ``noalias`` pointers: writing saved
activations into their own buffers is what lets the loop vectorizer handle the kernel.

Transcendental functions in float32 are arithmetic the vectorizer can widen (no libm calls);
float64 builds call the accurate libm functions (``tanh``, ``log1p``) and LLVM intrinsics
(``llvm.exp``, ``llvm.log``). The cell's own arithmetic carries only the fast-math flags
``contract afn`` (``ELEMENTWISE``: no ``reassoc``, ``nsz``, ``arcp``, ``nnan`` or ``ninf``), so NaN,
inf and the sign of zero come out as IEEE and ``ref`` have them; inside the approximations
(``MATH``) every divisor is finite and nonzero, and clamps are written as ``select(fcmp)`` so that
a NaN input stays NaN.

Accuracy of the float32 approximations against float64 numpy on the same float32 inputs
(measured over 60001 points of [-60, 60] plus tiny, huge and special values; pinned by
``tests/test_llvm_kernels.py``):

    ========  ============================================  ==============================
    function  method                                        max error (measured)
    ========  ============================================  ==============================
    tanh      Eigen's odd 13 / even 6 rational, clamped to   2.6e-7 abs and rel (4 ulp
              ±7.9053; |x| < 4e-4 returns x                  near ±1)
    sigmoid   e = exp(-|x|) (exp's method, one 2^k, flushed  2 ulp (1.65e-7 rel) wherever
              to 0 below 2^-126); 1/(1+e) for x >= 0,        the value is a normal number,
              e/(1+e) for x < 0                              both tails; < 8.4e-39 abs below
    exp       Cephes: k = round(x log2 e), Cody-Waite        < 3e-7 rel; overflow to inf past
              reduction, degree-6 polynomial, 2^k in two     88.72, gradual underflow to 0
              halves
    log       Cephes: exponent/mantissa split, degree-9      7.6e-8 rel (1.5e-7 abs near 1);
              polynomial; subnormals pre-scaled              0 -> -inf, <0 -> nan, inf -> inf
    softplus  max(x, 0) + log1p(exp(-|x|)), log1p(u) as      4.8e-7 abs (1 ulp of the result
              log(1+u) * u / ((1+u) - 1)                     at x ~ 14)
    ========  ============================================  ==============================

On an LSTM kernel (gate inputs including ±50, ±1e-30 and 0, cell state in [-3, 3]) the max abs
error of h is below 2e-6 (the test's bar); most of it is float32 rounding of c' itself.

All loops go through ``for_range`` (the numba ``cgutils.for_range`` idea).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from llvmlite import ir

from graphrnn.errors import BackendError
from graphrnn.ops import GroupOp, Ops
from graphrnn.scalar import ScalarProgram

I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()
# sums and products in reductions and GEMMs: reassociated (vectorized) like any BLAS
FAST = ("nsz", "arcp", "contract", "afn", "reassoc")
# the cell's own elementwise arithmetic keeps IEEE's NaN and inf (ref evaluates the graph as
# written): no ``reassoc`` (x + x + x*h became x * (2 + h): inf * 0 = NaN vanished), no ``nsz``
# (1/-0 is -inf), no ``arcp`` (x86 lowers x/y as x * rcp(y) refined by Newton's r (2 - y r),
# which is 0 * inf = NaN for y = 0 or ±inf); FMA contraction stays (it can only keep a product
# that would overflow finite when the sum cancels it)
ELEMENTWISE = ("contract", "afn")
# inside the approximations: no reassoc, which would undo Cody-Waite range reduction and fold
# y * 2^k1 * 2^k2 into y * inf; arcp is safe there (every divisor is finite and nonzero)
MATH = ("nsz", "arcp", "contract", "afn")
KINDS = ("vec", "col")


def ftype(dtype: str) -> ir.Type:
    if dtype == "float32":
        return ir.FloatType()
    if dtype == "float64":
        return ir.DoubleType()
    raise BackendError(f"llvm: no float type for dtype {dtype!r}; expected float32 or float64")


@contextmanager
def for_range(b: ir.IRBuilder, start: ir.Value, stop: ir.Value,
              name: str = "i", step: int = 1) -> Iterator[ir.Value]:
    """``for (i = start; i < stop; i += step) { body }``: yields i; the builder is left after
    the loop when the with-block ends. Every loop of the backend is built here."""
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    end = b.append_basic_block(f"{name}.end")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), body, end)
    b.position_at_end(body)
    yield i
    nxt = b.add(i, ir.Constant(I64, step), name=f"{name}.next", flags=("nsw",))
    i.add_incoming(nxt, b.block)
    b.branch(head)
    b.position_at_end(end)


class _FnPtrLoad(ir.instructions.LoadInstr):
    """A loaded function pointer that knows its function type (opaque pointers do not)."""
    _fnty: ir.FunctionType

    @property
    def function_type(self) -> ir.FunctionType:
        return self._fnty


def load_function_pointer(b: ir.IRBuilder, slot: ir.Value, fnty: ir.FunctionType) -> ir.Value:
    """Load a function pointer from slot so that ``b.call`` can call through it."""
    fp = b.load(slot, typ=PTR)
    fp.__class__ = _FnPtrLoad
    fp._fnty = fnty
    return fp


class Math:
    """Scalar math on one dtype, emitted at the builder's position."""

    def __init__(self, b: ir.IRBuilder, dtype: str) -> None:
        self.b = b
        self.dtype = dtype
        self.t = ftype(dtype)
        self.mod = b.module
        self.flags = MATH

    # ---- small helpers ----
    def c(self, v: float) -> ir.Constant:
        return ir.Constant(self.t, float(v))

    def add(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fadd(a, b, flags=self.flags)

    def sub(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fsub(a, b, flags=self.flags)

    def mul(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fmul(a, b, flags=self.flags)

    def div(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fdiv(a, b, flags=self.flags)

    def gt(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered(">", a, b)

    def lt(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered("<", a, b)

    def isnan(self, a: ir.Value) -> ir.Value:
        return self.b.fcmp_unordered("uno", a, a)

    def sel(self, cond: ir.Value, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(cond, a, b)

    def clamp(self, x: ir.Value, lo: float, hi: float) -> ir.Value:
        """lo <= x <= hi, NaN stays NaN (fcmp is false for NaN, so x is kept)."""
        x = self.sel(self.gt(x, self.c(hi)), self.c(hi), x)
        return self.sel(self.lt(x, self.c(lo)), self.c(lo), x)

    def poly(self, x: ir.Value, coefs: Sequence[float]) -> ir.Value:
        """Horner: coefs[0]*x^(k) + ... + coefs[-1]."""
        acc = self.c(coefs[0])
        for k in coefs[1:]:
            acc = self.add(self.mul(acc, x), self.c(k))
        return acc

    def intrinsic(self, name: str, *args: ir.Value) -> ir.Value:
        fn = self.mod.declare_intrinsic(name, [self.t])
        return self.b.call(fn, list(args))

    def libm(self, name: str, *args: ir.Value) -> ir.Value:
        """An accurate libm function (float64 builds only)."""
        fnty = ir.FunctionType(self.t, [self.t] * len(args))
        fn = self.mod.globals.get(name)
        if fn is None:
            fn = ir.Function(self.mod, fnty, name)
        return self.b.call(fn, list(args))

    def abs(self, x: ir.Value) -> ir.Value:
        return self.intrinsic("llvm.fabs", x)

    # ---- the ops ----
    def tanh(self, x: ir.Value) -> ir.Value:
        if self.dtype == "float64":
            return self.libm("tanh", x)
        # Eigen's generic_fast_tanh_float: odd 13/even 6 rational on [-7.9053, 7.9053]
        xc = self.clamp(x, -7.90531110763549805, 7.90531110763549805)
        x2 = self.mul(xc, xc)
        p = self.poly(x2, [-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                           5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                           4.89352455891786e-03])
        p = self.mul(xc, p)
        q = self.poly(x2, [1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                           4.89352518554385e-03])
        r = self.div(p, q)
        # |x| > 9 saturates exactly (float32 tanh(9) rounds to 1): with ``arcp`` an AVX-512 build
        # divides by a refined reciprocal that leaves the clamped rational 2 ulp short of 1
        ax = self.abs(x)
        one = self.sel(self.lt(x, self.c(0.0)), self.c(-1.0), self.c(1.0))
        r = self.sel(self.gt(ax, self.c(9.0)), one, r)
        # tiny inputs: tanh(x) = x to full relative precision
        return self.sel(self.lt(ax, self.c(0.0004)), x, r)

    def sigmoid(self, x: ir.Value) -> ir.Value:
        if self.dtype == "float64":
            e = self.intrinsic("llvm.exp", self.b.fneg(x))
            return self.div(self.c(1.0), self.add(self.c(1.0), e))
        # e = exp(-|x|) <= 1 never overflows; sigmoid is 1/(1+e) for x >= 0 and e/(1+e) for
        # x < 0, relative to the value in both tails (0.5 tanh(x/2) + 0.5 only reached an
        # absolute 6e-8 and was 0 from x = -17 on, so log(sigmoid(x)) was -inf)
        e = self.exp_neg(self.abs(x))
        num = self.sel(self.lt(x, self.c(0.0)), e, self.c(1.0))
        return self.div(num, self.add(self.c(1.0), e))

    def _exp_reduced(self, x: ir.Value, fx: ir.Value) -> ir.Value:
        """exp(x) / 2^fx for k = fx = round(x log2 e) (float32, Cephes): x reduced by k ln 2 in
        two parts, then a degree-6 polynomial; ``exp`` and ``exp_neg`` scale it by 2^k."""
        r = self.sub(self.sub(x, self.mul(fx, self.c(0.693359375))),
                     self.mul(fx, self.c(-2.12194440e-4)))
        z = self.mul(r, r)
        y = self.poly(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                          1.6666665459e-1, 5.0000001201e-1])
        return self.add(self.add(self.mul(y, z), r), self.c(1.0))

    def exp(self, x: ir.Value) -> ir.Value:
        if self.dtype == "float64":
            return self.intrinsic("llvm.exp", x)
        b = self.b
        nan = self.isnan(x)
        xc = self.clamp(self.sel(nan, self.c(0.0), x), -104.0, 89.0)
        fx = self.intrinsic("llvm.floor", self.add(self.mul(xc, self.c(1.44269504088896341)),
                                                    self.c(0.5)))
        y = self._exp_reduced(xc, fx)
        # y * 2^k in two halves so that k in [-150, 129] neither wraps nor flushes early
        k = b.fptosi(fx, I32)
        k1 = b.ashr(k, ir.Constant(I32, 1))
        k2 = b.sub(k, k1)
        for kk in (k1, k2):
            bits = b.shl(b.add(kk, ir.Constant(I32, 127)), ir.Constant(I32, 23))
            y = self.mul(y, b.bitcast(bits, self.t))
        return self.sel(nan, x, y)

    def exp_neg(self, a: ir.Value) -> ir.Value:
        """exp(-a) for a >= 0 (float32), for sigmoid: ``exp`` without its NaN guard and upper
        clamp, flushed to 0 where exp(-a) < 2^-126 (one 2^k instead of two halves); NaN gives
        NaN. About 2 ulp where the result is a normal number."""
        b = self.b
        # a <= 88 keeps inf - inf out of the reduction and k >= -127; k = -127 (a > 87.68, where
        # exp(-a) < 2^-126) puts 0 in the exponent field and 0 in the bits: the result flushes
        # to 0 exactly
        a = self.sel(self.gt(a, self.c(88.0)), self.c(88.0), a)
        # k = round(-a log2 e) (rint: one constant fewer than floor(x + 0.5), which matters in
        # an LSTM kernel, where tanh's constants already fill most vector registers)
        fx = self.intrinsic("llvm.rint", self.mul(a, self.c(-1.44269504088896341)))
        y = self._exp_reduced(self.b.fneg(a), fx)
        # 2^k: k + 127 sits in the low mantissa bits of fx + 2^23 + 127 (exact for integers k in
        # [-127, 0]); shifting them into the exponent field needs no fptosi, which would make a
        # NaN poison: a NaN stays NaN through y instead
        kb = b.bitcast(self.add(fx, self.c(8388608.0 + 127.0)), I32)
        bits = b.shl(kb, ir.Constant(I32, 23))
        return self.mul(y, b.bitcast(bits, self.t))

    def log(self, x: ir.Value) -> ir.Value:
        if self.dtype == "float64":
            return self.intrinsic("llvm.log", x)
        b = self.b
        # subnormals: scale into the normal range first
        sub = self.lt(x, self.c(1.17549435e-38))
        xs = self.sel(sub, self.mul(x, self.c(8388608.0)), x)
        bits = b.bitcast(xs, I32)
        e = b.sub(b.lshr(bits, ir.Constant(I32, 23)), ir.Constant(I32, 126))
        e = b.sub(e, b.select(sub, ir.Constant(I32, 23), ir.Constant(I32, 0)))
        m = b.bitcast(b.or_(b.and_(bits, ir.Constant(I32, 0x807FFFFF)),
                            ir.Constant(I32, 0x3F000000)), self.t)   # mantissa in [0.5, 1)
        small = self.lt(m, self.c(0.707106781186547524))
        ef = b.sitofp(e, self.t)
        ef = self.sel(small, self.sub(ef, self.c(1.0)), ef)
        m = self.sel(small, self.add(m, m), m)
        m = self.sub(m, self.c(1.0))
        z = self.mul(m, m)
        y = self.poly(m, [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                          3.3333331174e-1])
        y = self.mul(self.mul(y, m), z)
        y = self.add(y, self.mul(ef, self.c(-2.12194440e-4)))
        y = self.sub(y, self.mul(z, self.c(0.5)))
        r = self.add(self.add(m, y), self.mul(ef, self.c(0.693359375)))
        inf = self.c(float("inf"))
        r = self.sel(b.fcmp_ordered("==", x, inf), inf, r)
        r = self.sel(b.fcmp_ordered("==", x, self.c(0.0)), self.c(float("-inf")), r)
        r = self.sel(self.lt(x, self.c(0.0)), self.c(float("nan")), r)
        return self.sel(self.isnan(x), x, r)

    def log1p_small(self, u: ir.Value) -> ir.Value:
        """log(1 + u) for u >= 0, accurate for tiny u: log(w) * u / (w - 1), w = 1 + u."""
        if self.dtype == "float64":
            return self.libm("log1p", u)
        w = self.add(self.c(1.0), u)
        d = self.sub(w, self.c(1.0))
        one = self.b.fcmp_ordered("==", d, self.c(0.0))
        safe = self.sel(one, self.c(1.0), d)
        r = self.div(self.mul(self.log(w), u), safe)
        return self.sel(one, u, r)

    def softplus(self, x: ir.Value) -> ir.Value:
        a = self.abs(x)
        t = self.log1p_small(self.exp(self.b.fneg(a)))
        return self.add(self.relu(x), t)

    def relu(self, x: ir.Value) -> ir.Value:
        return self.sel(self.lt(x, self.c(0.0)), self.c(0.0), x)

    def maximum(self, a: ir.Value, b: ir.Value) -> ir.Value:
        # numpy.maximum propagates a NaN from either side
        r = self.sel(self.b.fcmp_unordered(">", a, b), a, b)
        return self.sel(self.isnan(b), b, r)

    def sqrt(self, x: ir.Value) -> ir.Value:
        return self.intrinsic("llvm.sqrt", x)


def _cmp(m: Math, cond: ir.Value) -> ir.Value:
    """1.0 where cond holds, else 0.0."""
    return m.sel(cond, m.c(1.0), m.c(0.0))


# op -> LLVM for one scalar value from its operand values: one row per op, the same rows as
# ``cuda_render.OP_TABLE``. The cell's own arithmetic carries ``ELEMENTWISE`` flags; the
# functions (``Math``'s methods) carry ``MATH`` inside their approximations.
Emitter = Callable[[Math, Sequence[ir.Value]], ir.Value]
OP_TABLE: dict[Ops, Emitter] = {
    Ops.NEG: lambda m, a: m.b.fneg(a[0], flags=ELEMENTWISE),
    Ops.EXP: lambda m, a: m.exp(a[0]),
    Ops.LOG: lambda m, a: m.log(a[0]),
    Ops.TANH: lambda m, a: m.tanh(a[0]),
    Ops.SIGMOID: lambda m, a: m.sigmoid(a[0]),
    Ops.RELU: lambda m, a: m.relu(a[0]),
    Ops.SOFTPLUS: lambda m, a: m.softplus(a[0]),
    Ops.SQRT: lambda m, a: m.sqrt(a[0]),
    Ops.STEP: lambda m, a: _cmp(m, m.gt(a[0], m.c(0.0))),
    Ops.ADD: lambda m, a: m.b.fadd(a[0], a[1], flags=ELEMENTWISE),
    Ops.SUB: lambda m, a: m.b.fsub(a[0], a[1], flags=ELEMENTWISE),
    Ops.MUL: lambda m, a: m.b.fmul(a[0], a[1], flags=ELEMENTWISE),
    Ops.DIV: lambda m, a: m.b.fdiv(a[0], a[1], flags=ELEMENTWISE),
    Ops.MAX: lambda m, a: m.maximum(a[0], a[1]),
    Ops.CMPGT: lambda m, a: _cmp(m, m.gt(a[0], a[1])),
    Ops.WHERE: lambda m, a: m.sel(m.b.fcmp_unordered("!=", a[0], m.c(0.0)), a[1], a[2]),
}
assert set(OP_TABLE) == GroupOp.Elementwise, "every elementwise op needs one llvm row"


def emit_scalar(m: Math, prog: ScalarProgram, ins: Sequence[ir.Value]) -> list[ir.Value]:
    """The program's outputs, computed from the input values at the builder's position."""
    if len(ins) != prog.n_inputs:
        raise BackendError(f"llvm: kernel takes {prog.n_inputs} inputs, got {len(ins)}")
    vals: list[ir.Value] = list(ins)
    for op, args, const in prog.instrs:
        if op is Ops.CONST:
            vals.append(m.c(float(const)))  # type: ignore[arg-type]
        elif op in OP_TABLE:
            vals.append(OP_TABLE[op](m, [vals[i] for i in args]))
        else:
            raise BackendError(f"llvm: no scalar lowering for {op.name}")
    return [vals[o] for o in prog.outputs]


def kernel_type(prog: ScalarProgram) -> ir.FunctionType:
    n_args = 2 + 2 * prog.n_inputs + 2 * len(prog.outputs)
    return ir.FunctionType(VOID, [I64 if k < 2 or k % 2 else PTR for k in range(n_args)])


def emit_kernel(module: ir.Module, name: str, prog: ScalarProgram, dtype: str,
                kinds: Sequence[str] | None = None, linkage: str = "") -> ir.Function:
    """Define ``name`` in module: the program over a (rows, n) domain (see module docstring).
    Arguments: rows, n, then (ptr, ld) per input, then (ptr noalias, ld) per output."""
    kinds = list(kinds or ["vec"] * prog.n_inputs)
    if len(kinds) != prog.n_inputs or any(k not in KINDS for k in kinds):
        raise BackendError(f"llvm: kernel {name}: input kinds must be {prog.n_inputs} of {KINDS},"
                           f" got {kinds}")
    fn = ir.Function(module, kernel_type(prog), name)
    if linkage:
        fn.linkage = linkage
    fn.attributes.add("nounwind")
    args = list(fn.args)
    rows, n = args[0], args[1]
    rows.name, n.name = "rows", "n"
    in_ptrs = args[2:2 + 2 * prog.n_inputs:2]
    in_lds = args[3:3 + 2 * prog.n_inputs:2]
    o0 = 2 + 2 * prog.n_inputs
    out_ptrs = args[o0::2]
    out_lds = args[o0 + 1::2]
    for k, p in enumerate(in_ptrs):
        p.name = f"in{k}"
        p.add_attribute("captures(none)")
    for k, p in enumerate(out_ptrs):
        p.name = f"out{k}"
        p.add_attribute("noalias")
        p.add_attribute("captures(none)")
    t = ftype(dtype)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    m = Math(b, dtype)
    with for_range(b, ir.Constant(I64, 0), rows, "r") as r:
        in_rows = [b.gep(p, [b.mul(r, ld)], source_etype=t) for p, ld in zip(in_ptrs, in_lds)]
        out_rows = [b.gep(p, [b.mul(r, ld)], source_etype=t) for p, ld in zip(out_ptrs, out_lds)]
        col_vals = [b.load(p, typ=t) if kind == "col" else None
                    for p, kind in zip(in_rows, kinds)]
        with for_range(b, ir.Constant(I64, 0), n, "j") as j:
            ins = [cv if cv is not None else
                   b.load(b.gep(p, [j], source_etype=t, inbounds=True), typ=t)
                   for p, cv in zip(in_rows, col_vals)]
            outs = emit_scalar(m, prog, ins)
            for p, v in zip(out_rows, outs):
                b.store(v, b.gep(p, [j], source_etype=t, inbounds=True))
    b.ret_void()
    return fn
