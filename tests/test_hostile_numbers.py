"""Hostile numbers: every backend agrees with the math and with ``ref`` where values are extreme,
non-finite or tied.

1. Every scalar op of ``scalar.TABLE``: its value and its VJP at 0, -0, ±1, ±1e4, ±1e30, ±inf and
   NaN (all pairs for binary ops), float32 and float64, on ref, program, llvm and the CUDA
   kernels run on the CPU, against a 40-digit mpmath evaluation rounded to the dtype: NaN and
   ±inf at the same places, finite values within a few ulp (or 0 where the true value
   underflows).
2. The float32 tails of sigmoid and softplus on a dense sweep (relative accuracy, so that
   ``log(sigmoid(x))`` stays finite).
3. Ties of max/min/abs: the cotangent is split evenly whatever the operand order.
4. Random small cells with inf/NaN/0/huge inputs and h0 = 0 ties: every backend shows ref's NaN
   and inf pattern in outputs and gradients, and equals ref elsewhere.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from typing import Any

import mpmath
import numpy as np
import pytest

import graphrnn
from frontends.trace import CellBuilder
from graphrnn.ir import Cell, Node, call
from graphrnn.ops import Ops
from graphrnn.scalar import TABLE

DTYPES = ("float32", "float64")
BACKENDS = ("ref", "program", "llvm", "cuda-cpu")
HOSTILE = (0.0, -0.0, 1.0, -1.0, 1e4, -1e4, 1e30, -1e30, np.inf, -np.inf, np.nan)
# finite results: relative error in ulp of the dtype (llvm's float32 tanh is 4 ulp near ±1, and
# a VJP rounds two or three times more)
ULP = 8
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ for the CUDA shim")


def compiled(cell: Cell, backend: str, dtype: str, cache: Any) -> Any:
    if backend == "cuda-cpu":
        from codegen.cuda_exec import CudaCpuBackend
        return CudaCpuBackend(cell, dtype, cache_dir=cache)
    return graphrnn.compile(cell, backend, dtype)


# ---- the truth: 40 digits of mpmath, IEEE where mpmath has no answer ----

class MP:
    """The functions the truth is written with, on mpmath numbers."""
    exp = staticmethod(mpmath.exp)
    tanh = staticmethod(mpmath.tanh)
    sqrt = staticmethod(mpmath.sqrt)

    @staticmethod
    def log(x: Any) -> Any:
        return mpmath.log(x) if x != 0 else mpmath.mpf("-inf")

    @staticmethod
    def sigmoid(x: Any) -> Any:
        return 1 / (1 + mpmath.exp(-x))

    @staticmethod
    def softplus(x: Any) -> Any:
        return mpmath.log1p(mpmath.exp(x)) if x < 0 else x + mpmath.log1p(mpmath.exp(-x))


class NP:
    """The same functions in float64 IEEE arithmetic: for division by zero, which mpmath
    refuses, and for the sign of zero, which it does not keep."""
    exp = staticmethod(np.exp)
    tanh = staticmethod(np.tanh)
    sqrt = staticmethod(np.sqrt)
    log = staticmethod(np.log)

    @staticmethod
    def sigmoid(x: Any) -> Any:
        return 1 / (1 + np.exp(-x))

    @staticmethod
    def softplus(x: Any) -> Any:
        return np.logaddexp(0, x)


def _nan_if(c: bool, v: Any) -> Any:
    return mpmath.mpf("nan") if c else v


# per op: the value and the VJP (cotangent g = 1) as functions of a namespace and the operands;
# the VJPs are the derivatives (the hand rules are proven equal to them in test_scalar.py), at
# a kink or tie the documented convention (scalar.py), at ±inf their limits
def _gt(a: Any, b: Any) -> int:
    return 1 if a > b else 0


TRUTH: dict[Ops, tuple[Callable[..., Any], Callable[..., tuple[Any, ...]]]] = {
    Ops.NEG: (lambda M, x: -x, lambda M, x: (-1,)),
    Ops.EXP: (lambda M, x: M.exp(x), lambda M, x: (M.exp(x),)),
    Ops.LOG: (lambda M, x: _nan_if(x < 0, M.log(x)), lambda M, x: (1 / x,)),
    Ops.TANH: (lambda M, x: M.tanh(x), lambda M, x: (1 - M.tanh(x) ** 2,)),
    Ops.SIGMOID: (lambda M, x: M.sigmoid(x),
                  lambda M, x: (M.sigmoid(x) * M.sigmoid(-x),)),
    Ops.RELU: (lambda M, x: x if not x < 0 else 0, lambda M, x: (_gt(x, 0),)),
    Ops.SOFTPLUS: (lambda M, x: M.softplus(x), lambda M, x: (M.sigmoid(x),)),
    Ops.SQRT: (lambda M, x: _nan_if(x < 0, M.sqrt(x)),
               lambda M, x: (_nan_if(x < 0, 0.5 / M.sqrt(x)),)),
    Ops.STEP: (lambda M, x: _gt(x, 0), lambda M, x: (0,)),
    Ops.ADD: (lambda M, a, b: a + b, lambda M, a, b: (1, 1)),
    Ops.SUB: (lambda M, a, b: a - b, lambda M, a, b: (1, -1)),
    Ops.MUL: (lambda M, a, b: a * b, lambda M, a, b: (b, a)),
    Ops.DIV: (lambda M, a, b: a / b, lambda M, a, b: (1 / b, -(a / b) / b)),
    Ops.MAX: (lambda M, a, b: a if a > b or a != a else b if b > a or b != b else a,
              lambda M, a, b: ((1 + _gt(a, b) - _gt(b, a)) / 2,
                               (1 + _gt(b, a) - _gt(a, b)) / 2)),
    Ops.CMPGT: (lambda M, a, b: _gt(a, b), lambda M, a, b: (0, 0)),
    Ops.WHERE: (lambda M, c, a, b: a if c != 0 else b,
                lambda M, c, a, b: (0, 1 if c != 0 else 0, 0 if c != 0 else 1)),
}


def _mp(v: float) -> Any:
    return mpmath.mpf(float(v))


def truth(fn: Callable[..., Any], args: Sequence[float], dtype: str) -> Any:
    """fn at args: 40-digit mpmath, or float64 IEEE when an operand is a zero or non-finite or
    mpmath divides by zero; rounded to dtype."""
    special = any(v == 0 or not np.isfinite(v) for v in args)
    if not special:
        try:
            with mpmath.workdps(40):
                r = fn(MP, *[_mp(v) for v in args])
            with np.errstate(over="ignore"):
                return np.asarray(np.float64(float(r)) if not isinstance(r, tuple) else
                                  [float(x) for x in r]).astype(dtype)
        except ZeroDivisionError:
            pass
    with np.errstate(all="ignore"):   # inf - inf and casts of huge values to float32
        r = fn(NP, *[np.float64(v) for v in args])
        return np.asarray(np.float64(r) if not isinstance(r, tuple) else
                          [np.float64(x) for x in r]).astype(dtype)


def assert_same_numbers(got: np.ndarray, want: np.ndarray, dtype: str, what: str,
                        ulp: float = ULP) -> None:
    """NaN where want is NaN, the same infinities, finite values within ``ulp`` ulp (or below the
    smallest normal number where the true value underflows)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    bad = nan_g != nan_w
    inf_w = np.isinf(want)
    bad |= inf_w & (got != want)
    bad |= ~nan_w & ~inf_w & np.isinf(got)
    fin = np.isfinite(got) & np.isfinite(want)
    fi = np.finfo(dtype)
    tol = ulp * float(fi.eps) * np.abs(want) + float(fi.tiny)
    with np.errstate(invalid="ignore"):
        bad |= fin & (np.abs(got - want) > tol)
    if bad.any():
        idx = np.flatnonzero(bad.ravel())[:8]
        lines = [f"  at {i}: got {got.ravel()[i]!r}, want {want.ravel()[i]!r}" for i in idx]
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} differ\n" + "\n".join(lines))


