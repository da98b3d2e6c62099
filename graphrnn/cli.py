"""The ``graphrnn`` command's entry point (``graphrnn = "graphrnn.cli:main"``, ``python -m
graphrnn.cli``); the command line itself is ``graphrnn.tools.cli``."""

from __future__ import annotations

import sys

from graphrnn.tools.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
