"""The Program as data (graphrnn/program_json.py) and the cache compile() consults before the
optimizer: a stored Program equals the fresh one, a hit runs no pass, and an entry that is
tampered with, malformed or inconsistent is refused and rebuilt, never trusted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import TOL, assert_all_close, cotangents, flat, sequences

import graphrnn
from graphrnn import pipeline, program_json
from graphrnn.cells import ZOO, zoo_cell
from graphrnn.program_json import ProgramFormatError, program_from_json, program_to_json

SQUARE = {"mut1", "mut2", "mut3"}   # the paper's equations add x to a hidden-size vector


def _zoo(name: str, dtype: str = "float64"):
    return zoo_cell(name, 4 if name in SQUARE else 3, 4, dtype)


def _embedding_cell(dtype: str):
    """Token ids in (GATHER forward, SCATTER backward), a log-softmax output."""
    from graphrnn import nn
    ids, h = nn.Identity()(), nn.Identity()().annotate(name="h")
    e = nn.LookupTable(6, 8)(ids)
    h2 = nn.Tanh()(nn.CAddTable()([nn.Linear(8, 9)(e), nn.Linear(9, 9)(h)]))
    out = nn.LogSoftMax()(nn.Linear(9, 5)(h2)).annotate(name="logprobs")
    return nn.gModule([ids, h], [out, h2]).to_cell(
        inputs=[0], states=["h"], next_states=[1], outputs=["logprobs"], sizes={"h": 9}
    ).with_dtype(dtype)


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache directory and an empty in-memory cache (restored empty afterwards)."""
    monkeypatch.setenv("GRAPHRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRAPHRNN_DEBUG", raising=False)
    program_json.clear_memory()
    yield tmp_path / "program"
    program_json.clear_memory()


