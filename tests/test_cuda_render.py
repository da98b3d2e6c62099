"""The CUDA renderer, proven without a GPU: kernels compile to PTX (sm_80, sm_90) without
register spills, and the same sources built as C++ through cuda_shim.h compute what
``run_scalar_program`` computes, whatever order the grid is walked in."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from codegen.cuda_cpu import (
    FakeLauncher,
    ShimLauncher,
    ShimLibrary,
    compile_ptx,
    find_tool,
    launch_shape,
    ptxas_report,
)
from codegen.cuda_render import KernelSpec, Operand, c_const, kernel_name, module_source, render
from graphrnn.errors import BackendError
from graphrnn.ops import GroupOp, Ops
from graphrnn.scalar import ScalarProgram, run_scalar_program

needs_nvcc = pytest.mark.skipif(find_tool("nvcc") is None or find_tool("ptxas") is None,
                                reason="no CUDA toolkit (nvcc/ptxas) here")
needs_cxx = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ for the CUDA shim")

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}


def every_op_program() -> ScalarProgram:
    """Every elementwise op once; input 2 is kept positive for log, sqrt and the divisor."""
    ins: list = []

    def add(op, *args, c=None):
        ins.append((op, tuple(args), c))
        return 3 + len(ins) - 1

    e = add(Ops.EXP, 0)
    lg = add(Ops.LOG, 2)
    th = add(Ops.TANH, 0)
    sg = add(Ops.SIGMOID, 1)
    rl = add(Ops.RELU, 0)
    sp = add(Ops.SOFTPLUS, 1)
    sq = add(Ops.SQRT, 2)
    st = add(Ops.STEP, 1)
    ng = add(Ops.NEG, th)
    k1 = add(Ops.CONST, c=-2.5)
    k2 = add(Ops.CONST, c=0.1)
    a = add(Ops.ADD, e, lg)
    s = add(Ops.SUB, a, k1)
    m = add(Ops.MUL, s, sg)
    d = add(Ops.DIV, m, sq)
    mx = add(Ops.MAX, ng, k2)
    gt = add(Ops.CMPGT, 0, 1)
    w = add(Ops.WHERE, gt, d, mx)
    prog = ScalarProgram(3, tuple(ins), (w, rl, sp, st, mx))
    used = {op for op, _, _ in prog.instrs}
    assert GroupOp.Elementwise <= used  # the test covers the whole table
    return prog


def random_program(seed: int, n_inputs: int = 3, n_instrs: int = 14) -> ScalarProgram:
    """A random SSA program over ops that stay finite on any finite input."""
    rng = np.random.default_rng(seed)
    safe1 = [Ops.NEG, Ops.TANH, Ops.SIGMOID, Ops.RELU, Ops.SOFTPLUS, Ops.STEP]
    safe2 = [Ops.ADD, Ops.SUB, Ops.MUL, Ops.MAX, Ops.CMPGT]
    ins: list = []
    for k in range(n_instrs):
        n = n_inputs + k
        r = rng.random()
        if r < 0.1:
            ins.append((Ops.CONST, (), float(np.round(rng.normal(), 3))))
        elif r < 0.5:
            ins.append((safe1[rng.integers(len(safe1))], (int(rng.integers(n)),), None))
        elif r < 0.9:
            ins.append((safe2[rng.integers(len(safe2))],
                        (int(rng.integers(n)), int(rng.integers(n))), None))
        else:
            ins.append((Ops.WHERE, tuple(int(rng.integers(n)) for _ in range(3)), None))
    total = n_inputs + n_instrs
    outs = tuple(sorted({total - 1, int(rng.integers(n_inputs, total))}))
    return ScalarProgram(n_inputs, tuple(ins), outs)


def cases() -> list[tuple[str, ScalarProgram, tuple[Operand, ...]]]:
    """(label, program, input layouts): full matrices, a column view of a wider buffer (stride
    52 for 13 columns), a bias row (row stride 0) and a per-row value (column stride 0)."""
    H = 13
    out = [("every_op", every_op_program(), (Operand(4 * H), Operand(0), Operand(H)))]
    for seed in range(4):
        lay = [(Operand(H), Operand(0), Operand(1, 0)), (Operand(3 * H), Operand(H),
                                                         Operand(0, 0))][seed % 2]
        out.append((f"random{seed}", random_program(seed), lay))
    return out


COLS = 13  # not a multiple of any block size


def build_specs(dtype: str) -> list[KernelSpec]:
    specs = []
    for label, prog, lay in cases():
        outs = tuple(Operand(COLS) for _ in prog.outputs)
        specs.append(KernelSpec(kernel_name(label, f"{dtype}{prog}{lay}"), prog, dtype, COLS,
                                lay, outs, block=64))
    return specs


def make_inputs(lay: tuple[Operand, ...], rows: int, dtype: str, rng: np.random.Generator,
                positive: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(arrays to pass to the kernel, the same values broadcast to (rows, COLS))."""
    passed, full = [], []
    for i, o in enumerate(lay):
        if o.row_stride == 0 and o.col_stride == 0:
            a = rng.standard_normal((1, 1))
        elif o.row_stride == 0:
            a = rng.standard_normal((1, COLS))
        elif o.col_stride == 0:
            a = rng.standard_normal((rows, 1))
        else:
            wide = rng.standard_normal((rows, o.row_stride))
            a = wide  # the kernel reads the first COLS columns of each row of a wider buffer
        a = 2.0 * a
        if i == positive:
            a = np.abs(a) + 0.1
        a = a.astype(dtype)
        passed.append(a)
        view = a[:, :COLS] if a.shape[1] >= COLS else a
        full.append(np.broadcast_to(view, (rows, COLS)))
    return passed, full


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile_to_ptx_without_spills(arch, cache):
    kernels = [render(s) for dt in ("float32", "float64") for s in build_specs(dt)]
    src = module_source(kernels)  # one nvcc call for every kernel
    ptx = compile_ptx(src, arch, cache)
    assert f".target {arch}" in ptx
    report = ptxas_report(ptx, arch)
    assert set(report) == {k.name for k in kernels}
    for name, info in report.items():
        assert info.spill_stores == 0 and info.spill_loads == 0, (name, info)
        assert info.registers <= 255


