"""The CUDA backend's Program executor, proven on the CPU: every kernel built through the C shim,
every launch checked by the fake launcher, the grid walked in forward, reversed and shuffled
order; results equal the reference interpreter forward and backward.

Two Programs are written by hand here (so this file does not depend on the optimizer): an
Elman RNN (GEMM in the loop, per-step kernels) and an IndRNN (a diagonal recurrence: one loop
kernel for the whole sequence, a carry read and written in place). With the optimizer present
(``graphrnn.pipeline.build_program``) every zoo cell is checked the same way."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import assert_all_close, assert_all_equal, cotangents, flat, sequences

import graphrnn
from codegen.cuda_cpu import find_tool, nvrtc_version
from codegen.cuda_exec import CudaCpuBackend, ProgramExecutor, loop_spec
from graphrnn.cells import indrnn, rnn_tanh
from graphrnn.ops import Ops
from graphrnn.program import (
    Buffer,
    Gemm,
    Kernel,
    KernelDef,
    ParamPiece,
    Program,
    Reduce,
    Ref,
    Sweep,
)
from graphrnn.scalar import ScalarProgram

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ for the CUDA shim")

TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-9, atol=1e-11)}
ORDERS = ("forward", "reversed", "shuffled")


def rnn_program(I: int, H: int, dtype: str) -> Program:  # noqa: E741
    """h' = tanh(x W_x + h W_h + b), y = h'."""
    fwd = KernelDef("rnn_fwd", ScalarProgram(3, ((Ops.ADD, (0, 1), None),
                                                 (Ops.ADD, (3, 2), None),
                                                 (Ops.TANH, (4,), None)), (5,)),
                    dtype, ("full", "full", "row"))
    # dz = (dy + dh) * (1 - h'^2)
    bwd = KernelDef("rnn_bwd", ScalarProgram(3, ((Ops.ADD, (0, 1), None),
                                                 (Ops.MUL, (2, 2), None),
                                                 (Ops.CONST, (), 1.0),
                                                 (Ops.SUB, (5, 4), None),
                                                 (Ops.MUL, (3, 6), None)), (7,)),
                    dtype, ("full", "full", "full"))
    bufs = (Buffer("Wx", "param", dtype, H, I), Buffer("Wh", "param", dtype, H, H),
            Buffer("b", "param", dtype, H, 1), Buffer("X", "seq", dtype, I),
            Buffer("S", "seq", dtype, H, extra=1), Buffer("XP", "seq", dtype, H),
            Buffer("Z", "temp", dtype, H), Buffer("DY", "seq", dtype, H),
            Buffer("DZ", "seq", dtype, H), Buffer("DH", "carry", dtype, H),
            Buffer("gWx", "grad", dtype, H, I), Buffer("gWh", "grad", dtype, H, H),
            Buffer("gb", "grad", dtype, H, 1), Buffer("DX", "seq", dtype, I))
    forward = Sweep(pre=(Gemm(Ref("XP"), Ref("X"), Ref("Wx")),),
                    step=(Gemm(Ref("Z"), Ref("S"), Ref("Wh")),
                          Kernel(fwd, (Ref("XP"), Ref("Z"), Ref("b")), (Ref("S", 1),))))
    backward = Sweep(step=(Kernel(bwd, (Ref("DY"), Ref("DH"), Ref("S", 1)), (Ref("DZ"),)),
                           Gemm(Ref("DH"), Ref("DZ"), Ref("Wh"), trans_b=True)),
                     post=(Gemm(Ref("gWx"), Ref("X"), Ref("DZ"), trans_a=True),
                           Gemm(Ref("gWh"), Ref("S"), Ref("DZ"), trans_a=True),
                           Reduce(Ref("gb"), Ref("DZ")),
                           Gemm(Ref("DX"), Ref("DZ"), Ref("Wx"), trans_b=True)),
                     reverse=True)
    pieces = (ParamPiece("W_x", (0, I), (0, H), Ref("Wx")),
              ParamPiece("W_h", (0, H), (0, H), Ref("Wh")),
              ParamPiece("b", (0, 1), (0, H), Ref("b")))
    grads = tuple(ParamPiece(pc.name, pc.rows, pc.cols, Ref("g" + pc.ref.buf)) for pc in pieces)
    return Program("rnn_tanh", dtype, bufs, forward, backward, (("x", "X"),), (("h", "S"),),
                   (("h", Ref("S", 1)),), pieces, (("d_h", "DY"),), (("h", "DH"),),
                   (("h", Ref("DH")),), (("x", Ref("DX")),), grads)


def indrnn_program(I: int, H: int, dtype: str) -> Program:  # noqa: E741
    """h' = relu(x W + u*h + b); the backward carries dh in place: dh <- dpre * u."""
    fwd = KernelDef("ind_fwd", ScalarProgram(4, ((Ops.MUL, (1, 2), None),
                                                 (Ops.ADD, (0, 4), None),
                                                 (Ops.ADD, (5, 3), None),
                                                 (Ops.RELU, (6,), None)), (7,)),
                    dtype, ("full", "row", "full", "row"))
    # ins: dy, dh, h', u -> dpre = (dy + dh) * step(h'), dh_prev = dpre * u
    bwd = KernelDef("ind_bwd", ScalarProgram(4, ((Ops.ADD, (0, 1), None),
                                                 (Ops.STEP, (2,), None),
                                                 (Ops.MUL, (4, 5), None),
                                                 (Ops.MUL, (6, 3), None)), (6, 7)),
                    dtype, ("full", "full", "full", "row"))
    mul = KernelDef("mul", ScalarProgram(2, ((Ops.MUL, (0, 1), None),), (2,)), dtype,
                    ("full", "full"))
    bufs = (Buffer("W", "param", dtype, H, I), Buffer("P", "param", dtype, 2 * H, 1),
            Buffer("X", "seq", dtype, I), Buffer("S", "seq", dtype, H, extra=1),
            Buffer("XP", "seq", dtype, H), Buffer("DY", "seq", dtype, H),
            Buffer("DP", "seq", dtype, H), Buffer("UH", "seq", dtype, H),
            Buffer("DH", "carry", dtype, H), Buffer("gW", "grad", dtype, H, I),
            Buffer("gP", "grad", dtype, 2 * H, 1), Buffer("DX", "seq", dtype, I))
    u, b = Ref("P", cols=(0, H)), Ref("P", cols=(H, 2 * H))   # u and b packed side by side
    forward = Sweep(pre=(Gemm(Ref("XP"), Ref("X"), Ref("W")),),
                    step=(Kernel(fwd, (Ref("XP"), u, Ref("S"), b), (Ref("S", 1),)),))
    backward = Sweep(step=(Kernel(bwd, (Ref("DY"), Ref("DH"), Ref("S", 1), u),
                                  (Ref("DP"), Ref("DH"))),),
                     post=(Gemm(Ref("gW"), Ref("X"), Ref("DP"), trans_a=True),
                           Kernel(mul, (Ref("DP"), Ref("S")), (Ref("UH"),)),
                           Reduce(Ref("gP", cols=(0, H)), Ref("UH")),
                           Reduce(Ref("gP", cols=(H, 2 * H)), Ref("DP")),
                           Gemm(Ref("DX"), Ref("DP"), Ref("W"), trans_b=True)),
                     reverse=True)
    pieces = (ParamPiece("W", (0, I), (0, H), Ref("W")), ParamPiece("u", (0, 1), (0, H), u),
              ParamPiece("b", (0, 1), (0, H), b))
    grads = (ParamPiece("W", (0, I), (0, H), Ref("gW")),
             ParamPiece("u", (0, 1), (0, H), Ref("gP", cols=(0, H))),
             ParamPiece("b", (0, 1), (0, H), Ref("gP", cols=(H, 2 * H))))
    return Program("indrnn", dtype, bufs, forward, backward, (("x", "X"),), (("h", "S"),),
                   (("h", Ref("S", 1)),), pieces, (("d_h", "DY"),), (("h", "DH"),),
                   (("h", Ref("DH")),), (("x", Ref("DX")),), grads)