# ---- 1. the op table at hostile points ----

def operand_columns(arity: int) -> list[np.ndarray]:
    """Columns of operands: every value for unary ops, every pair for binary ops, and for WHERE
    every pair under a condition cycling through the values."""
    v = np.array(HOSTILE)
    if arity == 1:
        return [v]
    a, b = np.meshgrid(v, v, indexing="ij")
    cols = [a.ravel(), b.ravel()]
    if arity == 3:
        cols = [np.resize(v, a.size)] + cols
    return cols


def table_cell() -> tuple[Cell, dict[Ops, list[np.ndarray]]]:
    """One cell holding every op once, each on inputs of its own (so nothing is shared)."""
    cb = CellBuilder("hostile_ops", dtype="float64")
    outs, cols = [], {}
    for op in TABLE:
        cols[op] = operand_columns(TABLE[op].arity)
        xs = [cb.input(f"{op.name.lower()}{i}", len(c)) for i, c in enumerate(cols[op])]
        outs.append(call(op, *xs))
    h = cb.state("h", 1)
    return cb.build(outputs=outs, next_states=[h]), cols


@pytest.fixture(scope="module")
def table_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """(backend, dtype) -> (values per op, input cotangents per op)."""
    cell, cols = table_cell()
    cache = tmp_path_factory.mktemp("hostile_cuda")
    xs = [np.asarray(c, dtype=np.float64)[None, None, :] for op in TABLE for c in cols[op]]
    out: dict = {}
    for dtype in DTYPES:
        for backend in BACKENDS:
            if backend == "cuda-cpu" and shutil.which("g++") is None:
                continue
            cc = compiled(cell, backend, dtype, cache)
            x = [v.astype(dtype) for v in xs]
            h0 = [np.full((1, 1), 0.5, dtype)]
            with np.errstate(all="ignore"):
                ys, _hT, res = cc.forward_train(cc.init_params(), x, h0)
                g = cc.backward(cc.init_params(), res, [np.ones_like(y) for y in ys])
            vals, grads, k = {}, {}, 0
            for i, op in enumerate(TABLE):
                vals[op] = ys[i][0, 0]
                grads[op] = [gi[0, 0] for gi in g.inputs[k:k + TABLE[op].arity]]
                k += TABLE[op].arity
            out[backend, dtype] = (vals, grads, cols)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", list(TABLE), ids=lambda o: o.name)
