"""Fixtures shared by the test files. Plain helpers (the "equals ref" comparisons, the corpus
text) are in ``helpers.py``, which tests import by name; a conftest cannot be."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CORPUS_TEXT


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A small training text (``CORPUS_TEXT``) as ``text.txt``."""
    p = tmp_path / "text.txt"
    p.write_text(CORPUS_TEXT)
    return p


@pytest.fixture(scope="module")
def cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compile cache directory shared by the tests of one module (compiled once, reused)."""
    return tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))
