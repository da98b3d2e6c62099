"""``import graphrnn.nn`` / ``from graphrnn.nn import ...``: the door to ``frontends.nngraph``.

This module replaces itself in ``sys.modules`` with ``frontends.nngraph``, so both names are one
module object (same classes, same globals to monkeypatch). It is not core: importing it loads the
frontend, which is why ``import graphrnn`` reaches it only lazily (``graphrnn.nn``).
"""

from __future__ import annotations

import sys

import frontends.nngraph as _frontend

sys.modules[__name__] = _frontend
