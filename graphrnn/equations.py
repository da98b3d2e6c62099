"""``import graphrnn.equations``, ``from graphrnn.equations import ...``: the door to
``frontends.equations``.

This module replaces itself in ``sys.modules`` with ``frontends.equations``, so both names are one
module object (same classes, same globals to monkeypatch). It is not core: importing it loads the
frontend, which is why ``import graphrnn`` reaches it only lazily (``graphrnn.equations``).
"""

from __future__ import annotations

import sys

import frontends.equations as _frontend

sys.modules[__name__] = _frontend
