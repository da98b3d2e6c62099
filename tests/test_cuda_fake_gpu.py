"""``CudaBackend`` end to end without a GPU, against a stand-in for CuPy.

The stand-in is as thin as it can be and still honest about the parts that matter:

- ``RawModule(code=...)`` compiles the *same module source* the GPU would get, with g++ through
  ``cuda_shim.h``, and a kernel call walks the grid it is given (Python sets the thread and
  block indices, then calls the ``extern "C"`` kernel by its symbol with the raw pointers);
- ``cublas.sgemm``/``dgemm`` read and write raw memory column-major with leading dimensions, as
  cuBLAS does, so the backend's row-major strided mapping is exercised for real;
- arrays are numpy arrays of a subclass with ``.data.ptr``; streams record what a capture
  would (kernel calls, GEMMs, in-place writes and reductions) and a graph replays the record.

So everything in ``codegen/cuda.py`` but CuPy itself runs: bindings, launches, the cuBLAS call
arguments, CUDA-graph capture and replay, DLPack input, embedding gathers and scatters.

The stand-in is only as good as its likeness to CuPy: it records every call the backend makes of
it, as the backend made it, and where the real CuPy is installed (no GPU needed) the last test
binds each of those calls to the real function's signature and checks the attributes read."""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import inspect
import re
import shutil
import sys
import types

import numpy as np
import pytest
from helpers import TOL, assert_all_close, cotangents, flat, sequences
from numpy.lib.stride_tricks import as_strided

import graphrnn
from graphrnn.cells import SQUARE_INPUT, zoo_cell

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ for the CUDA shim")

CAPTURE: list | None = None   # the open capture, if any
API_CALLS: list[tuple[str, tuple, dict]] = []   # (real CuPy name, args, kwargs) of each call
REAL_CUPY = importlib.util.find_spec("cupy") is not None   # asked before any stand-in exists


def _api(path: str, fn, method: bool = False):
    """``fn`` standing in for CuPy's ``path``; each call is recorded as the caller made it (for a
    method without ``self``), to be bound to the real signature later."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        API_CALLS.append((path, args[1:] if method else args, kwargs))
        return fn(*args, **kwargs)
    return call


def _record_or_run(fn):
    if CAPTURE is not None:
        CAPTURE.append(fn)
    else:
        fn()


class _Mem:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


class FakeDev(np.ndarray):
    """A 'device' array: numpy memory with CuPy's ``.data.ptr``; writes are captured."""

    @property
    def data(self):  # type: ignore[override]
        return _Mem(self.__array_interface__["data"][0])

    def __setitem__(self, key, value):
        _record_or_run(lambda: np.ndarray.__setitem__(self, key, value))

    def __iadd__(self, other):
        _record_or_run(lambda: np.add(self, other, out=self))
        return self


def _dev(a) -> FakeDev:
    return np.asarray(a).view(FakeDev)


class _Stream:
    def __init__(self, non_blocking: bool = False) -> None:
        self.ptr = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def synchronize(self) -> None:
        pass

    def begin_capture(self) -> None:
        global CAPTURE
        CAPTURE = []

    def end_capture(self):
        global CAPTURE
        ops, CAPTURE = CAPTURE, None
        g = types.SimpleNamespace(ops=ops)
        g.launch = _api("cupy.cuda.graph.Graph.launch",
                        lambda stream=None: [op() for op in ops])
        return g

    synchronize = _api("cupy.cuda.Stream.synchronize", synchronize, method=True)
    begin_capture = _api("cupy.cuda.Stream.begin_capture", begin_capture, method=True)
    end_capture = _api("cupy.cuda.Stream.end_capture", end_capture, method=True)


_CALLS = {"kernels": 0, "gemms": 0, "graph_ops": 0}


