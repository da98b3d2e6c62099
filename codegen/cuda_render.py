"""CUDA C for fused elementwise kernels: a few tables plus one ``render(spec) -> str``.

A kernel computes a ``ScalarProgram`` (graphrnn/scalar.py) at every point of a ``(rows, cols)``
domain. ``cols`` and every stride are baked in as constants (division by a constant compiles to
a multiply and a shift); ``rows`` (T·B hoisted, or B inside the loop) is the one runtime size.
Each operand is addressed as ``ptr[r * row_stride + c * col_stride]``, so one rule covers a full
matrix or a column view of one (row stride = the buffer's width), a bias row broadcast over the
rows (row stride 0) and a per-row value broadcast over the columns (column stride 0).

Two shapes of kernel come out of here:

- ``render``: the pointwise kernel, a grid-stride loop over the flat domain (one launch per
  step, or one for all T·B rows of a hoisted phase).
- ``render_loop``: a diagonal recurrence (no matmul or reduction in the step phase) as one
  kernel that runs the whole time loop: each thread owns one (b, j) element and walks t
  forward (or backward, for BPTT) itself, running the step phase's kernels in order.

- ``render_rows``: a row kernel (``graphrnn.program.RowKernel``: a layer norm's statistics and
  the elementwise work around them) as one kernel with a warp per row: the parts run in order,
  each lane taking the columns ``lane, lane + 32, ..``; a reduction over a row sums each lane's
  columns in order and then combines the 32 lanes with a fixed butterfly of ``__shfl_xor_sync``
  (no atomics, no shared memory: the same bits on every run, and every lane ends with the same
  total); ``__syncwarp()`` between parts makes a part's stores visible to the next.

The same source builds unchanged for the CPU through ``codegen/cuda_shim.h``; nothing here
uses shared memory, block barriers or atomics, so any walk order over the grid gives one result.
The shim defines ``GRNN_ROW_LANES`` as 1 (a thread per row, ``__syncwarp`` a no-op): the row
kernels' indexing and part order run there as written, their lane sums in column order.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from graphrnn.errors import BackendError
from graphrnn.ops import Ops
from graphrnn.scalar import ScalarProgram

from .mangle import mangle

CTYPE = {"float32": "float", "float64": "double"}
DEFAULT_BLOCK = 256

# op -> C expression per dtype; {0}, {1}, {2} are the operands (already parenthesized names)
_F32: dict[Ops, str] = {
    Ops.NEG: "(-{0})",
    Ops.EXP: "expf({0})",
    Ops.LOG: "logf({0})",
    Ops.TANH: "tanhf({0})",
    Ops.SIGMOID: "grnn_sigmoidf({0})",
    Ops.RELU: "({0} < 0.0f ? 0.0f : {0})",           # keeps NaN, like np.maximum
    Ops.SOFTPLUS: "grnn_softplusf({0})",
    Ops.SQRT: "sqrtf({0})",
    Ops.STEP: "({0} > 0.0f ? 1.0f : 0.0f)",
    Ops.ADD: "({0} + {1})",
    Ops.SUB: "({0} - {1})",
    Ops.MUL: "({0} * {1})",
    Ops.DIV: "({0} / {1})",
    Ops.MAX: "grnn_maxf({0}, {1})",
    Ops.CMPGT: "({0} > {1} ? 1.0f : 0.0f)",
    Ops.WHERE: "({0} != 0.0f ? {1} : {2})",
}
_F64: dict[Ops, str] = {
    Ops.NEG: "(-{0})",
    Ops.EXP: "exp({0})",
    Ops.LOG: "log({0})",
    Ops.TANH: "tanh({0})",
    Ops.SIGMOID: "grnn_sigmoid({0})",
    Ops.RELU: "({0} < 0.0 ? 0.0 : {0})",
    Ops.SOFTPLUS: "grnn_softplus({0})",
    Ops.SQRT: "sqrt({0})",
    Ops.STEP: "({0} > 0.0 ? 1.0 : 0.0)",
    Ops.ADD: "({0} + {1})",
    Ops.SUB: "({0} - {1})",
    Ops.MUL: "({0} * {1})",
    Ops.DIV: "({0} / {1})",
    Ops.MAX: "grnn_max({0}, {1})",
    Ops.CMPGT: "({0} > {1} ? 1.0 : 0.0)",
    Ops.WHERE: "({0} != 0.0 ? {1} : {2})",
}
OP_TABLE = {"float32": _F32, "float64": _F64}

# helpers every kernel file starts with; guarded so many kernels can share one translation unit
PRELUDE = r"""#ifndef GRNN_PRELUDE
#define GRNN_PRELUDE
/* sigmoid as one exp of -|x| and one divide: 1/(1+e) for x >= 0, e/(1+e) for x < 0, so both
   tails keep their relative precision (expf is 2 ulp; __expf's 2 + 1.173|x| ulp reached ~100 ulp
   in the left tail and overflowed to 0 from x = -88.7) */
