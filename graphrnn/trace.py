"""``import graphrnn.trace`` / ``from graphrnn.trace import ...``: the door to ``frontends.trace``.

This module replaces itself in ``sys.modules`` with ``frontends.trace``, so both names are one
module object (same classes, same globals to monkeypatch). It is not core: importing it loads the
frontend, which is why ``import graphrnn`` reaches it only lazily (``graphrnn.trace``).
"""

from __future__ import annotations

import sys

import frontends.trace as _frontend

sys.modules[__name__] = _frontend