class _RawModule:
    def __init__(self, code: str, options=(), backend="nvrtc") -> None:
        assert backend in ("nvrtc", "nvcc"), backend
        import hashlib
        import tempfile
        from pathlib import Path

        from codegen.cuda_cpu import SHIM_HEADER, _run, default_cache_dir
        from graphrnn.safefile import atomic_write
        helper = ('\nextern "C" void grnn_fake_set(unsigned bx, unsigned tx, unsigned gx, '
                  "unsigned bdx) { blockIdx.x = bx; blockIdx.y = blockIdx.z = 0; threadIdx.x = "
                  "tx; threadIdx.y = threadIdx.z = 0; gridDim.x = gx; gridDim.y = gridDim.z = 1;"
                  " blockDim.x = bdx; blockDim.y = blockDim.z = 1; }\n")
        src = code + helper
        cache = default_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / f"fake_{hashlib.sha256(src.encode()).hexdigest()[:24]}.so"
        if not path.exists():
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                (Path(tmp) / "k.cpp").write_text(src)
                _run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-include",
                      str(SHIM_HEADER), "k.cpp", "-o", "k.so"], "g++", tmp)
                atomic_write(path, (Path(tmp) / "k.so").read_bytes())
        self.lib = ctypes.CDLL(str(path))
        self.options = options

    @functools.partial(_api, "cupy.RawModule.get_function", method=True)
    def get_function(self, name: str):
        fn = getattr(self.lib, name)
        fn.restype = None
        setter = self.lib.grnn_fake_set

        def call(grid, block, args):
            cargs = []
            for a in args:
                if isinstance(a, np.ndarray):
                    assert isinstance(a, FakeDev), "a host array reached a kernel"
                    cargs.append(ctypes.c_void_p(a.data.ptr))
                else:
                    assert isinstance(a, np.int32), f"kernel int argument {a!r} is not int32"
                    cargs.append(ctypes.c_int(int(a)))

            def run():
                _CALLS["kernels"] += 1
                order = np.random.default_rng(grid[0]).permutation(grid[0])   # any order
                for bx in order:
                    for tx in range(block[0]):
                        setter(int(bx), tx, grid[0], block[0])
                        fn(*cargs)
            _record_or_run(run)
        return _api("cupy.RawKernel.__call__", call)


def _colmajor(ptr: int, rows: int, cols: int, ld: int, dtype) -> np.ndarray:
    it = np.dtype(dtype).itemsize
    n = ((cols - 1) * ld + rows) * it
    flat = np.frombuffer((ctypes.c_char * n).from_address(ptr), dtype=dtype)
    return as_strided(flat, shape=(rows, cols), strides=(it, ld * it), writeable=True)


def _tf32(x: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32 (10 mantissa bits, to nearest), as tensor cores read it."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def _gemm_run(dtype, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
              tf32=False):
    al = np.frombuffer((ctypes.c_char * 8).from_address(alpha), dtype=dtype, count=1)[0]
    be = np.frombuffer((ctypes.c_char * 8).from_address(beta), dtype=dtype, count=1)[0]

    def run():
        _CALLS["gemms"] += 1
        a = _colmajor(A, *((m, k) if transa == 0 else (k, m)), lda, dtype)
        b = _colmajor(B, *((k, n) if transb == 0 else (n, k)), ldb, dtype)
        c = _colmajor(C, m, n, ldc, dtype)
        if tf32:
            a, b = _tf32(a), _tf32(b)
        prod = (a if transa == 0 else a.T) @ (b if transb == 0 else b.T)
        c[...] = al * prod + (be * c if be else 0)
    _record_or_run(run)