def test_op_value_and_vjp_at_hostile_points(op: Ops, dtype: str, backend: str,
                                            table_results: dict) -> None:
    if (backend, dtype) not in table_results:
        pytest.skip("no g++ for the CUDA shim")
    vals, grads, cols = table_results[backend, dtype]
    value, vjp = TRUTH[op]
    points = list(zip(*[c.astype(dtype).astype(np.float64) for c in cols[op]]))
    want = np.array([truth(value, p, dtype) for p in points])
    assert_same_numbers(vals[op], want, dtype, f"{op.name} {dtype} {backend} value")
    want_g = np.array([truth(vjp, p, dtype) for p in points]).reshape(len(points), -1)
    for i, gi in enumerate(grads[op]):
        assert_same_numbers(gi, want_g[:, i], dtype, f"{op.name} {dtype} {backend} d/d operand {i}")


# ---- 2. float32 sigmoid and softplus, dense, both tails ----

@needs_gxx
def test_float32_sigmoid_is_relative_in_both_tails(tmp_path: Any) -> None:
    """sigmoid within 4 ulp of the float64 truth wherever the value is a normal float32 (the
    left tail included: ``0.5 tanh(x/2) + 0.5`` was 0 from x = -17 on), so ``log(sigmoid(x))``
    is finite and equals ref; softplus within its table bound, no overflow."""
    x = np.concatenate([np.linspace(-104, 90, 19401), -np.geomspace(1e-30, 87, 2001),
                        np.geomspace(1e-30, 87, 2001)])
    cb = CellBuilder("tails", dtype="float32")
    xi = cb.input("x", x.size)
    s = call(Ops.SIGMOID, xi)
    cell = cb.build(outputs=[s, call(Ops.LOG, s), call(Ops.SOFTPLUS, xi)],
                    next_states=[cb.state("h", 1)])
    x32 = x.astype(np.float32)
    xd = x32.astype(np.float64)
    sig = np.exp(-np.logaddexp(0, -xd))
    want_sp = np.logaddexp(0, xd)
    normal = sig >= np.finfo(np.float32).tiny
    for backend in BACKENDS:
        cc = compiled(cell, backend, "float32", tmp_path)
        with np.errstate(divide="ignore"):   # log(sigmoid(-104)) = log(0) on ref
            (ys, ls, sp), _ = cc.forward({}, [x32[None, None]], [np.zeros((1, 1), np.float32)])
        ys, ls, sp = ys[0, 0], ls[0, 0], sp[0, 0]
        assert_same_numbers(ys[normal], sig[normal], "float32", f"{backend} sigmoid", ulp=4)
        assert np.all(np.abs(ys[~normal] - sig[~normal]) < np.finfo(np.float32).tiny)
        # log(sigmoid(x)) = -softplus(-x) in the left tail (for x > 0 sigmoid rounds towards 1
        # and its log keeps only absolute precision, on every backend)
        left = normal & (xd < 0)
        assert_same_numbers(ls[left], -np.logaddexp(0, -xd[left]), "float32",
                            f"{backend} log(sigmoid)", ulp=4)
        np.testing.assert_allclose(sp, want_sp, rtol=4e-7, atol=5e-7,
                                   err_msg=f"{backend} softplus")


