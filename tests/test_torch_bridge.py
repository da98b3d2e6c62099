"""graphrnn.torch: the custom op's gradients (gradcheck, float64, every zoo cell), the Module
against nn.LSTM / nn.GRU / nn.RNN (state dicts both ways, forward and gradients, stacked,
bidirectional, packed and padded sequences), torch.compile without a graph break, the residual
table's lifetime, zero-copy views and the errors. Skipped where torch is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import graphrnn  # noqa: E402
import graphrnn.torch as gt  # noqa: E402
from graphrnn.cells import SQUARE_INPUT, ZOO, zoo_cell  # noqa: E402
from graphrnn.errors import RuntimeInputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
T, B, I, H = 5, 2, 3, 4
F64 = torch.float64


def test_import_graphrnn_does_not_import_torch():
    code = ("import sys, graphrnn, graphrnn.cells, graphrnn.model, graphrnn.train\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@pytest.fixture(scope="module")
def compiled64():
    cache = {}

    def get(name, backend="llvm"):
        if (name, backend) not in cache:
            i = H if name in SQUARE_INPUT else I
            cache[name, backend] = graphrnn.compile(zoo_cell(name, i, H, "float64"),
                                                    backend=backend, dtype="float64")
        return cache[name, backend]
    return get


def _leaves(cc, seed):
    rng = np.random.default_rng(seed)
    params = {k: torch.tensor(v, requires_grad=True)
              for k, v in cc.init_params(seed=seed, scale=0.5).items()}
    i = int(cc.cell.inputs[0].shape[1])
    x = torch.tensor(rng.standard_normal((T, B, i)), requires_grad=True)
    h0 = [torch.tensor(rng.uniform(-0.8, 0.8, (B, H)), requires_grad=True)
          for _ in cc.cell.states]
    return params, x, h0


@pytest.mark.parametrize("name", sorted(ZOO))
def test_gradcheck_every_zoo_cell(name, compiled64):
    """torch.autograd.gradcheck (float64 finite differences against the registered backward)
    with respect to the inputs, the initial states and every parameter at once, on llvm."""
    cc = compiled64(name)
    params, x, h0 = _leaves(cc, sum(map(ord, name)))
    names = list(params)

    def f(x, *rest):
        hs, ps = rest[:len(h0)], rest[len(h0):]
        ys, hT = gt.run(cc, dict(zip(names, ps)), x, list(hs))
        return (*ys, *hT)

    assert torch.autograd.gradcheck(f, (x, *h0, *params.values()), eps=1e-6, atol=1e-7,
                                    rtol=1e-6)


def test_run_matches_the_compiled_cell_and_the_ref_backend(compiled64):
    cc, ref = compiled64("peephole_lstm"), compiled64("peephole_lstm", "ref")
    params, x, h0 = _leaves(cc, 3)
    ys, hT = gt.run(cc, params, x, h0)
    np_params = {k: v.detach().numpy() for k, v in params.items()}
    ys_r, hT_r = ref.forward(np_params, x.detach().numpy(), [h.detach().numpy() for h in h0])
    np.testing.assert_allclose(ys[0].detach().numpy(), ys_r[0], rtol=1e-10, atol=1e-12)
    for a, b in zip(hT, hT_r):
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(0)
    cy, ch = rng.standard_normal(ys_r[0].shape), [rng.standard_normal(h.shape) for h in hT_r]
    loss = (ys[0] * torch.tensor(cy)).sum() + sum((h * torch.tensor(c)).sum()
                                                  for h, c in zip(hT, ch))
    loss.backward()
    _, _, res = ref.forward_train(np_params, x.detach().numpy(), [h.detach().numpy()
                                                                    for h in h0])
    g = ref.backward(np_params, res, [cy], ch)
    for k in params:
        np.testing.assert_allclose(params[k].grad.numpy(), g.params[k], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(x.grad.numpy(), g.inputs[0], rtol=1e-9, atol=1e-11)


def test_residuals_live_until_backward_and_no_grad_keeps_none(compiled64):
    cc = compiled64("lstm")
    params, x, h0 = _leaves(cc, 1)
    before = len(gt._RESIDUALS)
    ys, hT = gt.run(cc, params, x, h0)
    assert len(gt._RESIDUALS) == before + 1
    ys[0].sum().backward()
    del ys, hT
    assert len(gt._RESIDUALS) == before            # freed with the graph after backward
    ys, _ = gt.run(cc, params, x, h0)
    del ys, _
    assert len(gt._RESIDUALS) == before            # a graph dropped without backward
    with torch.no_grad():
        gt.run(cc, params, x, h0)
    assert len(gt._RESIDUALS) == before            # nothing saved without grad


def test_retain_graph_allows_a_second_backward(compiled64):
    cc = compiled64("gru_torch")
    params, x, h0 = _leaves(cc, 2)
    ys, _ = gt.run(cc, params, x, h0)
    ys[0].sum().backward(retain_graph=True)
    g1 = params["W_h"].grad.clone()
    ys[0].sum().backward()
    torch.testing.assert_close(params["W_h"].grad, 2 * g1)


def test_double_backward_raises_a_clear_error(compiled64):
    cc = compiled64("rnn_tanh")
    params, x, h0 = _leaves(cc, 4)
    ys, _ = gt.run(cc, params, x, h0)
    (gx,) = torch.autograd.grad(ys[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        gx.sum().backward()


def test_cpu_tensors_reach_the_backend_as_views():
    w = torch.randn(6, 4, dtype=F64)
    a = gt._to_backend(w.t())            # a transposed weight: a strided view, no copy
    assert np.shares_memory(a, w.numpy()) and a.shape == (4, 6)
    arr = np.ones((3, 2))
    assert np.shares_memory(gt._to_tensor(arr).numpy(), arr)


def test_run_errors_name_the_argument(compiled64):
    cc = compiled64("lstm")
    params, x, h0 = _leaves(cc, 5)
    with pytest.raises(RuntimeInputError, match=r"input 'x': expected shape \(\?, \?, 3\), "
                                                r"got \(5, 2, 7\)"):
        gt.run(cc, params, torch.zeros(T, B, 7, dtype=F64), h0)
    with pytest.raises(RuntimeInputError, match="input 'x': expected dtype torch.float64"):
        gt.run(cc, params, x.float(), h0)
    with pytest.raises(RuntimeInputError, match=r"state 'c': expected shape \(2, 4\)"):
        gt.run(cc, params, x, [h0[0], torch.zeros(3, 4, dtype=F64)])
    with pytest.raises(RuntimeInputError, match="missing parameter 'b'"):
        gt.run(cc, {k: v for k, v in params.items() if k != "b"}, x, h0)
    with pytest.raises(RuntimeInputError, match=r"parameter 'W_h': expected shape \(4, 16\)"):
        gt.run(cc, {**params, "W_h": params["W_h"].t()}, x, h0)
    with pytest.raises(RuntimeInputError, match="takes 1 inputs"):
        gt.run(cc, params, [x, x], h0)


# ---- the Module against PyTorch's own ----

TORCH_RNNS = {"lstm": "LSTM", "gru_torch": "GRU", "rnn_tanh": "RNN"}


def _pair(name, **kw):
    torch.manual_seed(0)
    ref = getattr(torch.nn, TORCH_RNNS[name])(I, H, **kw).double()
    mod = gt.Module(name, I, H, dtype="float64", **kw)
    assert list(mod.state_dict()) == list(ref.state_dict())
    assert all(a.shape == b.shape for a, b in zip(mod.state_dict().values(),
                                                  ref.state_dict().values()))
    mod.load_state_dict(ref.state_dict())
    return ref, mod


def _grads(model, loss, extra):
    return torch.autograd.grad(loss, [*extra, *model.parameters()], retain_graph=True)


@pytest.mark.parametrize("name", sorted(TORCH_RNNS))
@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True},
                                {"num_layers": 3, "batch_first": True}])
def test_module_equals_pytorch_after_loading_its_state_dict(name, kw):
    ref, mod = _pair(name, **kw)
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    shape = (B, T, I) if kw.get("batch_first") else (T, B, I)
    x = torch.randn(shape, dtype=F64, requires_grad=True)
    n_states = 2 if name == "lstm" else 1
    st = [torch.randn(L * D, B, H, dtype=F64, requires_grad=True) for _ in range(n_states)]
    arg = tuple(st) if n_states == 2 else st[0]
    y1, f1 = ref(x, arg)
    y2, f2 = mod(x, arg)
    torch.testing.assert_close(y2, y1, rtol=1e-10, atol=1e-12)
    f1 = f1 if isinstance(f1, tuple) else (f1,)
    f2 = f2 if isinstance(f2, tuple) else (f2,)
    for a, b in zip(f2, f1):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    w = torch.randn(y1.shape, dtype=F64)

    def loss(y, f):
        return (y * w).sum() + sum((s ** 2).sum() for s in f)
    g1 = _grads(ref, loss(y1, f1), [x, *st])
    g2 = _grads(mod, loss(y2, f2), [x, *st])
    for a, b in zip(g2, g1):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_state_dict_loads_into_nn_lstm():
    torch.manual_seed(1)
    mod = gt.Module("lstm", I, H, num_layers=2, bidirectional=True, dtype="float64")
    ref = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True).double()
    ref.load_state_dict(mod.state_dict())
    x = torch.randn(T, B, I, dtype=F64)
    torch.testing.assert_close(mod(x)[0], ref(x)[0], rtol=1e-10, atol=1e-12)


def test_packed_and_padded_sequences_equal_nn_lstm():
    ref, mod = _pair("lstm", num_layers=2, bidirectional=True)
    lens = torch.tensor([5, 2, 4])
    x = torch.randn(T, 3, I, dtype=F64, requires_grad=True)
    pk = pack_padded_sequence(x, lens, enforce_sorted=False)
    o1, (h1, c1) = ref(pk)
    o2, (h2, c2) = mod(pk)
    assert torch.equal(o2.batch_sizes, o1.batch_sizes)
    assert torch.equal(o2.sorted_indices, o1.sorted_indices)
    torch.testing.assert_close(o2.data, o1.data, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h2, h1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c2, c1, rtol=1e-10, atol=1e-12)
    g1 = _grads(ref, (o1.data ** 2).sum() + c1.sum(), [x])
    g2 = _grads(mod, (o2.data ** 2).sum() + c2.sum(), [x])
    for a, b in zip(g2, g1):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    # the same batch padded, with lengths=: outputs past each end are 0, final states equal
    y3, (h3, c3) = mod(x, lengths=lens)
    assert torch.all(y3[2:, 1] == 0) and torch.all(y3[4:, 2] == 0)
    torch.testing.assert_close(h3, h1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c3, c1, rtol=1e-10, atol=1e-12)


def test_torch_compile_without_a_graph_break():
    torch.manual_seed(2)
    mod = gt.Module("gru_torch", I, H, num_layers=2, bidirectional=True, dtype="float64")
    x = torch.randn(T, B, I, dtype=F64)
    lens = torch.tensor([5, 3])
    explained = torch._dynamo.explain(mod)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    for kw in ({}, {"lengths": lens}):
        y0, h0 = mod(x, **kw)
        g0 = torch.autograd.grad(y0.sum() + h0.sum(), list(mod.parameters()))
        compiled = torch.compile(mod, fullgraph=True, backend="aot_eager")
        y1, h1 = compiled(x, **kw)
        g1 = torch.autograd.grad(y1.sum() + h1.sum(), list(mod.parameters()))
        torch.testing.assert_close(y1, y0)
        torch.testing.assert_close(h1, h0)
        for a, b in zip(g1, g0):
            torch.testing.assert_close(a, b)


def test_module_errors_are_clear():
    mod = gt.Module("lstm", I, H, num_layers=2)
    with pytest.raises(RuntimeInputError, match=r"input: expected shape \(\?, \?, 3\), got "
                                                r"\(5, 2, 6\)"):
        mod(torch.zeros(T, B, 6))
    with pytest.raises(RuntimeInputError, match="input: expected dtype torch.float32"):
        mod(torch.zeros(T, B, I, dtype=F64))
    with pytest.raises(RuntimeInputError, match=r"state 'h': expected shape \(2, 2, 4\)"):
        mod(torch.zeros(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, B, H)))
    with pytest.raises(RuntimeInputError, match="has 2 states"):
        mod(torch.zeros(T, B, I), torch.zeros(2, B, H))
    with pytest.raises(RuntimeInputError, match=r"lengths: expected values in \[1, 5\]"):
        mod(torch.zeros(T, B, I), lengths=[6, 2])
    with pytest.raises(ValueError, match="needs input_size and hidden_size"):
        gt.Module("lstm")


# ---- any cell: layouts, equations, graphrnn's own parameters ----

EQ = """
input x: 3
state h: 4
z = sigmoid(W_z @ x + U_z @ h + b_z)
h_next = (1 - z) * h + z * tanh(W_h @ x + U_h @ (z * h) + b_h)
output h_next
"""


def test_layouts_follow_pytorch_out_in():
    import graphrnn.equations as eqs
    mod = gt.Module(eqs.cell_from_equations(EQ), dtype="float64")
    shapes = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
    # written W @ x: already (out, in); biases (n,)
    assert shapes == {"W_z_l0": (4, 3), "U_z_l0": (4, 4), "b_z_l0": (4,), "W_h_l0": (4, 3),
                      "U_h_l0": (4, 4), "b_h_l0": (4,)}
    zoo = gt.Module("peephole_lstm", I, H)
    shapes = {k: tuple(v.shape) for k, v in zoo.state_dict().items()}
    # the zoo's x @ W (in, out) weights are stored transposed; peepholes (1, H) as (H,)
    assert shapes["W_x_l0"] == (4 * H, I) and shapes["W_h_l0"] == (4 * H, H)
    assert shapes["b_l0"] == (4 * H,) and shapes["p_o_l0"] == (H,)


@pytest.mark.parametrize("source", ["equations", "mrnn"])
def test_module_equals_the_compiled_cell_with_its_params(source):
    import graphrnn.equations as eqs
    cell = eqs.cell_from_equations(EQ) if source == "equations" else zoo_cell("mrnn", I, H)
    cc = graphrnn.compile(cell, backend="ref", dtype="float64")
    params = cc.init_params(seed=3, scale=0.5)
    mod = gt.Module(cell, dtype="float64")
    mod.load_cell_params(params)
    for k, v in mod.cell_params().items():
        np.testing.assert_array_equal(v, params[k])
    x = np.random.default_rng(0).standard_normal((T, B, I))
    ys, hT = cc.forward(params, x)
    y, h = mod(torch.tensor(x))
    np.testing.assert_allclose(y.detach().numpy(), ys[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h[0].detach().numpy(), hT[0], rtol=1e-10, atol=1e-12)


def test_stacking_a_cell_needs_a_maker_when_sizes_differ():
    import graphrnn.equations as eqs
    with pytest.raises(ValueError, match="pass a zoo name or a callable"):
        gt.Module(eqs.cell_from_equations(EQ), num_layers=2)
    mod = gt.Module(lambda n: eqs.cell_from_equations(EQ.replace("x: 3", f"x: {n}")),
                    input_size=3, num_layers=2, bidirectional=True)
    y, h = mod(torch.randn(T, B, 3))
    assert y.shape == (T, B, 8) and h.shape == (4, B, 4)


def test_double_precision_by_module_double():
    mod = gt.Module("lstm", I, H).double()
    y, _ = mod(torch.randn(T, B, I, dtype=F64))
    assert y.dtype == F64


# ---- thread policy (graphrnn.threads) ----

@pytest.fixture
def two_torch_threads():
    import graphrnn.threads as th
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield th
    torch.set_num_threads(n)
    th.set_policy("auto")


def test_thread_policies_compute_the_same_step(two_torch_threads, monkeypatch):
    """Every policy gives the same outputs and gradients; "auto" (the default for PyTorch) runs
    the native calls on PyTorch's OpenMP pool (``GOMP_parallel``), the others do not."""
    import codegen.llvm_threads as lt
    th = two_torch_threads
    if lt.openmp_pool() is None:
        pytest.skip("this torch build has no libgomp (its OpenMP pool is not GNU's)")
    calls = []
    real = lt.run_on_openmp
    monkeypatch.setattr(lt, "run_on_openmp", lambda jobs: (calls.append(len(jobs)),
                                                           real(jobs))[1])
    torch.manual_seed(3)
    mod = gt.Module("lstm", 64, 64, dtype="float64")
    x = torch.randn(20, 16, 64, dtype=F64)
    results = {}
    for name in ("auto", "own", "openmp", "shrink"):
        th.set_policy(name)
        calls.clear()
        y, (h, c) = mod(x)
        g = torch.autograd.grad((y ** 2).sum() + c.sum(), list(mod.parameters()))
        results[name] = (y, *g)
        assert calls == ([2, 2] if name in ("auto", "openmp") else []), name
    assert torch.get_num_threads() == 2            # "shrink" gave torch its threads back
    for name, res in results.items():
        for a, b in zip(res, results["own"]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_thread_policy_arguments_are_checked():
    import graphrnn.threads as th
    with pytest.raises(ValueError, match="thread policy must be one of"):
        th.set_policy("spin")
    with pytest.raises(ValueError, match="threads must be a positive int"):
        th.set_policy("own", threads=0)
    th.set_policy("own", threads=1, framework="torch")
    assert th.resolve("torch", 2) == th.Policy("own", 1)
    assert th.resolve("jax", 2) == th.Policy("own", None)
    th.set_policy("auto")
    assert th.resolve("torch", 2) == th.Policy("openmp", 2)


# ---- the example and the char-LM parity script run end to end ----

def _load(path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"bridge_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_torch_module_trains(capsys):
    mod = _load(ROOT / "examples" / "torch_module.py")
    assert mod.main(["--epochs", "2", "--train-size", "256", "--hidden", "8",
                     "--seq-len", "8"]) == 0
    out = capsys.readouterr().out
    assert "Module(ln_gru, 2, 8" in out and "trained 2 epochs" in out
    first, last = (float(v) for v in out.split("validation MSE ")[-1].split(" -> "))
    assert last < first


def test_quality_script_compares_bridge_and_trainer(tmp_path, corpus, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        mod = _load(ROOT / "benchmarks" / "quality_torch_bridge.py")
        rc = mod.main(["--data", str(corpus), "--steps", "4", "--eval-every", "2",
                       "--val-batches", "2", "--hidden", "16", "--batch", "4", "--seq-len", "8",
                       "--dropout", "0", "--out", str(tmp_path / "q")])
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = capsys.readouterr().out
    assert rc == 0, out
    # without dropout the two runs differ only by float32 rounding
    worst = float(out.split("largest |val difference| at equal steps: ")[1].split()[0])
    assert worst < 1e-3


# ---- DistributedDataParallel (gloo, 2 processes on localhost) ----

def test_ddp_gradients_equal_one_process_on_the_concatenated_batch(tmp_path):
    """examples/torch_ddp.py's worker on 2 spawned ranks: after one step each rank holds the
    gradient of the mean loss over the global batch, as one process computes it here, and
    after 3 AdamW steps both ranks hold the same parameters as each other."""
    import torch.distributed as dist
    import torch.multiprocessing as mp
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    world, per_rank = 2, 4
    # the spawned ranks import the example by name: sys.path travels with spawn
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import torch_ddp as ex
        mp.spawn(ex.worker, args=(world, ex.free_port(), 3, per_rank, 1, str(tmp_path)),
                 nprocs=world, join=True)
    finally:
        sys.path.remove(str(ROOT / "examples"))
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(world)]
    model = ex.make_model()
    x, y = ex.global_batch(0, per_rank * world)
    torch.nn.functional.mse_loss(model(x), y).backward()
    for k, p in model.named_parameters():
        for r in range(world):
            np.testing.assert_allclose(ranks[r][f"grad/{k}"], p.grad.numpy(), rtol=1e-5,
                                       atol=1e-6, err_msg=f"rank {r}: {k}")
        np.testing.assert_array_equal(ranks[1][f"param/{k}"], ranks[0][f"param/{k}"])
