"""Files someone else handed us (issue 13): checkpoints that try to run code, exhaust memory or
the stack, or block; cache entries swapped or planted; command lines with meaningless numbers;
and a fork while another thread compiles. Each test was run against the code before the fix
and failed there (blocking tests through a thread or subprocess with a timeout, so the old code
fails them instead of hanging the suite)."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from graphrnn import checkpoint as ckpt
from graphrnn.tools.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "2", "--hidden", "8", "--layers", "1", "--batch", "2", "--seq-len", "8",
        "--backend", "ref", "--no-progress", "--sample-length", "5", "--eval-every", "0"]
META = {"format": ckpt.FORMAT, "version": ckpt.VERSION}
# a cell file that leaves a mark when it is run
MARKING_CELL = """from pathlib import Path
Path(__file__).with_name("ran").write_text("ran")
from graphrnn.cells import gru
def make(input_size, hidden_size, dtype):
    return gru(input_size, hidden_size, dtype)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.fixture()
def trained(tmp_path, corpus, capsys):
    """A tiny checkpoint (zoo GRU) to tamper with."""
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), "--cell", "gru",
                 *TINY]) == 0
    capsys.readouterr()
    return out / "checkpoint.npz"


def _rewrite(src: Path, dst: Path, edit) -> Path:
    arrays, meta = ckpt.load(src)
    edit(meta)
    return ckpt.save(dst, arrays, meta)


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphrnn: error:") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


# ---- a checkpoint never runs code ----

def test_sample_never_runs_the_python_cell_a_checkpoint_names(tmp_path, corpus, capsys):
    cell = tmp_path / "mycell.py"
    cell.write_text(MARKING_CELL)
    mark = tmp_path / "ran"
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), "--cell", f"{cell}:make",
                 *TINY]) == 0
    assert mark.exists()   # training was asked to run it
    mark.unlink()
    capsys.readouterr()
    ck = out / "checkpoint.npz"
    assert main(["sample", str(ck), "--length", "5"]) == 1
    _one_line_error(capsys, "never runs", f"--cell {cell.resolve()}:make")
    assert not mark.exists()
    # resuming is loading too
    assert main(["train", "--data", str(corpus), "--out", str(out), "--resume", str(ck),
                 "--steps", "1", "--no-progress"]) == 1
    _one_line_error(capsys, "never runs")
    assert not mark.exists()
    # named by the user, it runs
    assert main(["sample", str(ck), "--length", "5", "--cell", f"{cell}:make"]) == 0
    assert mark.exists()


def test_a_relative_python_cell_in_a_checkpoint_is_not_run_from_the_cwd(
        tmp_path, trained, monkeypatch, capsys):
    # a checkpoint handed over with a cell path relative to wherever it is sampled
    (tmp_path / "evil.py").write_text(MARKING_CELL)
    ck = _rewrite(trained, tmp_path / "rel.npz",
                  lambda m: m["options"].update(cell="evil.py:make"))
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(ck), "--length", "5"]) == 1
    _one_line_error(capsys, "never runs")
    assert not (tmp_path / "ran").exists()


def test_a_changed_python_cell_file_is_caught(tmp_path, corpus, capsys):
    cell = tmp_path / "mycell.py"
    cell.write_text(MARKING_CELL)
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), "--cell", f"{cell}:make",
                 *TINY]) == 0
    # same parameter shapes, other math: only the stored cell tells them apart
    cell.write_text(MARKING_CELL.replace("gru(", "__import__('graphrnn.cells').cells.gru_torch("))
    capsys.readouterr()
    assert main(["sample", str(out / "checkpoint.npz"), "--cell", f"{cell}:make"]) == 1
    _one_line_error(capsys, "differs from the one this checkpoint was trained with")