# ---- 3. ties: one convention, whatever the operand order ----

TIES = {  # expression -> (d/dx, d/dh) at x = [0, 1, -1, 0], h0 = [0, 0, 0, 5]
    "max(x, h)": ([0.5, 1, 0, 0], [0.5, 0, 1, 1]),
    "max(h, x)": ([0.5, 1, 0, 0], [0.5, 0, 1, 1]),
    "min(x, h)": ([0.5, 0, 1, 1], [0.5, 1, 0, 0]),
    "min(h, x)": ([0.5, 0, 1, 1], [0.5, 1, 0, 0]),
    "abs(x) + 0.5 * h": ([0, 1, -1, 0], [0.5, 0.5, 0.5, 0.5]),
}


@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("expr", list(TIES))
def test_ties_split_the_cotangent_evenly_on_every_backend(expr: str, dtype: str,
                                                          tmp_path: Any) -> None:
    from frontends.equations import cell_from_equations
    cell = cell_from_equations(f"h_next = {expr}", {"x": 4}, {"h": 4}, dtype=dtype)
    x = np.array([[[0.0, 1.0, -1.0, 0.0]]], dtype)
    h0 = np.array([[0.0, 0.0, 0.0, 5.0]], dtype)
    want_x, want_h = TIES[expr]
    for backend in BACKENDS:
        cc = compiled(cell, backend, dtype, tmp_path)
        _ys, _hT, res = cc.forward_train({}, [x], [h0])
        g = cc.backward({}, res, [np.ones((1, 1, 4), dtype)])
        np.testing.assert_array_equal(g.inputs[0][0, 0], want_x, err_msg=f"{backend} d/dx")
        np.testing.assert_array_equal(g.states[0][0], want_h, err_msg=f"{backend} d/dh")


@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES)
def test_reduce_max_splits_the_cotangent_between_ties(dtype: str, tmp_path: Any) -> None:
    """A row max sends g/k to each of its k tied elements (a subgradient), not g to each."""
    cb = CellBuilder("rowmax", dtype=dtype)
    x, h = cb.input("x", 4), cb.state("h", 1)
    nxt = call(Ops.ADD, graphrnn.apply(Ops.REDUCE, x, arg=("max", 1)), h)
    cell = cb.build(outputs=[nxt], next_states=[nxt])
    xs = np.array([[[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, -1.0, 5.0, 4.0]]], dtype)
    want = [[0, 0.5, 0.5, 0], [0.25, 0.25, 0.25, 0.25], [0, 0, 1, 0]]
    for backend in BACKENDS:
        cc = compiled(cell, backend, dtype, tmp_path)
        _ys, _hT, res = cc.forward_train({}, [xs], [np.zeros((3, 1), dtype)])
        g = cc.backward({}, res, [np.ones((1, 3, 1), dtype)])
        np.testing.assert_array_equal(g.inputs[0][0], want, err_msg=f"{backend} d/dx")


# ---- 4. random cells with non-finite inputs and ties, every backend against ref ----

UNARY = (Ops.TANH, Ops.SIGMOID, Ops.RELU, Ops.EXP, Ops.LOG, Ops.SOFTPLUS, Ops.SQRT, Ops.NEG,
         "abs")
BINARY = (Ops.ADD, Ops.SUB, Ops.MUL, Ops.DIV, Ops.MAX, "min")


