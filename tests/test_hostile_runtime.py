"""The runtime contract of ``graphrnn/api.py`` (its module docstring), held against a hostile
caller on every backend: ``ref``, ``program``, ``llvm``, ``CudaCpuBackend`` (the CUDA kernels
through the C shim) and ``cuda`` itself on the CuPy stand-in of ``test_cuda_fake_gpu``.

- Ownership: writing into what ``forward_train`` returned, or into the inputs, initial states
  and parameters it was given, changes no gradient.
- Parameters: ``backward`` computes the gradients at the forward's parameter values, also
  when the arrays were updated in place since, and refuses other arrays holding other values
  (the same answer, or the same error, on every backend).
- Residuals are a token: read-only ``T``/``B``, checked against the arrays it holds, refused
  from another cell; cotangents are checked for count and shape.
- Arguments of the wrong kind (None, complex, object, strings, float token ids, a list for the
  params dict, ragged lists) are a ``RuntimeInputError`` naming the argument, what was
  expected and what was received."""

from __future__ import annotations

import importlib.util
import re
import shutil
from typing import Any, Callable

import numpy as np
import pytest
from helpers import assert_all_close, flat
from test_cuda_fake_gpu import _embedding_cell, fake_cupy  # noqa: F401 - a fixture

import graphrnn
from graphrnn.cells import zoo_cell
from graphrnn.errors import RuntimeInputError

BACKENDS = ["ref", "program", "llvm", "cuda-cpu", "cuda-fake"]
T, B, I, H = 3, 2, 3, 4   # noqa: E741 - the input size, as everywhere
Build = Callable[..., Any]


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest) -> Build:
    """A function compiling a cell for the backend under test."""
    name = request.param
    if name == "llvm" and importlib.util.find_spec("llvmlite") is None:
        pytest.skip("no llvmlite")
    if name.startswith("cuda") and shutil.which("g++") is None:
        pytest.skip("no g++ for the CUDA shim")
    if name == "cuda-fake":
        request.getfixturevalue("fake_cupy")

    def build(cell: Any, dtype: str = "float64", **options: Any) -> Any:
        if name == "cuda-cpu":
            from codegen.cuda_exec import CudaCpuBackend
            return CudaCpuBackend(cell, dtype, **options)
        if name == "cuda-fake":
            return graphrnn.compile(cell, "cuda", dtype, **options)
        return graphrnn.compile(cell, name, dtype, **options)

    build.backend = name  # type: ignore[attr-defined]
    return build


