"""Data-parallel training over MPI (``graphrnn.distributed``), run for real: ``mpiexec -n N``
on ``tests/mpi_worker.py`` (2 and 3 ranks on this host), compared with one process on the
concatenated global batch. Skipped where mpi4py or mpiexec is missing (``pip install
'graphrnn[mpi]'``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", exc_type=ImportError)
pytestmark = pytest.mark.mpi

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "mpi_worker.py"
_BIN = Path(sys.executable).parent / "mpiexec"
MPIEXEC = str(_BIN) if _BIN.exists() else shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec (pip install 'graphrnn[mpi]')", allow_module_level=True)
# mpi4py without a loadable MPI library fails only when MPI is initialized: try it in a child
# (initializing MPI in the test process itself would tie it to MPI until it exits)
_probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"], capture_output=True,
                        text=True, timeout=60)
if _probe.returncode != 0:
    pytest.skip(f"mpi4py cannot load an MPI library: {_probe.stderr.strip()[-200:]}",
                allow_module_level=True)

sys.path.insert(0, str(ROOT / "tests"))
import mpi_worker as w  # noqa: E402


def mpirun(n: int, *args: str, timeout: float = 120, check: bool = True,
           prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    p = subprocess.run([*prefix, MPIEXEC, "-n", str(n), sys.executable, str(WORKER), *args],
                       capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"mpiexec -n {n} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def single_run(steps: int) -> dict[str, np.ndarray]:
    return w.trainer(None, steps).run().params


@pytest.mark.parametrize("n", [2, 3])
def test_gradients_equal_single_process_on_the_global_batch(tmp_path, n):
    """One step's reduced gradients equal one process's on the whole batch, reduced in
    overlapped per-layer buckets, in one bucket after the backward, and in rank order (ranks
    hold unequal token counts: the mask gives the sequences different lengths)."""
    mpirun(n, "grads", str(tmp_path))
    m = w.model()
    params = m.init_params(seed=3, scale=0.3)
    b = w.batch(0)
    want = m.loss_and_grads(params, b.ids, b.targets, None, b.mask, b.weights)
    for mode in w.GRAD_MODES:
        got = np.load(tmp_path / f"grads-{mode}.npz")
        assert float(got["loss"]) == pytest.approx(want.loss, rel=1e-13), mode
        assert set(got.files) - {"loss"} == set(want.grads)
        for k, g in want.grads.items():
            assert np.abs(g).max() > 0, k
            np.testing.assert_allclose(got[k], g, rtol=1e-11, atol=1e-15, err_msg=f"{mode} {k}")


@pytest.mark.parametrize("n", [2, 3])
def test_parameters_equal_single_process_after_20_steps(tmp_path, n):
    """20 Adam steps with the state carried (and reset every 5 batches): every rank holds the
    same parameters bit for bit, equal to one process's to float64 rounding."""
    mpirun(n, "train", str(tmp_path), "--steps", "20")
    got = np.load(tmp_path / "params.npz")
    assert bool(got["same"]) and int(got["step"]) == 20
    want = single_run(20)
    init = w.model().init_params(seed=3, scale=0.3)
    for k, v in want.items():
        assert not np.allclose(v, init[k]), k   # training moved it
        np.testing.assert_allclose(got[k], v, rtol=1e-9, atol=1e-12, err_msg=k)


def test_deterministic_mode_is_bit_identical_across_runs(tmp_path):
    runs = []
    for i in range(2):
        out = tmp_path / str(i)
        out.mkdir()
        mpirun(3, "train", str(out), "--steps", "10", "--deterministic")
        runs.append(np.load(out / "params.npz"))
    for k in w.model().param_shapes():
        assert np.array_equal(runs[0][k], runs[1][k]), k


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_dead_or_hung_rank_ends_the_job_with_a_clear_error(tmp_path, how):
    """SIGKILL: mpiexec sees the death and ends the others. SIGSTOP (a hung rank, which
    mpiexec cannot see): the others' collectives time out after 3 s with an error naming the
    collective, and MPI_Abort ends the job, the stopped rank included."""
    t0 = time.monotonic()
    p = mpirun(3, "train", str(tmp_path), "--steps", "100000", "--kill-rank", "1",
               "--timeout", "3", *(["--stop"] if how == "stop" else []),
               timeout=60, check=False)
    took = time.monotonic() - t0
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "rank 1: killing itself at step 3" in out
    if how == "kill":
        assert "KILLED" in out.upper() and "signal 9" in out, out
    else:
        assert "gradient all-reduce did not complete within 3 s" in out, out
    assert took < 40, took
    assert not (tmp_path / "params.npz").exists()


