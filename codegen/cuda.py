"""The ``cuda`` backend: a cell's Program as CUDA C kernels (CuPy RawModule, NVRTC), GEMMs
through cuBLAS, the time loop driven from Python on one stream.

    cc = graphrnn.compile(cell, backend="cuda", dtype="float32", cuda_graph=True)
    ys, hT = cc.forward(params, xs)        # CuPy arrays out; NumPy, CuPy or torch tensors in

- Kernels: every fused kernel of the Program rendered by ``codegen.cuda_render`` into one module,
  compiled once with ``cupy.RawModule`` (NVRTC, or nvcc where the NVRTC library is missing) and
  cached by a hash of source, options, compiler and the device's compute capability (CuPy also
  keeps its own on-disk cache keyed the same way).
- GEMMs: ``cublas<S|D>gemm_v2`` called directly on the strided views of the Program (a column
  block of a packed buffer is a matrix with a leading dimension), so nothing is copied or
  allocated: the hoisted input projection is one GEMM over all T·B rows. They are called in
  libcublas through ctypes, on a handle of the cell's own bound to its stream once, with a
  workspace of its own: CuPy's wrappers refuse any cuBLAS call while a stream is captured.
- Diagonal recurrences (no GEMM or reduction in the loop) run as one kernel over the whole time
  loop (``codegen.cuda_exec.loop_spec``).
- Reductions use CuPy's reduction kernels (a fixed tree, no ``atomicAdd``): two runs give the
  same bits.
- ``tf32=True`` (float32 only) lets cuBLAS run the GEMMs on tensor cores in TF32 (inputs rounded
  to 10 mantissa bits, float32 accumulation: ``cublasGemmEx`` with
  ``CUBLAS_COMPUTE_32F_FAST_TF32``), as cuDNN does for float32 RNNs unless PyTorch's
  ``torch.backends.cudnn.allow_tf32`` is off. Off by default: plain float32 GEMMs.
- ``cuda_graph=True`` captures each sweep for a given (T, B) as a CUDA graph and replays it; the
  buffers are then kept per (T, B), so residuals of a ``forward_train`` stay valid only until the
  next forward of the same shape (``backward`` refuses older ones with ``RuntimeInputError``).
- Export without a GPU: ``cuda_source(cell)`` (the ``.cu`` text) and ``ptx(cell, arch)`` (nvcc,
  or NVRTC where only CuPy's NVRTC is installed).

``import cupy`` happens only inside functions: importing this module never needs a GPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import weakref
from typing import Any, Mapping, Sequence

import numpy as np

from graphrnn.api import Grads
from graphrnn.errors import BackendError, RuntimeInputError
from graphrnn.ir import Cell
from graphrnn.pipeline import build_program
from graphrnn.program import Gather, Program, Scatter
from graphrnn.runtime import Device, ExecutedCell, Residuals

from .cuda_exec import ProgramExecutor
from .cuda_render import DEFAULT_BLOCK, RenderedKernel, grid_for, module_source

NVRTC_OPTIONS = ("--std=c++14",)
# cuBLAS / CUDA enums (part of their ABI): cudaDataType CUDA_R_32F, cublasComputeType_t
# CUBLAS_COMPUTE_32F_FAST_TF32, cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT
CUDA_R_32F, COMPUTE_32F_FAST_TF32, GEMM_DEFAULT = 0, 77, -1
WORKSPACE_BYTES = 32 << 20
_MODULES: dict[str, Any] = {}   # hash(source, options, arch, compiler) -> cupy.RawModule


def cuda_source(cell: Cell, dtype: str | None = None, block: int = DEFAULT_BLOCK) -> str:
    """The ``.cu`` text of every kernel a cell needs (forward and backward); no GPU needed."""
    ex = ProgramExecutor(build_program(cell, dtype or cell.dtype), block)
    return module_source(ex.kernels())


def ptx(cell: Cell, arch: str = "sm_80", dtype: str | None = None,
        block: int = DEFAULT_BLOCK) -> str:
    """PTX for a chosen architecture; no GPU needed, nvcc or NVRTC is."""
    return source_to_ptx(cuda_source(cell, dtype, block), arch)


def source_to_ptx(source: str, arch: str = "sm_80") -> str:
    """``nvcc -ptx`` where the CUDA toolkit is installed, else NVRTC through CuPy (the compiler
    the GPU path uses, with its options); a BackendError names both when neither is there."""
    from .cuda_cpu import compile_nvrtc, compile_ptx, find_tool, nvrtc_version
    if find_tool("nvcc") is not None or nvrtc_version() is None:
        return compile_ptx(source, arch)
    return str(compile_nvrtc(source, arch, NVRTC_OPTIONS))


def import_cupy() -> Any:
    """CuPy with a usable GPU, or a BackendError that says what is missing."""
    try:
        import cupy as cp
    except ImportError as e:
        raise BackendError("the cuda backend needs CuPy and an NVIDIA GPU: pip install "
                           "cupy-cuda13x, or cupy-cuda12x for a CUDA 12 driver (import failed: "
                           f"{e}); without a GPU use backend='llvm' and export kernels with "
                           "codegen.cuda.cuda_source/ptx") from e
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - CuPy raises its own runtime errors
        raise BackendError(f"the cuda backend found no usable GPU: {e}") from e
    if n < 1:
        raise BackendError("the cuda backend found no GPU (cupy sees 0 devices)")
    return cp


def module_compiler() -> str:
    """CuPy's compiler for the kernels: "nvrtc" where the NVRTC library loads, else "nvcc"
    where the CUDA toolkit is installed; a BackendError names both when neither is there."""
    from .cuda_cpu import find_tool, nvrtc_version
    if nvrtc_version() is not None:
        return "nvrtc"
    if find_tool("nvcc") is not None:
        return "nvcc"
    raise BackendError("cuda: neither NVRTC nor nvcc found to compile the kernels: pip install "
                       "nvidia-cuda-nvrtc (or install the CUDA toolkit)")


_P, _I, _SIZE = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_GEMM = [_P, _I, _I, _I, _I, _I, _P, _P, _I, _P, _I, _P, _P, _I]
# the libcublas functions the backend calls, with their C prototypes (cublas_api.h): handle,
# enums and ints as int, pointers (device or host) as void*; each returns a cublasStatus_t
CUBLAS_PROTOTYPES: dict[str, list[Any]] = {
    "cublasSgemm_v2": _GEMM, "cublasDgemm_v2": _GEMM,
    "cublasGemmEx": [_P, _I, _I, _I, _I, _I, _P, _P, _I, _I, _P, _I, _I, _P, _P, _I, _I, _I, _I],
    "cublasSetWorkspace_v2": [_P, _P, _SIZE],
}


def cublas_lib() -> Any:
    """libcublas as CuPy loaded it (found among the process's mapped files, so the very library
    CuPy's handles belong to), its functions typed by ``CUBLAS_PROTOTYPES``."""
    path = None
    try:
        with open("/proc/self/maps") as f:
            path = next((w[-1] for w in map(str.split, f)
                         if len(w) > 5 and "/libcublas.so" in w[-1]), None)
    except OSError:
        pass
    path = path or ctypes.util.find_library("cublas")
    if path is None:
        raise BackendError("cuda: CuPy's cuBLAS library was not found among the loaded "
                           "libraries (nor by ctypes.util.find_library)")
    lib = ctypes.CDLL(path)
    for name, argtypes in CUBLAS_PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return lib


def _check_blas(status: int, name: str) -> None:
    if status != 0:
        raise BackendError(f"cuda: {name} failed with cublasStatus_t {status}")


class GpuDevice(Device):
    """CuPy arrays, RawModule kernels, cuBLAS GEMMs on the current stream."""

    def __init__(self, kernels: Sequence[RenderedKernel], options: Sequence[str] = NVRTC_OPTIONS,
                 tf32: bool = False) -> None:
        cp = import_cupy()
        self.xp = cp
        self.tf32 = tf32
        dev = cp.cuda.Device()
        arch = dev.compute_capability
        source = module_source(list(kernels))
        compiler = module_compiler()
        key = hashlib.sha256("\0".join([source, *options, arch, compiler]).encode()).hexdigest()
        try:   # CuPy may compile when the module is made or at the first get_function
            if key not in _MODULES:
                _MODULES[key] = cp.RawModule(code=source, options=tuple(options),
                                             backend=compiler)
            self.module = _MODULES[key]
            self.fns = {k.name: self.module.get_function(k.name) for k in kernels}
        except Exception as e:  # noqa: BLE001 - the compiler's errors carry its log
            _MODULES.pop(key, None)
            raise BackendError(f"cuda: {compiler} could not compile the kernels: {e}") from e
        self._scalars: dict[tuple[str, float], np.ndarray] = {}
        self._scratch: dict[tuple[tuple[int, ...], str], Any] = {}
        # one stream for everything the cell does, and a cuBLAS handle of our own bound to it
        # once, here: CuPy's cuBLAS wrappers set the stream on every call and refuse to while a
        # stream is captured, so the GEMMs are called in libcublas itself (``cublas_lib``)
        from cupy_backends.cuda.libs import cublas
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.handle = cublas.create()   # first: CuPy may load libcublas only now
        weakref.finalize(self, cublas.destroy, self.handle)
        self.blas = cublas_lib()
        cublas.setStream(self.handle, self.stream.ptr)
        # a workspace of our own, so that a captured GEMM never allocates (32 MiB: what the
        # cuBLAS documentation recommends for Hopper, enough for every earlier chip)
        self._workspace = cp.empty(WORKSPACE_BYTES, dtype=np.uint8)
        _check_blas(self.blas.cublasSetWorkspace_v2(
            self.handle, self._workspace.data.ptr, WORKSPACE_BYTES), "cublasSetWorkspace_v2")

    def launch(self, kernel: RenderedKernel, rows: int, args: Sequence[Any]) -> None:
        grid = grid_for(rows, kernel.spec.cols, kernel.block)
        conv = [np.int32(a) if isinstance(a, (int, np.integer)) else a for a in args]
        self.fns[kernel.name]((grid,), (kernel.block,), tuple(conv))

    def _scalar(self, v: float, dtype: Any) -> np.ndarray:
        key = (np.dtype(dtype).name, v)
        if key not in self._scalars:   # host memory that must outlive a captured graph
            self._scalars[key] = np.array(v, dtype=dtype)
        return self._scalars[key]

    def gemm(self, out: Any, a: Any, b: Any, ta: bool, tb: bool, acc: bool) -> None:
        args = cublas_gemm_args(out, a, b, ta, tb)
        if args is None:
            if not acc:
                out[...] = 0
            return
        opb, opa, m, n, k, ldb, lda, ldc = args
        # host-pointer scalars: a captured graph keeps their values from capture time
        alpha, beta = self._scalar(1.0, out.dtype), self._scalar(1.0 if acc else 0.0, out.dtype)
        if self.tf32 and out.dtype == np.float32:
            _check_blas(self.blas.cublasGemmEx(
                self.handle, opb, opa, m, n, k, alpha.ctypes.data, b.data.ptr, CUDA_R_32F, ldb,
                a.data.ptr, CUDA_R_32F, lda, beta.ctypes.data, out.data.ptr, CUDA_R_32F, ldc,
                COMPUTE_32F_FAST_TF32, GEMM_DEFAULT), "cublasGemmEx")
            return
        name = "cublasSgemm_v2" if out.dtype == np.float32 else "cublasDgemm_v2"
        _check_blas(getattr(self.blas, name)(
            self.handle, opb, opa, m, n, k, alpha.ctypes.data, b.data.ptr, ldb, a.data.ptr, lda,
            beta.ctypes.data, out.data.ptr, ldc), name)

    def reduce(self, out: Any, src: Any, op: str, axis: int, acc: bool) -> None:
        # CuPy's reduction is a fixed tree (no atomics): deterministic. It writes into a
        # scratch array kept per shape, so nothing is allocated once warm (a captured CUDA
        # graph must not allocate: a pooled block could later belong to someone else)
        cp = self.xp
        key = (tuple(out.shape), out.dtype.name)
        if key not in self._scratch:
            self._scratch[key] = cp.empty(out.shape, out.dtype)
        tmp = self._scratch[key]
        (cp.sum if op == "sum" else cp.max)(src, axis=axis, keepdims=True, out=tmp)
        if acc:
            out += tmp
        else:
            out[...] = tmp

    def scatter(self, out: Any, ids: Any, src: Any, acc: bool) -> None:
        import cupyx
        if not acc:
            out[...] = 0
        cupyx.scatter_add(out, ids[:, 0], src)


def cublas_gemm_args(out: Any, a: Any, b: Any, ta: bool, tb: bool
                     ) -> tuple[int, int, int, int, int, int, int, int] | None:
    """Arguments of a column-major ``gemm`` that computes the row-major, strided
    ``out = op(a) @ op(b)``: out is m×n with row stride ldc; read column-major it is outᵀ
    (n×m, ld ldc) = op(b)ᵀ · op(a)ᵀ. Returns (op on b, op on a, n, m, k, ldb, lda, ldc) with
    ops 0 = N, 1 = T, or None when there is nothing to multiply (k = 0)."""
    def ld(x: Any) -> int:
        item = x.dtype.itemsize
        if x.ndim != 2 or (x.shape[1] > 1 and x.strides[1] != item) or x.strides[0] % item:
            raise BackendError(f"cuda gemm: operand with shape {x.shape} and strides "
                               f"{x.strides} is not a row-major strided matrix")
        return max(x.strides[0] // item, x.shape[1], 1)

    m, ka = (a.shape[1], a.shape[0]) if ta else a.shape
    kb, n = (b.shape[1], b.shape[0]) if tb else b.shape
    if ka != kb or tuple(out.shape) != (m, n):
        raise BackendError(f"cuda gemm: {a.shape}{'ᵀ' if ta else ''} @ "
                           f"{b.shape}{'ᵀ' if tb else ''} -> {out.shape} does not fit")
    if m == 0 or n == 0 or ka == 0:
        return None
    return int(tb), int(ta), int(n), int(m), int(ka), ld(b), ld(a), ld(out)


class CudaBackend(ExecutedCell):
    """``graphrnn.compile(cell, backend="cuda")``; see the module docstring."""

    backend_name = "cuda"

    @classmethod
    def prepare(cls, dtype: str, options: Mapping[str, Any]) -> None:
        """Fail first, and clearly, without a GPU or with tf32 on a float64 cell."""
        if options.get("tf32") and dtype != "float32":
            raise BackendError(f"cuda: tf32=True rounds float32 GEMM inputs; the cell is {dtype}")
        import_cupy()

    def __init__(self, cell: Cell, dtype: str, cuda_graph: bool = False,
                 block: int = DEFAULT_BLOCK, loop_kernels: bool = True, tf32: bool = False,
                 program: Program | None = None) -> None:
        self.prepare(dtype, {"tf32": tf32})
        super().__init__(cell, dtype, program)
        self.executor = ProgramExecutor(self.program, block, loop_kernels)
        self.device = GpuDevice(self.executor.kernels(), tf32=tf32)
        self._stream = self.device.stream
        self.cuda_graph = cuda_graph
        self._graphs: dict[tuple[str, int, int], Any] = {}
        self._arrays: dict[tuple[int, int], dict[str, Any]] = {}
        self._generation: dict[tuple[int, int], int] = {}
        if cuda_graph:
            for sw in (self.program.forward, self.program.backward):
                for _ph, steps in sw.phases():
                    if any(isinstance(s, (Gather, Scatter)) for s in steps):
                        raise BackendError("cuda_graph=True does not support embedding "
                                           "(Gather/Scatter) steps yet; use cuda_graph=False")

    # ---- export ----
    def cuda_source(self) -> str:
        return module_source(self.executor.kernels())

    def ptx(self, arch: str = "sm_80") -> str:
        return source_to_ptx(self.cuda_source(), arch)

    # ---- arrays in: NumPy, CuPy or anything with __dlpack__ (torch tensors) ----
    def _dev(self, x: Any, dtype: Any) -> Any:
        cp = self.device.xp
        if not isinstance(x, (np.ndarray, cp.ndarray)) and hasattr(x, "__dlpack__"):
            dev_type = x.__dlpack_device__()[0] if hasattr(x, "__dlpack_device__") else 1
            # kDLCPU = 1: a host tensor is read through numpy (then copied over); a CUDA
            # tensor is wrapped without a copy, on this cell's stream
            x = np.from_dlpack(x) if dev_type == 1 else cp.from_dlpack(x)
        return cp.ascontiguousarray(cp.asarray(x, dtype=dtype))

    # the checks of kinds and counts are CompiledCell's (``_input_list`` and the like); these
    # only convert to the device
    def _inputs(self, xs: Any) -> list[Any]:
        out = []
        for n, x in zip(self.cell.inputs, self._input_list(xs)):
            x = self._dev(x, np.int64 if n.dtype == "int64" else self.dtype)
            if x.ndim != 3 or x.shape[2] != n.shape[1]:
                raise RuntimeInputError(f"input {n.arg!r}: expected (T, B, {n.shape[1]}), got "
                                        f"{tuple(x.shape)}")
            self._check_id_range(n, x)
            out.append(x)
        if len({tuple(x.shape[:2]) for x in out}) > 1:
            raise RuntimeInputError("inputs disagree on (T, B): "
                                    + ", ".join(str(tuple(x.shape)) for x in out))
        return out

    def _states(self, h: Any, batch: int) -> list[Any]:
        cp = self.device.xp
        hs = self._state_list(h)
        if hs is None:
            return [cp.zeros((batch, int(s.shape[1])), self.dtype) for s in self.cell.states]
        out = []
        for s, v in zip(self.cell.states, hs):
            v = self._dev(v, self.dtype)
            if tuple(v.shape) != (batch, s.shape[1]):
                raise RuntimeInputError(f"state {s.arg!r}: expected ({batch}, {s.shape[1]}), "
                                        f"got {tuple(v.shape)}")
            out.append(v)
        return out

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for p, v in self._param_items(params):
            v = self._dev(v, self.dtype)
            if tuple(v.shape) != p.shape:
                raise RuntimeInputError(f"parameter {p.arg!r}: expected shape {p.shape}, got "
                                        f"{tuple(v.shape)}")
            out[p.arg] = v
        return out

    def forward_train(self, params: dict[str, Any], xs: Any, h0: Any = None,
                      save: bool = True) -> tuple[list[Any], list[Any], Any]:
        with self._stream:
            xs = self._inputs(xs)
            out = self._stamp(self._forward(self._params(params), xs,
                                            self._states(h0, int(xs[0].shape[1])), save),
                              params)
        self._stream.synchronize()
        return out

    def backward(self, params: dict[str, Any], residuals: Any, d_ys: Any,
                 d_final: Any = None) -> Grads:
        res = self._open(residuals)
        with self._stream:
            d_ys, d_final = self._cotangents(res, d_ys, d_final,
                                             lambda d: self._dev(d, self.dtype))
            converted = self._params(params)
            self._note_same_params(res, params)
            out = self._backward(converted, res, d_ys, d_final)
        self._stream.synchronize()
        return out

    def step(self, params: dict[str, Any], x: Any, h: Any = None) -> tuple[list[Any], list[Any]]:
        with self._stream:   # conversions on this cell's stream, like everything else
            xs = [self._dev(v, None)[None] for v in self._step_inputs(x)]
        ys, hT = self.forward(params, xs, h)
        return [y[0] for y in ys], hT

    # ---- running ----
    def _run_sweep(self, label: str, arrays: dict[str, Any], T: int, B: int,
                   rebind: Any) -> None:
        """Run a sweep on this cell's stream (current here). With ``cuda_graph`` the first call
        for a (T, B) runs it once for real (cuBLAS and scratch arrays get set up), captures it,
        binds the inputs again (the warm-up changed the buffers) and replays the graph."""
        ex = self.executor
        sw = self.program.forward if label == "forward" else self.program.backward
        if not self.cuda_graph:
            ex.run_sweep(self.device, label, sw, arrays, T, B)
            return
        key = (label, T, B)
        stream = self._stream
        if key not in self._graphs:
            ex.run_sweep(self.device, label, sw, arrays, T, B)
            stream.begin_capture()
            try:
                ex.run_sweep(self.device, label, sw, arrays, T, B)
            finally:
                graph = stream.end_capture()
            self._graphs[key] = graph
            rebind()
        self._graphs[key].launch(stream)

    def _forward(self, params: dict[str, Any], xs: list[Any], h0: list[Any],
                 save: bool) -> tuple[list[Any], list[Any], Any]:
        ex, dev = self.executor, self.device
        T, B = int(xs[0].shape[0]), int(xs[0].shape[1])
        if self.cuda_graph:   # a captured graph holds pointers: keep one buffer set per shape
            if (T, B) not in self._arrays:
                self._arrays[T, B] = ex.alloc(dev, T, B)
            arrays = self._arrays[T, B]
        else:
            arrays = ex.alloc(dev, T, B)
        def bind() -> None:
            ex.bind_forward(arrays, params, xs, h0, T, B)

        bind()
        self._run_sweep("forward", arrays, T, B, bind)
        ys, hT = ex.collect_forward(arrays, T)
        # with cuda_graph the buffers are reused by every forward of this shape (forward too):
        # the generation lets backward refuse residuals that were overwritten since
        self._generation[T, B] = gen = self._generation.get((T, B), 0) + 1
        if not save:
            return ys, hT, None
        return ys, hT, self._residuals(T, B, (Residuals(arrays, T, B), gen))

    def _backward(self, params: dict[str, Any], residuals: Any,
                  d_ys: Sequence[Any | None], d_final: Sequence[Any | None]) -> Grads:
        ex = self.executor
        payload, gen = residuals._payload
        T, B = residuals.T, residuals.B
        if self.cuda_graph and gen != self._generation.get((T, B)):
            raise RuntimeInputError(f"backward: residuals: expected those of the latest "
                                    f"forward_train with T={T}, B={B}, got older ones (with "
                                    "cuda_graph=True a forward reuses the buffers of its "
                                    "shape; run backward before the next forward_train)")
        arrays = self._checked(residuals, payload, params).buffers
        def bind() -> None:
            ex.bind_backward(arrays, d_ys, d_final)

        bind()
        self._run_sweep("backward", arrays, T, B, bind)
        dp, dx, dh = ex.collect_backward(self.device, arrays, T, B,
                                         self.cell.grad_shapes(), self.cell)
        return Grads(dp, dx, dh)
