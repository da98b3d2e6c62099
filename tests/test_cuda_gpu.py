"""The ``cuda`` backend on a real GPU (marked ``gpu``; skipped cleanly without CuPy and a GPU):
every zoo cell equals ``ref`` forward and backward (float64 1e-9, float32 1e-4), with and
without CUDA graphs, bit-identical across runs; LSTM and GRU equal cuDNN through torch."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TOL, assert_all_close, assert_all_equal, cotangents, flat, sequences

import graphrnn
from graphrnn.cells import SQUARE_INPUT, ZOO, zoo_cell


def _gpu_or_skip():
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no GPU")
    except Exception as e:  # noqa: BLE001 - CuPy raises its own runtime errors
        pytest.skip(f"no usable GPU: {e}")
    pytest.importorskip("graphrnn.schedule")
    return cp


pytestmark = pytest.mark.gpu


def _flat(cp, ys, hT, g):
    return flat(ys, hT, g, lambda v: cp.asnumpy(v) if isinstance(v, cp.ndarray) else
                np.asarray(v))


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_cuda_equals_ref(name, dtype, graph):
    cp = _gpu_or_skip()
    I, H = (37, 37) if name in SQUARE_INPUT else (19, 37)   # noqa: E741 - H not a block multiple
    cell = zoo_cell(name, I, H, dtype)
    ref = graphrnn.compile(cell, "ref", dtype)
    cc = graphrnn.compile(cell, "cuda", dtype, cuda_graph=graph)
    params = ref.init_params(seed=0, scale=0.3)
    for T, B in ((5, 1), (4, 3)):
        _equals_ref_twice_alike(cp, ref, cc, params, T, B, TOL[dtype])


def _equals_ref_twice_alike(cp, ref, cc, params, T, B, tol):
    """Two runs of ``cc`` (forward_train + backward) equal ``ref`` within ``tol``, and each
    other bit for bit."""
    rng = np.random.default_rng(T)
    xs, h0 = sequences(ref, T, B, rng)
    dys, dhT = cotangents(ref, T, B, rng)
    ys, hT, res = ref.forward_train(params, xs, h0)
    want = _flat(cp, ys, hT, ref.backward(params, res, dys, dhT))
    runs = []
    for _ in range(2):
        ys2, hT2, res2 = cc.forward_train(params, xs, h0)
        assert isinstance(ys2[0], cp.ndarray)
        runs.append(_flat(cp, ys2, hT2, cc.backward(params, res2, dys, dhT)))
    assert_all_close(runs[0], want, **tol)
    assert_all_equal(runs[1], runs[0], "two runs differ: a reduction is not deterministic")


def test_torch_tensors_in_without_copies():
    cp = _gpu_or_skip()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    cell = zoo_cell("lstm", 8, 16, "float32")
    cc = graphrnn.compile(cell, "cuda", "float32")
    params = {k: torch.from_numpy(v).cuda() for k, v in cc.init_params(seed=1).items()}
    xs = torch.randn(3, 2, 8, device="cuda")
    ys, _ = cc.forward(params, xs)
    ref = graphrnn.compile(cell, "ref", "float32")
    want, _ = ref.forward({k: v.cpu().numpy() for k, v in params.items()}, xs.cpu().numpy())
    np.testing.assert_allclose(cp.asnumpy(ys[0]), want[0], **TOL["float32"])
    back = torch.from_dlpack(ys[0])
    assert back.device.type == "cuda"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_matches_cudnn_with_converted_weights(kind):
    cp = _gpu_or_skip()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    from graphrnn import convert
    T, B, I, H = 7, 3, 10, 37   # noqa: E741
    torch.manual_seed(0)
    m = (torch.nn.LSTM(I, H) if kind == "lstm" else torch.nn.GRU(I, H)).cuda().double()
    if kind == "lstm":
        cell, params = zoo_cell("lstm", I, H, "float64"), convert.lstm_from_torch(m.state_dict())
    else:
        cell = zoo_cell("gru_torch", I, H, "float64")
        params = convert.gru_torch_from_torch(m.state_dict())
    xs = torch.randn(T, B, I, device="cuda", dtype=torch.float64, requires_grad=True)
    h0 = [0.5 * torch.randn(1, B, H, device="cuda", dtype=torch.float64)
          for _ in range(2 if kind == "lstm" else 1)]
    for h in h0:
        h.requires_grad_()
    out, fin = m(xs, tuple(h0) if kind == "lstm" else h0[0])
    fin = list(fin) if kind == "lstm" else [fin]
    cy = torch.randn_like(out)
    ch = [torch.randn_like(f) for f in fin]
    (out * cy).sum().add(sum((f * c).sum() for f, c in zip(fin, ch))).backward()
    cc = graphrnn.compile(cell, "cuda", "float64")
    ys, hT, res = cc.forward_train(params, xs.detach(), [h.detach()[0] for h in h0])
    g = cc.backward(params, res, cy, [c[0] for c in ch])

    def close(a, b):
        np.testing.assert_allclose(cp.asnumpy(a), b.detach().cpu().numpy(), **TOL["float64"])

    close(ys[0], out)
    for a, b in zip(hT, fin):
        close(a, b[0])
    close(g.inputs[0], xs.grad)
    for a, b in zip(g.states, h0):
        close(a, b.grad[0])
    close(g.params["W_h"], m.weight_hh_l0.grad.T)


@pytest.mark.parametrize("graph", [False, True])
def test_tf32_gemms_stay_within_tf32_precision(graph):
    """``tf32=True`` runs the GEMMs on tensor cores: an LSTM's outputs and gradients stay
    within TF32's precision of the float32 reference, and runs are still bit-identical."""
    cp = _gpu_or_skip()
    cell = zoo_cell("lstm", 64, 96, "float32")
    ref = graphrnn.compile(cell, "ref", "float32")
    cc = graphrnn.compile(cell, "cuda", "float32", cuda_graph=graph, tf32=True)
    _equals_ref_twice_alike(cp, ref, cc, ref.init_params(seed=0, scale=0.3), 6, 8,
                            dict(rtol=2e-2, atol=2e-2))


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell_file", ["layer_norm_lstm.eq", "cells/esn.eq"])
def test_row_kernels_and_frozen_cells_equal_ref(cell_file, dtype, graph):
    """The layer-norm LSTM's row kernels (a warp per row, shuffle reductions) and a cell with a
    frozen matrix, at batch sizes that leave partial warps and blocks."""
    from pathlib import Path

    from frontends.equations import parse_file
    cp = _gpu_or_skip()
    cell = parse_file(Path(__file__).parents[1] / "examples" / cell_file, dtype=dtype)
    ref = graphrnn.compile(cell, "ref", dtype)
    cc = graphrnn.compile(cell, "cuda", dtype, cuda_graph=graph)
    params = ref.init_params(seed=0, scale=0.3)
    for T, B in ((5, 1), (3, 37)):
        _equals_ref_twice_alike(cp, ref, cc, params, T, B, TOL[dtype])