def test_cells_round_trip_through_json():
    from graphrnn import cells, ir_json
    from graphrnn.tools.cli_tools import nngraph_lstm
    every = [cells.zoo_cell(n, 6, 6) for n in sorted(cells.ZOO)]
    for c in every + [nngraph_lstm(5, 7), cells.zoo_cell("gru", 5, 7, "float64")]:
        doc = json.loads(json.dumps(ir_json.cell_to_json(c)))
        back = ir_json.cell_from_json(doc)
        assert back == c and ir_json.cell_to_json(back) == doc


def _bad_docs():
    from graphrnn import cells, ir_json
    good = ir_json.cell_to_json(cells.zoo_cell("rnn_tanh", 3, 4))
    k = next(i for i, n in enumerate(good["nodes"]) if n[0] == "MATMUL")

    def edit(fn):
        doc = json.loads(json.dumps(good))
        fn(doc)
        return doc
    return [
        (edit(lambda d: d["nodes"][k].__setitem__(0, "FUSED")), "op must be an op of the IR"),
        (edit(lambda d: d["nodes"][k].__setitem__(0, "__class__")), "op must be an op"),
        (edit(lambda d: d["nodes"][k].__setitem__(3, [k, 0])), "sources must be an integer"),
        (edit(lambda d: d["nodes"][k].__setitem__(4, "os.system('x')")),
         "arg must be a list of 2 items"),
        (edit(lambda d: d["nodes"][k].__setitem__(2, ["B", 10**12])), "shape must be an int"),
        (edit(lambda d: d["nodes"][0].__setitem__(4, "not a name")), "arg must be an identif"),
        (edit(lambda d: d["nodes"][k].__setitem__(2, ["B", 7])), "must be of type float32"),
        (edit(lambda d: d["nodes"].__setitem__(slice(None), d["nodes"] * 30_000)),
         "nodes must be at most 100000 nodes"),
        (edit(lambda d: d.__setitem__("outputs", [999])), "outputs must be an integer"),
        ([1, 2], "the document must be an object"),
    ]


@pytest.mark.parametrize("i", range(10))
def test_hostile_cell_json_is_refused(i):
    from graphrnn import ir_json
    from graphrnn.errors import GraphError
    doc, msg = _bad_docs()[i]
    with pytest.raises(GraphError, match=msg.replace("(", r"\(")):
        ir_json.cell_from_json(doc)


@pytest.mark.parametrize("command", ["train", "sample", "explain", "viz", "compile", "bench"])
def test_help_says_a_python_cell_runs_its_file(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "file.py:function imports and runs file.py" in text
    if command == "sample":
        assert "a checkpoint holds arrays and json only and never makes graphrnn run code" \
            in text.lower()


# ---- hostile checkpoints: one CheckpointError each ----

def _npz(path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, data in members.items():
            z.writestr(name + ".npy", data)
    return path


def _npy(arr: np.ndarray) -> bytes:
    import io
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


def _npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    """A .npy header declaring ``shape``, with no data after it."""
    d = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    pad = 64 - (10 + len(d) + 1) % 64
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d) + pad + 1) + d + b" " * pad + b"\n"


def _meta(extra: bytes = b"") -> bytes:
    doc = json.dumps(META).encode()
    return _npy(np.frombuffer(doc[:-1] + extra + b"}", np.uint8))


def test_deeply_nested_metadata(tmp_path):
    deep = b', "x": ' + b"[" * 200_000 + b"]" * 200_000
    p = _npz(tmp_path / "deep.npz", {"__meta__": _meta(deep)})
    with pytest.raises(ckpt.CheckpointError, match="nested deeper than"):
        ckpt.load(p)


def test_a_member_declaring_a_terabyte(tmp_path):
    p = _npz(tmp_path / "tb.npz", {"__meta__": _meta(),
                                   "param/W": _npy_header((1 << 37,)) + b"\0" * 64})
    with pytest.raises(ckpt.CheckpointError, match=r"declares shape \(137438953472,\)"):
        ckpt.load(p)