def _forbid_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every optimizer pass (and build_program itself) raises if it is run."""
    def trap(*_a, **_k):
        raise AssertionError("an optimizer pass ran on a cache hit")
    monkeypatch.setattr(pipeline, "PASSES", [(name, trap) for name, _run in pipeline.PASSES])
    monkeypatch.setattr(pipeline, "build_program", trap)


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    built: list[object] = []
    original = pipeline.build_program

    def counting(*a, **k):
        built.append(original(*a, **k))
        return built[-1]
    monkeypatch.setattr(pipeline, "build_program", counting)
    return built


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_program_survives_json(name: str) -> None:
    for dtype in ("float32", "float64"):
        p = pipeline.build_program(_zoo(name, dtype))
        doc = json.loads(json.dumps(program_to_json(p)))
        q = program_from_json(doc)
        assert q == p
        assert program_json.dumps(q) == program_json.dumps(p)


def test_gather_scatter_program_survives_json() -> None:
    p = pipeline.build_program(_embedding_cell("float64"))
    kinds = {type(s).__name__ for sw in (p.forward, p.backward) for _ph, st in sw.phases()
             for s in st}
    assert {"Gather", "Scatter", "Gemm", "Kernel", "Reduce"} <= kinds
    assert program_from_json(json.loads(json.dumps(program_to_json(p)))) == p


def test_nonfinite_and_negative_zero_constants_survive() -> None:
    from graphrnn.ops import Ops
    from graphrnn.program import Kernel, KernelDef
    from graphrnn.scalar import ScalarProgram
    p = pipeline.build_program(_zoo("rnn_tanh"))
    step = next(s for s in p.forward.step if isinstance(s, Kernel))
    consts = (float("inf"), float("-inf"), -0.0, 1e-310)
    prog = ScalarProgram(step.kernel.n_inputs,
                         step.kernel.program.instrs + tuple((Ops.CONST, (), c) for c in consts),
                         step.kernel.program.outputs)
    k = KernelDef(step.kernel.name, prog, p.dtype, step.kernel.bcast)
    import dataclasses
    changed = dataclasses.replace(p, forward=dataclasses.replace(
        p.forward, step=tuple(Kernel(k, s.ins, s.outs) if s is step else s
                              for s in p.forward.step)))
    back = program_json.loads(program_json.dumps(changed))
    got = [c for _op, _a, c in back.forward.step[p.forward.step.index(step)].kernel.program
           .instrs[-4:]]
    assert got[:2] == [float("inf"), float("-inf")] and got[3] == 1e-310
    assert str(got[2]) == "-0.0"
    nan = json.loads(program_json.dumps(changed).replace(b"Infinity", b"NaN", 1))
    assert np.isnan(program_from_json(nan).forward.step[p.forward.step.index(step)].kernel
                    .program.instrs[-4][2])


@pytest.mark.parametrize("backend", ["program", "llvm"])
def test_hit_runs_no_pass_and_equals_the_fresh_program(backend: str, cache_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cell = _zoo("lstm")
    fresh = graphrnn.compile(cell, backend=backend, dtype="float64")
    assert not fresh.program_cache_hit
    assert len(list(cache_dir.glob("*.json"))) == 1
    with monkeypatch.context() as m:
        _forbid_passes(m)
        again = graphrnn.compile(cell, backend=backend, dtype="float64")   # from memory
        program_json.clear_memory()
        disk = graphrnn.compile(cell, backend=backend, dtype="float64")    # from disk
    assert again.program_cache_hit and disk.program_cache_hit
    assert disk.program == fresh.program and disk.program is not fresh.program
    if backend == "llvm":   # the object is found by the Program: no IR emitted
        assert disk.jitted.stats.cache_hit and disk._ir_text is None
    ref = graphrnn.compile(cell, backend="ref", dtype="float64")
    rng = np.random.default_rng(0)
    params = ref.init_params(seed=1)
    xs, h0 = sequences(ref, 5, 3, rng)
    dys, dhT = cotangents(ref, 5, 3, rng)

    def run(cc):
        ys, hT, res = cc.forward_train(params, xs, h0)
        return flat(ys, hT, cc.backward(params, res, dys, dhT))
    want = run(ref)
    assert_all_close(run(disk), want, **TOL["float64"])
    assert_all_close(run(fresh), run(disk), rtol=0, atol=0)


def test_the_key_covers_cell_dtype_options_and_compiler_source(
        cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = program_json.program_key
    cell = _zoo("gru")
    base = key(cell, "float64")
    assert base == key(_zoo("gru"), "float64")                 # the same IR, rebuilt
    assert base != key(cell, "float32")
    assert base != key(cell, "float64", use_sympy=False)
    assert base != key(zoo_cell("gru", 3, 5, "float64"), "float64")
    assert base != key(zoo_cell("gru_torch", 3, 4, "float64"), "float64")
    # another version of the compiler's code (someone edited fuse.py): a miss, then a rebuild
    graphrnn.compile(cell, backend="program", dtype="float64")
    monkeypatch.setattr(program_json, "source_digest", lambda folder: "edited")
    assert key(cell, "float64") != base
    built = _count_builds(monkeypatch)
    cc = graphrnn.compile(cell, backend="program", dtype="float64")
    assert len(built) == 1 and not cc.program_cache_hit


def test_cache_false_and_debug_build_afresh(cache_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cell = _zoo("rnn_tanh")
    graphrnn.compile(cell, backend="program", dtype="float64")
    built = _count_builds(monkeypatch)
    graphrnn.compile(cell, backend="program", dtype="float64", cache=False)
    monkeypatch.setenv("GRAPHRNN_DEBUG", "1")
    graphrnn.compile(cell, backend="program", dtype="float64")
    assert len(built) == 2


def _tamper(path: Path, change) -> None:
    data = path.read_bytes()
    path.write_bytes(change(data))


def _recompiles(cell, monkeypatch) -> bool:
    program_json.clear_memory()
    built = _count_builds(monkeypatch)
    cc = graphrnn.compile(cell, backend="program", dtype="float64")
    return len(built) == 1 and not cc.program_cache_hit


@pytest.mark.parametrize("how", ["payload", "digest", "truncated", "other key", "garbage"])
def test_a_tampered_entry_is_refused_and_rebuilt(how: str, cache_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cell = _zoo("lstm")
    fresh = graphrnn.compile(cell, backend="program", dtype="float64").program
    (entry,) = cache_dir.glob("*.json")
    key = entry.stem
    head = len(program_json.MAGIC) + len(key) + 32
    if how == "payload":      # a dtype changed: still valid JSON, the digest now wrong
        _tamper(entry, lambda d: d[:head] + d[head:].replace(b'"float64"', b'"float32"', 1))
    elif how == "digest":
        _tamper(entry, lambda d: d[:head - 1] + bytes([d[head - 1] ^ 1]) + d[head:])
    elif how == "truncated":
        _tamper(entry, lambda d: d[:head + 40])
    elif how == "other key":  # another cell's entry copied under this key's name
        other = _zoo("gru")
        graphrnn.compile(other, backend="program", dtype="float64")
        other_entry = cache_dir / f"{program_json.program_key(other, 'float64')}.json"
        entry.write_bytes(other_entry.read_bytes())
    else:
        entry.write_bytes(b"\x00garbage" * 10)
    assert _recompiles(cell, monkeypatch)
    # and rewritten: the next process finds a good entry again
    program_json.clear_memory()
    _forbid_passes(monkeypatch)
    assert graphrnn.compile(cell, backend="program", dtype="float64").program == fresh


def _forge(key: str, doc: object) -> None:
    """An entry bound to its key (as if we wrote it) whose content is wrong: what an older
    format or a bug would leave. The digest checks out; the content must not be trusted."""
    data = json.dumps(doc).encode()
    assert program_json.write_keyed(program_json.cache_dir() / f"{key}.json",
                                    program_json.MAGIC, key, data)


@pytest.mark.parametrize("damage", [
    "version", "shape mismatch", "read before written", "unknown op", "kernel index",
    "bool as int", "not a dict",
])
def test_a_well_signed_but_inconsistent_entry_is_refused(damage: str, cache_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    cell = _zoo("lstm")
    p = graphrnn.compile(cell, backend="program", dtype="float64").program
    key = program_json.program_key(cell, "float64")
    doc = program_to_json(p)
    if damage == "version":
        doc["version"] = 99
    elif damage == "shape mismatch":   # a GEMM whose output has the wrong width
        gemm = next(s for s in doc["forward"]["step"] if s[0] == "gemm")
        gemm[1][2] = [0, 1]
    elif damage == "read before written":   # the forward's steps reversed
        doc["forward"]["step"].reverse()
        doc["forward"]["pre"].reverse()
    elif damage == "unknown op":
        doc["kernels"][0][4][0][0] = "SYSTEM"
    elif damage == "kernel index":
        next(s for s in doc["forward"]["step"] if s[0] == "kernel")[1] = 10_000
    elif damage == "bool as int":
        next(s for s in doc["forward"]["step"] if s[0] == "gemm")[4] = 0
    else:
        doc = ["a", "list"]
    with pytest.raises(ProgramFormatError):
        program_from_json(json.loads(json.dumps(doc)))
    _forge(key, doc)
    assert _recompiles(cell, monkeypatch)


def test_format_errors_name_the_field() -> None:
    p = pipeline.build_program(_zoo("rnn_tanh"))
    doc = program_to_json(p)
    doc["buffers"][0][3] = -2
    with pytest.raises(ProgramFormatError, match=r"buffers\[0\] cols must be an integer"):
        program_from_json(doc)
    doc = program_to_json(p)
    doc["forward"]["step"][0][0] = "exec"
    with pytest.raises(ProgramFormatError, match=r"forward.step\[0\] kind must be one of"):
        program_from_json(doc)
    with pytest.raises(ProgramFormatError, match="not JSON"):
        program_json.loads(b"{not json")


def test_the_llvm_module_id_follows_the_program(cache_dir: Path) -> None:
    """The object cache is keyed by the Program, the emitter's options and its source, not by
    the IR text; two different Programs (or options) never share an object."""
    a = graphrnn.compile(_zoo("lstm"), backend="llvm", dtype="float64")
    b = graphrnn.compile(_zoo("gru"), backend="llvm", dtype="float64")
    c = graphrnn.compile(_zoo("lstm"), backend="llvm", dtype="float64", diagonal=False)
    ids = {a._module_id(), b._module_id(), c._module_id()}
    assert len(ids) == 3
    assert a.ir_text and a._ir_text is not None   # emitted on demand (export, assembly)


def test_without_readable_sources_nothing_is_cached(cache_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A zipped install has no source files to hash: no version, so no Program is stored
    (and llvm keys its object by the IR text)."""
    monkeypatch.setattr(program_json, "source_digest", lambda folder: "")
    cell = _zoo("rnn_tanh")
    assert program_json.program_key(cell, "float64") is None
    built = _count_builds(monkeypatch)
    a = graphrnn.compile(cell, backend="llvm", dtype="float64")
    b = graphrnn.compile(cell, backend="llvm", dtype="float64")
    assert len(built) == 2 and not b.program_cache_hit
    assert a._module_id() == "" and b.jitted.stats.cache_hit   # the IR text's key
    assert not cache_dir.exists() or not list(cache_dir.glob("*.json"))


def test_a_program_with_row_kernels_round_trips():
    """The layer-norm LSTM's Program holds row kernels (a layer norm fused with its
    neighbours): stored and read back, it is the same Program."""
    from pathlib import Path

    from frontends.equations import parse_file
    from graphrnn.pipeline import build_program
    from graphrnn.program import RowKernel
    from graphrnn.program_json import dumps, loads
    prog = build_program(parse_file(Path(__file__).parents[1] / "examples" / "layer_norm_lstm.eq",
                                    dtype="float64"), "float64")
    assert any(isinstance(s, RowKernel) for sw in (prog.forward, prog.backward)
               for _ph, steps in sw.phases() for s in steps)
    assert loads(dumps(prog)) == prog