def random_cell(rng: np.random.Generator, dtype: str, n: int = 3, k: int = 3) -> Cell:
    """k states, each updated by a random expression of depth <= 4 over the input x, all states
    and a recurrent product h @ W, so ties (h0 = 0), non-finite inputs and overflow meet every
    op, the GEMMs and the carried cotangents."""
    cb = CellBuilder(f"random_{rng.integers(1 << 30)}", dtype=dtype)
    x = cb.input("x", n)
    hs = [cb.state(f"h{i}", n) for i in range(k)]
    leaves = [x, *hs, hs[0] @ cb.param("W", (n, n))]

    def expr(depth: int) -> Node:
        if depth == 0 or rng.random() < 0.2:
            return leaves[rng.integers(len(leaves))]
        if rng.random() < 0.45:
            op = UNARY[rng.integers(len(UNARY))]
            a = expr(depth - 1)
            if op == "abs":
                return call(Ops.MAX, a, call(Ops.NEG, a))
            return call(op, a)
        op = BINARY[rng.integers(len(BINARY))]
        a, b = expr(depth - 1), expr(depth - 1)
        if op == "min":
            return call(Ops.NEG, call(Ops.MAX, call(Ops.NEG, a), call(Ops.NEG, b)))
        return call(op, a, b)

    nxt = [expr(4) for _ in hs]
    return cb.build(outputs=[nxt[0]], next_states=nxt)


def hostile_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Mostly ordinary numbers, some zeros and a few of inf, -inf, NaN and ±1e4."""
    a = rng.standard_normal(shape)
    pick = rng.random(shape)
    a[pick < 0.25] = 0.0
    special = np.array([np.inf, -np.inf, np.nan, 1e4, -1e4])
    a[pick > 0.9] = rng.choice(special, int((pick > 0.9).sum()))
    return a.astype(dtype)


def assert_like_ref(got: np.ndarray, want: np.ndarray, dtype: str, what: str) -> None:
    """ref's NaN and inf pattern exactly; finite values close, relative to the array's scale
    (compiled kernels reassociate and use approximations)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN pattern\n{got}\n{want}"
    inf = np.isinf(want)
    assert np.array_equal(np.isinf(got), inf) and np.all(got[inf] == want[inf]), \
        f"{what}: inf pattern\n{got}\n{want}"
    fin = np.isfinite(want)
    if fin.any():
        rtol = 1e-4 if dtype == "float32" else 1e-9
        scale = float(np.abs(want[fin]).max())
        np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=rtol * max(scale, 1e-6),
                                   err_msg=what)


@needs_gxx
@pytest.mark.parametrize("seed", range(12))
def test_random_cells_show_refs_nan_and_inf_pattern(seed: int, tmp_path: Any) -> None:
    rng = np.random.default_rng(seed)
    dtype = DTYPES[seed % 2]
    cell = random_cell(rng, dtype)
    T, B = 3, 2
    ref = graphrnn.compile(cell, "ref", dtype)
    params = ref.init_params(seed=seed, scale=0.5)
    xs = [hostile_array(rng, (T, B, 3), dtype)]
    # h0 = 0 (ties of max/min/abs with 0) for some states, hostile values for the others
    h0 = [np.zeros((B, 3), dtype) if i % 2 == 0 else hostile_array(rng, (B, 3), dtype)
          for i in range(len(cell.states))]
    d_ys = [rng.standard_normal((T, B, 3)).astype(dtype)]
    d_hT = [rng.standard_normal((B, 3)).astype(dtype) for _ in cell.states]
    with np.errstate(all="ignore"):
        ys, hT, res = ref.forward_train(params, xs, h0)
        g = ref.backward(params, res, d_ys, d_hT)
    want = {"y": ys[0], **{f"h{i}T": v for i, v in enumerate(hT)},
            **{f"d{k}": v for k, v in g.params.items()}, "dx": g.inputs[0],
            **{f"dh{i}0": v for i, v in enumerate(g.states)}}
    for backend in BACKENDS[1:]:
        cc = compiled(cell, backend, dtype, tmp_path)
        with np.errstate(all="ignore"):
            ys2, hT2, res2 = cc.forward_train(params, xs, h0)
            g2 = cc.backward(params, res2, d_ys, d_hT)
        got = {"y": ys2[0], **{f"h{i}T": v for i, v in enumerate(hT2)},
               **{f"d{k}": v for k, v in g2.params.items()}, "dx": g2.inputs[0],
               **{f"dh{i}0": v for i, v in enumerate(g2.states)}}
        for k in want:
            assert_like_ref(got[k], want[k], dtype, f"seed {seed} {dtype} {backend} {k}")