def test_a_zip_bomb(tmp_path):
    # 256 MB of zeros deflate to a quarter of a megabyte
    p = _npz(tmp_path / "bomb.npz", {"__meta__": _meta(),
                                     "param/W": _npy(np.zeros(1 << 28, np.uint8))},
             zipfile.ZIP_DEFLATED)
    assert p.stat().st_size < 1 << 20
    with pytest.raises(ckpt.CheckpointError, match=r"inflate to \d+ bytes from a file of "
                                                   r"\d+ \(a zip bomb\)"):
        ckpt.load(p)


def test_the_total_inflated_size_is_capped(tmp_path, monkeypatch):
    p = _npz(tmp_path / "big.npz", {"__meta__": _meta(),
                                    "param/W": _npy(np.zeros(1 << 20))}, zipfile.ZIP_DEFLATED)
    monkeypatch.setattr(ckpt, "MAX_TOTAL_BYTES", 1 << 20)
    with pytest.raises(ckpt.CheckpointError, match="more than the 1048576"):
        ckpt.load(p)


@pytest.mark.parametrize("edit,field", [
    (lambda m: m["options"].update(hidden="8"), "options.hidden must be an integer"),
    (lambda m: m.update(options=[1, 2]), "options must be an object"),
    (lambda m: m["options"].update(layers=True), "options.layers must be an integer"),
    (lambda m: m["options"].update(dropout=-1), "options.dropout must be a finite number >= 0"),
    (lambda m: m["vocab"].update(tokens=5), "vocab.tokens must be a list"),
    (lambda m: m["vocab"].update(tokens=[1] * len(m["vocab"]["tokens"])),
     "vocab.tokens[0] must be a string"),
    (lambda m: m["options"].update(equations={"name": 3, "text": "x"}),
     "options.equations.name must be a string"),
    (lambda m: m["options"].update(cell_ir=[{"version": 1, "name": "c", "nodes": [
        ["SYSTEM", "float32", ["B", 1], [], "rm -rf /"]]}]),
     "options.cell_ir[0]: stored cell: nodes[0] op must be an op of the IR"),
])
def test_malformed_metadata_in_sample(tmp_path, trained, capsys, edit, field):
    ck = _rewrite(trained, tmp_path / "bad.npz", edit)
    assert main(["sample", str(ck), "--length", "3"]) == 1
    _one_line_error(capsys, field)


@pytest.mark.parametrize("edit,field", [
    (lambda m: m.update(step="3"), "step must be an integer"),
    (lambda m: m.update(history=[[1, "x"]]), "history[0] must be [step, loss]"),
    (lambda m: m.update(optimizer={"name": "adam", "hyper": 3}), "optimizer is malformed"),
    (lambda m: m.update(rng=[1]), "rng state is a list"),
])
def test_malformed_metadata_on_resume(tmp_path, trained, corpus, capsys, edit, field):
    ck = _rewrite(trained, tmp_path / "bad.npz", edit)
    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "r2"), "--resume",
                 str(ck), "--steps", "1", "--no-progress"]) == 1
    _one_line_error(capsys, field)