__device__ __forceinline__ float grnn_sigmoidf(float x) {
  float e = expf(-fabsf(x));
  return (x < 0.0f ? e : 1.0f) / (1.0f + e);
}
__device__ __forceinline__ double grnn_sigmoid(double x) {
  double e = exp(-fabs(x));
  return (x < 0.0 ? e : 1.0) / (1.0 + e);
}
/* log(1 + exp(x)) without overflow */
__device__ __forceinline__ float grnn_softplusf(float x) {
  return (x > 0.0f ? x : 0.0f) + log1pf(expf(-fabsf(x)));
}
__device__ __forceinline__ double grnn_softplus(double x) {
  return (x > 0.0 ? x : 0.0) + log1p(exp(-fabs(x)));
}
/* NaN-propagating max, like np.maximum (fmaxf would drop the NaN) */
__device__ __forceinline__ float grnn_maxf(float a, float b) { return (b > a || b != b) ? b : a; }
__device__ __forceinline__ double grnn_max(double a, double b) {
  return (b > a || b != b) ? b : a;
}
/* row kernels: a warp per row (the CPU shim sets 1) and a fixed butterfly over its lanes, so
   a row's sum is the same bits on every run and in every lane */
#ifndef GRNN_ROW_LANES
#define GRNN_ROW_LANES 32
#endif
__device__ __forceinline__ float grnn_warp_sumf(float v) {
  for (int o = GRNN_ROW_LANES / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double grnn_warp_sum(double v) {
  for (int o = GRNN_ROW_LANES / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float grnn_warp_maxf(float v) {
  for (int o = GRNN_ROW_LANES / 2; o > 0; o >>= 1)
    v = grnn_maxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double grnn_warp_max(double v) {
  for (int o = GRNN_ROW_LANES / 2; o > 0; o >>= 1)
    v = grnn_max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
#endif
"""


@dataclass(frozen=True)
class Operand:
    """How a kernel addresses one array: element (r, c) is ``ptr[r*row_stride + c*col_stride]``."""
    row_stride: int
    col_stride: int = 1

    def __post_init__(self) -> None:
        if self.row_stride < 0 or self.col_stride not in (0, 1):
            raise BackendError(f"cuda: bad operand layout {self}")


@dataclass(frozen=True)
class KernelSpec:
    """One pointwise kernel: ``program`` at every (r, c) of a (rows, cols) domain."""
    name: str
    program: ScalarProgram
    dtype: str
    cols: int
    inputs: tuple[Operand, ...]
    outputs: tuple[Operand, ...]
    block: int = DEFAULT_BLOCK
    # False when an output may alias an input element for element (the Program allows it)
    restrict: bool = True

    def __post_init__(self) -> None:
        _check_spec(self)


def _check_spec(spec: KernelSpec) -> None:
    if spec.dtype not in CTYPE:
        raise BackendError(f"cuda kernel {spec.name}: dtype must be float32 or float64, "
                           f"got {spec.dtype!r}")
    if len(spec.inputs) != spec.program.n_inputs:
        raise BackendError(f"cuda kernel {spec.name}: its program reads "
                           f"{spec.program.n_inputs} inputs, {len(spec.inputs)} given")
    if len(spec.outputs) != len(spec.program.outputs):
        raise BackendError(f"cuda kernel {spec.name}: its program writes "
                           f"{len(spec.program.outputs)} outputs, {len(spec.outputs)} given")
    if any(o.col_stride != 1 for o in spec.outputs):
        raise BackendError(f"cuda kernel {spec.name}: outputs cannot broadcast")
    if spec.cols <= 0 or spec.block <= 0 or spec.block % 32:
        raise BackendError(f"cuda kernel {spec.name}: cols must be > 0 and the block a "
                           f"multiple of 32, got cols={spec.cols} block={spec.block}")


@dataclass(frozen=True)
class Access:
    """How one stage of a loop kernel reaches an operand: buffer parameter ``buf`` (row stride
    ``width``) at element ``offset + slab + r*width + c`` where ``slab`` is
    ``(t + toff) * rows * width`` for a per-step (seq) buffer and 0 otherwise; ``bcast`` drops
    the row term ("row"), the column term ("col") or both ("scalar")."""
    buf: int
    width: int
    offset: int = 0
    toff: int | None = None
    bcast: str = "full"

    def index(self, t: str = "t") -> str:
        terms = [f"{self.offset}u"] if self.offset else []
        if self.toff is not None:
            tt = f"({t} + {self.toff})" if self.toff else t
            terms.append(f"(unsigned)({tt}) * rows_w{self.width}")
        if self.bcast in ("full", "col"):
            terms.append(f"r * {self.width}u")
        if self.bcast in ("full", "row"):
            terms.append("c")
        return " + ".join(terms) or "0u"

    def extent(self, rows: int, cols: int, steps: int) -> int:
        n = self.offset + 1
        if self.toff is not None:
            n += (steps - 1 + self.toff) * rows * self.width
        if self.bcast in ("full", "col"):
            n += (rows - 1) * self.width
        if self.bcast in ("full", "row"):
            n += cols - 1
        return n


@dataclass(frozen=True)
class LoopStage:
    program: ScalarProgram
    ins: tuple[Access, ...]
    outs: tuple[Access, ...]


@dataclass(frozen=True)
class LoopSpec:
    """A diagonal recurrence as one kernel over the whole time loop: each thread owns one
    (r, c) of the (rows, cols) domain and walks t = 0..steps-1 (``reverse``: down to 0), running
    the stages (the step phase's kernels) in order at its own elements. Valid only when no
    thread reads an element another thread writes; ``codegen.cuda_exec`` checks that."""
    name: str
    dtype: str
    cols: int
    written: tuple[bool, ...]          # per buffer parameter: does any stage write it
    stages: tuple[LoopStage, ...]
    reverse: bool = False
    block: int = DEFAULT_BLOCK

    def __post_init__(self) -> None:
        if self.dtype not in CTYPE:
            raise BackendError(f"cuda loop {self.name}: dtype must be float32 or float64")
        for st in self.stages:
            if len(st.ins) != st.program.n_inputs or len(st.outs) != len(st.program.outputs):
                raise BackendError(f"cuda loop {self.name}: a stage's accesses do not match "
                                   "its program")
            for a in st.ins + st.outs:
                if not 0 <= a.buf < len(self.written):
                    raise BackendError(f"cuda loop {self.name}: access to buffer {a.buf}")

    def extent(self, arg: int, rows: int, steps: int) -> int:
        """Elements reachable from buffer parameter ``arg``'s pointer (0: unused)."""
        return max([a.extent(rows, self.cols, steps) for st in self.stages
                    for a in st.ins + st.outs if a.buf == arg] or [0])


ROW_LANES = 32   # threads per row of a row kernel on the GPU (a warp)


@dataclass(frozen=True)
class RowPart:
    """One part of a row kernel: ``program`` over ``width`` columns of the row (``op`` None),
    or a reduction ``op`` ("sum"/"max", ``accumulate`` adds to the output) of its one input
    over ``width`` columns into a (rows, 1) output. Operands address as in ``KernelSpec``."""
    width: int
    inputs: tuple[Operand, ...]
    outputs: tuple[Operand, ...]
    program: ScalarProgram | None = None
    op: str | None = None
    accumulate: bool = False


@dataclass(frozen=True)
class RowSpec:
    """A row kernel: a warp per row runs the parts in order (see the module docstring). Its
    pointer parameters are each part's inputs then outputs, part after part; none is
    ``__restrict__`` (a part reads what an earlier one wrote)."""
    name: str
    dtype: str
    parts: tuple[RowPart, ...]
    block: int = DEFAULT_BLOCK
    cols: int = ROW_LANES   # threads per row: what grid_for sizes the launch by

    def __post_init__(self) -> None:
        if self.dtype not in CTYPE:
            raise BackendError(f"cuda row kernel {self.name}: dtype must be float32 or float64")
        if self.block % ROW_LANES or self.block <= 0:
            raise BackendError(f"cuda row kernel {self.name}: the block must be a multiple of "
                               f"{ROW_LANES}, got {self.block}")
        for pt in self.parts:
            if pt.op is None:
                ok = pt.program is not None and len(pt.inputs) == pt.program.n_inputs and \
                    len(pt.outputs) == len(pt.program.outputs)
            else:
                ok = pt.op in ("sum", "max") and len(pt.inputs) == len(pt.outputs) == 1 and \
                    not (pt.accumulate and pt.op != "sum")
            if not ok or pt.width <= 0:
                raise BackendError(f"cuda row kernel {self.name}: a part's operands do not "
                                   "match its program or reduction")

    def operands(self) -> list[tuple[Operand, int]]:
        """Every pointer parameter's layout and the columns it is reached over."""
        out: list[tuple[Operand, int]] = []
        for pt in self.parts:
            out += [(o, pt.width) for o in pt.inputs]
            out += [(o, 1 if pt.op else pt.width) for o in pt.outputs]
        return out

    def extent(self, arg: int, rows: int) -> int:
        o, width = self.operands()[arg]
        return (rows - 1) * o.row_stride + (width - 1) * o.col_stride + 1


@dataclass(frozen=True)
class Param:
    """One parameter of a generated kernel's signature."""
    name: str
    ctype: str        # "float", "double" or "int"
    pointer: bool
    const: bool
    restrict: bool = True

    def c_decl(self) -> str:
        if self.pointer:
            r = " __restrict__" if self.restrict else ""
            return f"{'const ' if self.const else ''}{self.ctype}*{r} {self.name}"
        return f"const {self.ctype} {self.name}"


@dataclass(frozen=True)
class RenderedKernel:
    name: str
    source: str                      # the kernel alone, without the prelude
    params: tuple[Param, ...]
    block: int
    spec: KernelSpec | LoopSpec | RowSpec = field(repr=False)

    @property
    def full_source(self) -> str:
        return PRELUDE + self.source


def c_const(value: float, dtype: str) -> str:
    """A literal that reads back to exactly the dtype's value of ``value``."""
    if dtype == "float32":
        v = float(np.float32(value))
        if math.isnan(v):
            return "__int_as_float(0x7fc00000)"
        if math.isinf(v):
            return "__int_as_float(0x7f800000)" if v > 0 else "__int_as_float(0xff800000)"
        s = repr(v) + "f"
    else:
        v = float(value)
        if math.isnan(v):
            return "__longlong_as_double(0x7ff8000000000000LL)"
        if math.isinf(v):
            return ("__longlong_as_double(0x7ff0000000000000LL)" if v > 0
                    else "__longlong_as_double(0xfff0000000000000LL)")
        s = repr(v)
    return f"({s})" if s.startswith("-") else s


def kernel_name(prefix: str, spec_key: str) -> str:
    """A C identifier unique to what the kernel computes (so equal kernels dedupe)."""
    # ASCII (C identifiers, cuModuleGetFunction's name); the hash keeps equal kernels one
    return f"grnn_{mangle(prefix)}_{hashlib.sha1(spec_key.encode()).hexdigest()[:10]}"


def _body(program: ScalarProgram, dtype: str, indent: str) -> list[str]:
    """SSA lines computing every instruction; inputs are v0..v{n-1} already in scope."""
    ct = CTYPE[dtype]
    table = OP_TABLE[dtype]
    lines = []
    n = program.n_inputs
    for k, (op, args, c) in enumerate(program.instrs):
        if op is Ops.CONST:
            rhs = c_const(float(c), dtype)  # type: ignore[arg-type]
        else:
            rhs = table[op].format(*[f"v{a}" for a in args])
        lines.append(f"{indent}const {ct} v{n + k} = {rhs};")
    return lines


def _index(o: Operand, r: str, c: str) -> str:
    terms = []
    if o.row_stride:
        terms.append(f"{r} * {o.row_stride}u" if o.row_stride != 1 else r)
    if o.col_stride:
        terms.append(c)
    return " + ".join(terms) if terms else "0u"


def render(spec: KernelSpec) -> RenderedKernel:
    """The CUDA C of one pointwise kernel (``extern "C" __global__``, grid-stride loop)."""
    ct = CTYPE[spec.dtype]
    rs = spec.restrict
    params = ([Param(f"in{i}", ct, True, True, rs) for i in range(len(spec.inputs))]
              + [Param(f"out{i}", ct, True, False, rs) for i in range(len(spec.outputs))]
              + [Param("rows", "int", False, True)])
    sig = ",\n    ".join(p.c_decl() for p in params)
    N = spec.cols
    lines = [f'extern "C" __global__ void __launch_bounds__({spec.block}) {spec.name}(',
             f"    {sig}) {{",
             f"  /* {N} columns baked in; rows at run time */",
             f"  const unsigned total = (unsigned)rows * {N}u;",
             "  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;",
             "       i += blockDim.x * gridDim.x) {",
             f"    const unsigned r = i / {N}u;",
             f"    const unsigned c = i - r * {N}u;"]
    for i, o in enumerate(spec.inputs):
        lines.append(f"    const {ct} v{i} = in{i}[{_index(o, 'r', 'c')}];")
    lines += _body(spec.program, spec.dtype, "    ")
    for j, (o, v) in enumerate(zip(spec.outputs, spec.program.outputs)):
        lines.append(f"    out{j}[{_index(o, 'r', 'c')}] = v{v};")
    lines += ["  }", "}", ""]
    return RenderedKernel(spec.name, "\n".join(lines), tuple(params), spec.block, spec)


def render_loop(spec: LoopSpec) -> RenderedKernel:
    """The CUDA C of a whole diagonal time loop in one kernel (no restrict: stages read what
    earlier stages of the same thread wrote)."""
    ct = CTYPE[spec.dtype]
    params = ([Param(f"b{i}", ct, True, not w, False) for i, w in enumerate(spec.written)]
              + [Param("rows", "int", False, True), Param("steps", "int", False, True)])
    sig = ",\n    ".join(p.c_decl() for p in params)
    N = spec.cols
    widths = sorted({a.width for st in spec.stages for a in st.ins + st.outs
                     if a.toff is not None})
    lines = [f'extern "C" __global__ void __launch_bounds__({spec.block}) {spec.name}(',
             f"    {sig}) {{",
             f"  const unsigned total = (unsigned)rows * {N}u;"]
    lines += [f"  const unsigned rows_w{w} = (unsigned)rows * {w}u;" for w in widths]
    lines += ["  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total;",
              "       i += blockDim.x * gridDim.x) {",
              f"    const unsigned r = i / {N}u;",
              f"    const unsigned c = i - r * {N}u;"]
    if spec.reverse:
        lines.append("    for (int t = steps - 1; t >= 0; --t) {")
    else:
        lines.append("    for (int t = 0; t < steps; ++t) {")
    for k, st in enumerate(spec.stages):
        lines.append(f"      {{  /* stage {k} */")
        for i, a in enumerate(st.ins):
            lines.append(f"        const {ct} v{i} = b{a.buf}[{a.index()}];")
        lines += _body(st.program, spec.dtype, "        ")
        for a, v in zip(st.outs, st.program.outputs):
            lines.append(f"        b{a.buf}[{a.index()}] = v{v};")
        lines.append("      }")
    lines += ["    }", "  }", "}", ""]
    return RenderedKernel(spec.name, "\n".join(lines), tuple(params), spec.block, spec)


def render_rows(spec: RowSpec) -> RenderedKernel:
    """The CUDA C of a row kernel: a warp per row, its parts in order (module docstring)."""
    ct = CTYPE[spec.dtype]
    sfx = "f" if spec.dtype == "float32" else ""
    params: list[Param] = []
    for k, pt in enumerate(spec.parts):
        params += [Param(f"p{k}_in{i}", ct, True, True, False) for i in range(len(pt.inputs))]
        params += [Param(f"p{k}_out{j}", ct, True, False, False)
                   for j in range(len(pt.outputs))]
    params.append(Param("rows", "int", False, True))
    sig = ",\n    ".join(p.c_decl() for p in params)
    lines = [f'extern "C" __global__ void __launch_bounds__({spec.block}) {spec.name}(',
             f"    {sig}) {{",
             "  const unsigned lane = threadIdx.x % GRNN_ROW_LANES;",
             "  const unsigned stride = (blockDim.x / GRNN_ROW_LANES) * gridDim.x;",
             "  for (unsigned r = (blockIdx.x * blockDim.x + threadIdx.x) / GRNN_ROW_LANES;",
             "       r < (unsigned)rows; r += stride) {"]
    for k, pt in enumerate(spec.parts):
        lines.append(f"    {{  /* part {k}: {pt.op or 'kernel'} over {pt.width} columns */")
        if pt.op is None:
            assert pt.program is not None
            lines.append(f"      for (unsigned c = lane; c < {pt.width}u; c += GRNN_ROW_LANES) {{")
            for i, o in enumerate(pt.inputs):
                lines.append(f"        const {ct} v{i} = p{k}_in{i}[{_index(o, 'r', 'c')}];")
            lines += _body(pt.program, spec.dtype, "        ")
            for j, (o, v) in enumerate(zip(pt.outputs, pt.program.outputs)):
                lines.append(f"        p{k}_out{j}[{_index(o, 'r', 'c')}] = v{v};")
            lines.append("      }")
        else:
            (src,), (dst,) = pt.inputs, pt.outputs
            init = c_const(float("-inf") if pt.op == "max" else 0.0, spec.dtype)
            comb = "grnn_max" if pt.op == "max" else ""
            lines.append(f"      {ct} acc = {init};")
            lines.append(f"      for (unsigned c = lane; c < {pt.width}u; c += GRNN_ROW_LANES)")
            x = f"p{k}_in0[{_index(src, 'r', 'c')}]"
            lines.append(f"        acc = {comb}{sfx}(acc, {x});" if comb else
                         f"        acc += {x};")
            lines.append(f"      acc = grnn_warp_{pt.op}{sfx}(acc);")
            out = f"p{k}_out0[{_index(Operand(dst.row_stride, 0), 'r', 'c')}]"
            lines.append(f"      if (lane == 0) {out} {'+=' if pt.accumulate else '='} acc;")
        lines.append("    }")
        lines.append("    __syncwarp();")
    lines += ["  }", "}", ""]
    return RenderedKernel(spec.name, "\n".join(lines), tuple(params), spec.block, spec)


def render_any(spec: KernelSpec | LoopSpec | RowSpec) -> RenderedKernel:
    if isinstance(spec, RowSpec):
        return render_rows(spec)
    return render_loop(spec) if isinstance(spec, LoopSpec) else render(spec)


def module_source(kernels: list[RenderedKernel]) -> str:
    """One translation unit holding many kernels (one nvcc/NVRTC/gcc call for all of them)."""
    seen: set[str] = set()
    parts = [PRELUDE]
    for k in kernels:
        if k.name not in seen:
            seen.add(k.name)
            parts.append(k.source)
    return "\n".join(parts)


def grid_for(rows: int, cols: int, block: int, max_blocks: int = 65535) -> int:
    """Blocks for a grid-stride loop over rows*cols points (at least one)."""
    return max(1, min(max_blocks, -(-rows * cols // block)))


def extent(spec: KernelSpec | LoopSpec | RowSpec, arg: int, rows: int, steps: int = 1) -> int:
    """Elements a kernel may touch from pointer parameter ``arg`` (for bounds checks)."""
    if isinstance(spec, LoopSpec):
        return spec.extent(arg, rows, steps)
    if isinstance(spec, RowSpec):
        return spec.extent(arg, rows)
    o = (spec.inputs + spec.outputs)[arg]
    return (rows - 1) * o.row_stride + (spec.cols - 1) * o.col_stride + 1
