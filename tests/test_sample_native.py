"""The llvm backend's native generation loop (``codegen.llvm_generate``) against the Python step
path of ``graphrnn.sample.generate``: argmax text identical, draws from the documented SplitMix64
stream, the sampled distribution (chi-square), priming, carried state, fallbacks and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphrnn.data import Vocab
from graphrnn.errors import BackendError, RuntimeInputError
from graphrnn.model import RNNModel, stack
from graphrnn.sample import generate

pytest.importorskip("llvmlite")
from codegen.llvm_generate import NativeGenerator, generator_for, splitmix64, uniform  # noqa: E402

LN_LSTM = "examples/layer_norm_lstm.eq"


def _vocab(n: int) -> Vocab:
    return Vocab([chr(97 + i) for i in range(n - 1)] + ["\n"])


def _model(cells: object, V: int, dtype: str = "float32", input: str = "onehot",  # noqa: A002
           embed: int | None = None, backend: str = "llvm") -> RNNModel:
    return RNNModel(cells, n_classes=V, vocab_size=V, input=input, embed_size=embed,
                    backend=backend, dtype=dtype)  # type: ignore[arg-type]


def _ln_lstm(dtype: str) -> object:
    from graphrnn.tools.cli_tools import equations_cell
    with open(LN_LSTM) as f:
        return equations_cell(f.read(), "layer_norm_lstm.eq", 16, 32, dtype,
                              ("the vocabulary", "--hidden-size"))


def _assert_same_argmax(model: RNNModel, params: dict, vocab: Vocab, prime: str, n: int,
                        exact: bool) -> None:
    """The native argmax text against the Python path, token by token. ``exact``: identical;
    else a token may differ only where the Python path's two best logits are a tie within
    float32 rounding (the GEMVs sum in another order than the BLAS), and the texts part there."""
    got = generate(model, params, vocab, n, prime=prime, argmax=True, native=True)
    want = generate(model, params, vocab, n, prime=prime, argmax=True, native=False)
    if exact or got == want:
        assert got == want
        return
    k = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
    state = None
    logits = None
    for i in vocab.encode(list(prime) + list(want[:k])):
        logits, state = model.step(params, np.array([i]), state)
    z = logits[0].astype(np.float64)
    gap = z[vocab.index[want[k]]] - z[vocab.index[got[k]]]
    assert 0 <= gap <= 1e-5 * max(1.0, float(np.abs(z).max())), (k, gap)


# ---- argmax: the Python path's text ----

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "indrnn", "peephole_lstm"])
def test_argmax_text_is_the_python_paths(cell, dtype):
    V = 16
    model = _model(stack(cell, 2, V, 24, dtype=dtype), V, dtype)
    params = model.init_params(1, scale=0.6)
    _assert_same_argmax(model, params, _vocab(V), "abc", 300, exact=dtype == "float64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_argmax_with_embedding_and_mixed_layers(dtype):
    from graphrnn.cells import zoo_cell
    V = 20
    cells = [zoo_cell("lstm", 8, 32, dtype), zoo_cell("gru", 32, 16, dtype)]
    model = _model(cells, V, dtype, input="embedding", embed=8)
    params = model.init_params(2, scale=0.6)
    _assert_same_argmax(model, params, _vocab(V), "", 300, exact=dtype == "float64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_argmax_with_products_by_a_transposed_weight_and_row_reductions(dtype):
    """``W_x @ x`` is ``x @ W_xᵀ`` (the GEMV's dot-product form); layer_norm reduces rows."""
    model = _model([_ln_lstm(dtype)], 16, dtype)
    assert any(getattr(s, "trans_b", False) for _ph, steps in
               model.layers[0].fwd.program.forward.phases() for s in steps)
    params = model.init_params(3, scale=0.6)
    _assert_same_argmax(model, params, _vocab(16), "ab", 300, exact=dtype == "float64")


def test_charrnn_lstm_of_the_main_job():
    from graphrnn.tools.train_charlm import build_model
    V = 40
    model = build_model({"cell": "nngraph-lstm", "layers": 2, "hidden": 64, "vocab_size": V,
                         "embed": 0, "backend": "llvm", "dtype": "float32"})
    params = model.init_params(0, scale=0.5)
    _assert_same_argmax(model, params, _vocab(V), "def", 400, exact=False)


# ---- sampling ----

def _fixed_logits_model(logits: np.ndarray, dtype: str = "float32") -> tuple[RNNModel, dict]:
    """A model whose logits are ``logits`` at every step (head.W = 0): draws are independent."""
    V = len(logits)
    model = _model(stack("gru", 1, V, 8, dtype=dtype), V, dtype)
    params = model.init_params(0)
    params["head.W"][...] = 0
    params["head.b"][...] = logits
    return model, params


def _draws(model: RNNModel, params: dict, n: int, temperature: float, seed: int) -> list[int]:
    g = generator_for(model)
    assert g is not None
    return g.run(params, [0], n, temperature=temperature, seed=seed)


def _chi2(counts: np.ndarray, p: np.ndarray) -> float:
    e = p * counts.sum()
    return float(((counts - e) ** 2 / e).sum())


CHI2_7_P1E4 = 29.88   # the chi-square distribution's 1 - 1e-4 quantile with 7 degrees of freedom


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_draws_follow_softmax_with_temperature(temperature):
    z = np.array([1.0, 0.0, -1.0, 2.0, 0.5, 0.5, -3.0, 1.5])
    model, params = _fixed_logits_model(z)
    n = 40_000
    counts = np.bincount(_draws(model, params, n, temperature, seed=7), minlength=len(z))
    zf = params["head.b"].astype(np.float64) / temperature
    p = np.exp(zf - zf.max())
    p /= p.sum()
    assert _chi2(counts, p) < CHI2_7_P1E4
    # the test can tell a wrong temperature apart
    q = np.exp(params["head.b"].astype(np.float64) - zf.max() * temperature)
    q /= q.sum()
    if temperature != 1.0:
        assert _chi2(counts, q) > 10 * CHI2_7_P1E4


def test_draws_are_splitmix64s_stream():
    """Draw i picks the first token whose running sum of exp(z/T - max) passes uniform(seed, i)
    times the total: recomputed here in Python (math.exp is the same libm exp)."""
    z = np.array([0.3, -1.2, 2.0, 0.0, 1.1], np.float32)
    model, params = _fixed_logits_model(z)
    temperature, seed = 0.8, 12345
    got = _draws(model, params, 500, temperature, seed)
    zt = [float(v) / temperature for v in z]
    m = max(zt)
    w = [math.exp(v - m) for v in zt]
    total = 0.0
    for v in w:
        total += v
    want = []
    for i in range(500):
        target, run = uniform(seed, i) * total, 0.0
        for j, v in enumerate(w):
            run += v
            if target < run:
                want.append(j)
                break
    assert got == want
    # SplitMix64's published first output for seed 0 (e.g. Vigna's splitmix64.c)
    assert splitmix64(0, 0) == 0xE220A8397B1DCDAF


def test_seeds_reproduce_and_differ():
    V = 16
    model = _model(stack("lstm", 2, V, 32), V)
    params = model.init_params(4, scale=0.8)
    vocab = _vocab(V)
    a = generate(model, params, vocab, 200, prime="ab", temperature=1.0, seed=5)
    assert a == generate(model, params, vocab, 200, prime="ab", temperature=1.0, seed=5)
    assert a != generate(model, params, vocab, 200, prime="ab", temperature=1.0, seed=6)
    assert len(a) == 200
    # the default path on llvm is the native one
    assert a == generate(model, params, vocab, 200, prime="ab", temperature=1.0, seed=5,
                         native=True)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_two_threads_give_one_threads_text(cell):
    """Each thread computes its columns of every GEMV; a column's sum is the same either way."""
    V = 16
    model = _model(stack(cell, 2, V, 40), V)
    params = model.init_params(6, scale=0.6)
    one, two = NativeGenerator(model, threads=1), NativeGenerator(model, threads=2)
    assert one.run(params, [1, 2], 300, argmax=True) == two.run(params, [1, 2], 300, argmax=True)
    assert one.run(params, [1], 300, seed=9) == two.run(params, [1], 300, seed=9)


# ---- priming and state ----

def test_prime_equals_state_carried_from_the_prime():
    V = 16
    model = _model(stack("lstm", 2, V, 24, dtype="float64"), V, "float64")
    params = model.init_params(5, scale=0.6)
    vocab = _vocab(V)
    g = generator_for(model)
    assert g is not None
    ids = list(vocab.encode(list("abcd")))
    state = None
    for i in ids[:-1]:
        _, state = model.step(params, np.array([i]), state)
    with_state = g.run(params, ids[-1:], 100, argmax=True, state=state)
    assert with_state == g.run(params, ids, 100, argmax=True)
    # the state is used: from zeros, the same last token samples other text
    assert g.run(params, ids[-1:], 100, seed=3, state=state) != \
        g.run(params, ids[-1:], 100, seed=3)


def test_length_zero_and_prime_only():
    V = 16
    model = _model(stack("gru", 1, V, 8), V)
    params = model.init_params(0)
    assert generate(model, params, _vocab(V), 0, prime="abc", native=True) == ""


# ---- fallbacks and errors ----

def test_non_finite_parameters_take_the_python_path():
    V = 12
    model = _model(stack("gru", 1, V, 8, dtype="float64"), V, "float64")
    params = model.init_params(0)
    name = next(k for k in params if k.startswith("l0.") and params[k].ndim == 2)
    params[name][0, 0] = np.inf
    vocab = _vocab(V)
    assert generate(model, params, vocab, 20, argmax=True) == \
        generate(model, params, vocab, 20, argmax=True, native=False)
    with pytest.raises(ValueError, match="native=True"):
        generate(model, params, vocab, 5, native=True)


def test_models_without_a_native_loop():
    V = 12
    ref = _model(stack("gru", 1, V, 8), V, backend="ref")
    with pytest.raises(ValueError, match="no native generation loop"):
        generate(ref, ref.init_params(0), _vocab(V), 5, native=True)
    assert len(generate(ref, ref.init_params(0), _vocab(V), 5)) == 5
    bi = _model(stack("gru", 1, V, 8, bidirectional=True), V)
    assert generator_for(bi) is None


def test_bad_ids_and_states_are_refused():
    V = 12
    model = _model(stack("lstm", 1, V, 8), V)
    params = model.init_params(0)
    g = NativeGenerator(model)
    with pytest.raises(RuntimeInputError, match=r"token ids must be in \[0, 12\)"):
        g.run(params, [12], 5)
    with pytest.raises(RuntimeInputError, match="at least one token"):
        g.run(params, [], 5)
    with pytest.raises(RuntimeInputError, match="state 'h' of layer 0: expected shape"):
        g.run(params, [1], 5, state=[[np.zeros((2, 8)), np.zeros((1, 8))]])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        g.run(params, [1], 5, temperature=0.0)
    with pytest.raises(BackendError, match="threads must be a positive int"):
        NativeGenerator(model, threads=0)


def test_graphrnn_sample_runs_the_native_loop(tmp_path, corpus, capsys, monkeypatch):
    """``graphrnn sample --backend llvm`` (the native loop) prints the argmax text of
    ``--backend ref`` (the reference interpreter stepping from Python), and reproduces a seed."""
    from graphrnn.tools.cli import main
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), "--cell", "lstm",
                 "--steps", "3", "--hidden", "16", "--layers", "2", "--batch", "2",
                 "--seq-len", "8", "--backend", "ref", "--no-progress", "--sample-length", "0",
                 "--eval-every", "0"]) == 0
    ck = str(out / "checkpoint.npz")
    capsys.readouterr()
    calls = []
    run = NativeGenerator.run
    monkeypatch.setattr(NativeGenerator, "run", lambda self, *a, **k: calls.append(1) or
                        run(self, *a, **k))
    texts = []
    for backend in ("llvm", "ref"):
        assert main(["sample", ck, "--length", "80", "--prime", "the ", "--argmax",
                     "--backend", backend]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0].startswith("the ")
    assert len(calls) == 1   # llvm: the native loop; ref: the Python path
    runs = []
    for _ in range(2):
        assert main(["sample", ck, "--length", "80", "--seed", "3", "--backend", "llvm"]) == 0
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1] and len(runs[0]) > 80