def test_ten_million_layers_fail_at_once(tmp_path, trained):
    ck = _rewrite(trained, tmp_path / "layers.npz",
                  lambda m: m["options"].update(layers=10**7))
    # a subprocess: the code before the fix looped over the layers for hours
    r = subprocess.run([sys.executable, "-m", "graphrnn.cli", "sample", str(ck)],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 1
    assert "options.layers must be an integer <= 256, got 10000000" in r.stderr
    ck = _rewrite(trained, tmp_path / "layers3.npz", lambda m: m["options"].update(layers=3))
    r = subprocess.run([sys.executable, "-m", "graphrnn.cli", "sample", str(ck)],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert "options.layers is 3 but the checkpoint holds parameters for 1 layers" in r.stderr


def _load_in_thread(fn, *args):
    """Run fn(*args) in a thread for at most 20 s; (finished, result or exception)."""
    box: list = []

    def run():
        try:
            box.append(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    return not t.is_alive(), (box[0] if box else None)


def _unblock(fifo: Path) -> None:
    # the old code waits in open() for a writer: be one, so the thread ends
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.close(fd)


def test_a_fifo_checkpoint_does_not_block(tmp_path):
    fifo = tmp_path / "ck.npz"
    os.mkfifo(fifo)
    done, got = _load_in_thread(ckpt.load, fifo)
    if not done:
        _unblock(fifo)
    assert done, "ckpt.load blocked on a FIFO"
    assert isinstance(got, ckpt.CheckpointError) and "it is a FIFO" in str(got)


def test_a_checkpoint_naming_a_fifo_as_its_equations_file_does_not_block(
        tmp_path, trained, capsys):
    # checkpoints from before the equations text was stored name the file instead
    fifo = tmp_path / "cell.eq"
    os.mkfifo(fifo)
    ck = _rewrite(trained, tmp_path / "fifo.npz",
                  lambda m: m["options"].update(cell=str(fifo)))
    done, rc = _load_in_thread(main, ["sample", str(ck), "--length", "3"])
    if not done:
        _unblock(fifo)
    assert done, "sample blocked on a FIFO"
    assert rc == 1
    _one_line_error(capsys, "it is a FIFO")


def test_killed_saves_leave_no_temporary_files(tmp_path):
    from graphrnn import safefile
    path = tmp_path / "ck.npz"
    ckpt.save(path, {"x": np.zeros(3)}, {})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = safefile._host_tag()
        killed = tmp_path / f".tmp-ck.npz.{host}-{dead.pid}.abc123.tmp"
        writing = tmp_path / f".tmp-ck.npz.{host}-{alive.pid}.def456.tmp"
        old_style = tmp_path / "ck.npz.k3j4h5g6.tmp"   # a save killed before this fix
        fresh_old_style = tmp_path / "ck.npz.a1b2c3d4.tmp"
        for p in (killed, writing, old_style, fresh_old_style):
            p.write_bytes(b"\0" * 4096)
        hour_ago = time.time() - 3600
        os.utime(old_style, (hour_ago, hour_ago))
        ckpt.save(path, {"x": np.ones(3)}, {})
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted(["ck.npz", writing.name, fresh_old_style.name])
        np.testing.assert_array_equal(ckpt.load(path)[0]["x"], np.ones(3))
    finally:
        alive.kill()
        alive.wait()


# ---- the disk caches ----

def _tiny_ir(value: int) -> str:
    return f"define i64 @f() {{\n  ret i64 {value}\n}}\n"


def _call(j) -> int:
    return ctypes.CFUNCTYPE(ctypes.c_int64)(j.address("f"))()


@pytest.fixture()
def llvm_cache(tmp_path, monkeypatch):
    pytest.importorskip("llvmlite")
    from codegen import llvm_jit
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("GRAPHRNN_CACHE_DIR", str(root))
    try:   # each test sees its own warnings, not ones an earlier test had
        from graphrnn import safefile
        monkeypatch.setattr(safefile, "_warned", set())
    except ImportError:   # the code before the fix, which had no warnings to give
        pass
    return llvm_jit


def test_a_cache_entry_swapped_from_another_cell_is_not_loaded(llvm_cache):
    jit = llvm_cache
    a, b = jit.jit(_tiny_ir(1)), jit.jit(_tiny_ir(2))
    assert (_call(a), _call(b)) == (1, 2)
    pa, pb = Path(a.stats.path), Path(b.stats.path)
    # A's object under B's name, its header saying B's key and a checksum of the payload
    # alone: what an entry looked like before the checksum covered the key
    payload = pa.read_bytes()[len(jit.MAGIC) + 64 + 32:]
    pb.write_bytes(jit.MAGIC + b.stats.key.encode() + hashlib.sha256(payload).digest()
                   + payload)
    again = jit.jit(_tiny_ir(2))
    assert not again.stats.cache_hit and _call(again) == 2


def test_a_writable_cache_directory_is_not_trusted(llvm_cache):
    jit = llvm_cache
    first = jit.jit(_tiny_ir(3))
    folder = Path(first.stats.path).parent
    os.chmod(folder, 0o777)
    with pytest.warns(RuntimeWarning, match="group- or world-writable"):
        j = jit.jit(_tiny_ir(3))
    assert not j.stats.cache_hit and _call(j) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # warned once, not on every compile
        assert not jit.jit(_tiny_ir(3)).stats.cache_hit
    os.chmod(folder, 0o700)
    assert jit.jit(_tiny_ir(3)).stats.cache_hit


@pytest.mark.filterwarnings("ignore:graphrnn. ignoring the cache entry:RuntimeWarning")
def test_cache_entries_not_ours_or_not_regular_are_not_loaded(llvm_cache, tmp_path):
    jit = llvm_cache
    first = jit.jit(_tiny_ir(4))
    path = Path(first.stats.path)
    good = path.read_bytes()
    # a symlink to a valid entry elsewhere
    elsewhere = tmp_path / "elsewhere.o"
    elsewhere.write_bytes(good)
    path.unlink()
    path.symlink_to(elsewhere)
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        assert not jit.jit(_tiny_ir(4), use_cache=True).stats.cache_hit
    # a FIFO: must not block
    path.unlink()
    os.mkfifo(path)
    done, got = _load_in_thread(jit.jit, _tiny_ir(4))
    if not done:
        _unblock(path)
    assert done, "the cache read blocked on a FIFO"
    assert not isinstance(got, BaseException) and not got.stats.cache_hit
    # owned by another user (needs root to make)
    if os.getuid() == 0:
        path.unlink(missing_ok=True)
        path.write_bytes(good)
        os.chown(path, 65534, 65534)
        with pytest.warns(RuntimeWarning, match="belongs to uid 65534"):
            assert not jit.jit(_tiny_ir(4)).stats.cache_hit


def test_the_cuda_shim_library_is_loaded_only_when_it_is_the_one_built(tmp_path):
    import shutil
    if shutil.which("g++") is None:
        pytest.skip("no g++")
    from codegen import cuda_cpu
    from codegen.cuda_exec import ProgramExecutor
    from graphrnn import cells
    from graphrnn.pipeline import build_program
    cache = tmp_path / "cuda"
    kernels = ProgramExecutor(build_program(cells.zoo_cell("rnn_tanh", 3, 4))).kernels()
    lib = cuda_cpu.ShimLibrary(kernels, cache)
    (so,) = cache.glob("shim_*.so")
    # another module's library put in its place: the digest no longer matches
    other = ProgramExecutor(build_program(cells.zoo_cell("gru", 3, 4))).kernels()
    cuda_cpu.ShimLibrary(other, tmp_path / "other")
    (other_so,) = (tmp_path / "other").glob("shim_*.so")
    shutil.copyfile(other_so, so)
    again = cuda_cpu.ShimLibrary(kernels, cache)
    assert set(again._fns) == set(lib._fns)
    # a cache directory others may write is not used at all
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    from graphrnn import safefile
    safefile._warned.clear()
    with pytest.warns(RuntimeWarning, match="world-writable"):
        cuda_cpu.ShimLibrary(kernels, shared)
    assert not list(shared.glob("shim_*"))


# ---- command lines ----

@pytest.mark.parametrize("argv,needle", [
    (["train", "--eval-every", "-3"], "argument --eval-every: must be >= 0, got -3"),
    (["train", "--minutes", "nan"], "argument --minutes: must be a finite number, got nan"),
    (["train", "--minutes", "0"], "argument --minutes: must be > 0, got 0"),
    (["train", "--minutes=-inf"], "argument --minutes: must be a finite number, got -inf"),
    (["train", "--steps", "-1"], "argument --steps: must be >= 0, got -1"),
    (["train", "--clip", "nan"], "argument --clip: must be a finite number, got nan"),
    (["train", "--decay-every", "0"], "argument --decay-every: must be > 0, got 0"),
    (["train", "--val-fraction", "1.5"], "argument --val-fraction: must be < 1, got 1.5"),
    (["train", "--temperature", "inf"], "argument --temperature: must be a finite number"),
    (["sample", "x.npz", "--length", "-5"], "argument --length: must be >= 0, got -5"),
    (["sample", "x.npz", "--temperature", "nan"], "argument --temperature: must be a finite"),
])
def test_meaningless_numbers_are_argparse_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_an_infinite_learning_rate_is_refused(value, corpus, capsys):
    # these options kept their one-line errors (exit status 1) from before argparse checked
    # the others; inf passed them
    assert main(["train", f"--lr={value}", "--data", str(corpus), *TINY]) == 1
    _one_line_error(capsys, f"--lr must be positive and finite, got {value}")


@pytest.mark.parametrize("flag,value,held", [
    ("--hidden", "16", "8"), ("--layers", "2", "1"), ("--cell", "lstm", "gru"),
    ("--dropout", "0.5", "0.0"), ("--embed", "4", "0"), ("--seq-len", "9", "8"),
    ("--optimizer", "sgd", "adam"), ("--dtype", "float64", "float32"),
])
def test_resume_refuses_a_conflicting_option(trained, corpus, tmp_path, capsys, flag, value,
                                             held):
    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "r2"), "--resume",
                 str(trained), "--steps", "1", "--no-progress", flag, value]) == 1
    _one_line_error(capsys, f"{flag} {value} conflicts with the checkpoint",
                    f"{flag.lstrip('-').replace('-', '_')} {held}")