@needs_cxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows", [1, 7])
def test_shim_matches_run_scalar_program_in_every_walk_order(dtype, rows, cache):
    specs = build_specs(dtype)
    kernels = [render(s) for s in specs]
    lib = ShimLibrary(kernels, cache)
    rng = np.random.default_rng(rows)
    for (label, prog, lay), k in zip(cases(), kernels):
        passed, full = make_inputs(lay, rows, dtype, rng, positive=2 if label == "every_op"
                                   else None)
        want = run_scalar_program(prog, full, dtype)
        results = []
        for order in ("forward", "reversed", "shuffled"):
            outs = [np.full((rows, COLS), np.nan, dtype) for _ in prog.outputs]
            fake = FakeLauncher(ShimLauncher(lib, order, seed=3))
            # a grid smaller than the domain exercises the grid-stride loop
            grid, block = launch_shape(k, rows)
            fake.launch(k, max(1, grid // 2), block, [*passed, *outs, rows])
            rec = fake.records[0]
            assert rec.kernel == k.name and rec.block == (64, 1, 1)
            assert rec.arg_types == (dtype,) * (len(passed) + len(outs)) + ("int",)
            for o, w in zip(outs, want):
                np.testing.assert_allclose(o, w, **TOL[dtype], err_msg=f"{label} {order}")
            results.append(outs)
        for other in results[1:]:
            for a, b in zip(results[0], other):
                assert np.array_equal(a, b), f"{label}: result depends on the walk order"


def test_render_is_plain_cuda_c():
    prog = every_op_program()
    lay = (Operand(52), Operand(0), Operand(13))
    outs = tuple(Operand(13) for _ in prog.outputs)
    f32 = render(KernelSpec("k32", prog, "float32", 13, lay, outs)).full_source
    f64 = render(KernelSpec("k64", prog, "float64", 13, lay, outs)).full_source
    assert 'extern "C" __global__ void __launch_bounds__(256) k32(' in f32
    assert "const float* __restrict__ in0" in f32 and "float* __restrict__ out0" in f32
    assert "in1[c]" in f32 and "in0[r * 52u + c]" in f32   # bias row, column view
    assert "tanhf(" in f32 and "expf(" in f32 and "tanh(" not in f32.replace("tanhf(", "")
    assert "pow(" not in f32 and "pow(" not in f64
    assert "double" not in render(KernelSpec("k", prog, "float32", 13, lay, outs)).source
    assert "tanh(" in f64 and "float" not in render(KernelSpec("k", prog, "float64", 13, lay,
                                                                outs)).source


def test_constants_read_back_exactly():
    assert c_const(-2.5, "float32") == "(-2.5f)"
    assert float(c_const(0.1, "float32")[:-1]) == float(np.float32(0.1))
    assert c_const(0.1, "float64") == "0.1"
    assert c_const(float("inf"), "float32") == "__int_as_float(0x7f800000)"
    assert "7ff8" in c_const(float("nan"), "float64")


def test_bad_specs_are_refused_with_the_kernel_name():
    prog = ScalarProgram(1, ((Ops.TANH, (0,), None),), (1,))
    with pytest.raises(BackendError, match="k_bad: its program reads 1 inputs, 2 given"):
        KernelSpec("k_bad", prog, "float32", 4, (Operand(4), Operand(4)), (Operand(4),))
    with pytest.raises(BackendError, match="k_bad: dtype must be float32 or float64"):
        KernelSpec("k_bad", prog, "int64", 4, (Operand(4),), (Operand(4),))
    with pytest.raises(BackendError, match="outputs cannot broadcast"):
        KernelSpec("k_bad", prog, "float32", 4, (Operand(4),), (Operand(4, 0),))


# ---- the fake launcher catches launches that do not fit the signature ----

def _tanh_kernel() -> tuple:
    prog = ScalarProgram(1, ((Ops.TANH, (0,), None),), (1,))
    spec = KernelSpec("k_tanh", prog, "float32", 5, (Operand(5),), (Operand(5),), block=32)
    return render(spec)


def test_fake_launcher_records_and_checks_the_signature():
    k = _tanh_kernel()
    fake = FakeLauncher()
    x, y = np.zeros((3, 5), np.float32), np.zeros((3, 5), np.float32)
    fake.launch(k, 1, 32, [x, y, 3])
    assert fake.records[0].grid == (1, 1, 1) and fake.records[0].arg_types == (
        "float32", "float32", "int")
    with pytest.raises(BackendError, match="k_tanh: argument in0 is float\\* but got ndarray "
                                           "of dtype float64"):
        fake.launch(k, 1, 32, [x.astype(np.float64), y, 3])
    with pytest.raises(BackendError, match="expected 3 arguments \\(in0, out0, rows\\), got 2"):
        fake.launch(k, 1, 32, [x, y])
    with pytest.raises(BackendError, match="argument rows is int but got float"):
        fake.launch(k, 1, 32, [x, y, 3.0])
    with pytest.raises(BackendError, match="exceeds its __launch_bounds__"):
        fake.launch(k, 1, 64, [x, y, 3])
    with pytest.raises(BackendError, match="out0 touches 20 elements .* holds 15"):
        fake.launch(k, 1, 32, [np.zeros((4, 5), np.float32), y, 4])
    with pytest.raises(BackendError, match="output out0 shares memory with in0"):
        fake.launch(k, 1, 32, [x, x, 3])
    ro = np.zeros((3, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(BackendError, match="output out0 got a read-only array"):
        fake.launch(k, 1, 32, [x, ro, 3])
    assert len(fake.records) == 1
