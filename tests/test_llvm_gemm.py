"""The packed in-loop GEMM (codegen/llvm_gemm.py) against numpy: both register tiles (AVX-512
and AVX2 shapes), transposed weights, accumulation, row and column remainders, panel ranges."""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np
import pytest

from codegen import llvm
from codegen.llvm_gemm import Tile, helper_module, tile_for

I64, P = ctypes.c_int64, ctypes.c_void_p
PACK = ctypes.CFUNCTYPE(None, I64, I64, P, I64, I64, P, I64, I64)
GEMM = ctypes.CFUNCTYPE(None, I64, I64, P, I64, P, I64, I64, I64, P, I64, I64)


@cache
def build(dtype: str, bits: int) -> tuple[Tile, object, object, object]:
    """The helper module the JIT shares between cells, built for a given vector width."""
    jm = llvm.jit_module()
    tile = tile_for(dtype, bits)
    jitted = jm.jit(helper_module(dtype, tile, jm.target_machine().triple), use_cache=False)
    sfx = dtype[-2:]
    return (tile, jitted, PACK(jitted.address(f"graphrnn_pack_f{sfx}")),
            GEMM(jitted.address(f"graphrnn_pgemm_f{sfx}")))


def test_tiles_fit_the_register_file() -> None:
    for bits, regs in ((512, 32), (256, 16), (128, 16)):
        t = tile_for("float32", bits)
        assert t.nr == 2 * t.lanes and t.mr * 2 + 3 <= regs
        assert tile_for("float64", bits).lanes == t.lanes // 2


@pytest.mark.parametrize("bits", [512, 256])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m, k, n, trans, acc", [
    (1, 1, 1, False, False), (7, 5, 33, True, True), (32, 128, 512, False, False),
    (13, 70, 100, True, False), (9, 3, 64, False, True), (8, 16, 31, True, True),
    (17, 40, 48, False, False)])
def test_packed_gemm_matches_numpy(bits: int, dtype: str, m: int, k: int, n: int, trans: bool,
                                   acc: bool) -> None:
    if bits == 512 and "+avx512f" not in llvm.jit_module().host_cpu()[1].split(","):
        pytest.skip("no AVX-512 on this CPU")
    tile, _j, pack, gemm = build(dtype, bits)
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k) if trans else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n + 3)).astype(dtype)     # ldc > n: a strided C
    c0 = c.copy()
    wp = np.full(tile.packed_elems(k, n), np.nan, dtype)  # every slot must be written
    panels = tile.panels(n)
    # two panel ranges, as two threads would pack and multiply them
    for p0, p1 in ((0, panels // 2), (panels // 2, panels)):
        pack(k, n, w.ctypes.data, w.shape[1], int(trans), wp.ctypes.data, p0, p1)
        gemm(m, k, a.ctypes.data, k, wp.ctypes.data, p0, p1, n, c.ctypes.data, n + 3, int(acc))
    assert not np.isnan(wp).any()
    want = a.astype(np.float64) @ (w.T if trans else w) + (c0[:, :n] if acc else 0)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(c[:, :n], want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_array_equal(c[:, n:], c0[:, n:])    # columns past n untouched


def test_jitted_cells_share_one_compiled_copy_and_exports_carry_their_own() -> None:
    import graphrnn
    from codegen.llvm import packed_helpers
    from codegen.llvm_program import emit_program
    from graphrnn.cells import zoo_cell
    a = graphrnn.compile(zoo_cell("lstm", 3, 7, "float32"), backend="llvm")
    b = graphrnn.compile(zoo_cell("gru", 3, 7, "float32"), backend="llvm")
    for cc in (a, b):   # the JIT's modules call the process-wide helpers through pointers
        assert "set_packed_f32" in cc.ir_text
        assert f'void @"{cc.prefix}_pgemm_f32"(' not in cc.ir_text
    assert packed_helpers("float32") == packed_helpers("float32")
    exported = str(emit_program(a.program, a.prefix))      # what export() writes
    assert f'void @"{a.prefix}_pgemm_f32"(' in exported and "set_packed" not in exported