def check_against_ref(cell, dtype, T, B, cache, program=None, loop_kernels=True, seed=0,
                      lib=None):
    """cuda-cpu equals ref, forward and backward, in every grid walk order (bit for bit
    across orders)."""
    ref = graphrnn.compile(cell, "ref", dtype)
    params = ref.init_params(seed=seed, scale=0.5)
    rng = np.random.default_rng(seed + 1)
    xs, h0 = sequences(ref, T, B, rng)
    dys, dhT = cotangents(ref, T, B, rng)
    ys, hT, res = ref.forward_train(params, xs, h0)
    flat_ref = flat(ys, hT, ref.backward(params, res, dys, dhT))
    runs = []
    for order in ORDERS:
        cc = CudaCpuBackend(cell, dtype, order=order, seed=seed, cache_dir=cache,
                            grid_scale=0.5, program=program, loop_kernels=loop_kernels,
                            lib=lib)
        ys2, hT2, res2 = cc.forward_train(params, xs, h0)
        got = flat(ys2, hT2, cc.backward(params, res2, dys, dhT))
        assert_all_close(got, flat_ref, **TOL[dtype])
        runs.append((got, cc))
    for got, _cc in runs[1:]:
        assert_all_equal(got, runs[0][0], "result depends on the grid walk order")
    return runs[0][1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("T,B", [(4, 1), (3, 5)])
def test_hand_written_rnn_program_matches_ref(dtype, T, B, cache):
    I, H = 6, 13   # noqa: E741 - H is not a multiple of the block size
    prog = rnn_program(I, H, dtype)
    # validate() would refuse d_states naming a carry, which the Program docstring allows
    cc = check_against_ref(rnn_tanh(I, H, dtype), dtype, T, B, cache, prog)
    assert "forward" not in cc.executor.loop_of   # a GEMM in the loop: per-step kernels
    names = {r.kernel for r in cc.device.launcher.records}
    assert len(names) == 2
    recs = cc.device.launcher.records
    # every launch was checked against the signature: in the loop the domain is B rows
    assert all(r.arg_types[-1] == "int" and r.block == (64, 1, 1) for r in recs)
    assert len(recs) == 2 * T


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loop_kernels", [True, False])
def test_diagonal_program_runs_as_one_loop_kernel(dtype, loop_kernels, cache):
    I, H, T, B = 5, 13, 6, 3   # noqa: E741
    prog = indrnn_program(I, H, dtype)
    # validate() would refuse d_states naming a carry, which the Program docstring allows
    assert prog.forward.diagonal and prog.backward.diagonal
    cc = check_against_ref(indrnn(I, H, dtype), dtype, T, B, cache, prog, loop_kernels)
    recs = cc.device.launcher.records
    if loop_kernels:
        assert set(cc.executor.loop_of) == {"forward", "backward"}
        loops = [r for r in recs if "loop" in r.kernel]
        assert len(loops) == 2                       # the whole time loop, each way, once
        assert all(r.arg_types[-2:] == ("int", "int") for r in loops)
        src = cc.executor.loop_of["backward"][0].source
        assert "for (int t = steps - 1; t >= 0; --t)" in src
    else:
        assert not cc.executor.loop_of
        assert len(recs) == 2 * T + 1


def test_loop_kernel_is_refused_when_threads_would_share_elements():
    H, dtype = 4, "float64"
    shift = KernelDef("copy", ScalarProgram(1, (), (0,)), dtype, ("full",))
    bufs = {b.name: b for b in (Buffer("S", "seq", dtype, 2 * H, extra=1),)}
    # step t writes columns 0:H from columns H:2H: thread c reads what thread c+H wrote
    sw = Sweep(step=(Kernel(shift, (Ref("S", 0, (H, 2 * H)),), (Ref("S", 1, (0, H)),)),
                     Kernel(shift, (Ref("S", 0, (0, H)),), (Ref("S", 1, (H, 2 * H)),))))
    assert sw.diagonal
    assert loop_spec(sw, bufs, dtype, "x") is None
    ok = Sweep(step=(Kernel(shift, (Ref("S", 0, (0, H)),), (Ref("S", 1, (0, H)),)),))
    assert loop_spec(ok, bufs, dtype, "x") is not None


@pytest.mark.skipif(find_tool("nvcc") is None, reason="no nvcc")
def test_hand_written_program_kernels_compile_for_sm80_and_sm90(cache):
    from codegen.cuda_cpu import compile_ptx, ptxas_report
    from codegen.cuda_render import module_source
    ks = []
    for dt in ("float32", "float64"):
        ks += ProgramExecutor(rnn_program(6, 13, dt)).kernels()
        ks += ProgramExecutor(indrnn_program(5, 13, dt)).kernels()
    for arch in ("sm_80", "sm_90"):
        rep = ptxas_report(compile_ptx(module_source(ks), arch, cache), arch)
        assert set(rep) == {k.name for k in ks}
        assert all(i.spill_stores == 0 and i.spill_loads == 0 for i in rep.values()), rep


# ---- every zoo cell, once the optimizer's build_program exists ----

_PROGRAMS: dict = {}


def zoo_case(name: str, dtype: str):
    """(cell, Program) at sizes where H = 13 is no multiple of the block; built once."""
    from graphrnn.cells import SQUARE_INPUT, zoo_cell
    build_program = pytest.importorskip("graphrnn.pipeline").build_program
    if (name, dtype) not in _PROGRAMS:
        I, H = (13, 13) if name in SQUARE_INPUT else (5, 13)   # noqa: E741
        cell = zoo_cell(name, I, H, dtype)
        _PROGRAMS[name, dtype] = (cell, build_program(cell))
    return _PROGRAMS[name, dtype]


@pytest.fixture(scope="module")
def zoo_lib(cache):
    """One C++ build for the kernels of every zoo cell (block 64, as CudaCpuBackend uses)."""
    from codegen.cuda_cpu import ShimLibrary
    ks = []
    for name in sorted(graphrnn.cells.ZOO):
        for dtype in ("float32", "float64"):
            try:
                ks += ProgramExecutor(zoo_case(name, dtype)[1], block=64).kernels()
            except Exception:  # noqa: BLE001 - that cell's own test reports it
                pass
    return ShimLibrary(ks, cache)


@pytest.mark.parametrize("name", sorted(graphrnn.cells.ZOO))
def test_zoo_cell_matches_ref_forward_and_backward(name, cache, zoo_lib):
    for dtype, (T, B) in (("float64", (3, 1)), ("float32", (2, 3))):
        cell, prog = zoo_case(name, dtype)
        cc = check_against_ref(cell, dtype, T, B, cache, prog, lib=zoo_lib)
        assert cc.device.lib is zoo_lib


@pytest.mark.skipif(find_tool("nvcc") is None, reason="no nvcc")
def test_zoo_kernels_compile_to_ptx_for_sm80_and_sm90_without_spills(cache):
    from codegen.cuda_cpu import compile_ptx, ptxas_report
    from codegen.cuda_render import module_source
    ks = []
    for name in sorted(graphrnn.cells.ZOO):
        for dtype in ("float32", "float64"):
            ks += ProgramExecutor(zoo_case(name, dtype)[1]).kernels()
    src = module_source(ks)
    for arch in ("sm_80", "sm_90"):
        rep = ptxas_report(compile_ptx(src, arch, cache), arch)   # one nvcc call per arch
        assert set(rep) == {k.name for k in ks}
        spills = {n: i for n, i in rep.items() if i.spill_stores or i.spill_loads}
        assert not spills, spills


needs_nvrtc = pytest.mark.skipif(nvrtc_version() is None,
                                 reason="no NVRTC (pip install cupy-cuda13x nvidia-cuda-nvrtc)")


def _release(tool: str) -> tuple[int, int]:
    import re
    import subprocess
    out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@needs_nvrtc
def test_zoo_kernels_compile_with_nvrtc_as_cupy_does(cache):
    """NVRTC, not nvcc, is what ``cupy.RawModule`` compiles with on the GPU: no host headers, its
    own builtins. Every zoo cell's exact module (``cuda_source``, the text the backend hands to
    CuPy) becomes sm_90 machine code with the backend's options, and the PTX of all of them
    together assembles for sm_80 without spills."""
    from codegen.cuda import NVRTC_OPTIONS, cuda_source
    from codegen.cuda_cpu import compile_nvrtc, ptxas_report
    from codegen.cuda_render import module_source
    for name in sorted(graphrnn.cells.ZOO):
        cell, _prog = zoo_case(name, "float32")
        src = cuda_source(cell)
        cubin = compile_nvrtc(src, "sm_90", NVRTC_OPTIONS, cubin=True)
        assert isinstance(cubin, bytes) and cubin[:4] == b"\x7fELF", name
        kernels = ProgramExecutor(zoo_case(name, "float32")[1]).kernels()
        for k in kernels:   # extern "C": the names CuPy's get_function asks for are there
            assert k.name.encode() in cubin, (name, k.name)
    ks = []
    for name in sorted(graphrnn.cells.ZOO):
        for dtype in ("float32", "float64"):
            ks += ProgramExecutor(zoo_case(name, dtype)[1]).kernels()
    ptx = compile_nvrtc(module_source(ks), "sm_80", NVRTC_OPTIONS)
    assert ".target sm_80" in ptx
    ptxas = find_tool("ptxas")
    if ptxas is None or _release(ptxas) < nvrtc_version():
        return   # an older ptxas refuses a newer NVRTC's PTX version
    rep = ptxas_report(ptx, "sm_80")
    assert set(rep) == {k.name for k in ks}
    spills = {n: i for n, i in rep.items() if i.spill_stores or i.spill_loads}
    assert not spills, spills


@needs_nvrtc
def test_nvrtc_errors_carry_the_log():
    from codegen.cuda_cpu import compile_nvrtc
    from graphrnn.errors import BackendError
    with pytest.raises(BackendError, match=r'(?s)NVRTC failed for compute_80.*"nope" is undefined'):
        compile_nvrtc('extern "C" __global__ void k(float* x) { x[0] = nope; }', "sm_80")


def test_ptx_export_falls_back_to_nvrtc_without_nvcc(monkeypatch):
    """A user with CuPy's NVRTC but no CUDA toolkit still exports PTX; with neither, the error
    says how to get one."""
    import codegen.cuda_cpu as cc
    from codegen.cuda import ptx
    from graphrnn.errors import BackendError
    pytest.importorskip("graphrnn.pipeline")
    monkeypatch.setattr(cc, "find_tool", lambda name: None)
    cell = rnn_tanh(3, 5)
    if cc.nvrtc_version() is not None:
        text = ptx(cell, "sm_90")
        assert ".target sm_90" in text and "NVVM" in text
    monkeypatch.setattr(cc, "nvrtc_version", lambda: None)
    with pytest.raises(BackendError, match="nvcc not found.*nvidia-cuda-nvrtc"):
        ptx(cell, "sm_90")


# ---- row kernels (a layer norm's statistics fused with the work around them) ----

def ln_lstm_case(dtype: str):
    from pathlib import Path

    from frontends.equations import parse_file
    build_program = pytest.importorskip("graphrnn.pipeline").build_program
    path = Path(__file__).resolve().parent.parent / "examples" / "layer_norm_lstm.eq"
    cell = parse_file(path, dtype=dtype)
    return cell, build_program(cell)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_norm_lstm_row_kernels_match_ref(dtype, cache):
    """Each RowKernel step is one launch of a warp-per-row kernel (a thread per row in the
    shim) that equals ref in every walk order, with half the blocks a grid needs."""
    from codegen.cuda_render import RowSpec
    from graphrnn.program import RowKernel
    cell, prog = ln_lstm_case(dtype)
    assert any(isinstance(s, RowKernel) for s in prog.forward.step + prog.backward.step)
    cc = check_against_ref(cell, dtype, 3, 5, cache, prog)
    rows = [r for r in cc.device.launcher.records
            if isinstance(cc.device.lib.kernels[r.kernel].spec, RowSpec)]
    assert rows, "no row kernel was launched"


def test_row_kernel_source_is_a_warp_per_row_without_atomics():
    from codegen.cuda_render import module_source
    _cell, prog = ln_lstm_case("float32")
    src = module_source(ProgramExecutor(prog).kernels())
    assert "grnn_warp_sumf(acc)" in src and "__syncwarp();" in src
    assert "atomic" not in src and "__shared__" not in src


@pytest.mark.skipif(find_tool("nvcc") is None, reason="no nvcc")
def test_row_kernels_compile_to_ptx_with_warp_shuffles(cache):
    from codegen.cuda_cpu import compile_ptx, ptxas_report
    from codegen.cuda_render import module_source
    ks = []
    for dt in ("float32", "float64"):
        ks += ProgramExecutor(ln_lstm_case(dt)[1]).kernels()
    src = module_source(ks)
    for arch in ("sm_80", "sm_90"):
        ptx = compile_ptx(src, arch, cache)
        assert "shfl.sync.bfly" in ptx
        rep = ptxas_report(ptx, arch)
        assert set(rep) == {k.name for k in ks}
        assert not {n: i for n, i in rep.items() if i.spill_stores or i.spill_loads}


@needs_nvrtc
def test_row_kernels_compile_with_nvrtc(cache):
    from codegen.cuda import NVRTC_OPTIONS, cuda_source
    from codegen.cuda_cpu import compile_nvrtc
    cell, _prog = ln_lstm_case("float32")
    cubin = compile_nvrtc(cuda_source(cell), "sm_90", NVRTC_OPTIONS, cubin=True)
    assert cubin[:4] == b"\x7fELF"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_issue18_pattern_cells_match_ref(dtype, cache):
    """The cells tests/test_opt_plan.py pins issue 18's plans with: zero blocks of a padded
    cotangent zeroed once (a carry), a row kernel for a mean over a GEMM's row, a projected
    state whose output cotangent's product is hoisted before the loop."""
    from test_opt_plan import BIAS_BLOCK, PROJECTION, ZERO_BLOCKS, eq_cell

    from frontends.equations import cell_from_equations
    for text in (ZERO_BLOCKS, BIAS_BLOCK):
        check_against_ref(eq_cell(text, dtype), dtype, 3, 5, cache)
    check_against_ref(cell_from_equations(PROJECTION, dtype=dtype), dtype, 3, 5, cache)