def _gemm(dtype):
    def gemm(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        _gemm_run(dtype, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
    return gemm


def _gemm_ex(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C,
             Ctype, ldc, computeType, algo):
    assert Atype == Btype == Ctype == 0 and computeType == 77, "only float32 with TF32 here"
    _gemm_run(np.float32, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
              tf32=True)


def _libcublas():
    """libcublas as ``codegen.cuda.cublas_lib`` would give it: each function takes exactly the
    arguments its ctypes prototype converts (a wrong count or type raises as ctypes would) and
    returns a cublasStatus_t; calls are recorded as ``libcublas.<name>``."""
    from codegen.cuda import CUBLAS_PROTOTYPES
    impl = {"cublasSgemm_v2": _gemm(np.float32), "cublasDgemm_v2": _gemm(np.float64),
            "cublasGemmEx": _gemm_ex, "cublasSetWorkspace_v2": lambda h, ptr, size: None}

    def function(name, fn):
        def call(*args):
            assert len(args) == len(CUBLAS_PROTOTYPES[name]), f"{name}: {len(args)} arguments"
            for ctype, a in zip(CUBLAS_PROTOTYPES[name], args):
                ctype(a)   # TypeError where ctypes would refuse the value
            API_CALLS.append((f"libcublas.{name}", args, {}))
            fn(*args)
            return 0
        return call
    return types.SimpleNamespace(**{k: function(k, f) for k, f in impl.items()})


def _refused_in_capture(handle, stream):
    if CAPTURE is not None:   # as CuPy's own wrapper does
        raise NotImplementedError("calling cuBLAS API during stream capture is currently "
                                  "unsupported")


def _reduction(np_fn):
    def red(src, axis=None, keepdims=False, out=None):
        assert out is not None, "a reduction would allocate"
        _record_or_run(lambda: np_fn(np.asarray(src), axis=axis, keepdims=keepdims,
                                     out=out.view(np.ndarray)))
        return out
    return _api(f"cupy.{np_fn.__name__.replace('amax', 'max')}", red)


def _scatter_add(a, slices, value):
    _record_or_run(lambda: np.add.at(a.view(np.ndarray), slices, value))


@pytest.fixture
def fake_cupy(monkeypatch):
    cp = types.ModuleType("cupy")
    cp.ndarray = FakeDev
    cp.float32, cp.float64 = np.float32, np.float64
    api = {   # real CuPy name -> stand-in
        "asarray": lambda x, dtype=None: _dev(np.asarray(x, dtype=dtype)).copy()
        if not isinstance(x, FakeDev) or (dtype is not None and x.dtype != dtype) else x,
        "ascontiguousarray": lambda x: x if x.flags.c_contiguous
        else _dev(np.ascontiguousarray(x)),
        "empty": lambda shape, dtype=None: _dev(np.empty(shape, dtype)),
        "zeros": lambda shape, dtype=None: _dev(np.zeros(shape, dtype)),
        "asnumpy": lambda x: np.array(x).view(np.ndarray),
        "from_dlpack": lambda x: _dev(np.from_dlpack(x)),
    }
    for name, fn in api.items():
        setattr(cp, name, _api(f"cupy.{name}", fn))
    cp.sum, cp.max = _reduction(np.sum), _reduction(np.max)
    cp.random = types.SimpleNamespace(standard_normal=_api(
        "cupy.random.standard_normal", lambda size=None, dtype=float:
        _dev(np.random.default_rng(0).standard_normal(size).astype(dtype))))
    cp.matmul = None   # the backend must use cuBLAS directly
    cp.RawModule = _api("cupy.RawModule", _RawModule)
    runtime = types.SimpleNamespace(
        getDeviceCount=_api("cupy_backends.cuda.api.runtime.getDeviceCount", lambda: 1))
    the_device = types.SimpleNamespace(
        compute_capability="90",
        synchronize=_api("cupy.cuda.Device.synchronize", lambda: None))
    cp.cuda = types.SimpleNamespace(
        runtime=runtime, Device=_api("cupy.cuda.Device", lambda device=None: the_device),
        Stream=_api("cupy.cuda.Stream", _Stream),
        get_current_stream=_api("cupy.cuda.get_current_stream", lambda: _Stream()))
    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = _api("cupyx.scatter_add", _scatter_add)
    cublas = types.ModuleType("cupy_backends.cuda.libs.cublas")
    cublas.create = _api("cupy_backends.cuda.libs.cublas.create", lambda: 1)
    cublas.destroy = _api("cupy_backends.cuda.libs.cublas.destroy", lambda handle: None)
    cublas.setStream = _api("cupy_backends.cuda.libs.cublas.setStream", _refused_in_capture)
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = cublas
    for name, mod in (("cupy", cp), ("cupyx", cupyx),
                      ("cupy_backends", types.ModuleType("cupy_backends")),
                      ("cupy_backends.cuda", types.ModuleType("cupy_backends.cuda")),
                      ("cupy_backends.cuda.libs", libs),
                      ("cupy_backends.cuda.libs.cublas", cublas)):
        monkeypatch.setitem(sys.modules, name, mod)
    import codegen.cuda as cuda_mod
    monkeypatch.setattr(cuda_mod, "_MODULES", {})
    monkeypatch.setattr(cuda_mod, "cublas_lib", _libcublas)
    for k in _CALLS:
        _CALLS[k] = 0
    API_CALLS.clear()
    return cp


def _check(cell, dtype, T, B, graph, tol, xs=None):
    """cuda on the stand-in equals ref, forward and backward; ``xs`` default to normal noise."""
    pytest.importorskip("graphrnn.schedule")
    ref = graphrnn.compile(cell, "ref", dtype)
    cc = graphrnn.compile(cell, "cuda", dtype, cuda_graph=graph)
    params = ref.init_params(seed=3, scale=0.5)
    rng = np.random.default_rng(4)
    drawn, h0 = sequences(ref, T, B, rng)
    xs = drawn if xs is None else xs
    dys, _dhT = cotangents(ref, T, B, rng)
    ys, hT, res = ref.forward_train(params, xs, h0)
    want = flat(ys, hT, ref.backward(params, res, dys))   # no final-state cotangent: None path
    for _ in range(2):   # the second time a captured graph replays
        ys2, hT2, res2 = cc.forward_train(params, xs, h0)
        got = flat(ys2, hT2, cc.backward(params, res2, dys), to_numpy=lambda v: v)
        assert all(isinstance(v, FakeDev) for v in got)
        assert_all_close(got, want, **tol)
    return cc


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("name", ["lstm", "indrnn", "mut1", "peephole_lstm"])
def test_cuda_backend_equals_ref_on_the_stand_in(fake_cupy, name, graph):
    I, H = (13, 13) if name in SQUARE_INPUT else (5, 13)   # noqa: E741
    dtype = "float64" if name in ("lstm", "indrnn") else "float32"
    cc = _check(zoo_cell(name, I, H, dtype), dtype, 3, 2, graph, TOL[dtype])
    assert _CALLS["kernels"] > 0
    if name != "indrnn":
        assert _CALLS["gemms"] > 0   # GEMMs went through (fake) cuBLAS
    if graph:
        assert len(cc._graphs) == 2   # one forward and one backward graph for (T, B)
    else:
        assert not cc._graphs


def test_tf32_gemms_go_through_gemm_ex(fake_cupy):
    """``tf32=True``: every GEMM is ``cublasGemmEx`` with TF32 compute (the stand-in rounds its
    inputs to 10 mantissa bits as tensor cores do): results move off float32's by about TF32's
    precision and no further. float64 cells refuse the option."""
    pytest.importorskip("graphrnn.schedule")
    cell = zoo_cell("lstm", 16, 32, "float32")
    ref = graphrnn.compile(cell, "ref", "float32")
    params = ref.init_params(seed=0)
    xs = np.random.default_rng(1).standard_normal((4, 3, 16)).astype(np.float32)
    want = ref.forward(params, xs)[0][0]
    plain = np.asarray(graphrnn.compile(cell, "cuda", "float32").forward(params, xs)[0][0])
    n_plain = _CALLS["gemms"]
    API_CALLS.clear()
    tf = np.asarray(graphrnn.compile(cell, "cuda", "float32", tf32=True)
                    .forward(params, xs)[0][0])
    assert {p for p, _a, _k in API_CALLS if "gemm" in p.lower()} == {"libcublas.cublasGemmEx"}
    assert _CALLS["gemms"] == 2 * n_plain
    np.testing.assert_allclose(plain, want, rtol=1e-5, atol=1e-6)
    err = np.abs(tf - want).max()
    assert 1e-6 < err < 1e-2, err     # TF32 was used, and it is only TF32's rounding
    with pytest.raises(graphrnn.BackendError, match="tf32=True rounds float32"):
        graphrnn.compile(zoo_cell("lstm", 4, 5, "float64"), "cuda", "float64", tf32=True)


def test_compiler_is_nvrtc_else_nvcc_else_a_clear_error(fake_cupy, monkeypatch):
    import codegen.cuda_cpu as cc
    pytest.importorskip("graphrnn.schedule")
    cell = zoo_cell("rnn_tanh", 3, 5, "float32")
    used, made = [], fake_cupy.RawModule

    def spy(code, options=(), backend="nvrtc"):
        used.append(backend)
        return made(code=code, options=options, backend=backend)
    monkeypatch.setattr(fake_cupy, "RawModule", spy)
    monkeypatch.setattr(cc, "nvrtc_version", lambda: (13, 0))
    graphrnn.compile(cell, "cuda", "float32")
    monkeypatch.setattr(cc, "nvrtc_version", lambda: None)
    monkeypatch.setattr(cc, "find_tool", lambda name: "/usr/bin/nvcc")
    graphrnn.compile(cell, "cuda", "float32")
    assert used == ["nvrtc", "nvcc"]   # a new compiler is a new cache entry
    monkeypatch.setattr(cc, "find_tool", lambda name: None)
    with pytest.raises(graphrnn.BackendError, match="neither NVRTC nor nvcc"):
        graphrnn.compile(cell, "cuda", "float32")


def test_torch_tensors_go_in_through_dlpack(fake_cupy):
    torch = pytest.importorskip("torch")
    pytest.importorskip("graphrnn.schedule")
    cell = zoo_cell("rnn_tanh", 4, 6, "float32")
    cc = graphrnn.compile(cell, "cuda", "float32")
    ref = graphrnn.compile(cell, "ref", "float32")
    params = ref.init_params(seed=0)
    x = torch.randn(3, 2, 4)
    ys, _ = cc.forward({k: torch.from_numpy(v) for k, v in params.items()}, x)
    want, _ = ref.forward(params, x.numpy())
    np.testing.assert_allclose(np.asarray(ys[0]), want[0], rtol=1e-5, atol=1e-6)
    y, _h = cc.step(params, x[0].numpy())
    np.testing.assert_allclose(np.asarray(y[0]), want[0][0], rtol=1e-5, atol=1e-6)


def test_export_methods_on_the_backend(fake_cupy):
    pytest.importorskip("graphrnn.schedule")
    cc = graphrnn.compile(zoo_cell("gru", 4, 6, "float32"), "cuda", "float32")
    src = cc.cuda_source()
    assert src.startswith("#ifndef GRNN_PRELUDE") and "atomicAdd" not in src


def _embedding_cell(dtype):
    from graphrnn import nn
    ids, h = nn.Identity()(), nn.Identity()().annotate(name="h")
    e = nn.LookupTable(6, 8)(ids)
    h2 = nn.Tanh()(nn.CAddTable()([nn.Linear(8, 9)(e), nn.Linear(9, 9)(h)]))
    out = nn.LogSoftMax()(nn.Linear(9, 5)(h2)).annotate(name="logprobs")
    return nn.gModule([ids, h], [out, h2]).to_cell(
        inputs=[0], states=["h"], next_states=[1], outputs=["logprobs"], sizes={"h": 9}
    ).with_dtype(dtype)


def _run_embedding(dtype):
    ids = np.random.default_rng(2).integers(0, 6, size=(4, 3, 1))
    ids[0, :, 0] = 5   # the same row gathered (and scattered into) by every sequence at t=0
    _check(_embedding_cell(dtype), dtype, 4, 3, False, TOL[dtype], xs=[ids])


def test_embedding_gathers_and_scatters_on_the_stand_in(fake_cupy):
    """A LookupTable: the forward gathers rows of the table, the backward scatters (adds) into
    the table's gradient with repeated ids, through ``cupyx.scatter_add``."""
    pytest.importorskip("graphrnn.schedule")
    _run_embedding("float64")
    assert any(path == "cupyx.scatter_add" for path, _a, _k in API_CALLS)


# ---- the stand-in against the real CuPy ----

# attributes the backend reads (not calls), on the real classes
REAL_ATTRIBUTES = ["cupy.ndarray.data", "cupy.cuda.MemoryPointer.ptr", "cupy.cuda.Stream.null.ptr",
                   "cupy.cuda.Stream.__enter__", "cupy.cuda.Stream.__exit__",
                   "cupy.cuda.Device.compute_capability", "cupy.float32", "cupy.float64"]
C_INT_TYPES = {"int", "size_t", "intptr_t", "long", "unsigned int", "Py_ssize_t"}


def _resolve(path: str):
    import importlib
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def _doc_signature(text: str) -> inspect.Signature:
    """A Cython function's embedded signature (``name(type arg=default, *, ...)``) as an
    ``inspect.Signature``; each parameter's C type, if any, is kept as its annotation."""
    inner = re.match(r"[\w.]+\((.*)\)", text.strip()).group(1)
    params, kind = [], inspect.Parameter.POSITIONAL_OR_KEYWORD
    for part in filter(None, (x.strip() for x in inner.split(","))):
        if part == "*":
            kind = inspect.Parameter.KEYWORD_ONLY
            continue
        if part.startswith("**"):
            params.append(inspect.Parameter(part[2:], inspect.Parameter.VAR_KEYWORD))
            continue
        if part.startswith("*"):
            params.append(inspect.Parameter(part[1:], inspect.Parameter.VAR_POSITIONAL))
            kind = inspect.Parameter.KEYWORD_ONLY
            continue
        decl, eq, default = part.partition("=")
        words = decl.split()
        params.append(inspect.Parameter(
            words[-1], kind, default=default if eq else inspect.Parameter.empty,
            annotation=" ".join(words[:-1]) or inspect.Parameter.empty))
    return inspect.Signature(params)


def _real_signature(path: str) -> inspect.Signature:
    """The signature of the real CuPy object at ``path``, without ``self`` for a method (calls
    are recorded without it). A compiled function
    without introspection gives its embedded signature, from its docstring or, where its module
    cannot load here (cuBLAS needs libcublas), from the extension's bytes on disk."""
    mod_path, name = path.rsplit(".", 1)
    try:
        obj = _resolve(path)
    except ImportError:
        origin = importlib.util.find_spec(mod_path).origin
        found = re.search(rb"(?<![\w.])" + name.encode() + rb"\([^)\x00]*\)",
                          open(origin, "rb").read())
        assert found, f"{path}: no embedded signature in {origin}"
        return _doc_signature(found.group(0).decode())
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        sig = _doc_signature((obj.__doc__ or "").splitlines()[0])
    params = list(sig.parameters.values())
    if params and params[0].name == "self":
        return sig.replace(parameters=params[1:])
    return sig


@pytest.mark.skipif(not REAL_CUPY, reason="CuPy is not installed (pip install cupy-cuda13x)")
def test_every_call_of_the_stand_in_fits_the_real_cupy(fake_cupy, monkeypatch):
    """Every CuPy function, method, constructor and cuBLAS routine the backend called above (a
    captured and a plain LSTM, a float64 RNN, an embedding, ``step``) binds to the real CuPy's
    signature, C-typed parameters get Python ints, strings or tuples as Cython requires, and the
    attributes the backend reads exist on the real classes. Needs the CuPy package, no GPU."""
    pytest.importorskip("graphrnn.schedule")
    _check(zoo_cell("lstm", 5, 7, "float32"), "float32", 3, 2, True, TOL["float32"])
    cc = _check(zoo_cell("rnn_tanh", 4, 6, "float64"), "float64", 2, 3, False, TOL["float64"])
    cc.step(graphrnn.compile(cc.cell, "ref", "float64").init_params(seed=0),
            np.zeros((3, 4)))
    _run_embedding("float32")
    gru = zoo_cell("gru", 4, 6, "float32")
    graphrnn.compile(gru, "cuda", "float32", tf32=True).forward(
        graphrnn.compile(gru, "ref").init_params(seed=0), np.zeros((2, 2, 4), np.float32))
    seen = _assert_fits_real_cupy(list(API_CALLS), monkeypatch)
    assert {"cupy.RawModule", "cupy.RawModule.get_function", "cupy.RawKernel.__call__",
            "libcublas.cublasSgemm_v2", "libcublas.cublasDgemm_v2", "libcublas.cublasGemmEx",
            "libcublas.cublasSetWorkspace_v2", "cupy_backends.cuda.libs.cublas.create",
            "cupy_backends.cuda.libs.cublas.setStream", "cupy.cuda.Stream",
            "cupy.cuda.Stream.begin_capture", "cupy.cuda.Stream.end_capture",
            "cupy.cuda.graph.Graph.launch", "cupy.sum", "cupyx.scatter_add"} <= seen, seen
    from cupy_backends.cuda.api import runtime

    from codegen import cuda
    assert runtime.CUDA_R_32F == cuda.CUDA_R_32F   # the cuBLAS enums are checked by hand


def _assert_fits_real_cupy(calls, monkeypatch) -> set[str]:
    """Each recorded call bound to the real CuPy's signature; returns the names called."""
    monkeypatch.undo()   # the stand-in leaves sys.modules: from here on CuPy is the real one
    for mod in [m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx", "cupy_backends")]:
        del sys.modules[mod]
    seen = set()
    for path, args, kwargs in calls:
        seen.add(path)
        if path.startswith("libcublas."):   # typed by its ctypes prototype when called
            continue
        sig = _real_signature(path)
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise AssertionError(f"{path}{sig}: called with {len(args)} positional "
                                 f"arguments and keywords {sorted(kwargs)}: {e}") from e
        for name, value in bound.arguments.items():
            ctype = sig.parameters[name].annotation
            if ctype in C_INT_TYPES:
                assert isinstance(value, (int, np.integer)) and not isinstance(value, bool), \
                    f"{path}: {ctype} {name} got {type(value).__name__}"
            elif ctype in ("str", "tuple"):
                assert type(value).__name__ == ctype, \
                    f"{path}: {ctype} {name} got {type(value).__name__}"
    for path in REAL_ATTRIBUTES:
        owner, attr = path.rsplit(".", 1)
        assert hasattr(_resolve(owner), attr), f"real CuPy has no {path}"
    return seen


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_bench_gpu_runs_on_the_stand_in(fake_cupy, monkeypatch):
    """The GPU benchmark's code, end to end at a toy size, so that a GPU's scarce minutes are
    not spent finding its bugs: every route gives a time, ratios come out, and (with the real
    CuPy installed) every CuPy call it made fits the real signatures."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("graphrnn.schedule")
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parents[1]
                                    / "benchmarks"))
    import bench_gpu
    monkeypatch.setattr(torch, "compile", lambda fn: fn)   # Inductor's C++ build: a minute
    for name, tf32 in (("lstm", False), ("mut1", True)):
        row = bench_gpu.bench_one(fake_cupy, torch, name, 3, 2, 8, 1, 0, torch_device="cpu",
                                  tf32=tf32)
        assert not [k for k in row if k.endswith("_error")], row
        routes = ["graphrnn", "graphrnn_nograph", "eager", "torchscript", "torch_compile"]
        routes += ["cudnn"] if name == "lstm" else []
        for route in routes:
            for mode in ("infer", "train"):
                assert row[f"{route}_{mode}"] > 0, (route, mode)
        assert row["ratio_train"] > 0 and ("ratio_cudnn_train" in row) == (name == "lstm")
    if REAL_CUPY:
        seen = _assert_fits_real_cupy(list(API_CALLS), monkeypatch)
        assert {"cupy.random.standard_normal", "cupy.cuda.Device.synchronize",
                "libcublas.cublasGemmEx"} <= seen