def _data(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, list[np.ndarray],
                                  np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    cell = zoo_cell("lstm", I, H, "float64")
    params = graphrnn.init_params(cell, seed=seed, scale=0.5)
    x = rng.standard_normal((T, B, I))
    h0 = [0.5 * rng.standard_normal((B, H)) for _ in range(2)]
    dy = rng.standard_normal((T, B, H))
    dh = [rng.standard_normal((B, H)) for _ in range(2)]
    return params, x, h0, dy, dh


def _flat(ys: Any, hT: Any, g: Any) -> list[np.ndarray]:
    # copies: a backend may reuse its buffers in a later call
    return flat(ys, hT, g, lambda a: np.array(np.asarray(a)))


def _baseline(cc: Any) -> list[np.ndarray]:
    params, x, h0, dy, dh = _data()
    ys, hT, res = cc.forward_train(params, x, h0)
    return _flat(ys, hT, cc.backward(params, res, [dy], dh))


def _same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert_all_close(got, want, rtol=1e-12, atol=1e-12)


def _lstm(make: Build) -> Any:
    return make(zoo_cell("lstm", I, H, "float64"))


# ---- ownership ----

def test_writing_into_outputs_changes_no_gradient(make: Build) -> None:
    cc = _lstm(make)
    want = _baseline(cc)
    params, x, h0, dy, dh = _data()
    ys, hT, res = cc.forward_train(params, x, h0)
    got_fwd = _flat(ys, hT, cc.backward(params, res, [dy], dh))[:3]
    ys, hT, res = cc.forward_train(params, x, h0)
    for a in list(ys) + list(hT):
        a[...] = 1e3   # the caller reuses its output arrays as scratch
    _same(got_fwd + _flat([], [], cc.backward(params, res, [dy], dh)), want)


def test_mutating_inputs_and_initial_states_after_forward_train_changes_no_gradient(
        make: Build) -> None:
    cc = _lstm(make)
    want = _baseline(cc)
    params, x, h0, dy, dh = _data()
    ys, hT, res = cc.forward_train(params, x, h0)
    x[...] = 7.0   # the caller's next batch lands in the same arrays
    for h in h0:
        h[...] = -3.0
    _same(_flat(ys, hT, cc.backward(params, res, [dy], dh)), want)


def test_backward_uses_the_forwards_parameters_not_the_arrays_mutated_since(make: Build) -> None:
    """The arrays forward_train got are changed in place, then backward is given the original
    values in fresh arrays: the gradients are those of the forward."""
    cc = _lstm(make)
    want = _baseline(cc)
    params, x, h0, dy, dh = _data()
    pristine = {k: v.copy() for k, v in params.items()}
    ys, hT, res = cc.forward_train(params, x, h0)
    for v in params.values():
        v += 0.25
    _same(_flat(ys, hT, cc.backward(pristine, res, [dy], dh)), want)


def test_parameters_updated_in_place_before_backward_change_no_gradient(make: Build) -> None:
    """An optimizer step taken in place between forward_train and backward, backward given the
    same dict: every backend returns the gradients at the forward's values (ref used to
    recompute with the new ones, llvm read the caller's arrays, each a different answer)."""
    cc = _lstm(make)
    want = _baseline(cc)
    params, x, h0, dy, dh = _data()
    ys, hT, res = cc.forward_train(params, x, h0)
    for v in params.values():
        v -= 0.1 * np.sign(v)
    _same(_flat(ys, hT, cc.backward(params, res, [dy], dh)), want)


def test_other_parameter_values_in_backward_are_refused(make: Build) -> None:
    """Arrays other than the forward's, holding other values: the documented error, naming the
    parameter; equal copies are accepted."""
    cc = _lstm(make)
    params, x, h0, dy, dh = _data()
    _, _, res = cc.forward_train(params, x, h0)
    other = {k: v.copy() for k, v in params.items()}
    cc.backward(other, res, [dy], dh)   # equal values in other arrays: fine
    other["W_h"][1, 2] += 1e-3
    with pytest.raises(RuntimeInputError, match=r"parameter 'W_h': expected the arrays "
                                                r"forward_train was given or arrays equal to "
                                                r"them, got other values"):
        cc.backward(other, res, [dy], dh)
    with pytest.raises(RuntimeInputError, match=r"parameter 'b'"):
        cc.backward({**params, "b": params["b"] + 1}, res, [dy], dh)


# ---- residuals ----

def test_residuals_are_read_only(make: Build) -> None:
    cc = _lstm(make)
    params, x, h0, dy, _ = _data()
    _, _, res = cc.forward_train(params, x, h0)
    with pytest.raises(AttributeError):
        res.T = T + 5
    with pytest.raises(AttributeError):
        res.B = B + 1
    assert (res.T, res.B) == (T, B)
    cc.backward(params, res, [dy])


@pytest.mark.parametrize("field,delta", [("_T", 4), ("_T", -1), ("_B", 3), ("_B", -1)])
def test_tampered_sizes_are_refused_not_run(make: Build, field: str, delta: int) -> None:
    """Forcing a size past the read-only guard: the backend checks the arrays against it before
    any native code runs (before this check llvm read and wrote out of bounds)."""
    cc = _lstm(make)
    params, x, h0, _, _ = _data()
    _, _, res = cc.forward_train(params, x, h0)
    object.__setattr__(res, field, getattr(res, field) + delta)
    dy = np.zeros((res.T, res.B, H))
    with pytest.raises(RuntimeInputError, match="residual"):
        cc.backward(params, res, [dy])


def test_residuals_of_another_cell_or_none_are_refused(make: Build) -> None:
    cc, other = _lstm(make), _lstm(make)
    params, x, h0, dy, _ = _data()
    _, _, res = other.forward_train(params, x, h0)
    with pytest.raises(RuntimeInputError, match="residuals must come from forward_train of "
                                                r"this .* \(from another compiled cell\)"):
        cc.backward(params, res, [dy])
    _, _, none = cc.forward_train(params, x, h0, save=False)
    with pytest.raises(RuntimeInputError, match="residuals: expected what forward_train "
                                                "returned third, got None"):
        cc.backward(params, none, [dy])
    with pytest.raises(RuntimeInputError, match="residuals must come from forward_train"):
        cc.backward(params, ([x], [h0]), [dy])


@pytest.mark.parametrize("d_final", [1, 3])
def test_wrong_number_of_final_state_cotangents_is_refused(make: Build, d_final: int) -> None:
    cc = _lstm(make)
    params, x, h0, dy, dh = _data()
    _, _, res = cc.forward_train(params, x, h0)
    with pytest.raises(RuntimeInputError, match=rf"backward: 2 final-state cotangents expected, "
                                                rf"got {d_final} \(d_final: one per state "
                                                r"\['h', 'c'\]"):
        cc.backward(params, res, [dy], (dh * 2)[:d_final])


@pytest.mark.parametrize("shape", [(T + 1, B, H), (T, B + 1, H), (T, B, H + 1), (T * B, H)])
def test_output_cotangents_of_the_wrong_shape_are_refused(make: Build, shape: tuple) -> None:
    cc = _lstm(make)
    params, x, h0, _, _ = _data()
    _, _, res = cc.forward_train(params, x, h0)
    with pytest.raises(RuntimeInputError, match=re.escape(
            f"backward: d_ys[0]: expected shape {(T, B, H)} (T, B, n), got {shape}")):
        cc.backward(params, res, [np.zeros(shape)])
    with pytest.raises(RuntimeInputError, match=r"backward: 1 output cotangents expected, "
                                                r"got 2"):
        cc.backward(params, res, [np.zeros((T, B, H))] * 2)


@pytest.mark.parametrize("shape", [(B + 1, H), (B, H + 1), (1, B, H)])
def test_final_state_cotangents_of_the_wrong_shape_are_refused(make: Build,
                                                              shape: tuple) -> None:
    cc = _lstm(make)
    params, x, h0, dy, _ = _data()
    _, _, res = cc.forward_train(params, x, h0)
    with pytest.raises(RuntimeInputError, match=r"backward: d_final for state 'c': expected "
                                                rf"shape \({B}, {H}\), got"):
        cc.backward(params, res, [dy], [None, np.zeros(shape)])


def test_complex_cotangents_are_refused(make: Build) -> None:
    cc = _lstm(make)
    params, x, h0, dy, _ = _data()
    _, _, res = cc.forward_train(params, x, h0)
    with pytest.raises(RuntimeInputError, match=r"d_ys\[0\]: expected an array .* of a real "
                                                r"number dtype, got ndarray of dtype complex128"):
        cc.backward(params, res, [dy * (1 + 1j)])


# ---- arguments of the wrong kind ----

def _bad_call(cc: Any, what: str) -> None:
    params, x, h0, _, _ = _data()
    if what == "complex input":
        cc.forward(params, x * (1 + 1j), h0)
    elif what == "object input":
        cc.forward(params, x.astype(object), h0)
    elif what == "string input":
        cc.forward(params, x.astype(str), h0)
    elif what == "None input":
        cc.forward(params, [None], h0)
    elif what == "None xs":
        cc.forward(params, None, h0)
    elif what == "ragged input":
        cc.forward(params, [[[[1.0, 2.0, 3.0]], [[1.0]]]], h0)   # one input, ragged
    elif what == "complex state":
        cc.forward(params, x, [h0[0] * 1j, h0[1]])
    elif what == "None state":
        cc.forward(params, x, [h0[0], None])
    elif what == "dict state":
        cc.forward(params, x, {"h": h0[0], "c": h0[1]})
    elif what == "list params":
        cc.forward(list(params.values()), x, h0)
    elif what == "complex param":
        cc.forward({**params, "W_x": params["W_x"] * (1 + 0j)}, x, h0)
    elif what == "object param":
        cc.forward({**params, "b": params["b"].astype(object)}, x, h0)
    elif what == "None param":
        cc.forward({**params, "b": None}, x, h0)
    else:
        raise AssertionError(what)


BAD = {   # what -> the message: the argument, what was expected, what was received
    "complex input": r"input 'x': expected an array \(T, B, 3\) of a real number dtype, got "
                     r"ndarray of dtype complex128 and shape \(3, 2, 3\)",
    "object input": r"input 'x': expected .* real number dtype, got ndarray of dtype object",
    "string input": r"input 'x': expected .* real number dtype, got ndarray of dtype <U",
    "None input": r"input 'x': expected an array \(T, B, 3\), got None",
    "None xs": r"xs: expected 1 input array\(s\) \['x'\], got None",
    "ragged input": r"input 'x': expected an array \(T, B, 3\), got a list numpy cannot read",
    "complex state": r"state 'h': expected an array \(B, 4\) of a real number dtype, got "
                     r"ndarray of dtype complex128",
    "None state": r"state 'c': expected an array \(B, 4\), got None",
    "dict state": r"h0: expected None, an array \(B, n\) or a list of them, one per state "
                  r"\['h', 'c'\], got dict",
    "list params": r"params: expected a dict name -> array \['W_h', 'W_x', 'b'\], got list",
    "complex param": r"parameter 'W_x': expected an array \(3, 16\) of a real number dtype, "
                     r"got ndarray of dtype complex128",
    "object param": r"parameter 'b': expected .* real number dtype, got ndarray of dtype object",
    "None param": r"parameter 'b': expected an array \(1, 16\), got None",
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_arguments_of_the_wrong_kind_are_refused_by_name(make: Build, what: str) -> None:
    cc = _lstm(make)
    with pytest.raises(RuntimeInputError, match=BAD[what]):
        _bad_call(cc, what)


def test_step_names_a_ragged_input(make: Build) -> None:
    cc = _lstm(make)
    params, _x, h0, _, _ = _data()
    with pytest.raises(RuntimeInputError, match=r"step: input 'x': expected an array \(B, n\), "
                                                r"got a list numpy cannot read"):
        cc.step(params, [[[1.0, 2.0, 3.0], [1.0]]], h0)


@pytest.mark.parametrize("ids", [np.float64, np.float32])
def test_float_token_ids_are_refused_even_when_whole(make: Build, ids: type) -> None:
    """Floats used to be truncated to ids without a word (2.7 -> row 2)."""
    cc = make(_embedding_cell("float64"))
    x = np.random.default_rng(0).integers(0, 6, size=(T, B, 1))
    cc.forward(cc.init_params(), x)   # integer ids are fine
    for bad in (x.astype(ids), x + np.asarray(0.7, ids)):
        with pytest.raises(RuntimeInputError, match=r"input .*: expected an array \(T, B, 1\) "
                                                    r"of an integer dtype \(token ids\), got "
                                                    r"ndarray of dtype float.*\.astype"):
            cc.forward(cc.init_params(), bad)


def test_stale_residuals_of_a_captured_graph_are_refused(fake_cupy: Any) -> None:  # noqa: F811
    """cuda_graph=True: the next forward of a shape reuses its buffers, so residuals of the
    forward before it no longer hold what they did."""
    cc = graphrnn.compile(zoo_cell("lstm", I, H, "float64"), "cuda", "float64",
                          cuda_graph=True)
    params, x, h0, dy, _ = _data()
    _, _, old = cc.forward_train(params, x, h0)
    _, _, new = cc.forward_train(params, x * 2, h0)
    with pytest.raises(RuntimeInputError, match="expected those of the latest forward_train "
                                                f"with T={T}, B={B}, got older ones"):
        cc.backward(params, old, [dy])
    cc.backward(params, new, [dy])
    cc.forward(params, x, h0)   # an inference forward of the shape overwrites them too
    with pytest.raises(RuntimeInputError, match="got older ones"):
        cc.backward(params, new, [dy])
