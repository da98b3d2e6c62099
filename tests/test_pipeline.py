"""The optimizer as one ordered list of passes (graphrnn/pipeline.py), run once per compile()."""

from __future__ import annotations

import pytest

import graphrnn
from graphrnn import pipeline
from graphrnn.cells import zoo_cell


def test_passes_run_in_the_documented_order():
    assert [name for name, _run in pipeline.PASSES] == [
        "simplify", "merge", "autodiff", "residuals", "forward sweep: split, fuse, schedule",
        "backward sweep: split, fuse, schedule", "program", "validate"]


@pytest.mark.parametrize("backend", ["program", "llvm"])
def test_compile_builds_the_program_once_and_hands_it_to_the_backend(backend, monkeypatch):
    built = []
    original = pipeline.build_program

    def counting(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(pipeline, "build_program", counting)
    # cache=False: a Program cached by an earlier compile of this cell would be used as it is
    cc = graphrnn.compile(zoo_cell("gru", 3, 4), backend=backend, dtype="float64", cache=False)
    assert len(built) == 1
    assert cc.program is built[0]
    assert cc.program_seconds > 0


def test_ref_backend_builds_no_program(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the ref backend interprets the cell; it needs no Program")

    monkeypatch.setattr(pipeline, "build_program", fail)
    graphrnn.compile(zoo_cell("gru", 3, 4), backend="ref")