@needs_gxx
@pytest.mark.parametrize("nexts", [{"h1": "h2", "h2": "x"}, {"h1": "h2", "h2": "h1"}],
                         ids=["shift", "swap"])
def test_a_state_that_moves_to_another_state_carries_the_old_cotangent(
        nexts: dict[str, str], tmp_path: Any) -> None:
    """Found by the random cells: with ``next h1 = h2`` the backward's carried d_h2 is the old
    d_h1, which the step's kernel overwrote before a copy (shift) or the kernel's other output
    (swap, on llvm, whose kernel outputs are noalias) read it: wrong finite gradients."""
    cb = CellBuilder("shift", dtype="float64")
    x = cb.input("x", 2)
    hs = {"h1": cb.state("h1", 2), "h2": cb.state("h2", 2), "x": x}
    y = call(Ops.TANH, hs["h1"]) * 2.0
    if nexts["h2"] == "h1":
        y = y + hs["h2"]
    cell = cb.build(outputs=[y], next_states={k: hs[v] for k, v in nexts.items()})
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, 2, 2))]
    h0 = [rng.standard_normal((2, 2)) for _ in range(2)]
    d_ys = [rng.standard_normal((3, 2, 2))]
    d_hT = [rng.standard_normal((2, 2)) for _ in range(2)]
    ref = graphrnn.compile(cell, "ref", "float64")
    _y, _h, res = ref.forward_train({}, xs, h0)
    want = ref.backward({}, res, d_ys, d_hT)
    for backend in BACKENDS[1:]:
        cc = compiled(cell, backend, "float64", tmp_path)
        _y, _h, res = cc.forward_train({}, xs, h0)
        g = cc.backward({}, res, d_ys, d_hT)
        for a, b in zip(g.inputs + g.states, want.inputs + want.states, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=backend)


FINITE_ALGEBRA = {  # expressions that finite-value algebra would simplify, hiding NaN or inf
    "x * 0": lambda x, h: x * 0.0,
    "(x - h) / (h - x) * h + x": lambda x, h: (x - h) / (h - x) * h + x,
    "x + x + x * h": lambda x, h: x + x + x * h,
    "log(exp(x))": lambda x, h: call(Ops.LOG, call(Ops.EXP, x)),
    "x / h + 0.5 / sqrt(h)": lambda x, h: x / h + 0.5 / call(Ops.SQRT, h),  # sqrt's VJP
    "sqrt(h) * sqrt(h)": lambda x, h: call(Ops.SQRT, h) * call(Ops.SQRT, h),
}


@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FINITE_ALGEBRA))
def test_no_finite_value_algebra(name: str, dtype: str, tmp_path: Any) -> None:
    """simplify's ``x*0 -> 0``, sympy's automatic algebra in kernel bodies and llvm's reassoc
    and arcp each turned one of these into a finite number where ref has NaN or inf."""
    cb = CellBuilder("algebra", dtype=dtype)
    x, h = cb.input("x", 8), cb.state("h", 8)
    y = FINITE_ALGEBRA[name](x, h)
    cell = cb.build(outputs=[y], next_states=[y])
    xs = [np.array([[[np.inf, -np.inf, np.nan, 0.0, 1.0, 1e4, -2.0, 3.0]]], dtype)]
    h0 = [np.array([[0.0, 0.0, 1.0, np.inf, 1.0, -2.0, -1.0, 0.0]], dtype)]
    d_ys = [np.array([[[1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -3.0, 1.0]]], dtype)]
    ref = graphrnn.compile(cell, "ref", dtype)
    with np.errstate(all="ignore"):
        ys, _hT, res = ref.forward_train({}, xs, h0)
        g = ref.backward({}, res, d_ys)
    for backend in BACKENDS[1:]:
        cc = compiled(cell, backend, dtype, tmp_path)
        with np.errstate(all="ignore"):
            ys2, _hT2, res2 = cc.forward_train({}, xs, h0)
            g2 = cc.backward({}, res2, d_ys)
        for what, a, b in (("y", ys2[0], ys[0]), ("dx", g2.inputs[0], g.inputs[0]),
                           ("dh", g2.states[0], g.states[0])):
            assert_like_ref(a, b, dtype, f"{name} {dtype} {backend} {what}")