def test_restart_from_the_last_checkpoint_on_another_number_of_ranks(tmp_path):
    """2 ranks save every 5 steps and one dies at step 7; 3 ranks resume from the step-5
    checkpoint (written by rank 0, with the global carried state) and reach step 20 with one
    process's parameters; one process resumes from the 3-rank checkpoint too."""
    ck = str(tmp_path / "ck.npz")
    p = mpirun(2, "train", str(tmp_path), "--steps", "20", "--checkpoint", ck,
               "--kill-rank", "1", "--kill-step", "7", timeout=60, check=False)
    assert p.returncode != 0
    from graphrnn import checkpoint
    _, meta = checkpoint.load(ck)
    assert meta["step"] == 5
    mpirun(3, "train", str(tmp_path), "--steps", "15", "--checkpoint", ck, "--resume", ck)
    got = np.load(tmp_path / "params.npz")
    assert int(got["step"]) == 20 and bool(got["same"])
    want = single_run(20)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-9, atol=1e-12, err_msg=k)
    # and back to one process: the checkpoint does not depend on N
    tr = w.trainer(None, 0)
    tr.load(ck)
    assert tr.step == 20 and tr.state is not None and tr.state[0][0].shape[0] == w.B
    for k, v in want.items():
        np.testing.assert_allclose(tr.params[k], v, rtol=1e-9, atol=1e-12, err_msg=k)


def test_ranks_whose_parameters_differ_are_an_error(tmp_path):
    p = mpirun(2, "train", str(tmp_path), "--steps", "3", "--perturb-rank", "1",
               timeout=60, check=False)
    assert p.returncode != 0
    assert "the parameters differ between ranks at step 0: ranks [1]" in p.stderr, p.stderr


def test_split_bounds():
    from graphrnn.distributed import DistributedError, split_bounds
    assert split_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert split_bounds(2, 2) == [(0, 1), (1, 2)]
    with pytest.raises(DistributedError, match="batch of 2 sequences cannot be split over 3"):
        split_bounds(2, 3)


