"""codegen.llvm_threads: the one pool of threads per process (take-over from OpenBLAS, release,
the threaded numpy matmul the model's head uses, errors from worker threads)."""

from __future__ import annotations

import numpy as np
import pytest

from codegen import llvm_threads
from codegen.llvm_blas import blas_info, blas_threads, set_blas_threads


@pytest.fixture
def two_threads():
    if not blas_info().set_threads:
        pytest.skip("numpy's BLAS thread count cannot be set")
    llvm_threads.release()
    before = blas_threads()
    set_blas_threads(2)
    yield
    llvm_threads.release()
    set_blas_threads(before)


def test_take_over_keeps_the_count_and_release_gives_it_back(two_threads) -> None:
    llvm_threads.take_over()
    assert blas_threads() == 1 and llvm_threads.default_threads() == 2
    llvm_threads.take_over()            # a second take-over does not forget the count
    assert llvm_threads.default_threads() == 2
    llvm_threads.release()
    assert blas_threads() == 2


def test_matmul_splits_columns_and_matches_numpy(two_threads) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 70))
    for b in (rng.standard_normal((70, 501)), rng.standard_normal((501, 70)).T):
        want = a @ b
        llvm_threads.take_over()
        got = llvm_threads.matmul(a, b, min_flops=0)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert got.shape == want.shape


def test_a_worker_error_reaches_the_caller(two_threads) -> None:
    ran = []

    def fail() -> None:
        raise ValueError("from the worker")

    with pytest.raises(ValueError, match="from the worker"):
        llvm_threads.TEAM.map([lambda: ran.append(0), fail])
    assert ran == [0]
    llvm_threads.TEAM.map([lambda: ran.append(1), lambda: ran.append(2)])   # still usable
    assert sorted(ran) == [0, 1, 2]


def _threaded_forward_in_child() -> None:
    import graphrnn
    from graphrnn.cells import zoo_cell
    cc = graphrnn.compile(zoo_cell("gru", 4, 40, "float64"), backend="llvm", threads=2)
    params = cc.init_params(seed=0)
    ys, _ = cc.forward(params, [np.ones((3, 5, 4))])
    assert np.isfinite(ys[0]).all()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork here")
def test_a_forked_child_gets_its_own_workers(two_threads, monkeypatch) -> None:
    import multiprocessing

    from codegen.llvm import LLVMBackend
    monkeypatch.setattr(LLVMBackend, "THREAD_MIN_FLOPS", 0)   # the child inherits it
    _threaded_forward_in_child()          # the parent's workers exist now
    assert llvm_threads.TEAM._workers
    child = multiprocessing.get_context("fork").Process(target=_threaded_forward_in_child)
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in a threaded call")
    assert child.exitcode == 0


def test_the_llvm_compiled_cell_lends_the_model_its_threaded_matmul(monkeypatch) -> None:
    """``RNNModel``'s head asks its compiled cell for ``matmul``: numpy's by default, this
    module's on the llvm backend."""
    import graphrnn
    from graphrnn.cells import rnn_tanh
    seen = []

    def spy(a, b):
        seen.append((a.shape, b.shape))
        return a @ b
    monkeypatch.setattr("codegen.llvm.threads_matmul", spy)
    a, b = np.ones((4, 3)), np.ones((3, 5))
    np.testing.assert_array_equal(graphrnn.compile(rnn_tanh(2, 3), backend="llvm").matmul(a, b),
                                  a @ b)
    assert seen == [((4, 3), (3, 5))]
    assert graphrnn.compile(rnn_tanh(2, 3), backend="ref").matmul(a, b).shape == (4, 5)
    assert len(seen) == 1