def test_resume_takes_a_given_learning_rate_and_says_so(trained, corpus, tmp_path, capsys):
    argv = ["train", "--data", str(corpus), "--out", str(trained.parent), "--resume",
            str(trained), *TINY, "--steps", "1"]
    assert main([*argv, "--lr", "0.01"]) == 0
    assert "learning rate: 0.01 (--lr; the checkpoint's was 0.002)" in capsys.readouterr().out
    assert ckpt.load(trained)[1]["optimizer"]["hyper"]["lr"] == 0.01
    assert main(argv) == 0
    assert "learning rate: 0.01 (the checkpoint's)" in capsys.readouterr().out


# ---- fork while another thread compiles ----

FORK_SCRIPT = textwrap.dedent("""
    import os, sys, threading, time
    from codegen import llvm_jit
    from codegen.llvm_gemm import helper_module, tile_for
    text = helper_module("float32", tile_for("float32"), llvm_jit.target_machine().triple)
    tiny = "define i64 @f(i64 %x) {\\n  ret i64 %x\\n}\\n"

    def compile_forever():
        while True:
            llvm_jit.compile_object(text)
    threading.Thread(target=compile_forever, daemon=True).start()
    time.sleep(0.05)
    for i in range(6):
        pid = os.fork()
        if pid == 0:   # the child compiles too: it must find LLVM's locks free
            llvm_jit.compile_object(tiny)
            os._exit(0)
        deadline = time.time() + 15
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            if time.time() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                print("child", i, "hung")
                sys.exit(3)
            time.sleep(0.005)
        time.sleep(0.02)
    print("ok")
""")


def test_fork_while_compiling_does_not_deadlock_the_child():
    pytest.importorskip("llvmlite")
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", FORK_SCRIPT],
                       capture_output=True, text=True, timeout=240, env=_env(), cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-2000:]


def test_one_atomic_write_private_by_default_umask_for_files_the_user_reads(tmp_path):
    """Checkpoints and caches stay 0600 (mkstemp's); pictures, exported code and plots go
    through the same atomic_write with ``mode=umask_mode()``, as open() would make them."""
    import stat

    from graphrnn import safefile, viz
    from graphrnn.tools import cli_tools
    old = os.umask(0o027)
    try:
        assert safefile.umask_mode() == 0o640
        private = safefile.atomic_write(tmp_path / "ck.npz", b"x")
        picture = viz.render("digraph { a -> b }", tmp_path / "g.dot")
        cli_tools._write_text(tmp_path / "cell.h", "/* header */\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(picture.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "cell.h").stat().st_mode) == 0o640
    assert picture.read_text() == "digraph { a -> b }"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.h", "ck.npz", "g.dot"]