def _cli(n: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "graphrnn.cli", "train", *args]
    if n > 1:
        cmd = [MPIEXEC, "-n", str(n), *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def test_cli_under_mpiexec_equals_one_process_and_resumes_on_any_n(tmp_path, corpus):
    """``mpiexec -n 2 graphrnn train`` trains what one process trains (float64, 10 steps);
    rank 0 alone prints; ``mpiexec -n 3 ... --resume`` continues the 2-rank checkpoint to the
    parameters of 20 steps in one process; a time budget stops all ranks at the same step."""
    from graphrnn import checkpoint
    base = ["--data", str(corpus), "--hidden-size", "16", "--layers", "1", "--batch", "6",
            "--seq-len", "8", "--dtype", "float64", "--no-progress", "--length", "5",
            "--eval-every", "5", "--check-every", "1", "--backend", "ref"]
    p2 = _cli(2, *base, "--steps", "10", "--out", str(tmp_path / "two"))
    assert p2.stdout.count("data: ") == 1 and "data-parallel: 2 ranks" in p2.stdout
    _cli(1, *base, "--steps", "20", "--out", str(tmp_path / "one"))
    _cli(3, *base, "--steps", "10", "--out", str(tmp_path / "three"),
         "--resume", str(tmp_path / "two" / "checkpoint.npz"))
    a1, m1 = checkpoint.load(tmp_path / "one" / "checkpoint.npz")
    a3, m3 = checkpoint.load(tmp_path / "three" / "checkpoint.npz")
    assert m1["step"] == m3["step"] == 20
    assert set(a1) == set(a3)
    for k in a1:
        np.testing.assert_allclose(a3[k], a1[k], rtol=1e-8, atol=1e-11, err_msg=k)
    p = _cli(2, *base, "--minutes", "0.02", "--out", str(tmp_path / "timed"))
    assert "trained " in p.stdout


# ---- across hosts: two network namespaces joined by a veth pair ----

_LAUNCHER = """#!/bin/sh
# hydra's "ssh": [options] HOST COMMAND... runs COMMAND in HOST's network namespace, under a
# hostname of its own (so that MPICH counts it as another node)
while [ "${{1#-}}" != "$1" ]; do shift; done
host=$1; shift
case $host in
  {ip_a}) ns={ns_a};;
  {ip_b}) ns={ns_b};;
  *) echo "unknown host $host" >&2; exit 1;;
esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname node-$ns; $*"
"""


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@pytest.fixture()
def two_hosts(tmp_path):
    """Namespaces A (10.199.x.1) and B (10.199.x.2) joined by a veth pair; root only."""
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("unshare")):
        pytest.skip("needs root, ip and unshare to create network namespaces")
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b, va, vb = f"grnA{tag}", f"grnB{tag}", f"grva{tag}", f"grvb{tag}"
    net = f"10.199.{os.getpid() % 250}"
    ip_a, ip_b = f"{net}.1", f"{net}.2"
    try:
        _sh("ip", "netns", "add", ns_a)
        _sh("ip", "netns", "add", ns_b)
    except (subprocess.CalledProcessError, OSError) as e:
        subprocess.run(["ip", "netns", "del", ns_a], capture_output=True)
        pytest.skip(f"cannot create network namespaces here: {e}")
    try:
        _sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
        for ns, dev, addr in ((ns_a, va, ip_a), (ns_b, vb, ip_b)):
            _sh("ip", "link", "set", dev, "netns", ns)
            _sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        probe = subprocess.run(["ip", "netns", "exec", ns_a, "unshare", "--uts", "true"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode != 0:
            pytest.skip(f"cannot run in a network namespace here: {probe.stderr.strip()}")
        launcher = tmp_path / "nsssh"
        launcher.write_text(_LAUNCHER.format(ip_a=ip_a, ip_b=ip_b, ns_a=ns_a, ns_b=ns_b))
        launcher.chmod(0o755)
        yield {"ns_a": ns_a, "va": va, "ip_a": ip_a, "ip_b": ip_b, "launcher": str(launcher)}
    finally:
        for ns in (ns_a, ns_b):   # deleting a namespace deletes its end of the veth pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _iface_bytes(ns: str, dev: str) -> tuple[int, int]:
    """(received, sent) bytes of an interface, from its counters in sysfs."""
    def read(what: str) -> int:
        p = subprocess.run(["ip", "netns", "exec", ns, "cat",
                            f"/sys/class/net/{dev}/statistics/{what}_bytes"],
                           capture_output=True, text=True, check=True, timeout=30)
        return int(p.stdout)
    return read("rx"), read("tx")


def test_two_ranks_in_two_network_namespaces(tmp_path, two_hosts):
    """Rank 0 in namespace A, rank 1 in B (hydra's ssh launcher replaced by ``ip netns exec``):
    20 steps give one process's parameters, and the gradients crossed the veth interface (its
    byte counters grow by at least the 20 reductions' payload). Both namespaces share this
    kernel, so UCX would otherwise pick shared memory: UCX_TLS=tcp (FI_PROVIDER=tcp for the
    OFI netmod) makes the ranks talk TCP, as they must between real machines."""
    h = two_hosts
    before = _iface_bytes(h["ns_a"], h["va"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1",
           "UCX_TLS": "tcp", "FI_PROVIDER": "tcp"}
    inner = " ".join([MPIEXEC, "-launcher", "ssh", "-launcher-exec", h["launcher"], "-hosts",
                      f"{h['ip_a']},{h['ip_b']}", "-n", "2", "-ppn", "1", sys.executable,
                      str(WORKER), "train", str(tmp_path), "--steps", "20"])
    p = subprocess.run(["ip", "netns", "exec", h["ns_a"], "unshare", "--uts", "sh", "-c",
                        f"hostname node-{h['ns_a']}; exec {inner}"],
                       capture_output=True, text=True, timeout=90, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    rx, tx = (a - b for a, b in zip(_iface_bytes(h["ns_a"], h["va"]), before))
    got = np.load(tmp_path / "params.npz")
    assert bool(got["same"]) and int(got["step"]) == 20
    want = single_run(20)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-9, atol=1e-12, err_msg=k)
    payload = 20 * sum(v.nbytes for v in want.values())
    assert rx >= payload and tx >= payload, (rx, tx, payload)


def test_cli_oversubscribed_threads_are_an_error_that_ends_every_rank(tmp_path, corpus):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: one thread per rank is allowed whatever the rank count")
    p = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "graphrnn.cli", "train",
                        "--data", str(corpus), "--steps", "1", "--threads", str(cores),
                        "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert p.returncode != 0
    assert f"--threads {cores} x 2 ranks on this host needs {2 * cores} cores" in p.stderr, \
        p.stderr
    assert not (tmp_path / "run").exists()