def test_torch_bridge_on_cuda_tensors():
    """graphrnn.torch.Module on the cuda backend with CUDA tensors equals torch.nn.LSTM after
    loading its state_dict: outputs, final states and every gradient."""
    _gpu_or_skip()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    bridge_equals_nn_lstm(torch, "cuda", "cuda")


def bridge_equals_nn_lstm(torch, backend, device):
    import graphrnn.torch as gt
    torch.manual_seed(0)
    ref = torch.nn.LSTM(8, 16, num_layers=2).double().to(device)
    mod = gt.Module("lstm", input_size=8, hidden_size=16, num_layers=2, backend=backend,
                    dtype="float64")
    mod.load_state_dict(ref.state_dict())
    mod = mod.to(device)
    x = torch.randn(5, 3, 8, dtype=torch.float64, device=device, requires_grad=True)
    y1, (h1, c1) = ref(x)
    y2, (h2, c2) = mod(x)
    for a, b in ((y1, y2), (h1, h2), (c1, c2)):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    names = [n for n, _ in ref.named_parameters()]
    mine = dict(mod.named_parameters())
    g1 = torch.autograd.grad(y1.square().sum(), [x, *ref.parameters()])
    g2 = torch.autograd.grad(y2.square().sum(), [x, *(mine[n] for n in names)])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-9)
