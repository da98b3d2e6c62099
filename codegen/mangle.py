"""Symbol names from user names: ASCII C identifiers, deterministic and collision-free.

Cell, parameter and state names may be any Python identifier (``état``, ``Wα``, ``日本``; the
equations frontend reads them NFKC-normalized, as Python does), but LLVM's JIT looks symbols up
as ASCII, and the exported C header and CUDA's ``extern "C"`` kernels need plain C identifiers.

The scheme is injective (two different names never give the same symbol):

- a name of ASCII letters, digits and single underscores (no ``__``) is kept as it is, so the
  usual names (``gru``, ``lstm_zoo``) keep their symbols;
- any other name is written character by character: ASCII letters and digits as they are,
  every other character (``_`` included) as ``__<hex code point>_``. Such a spelling always
  contains ``__``, so it cannot equal a kept name, and it decodes uniquely (``demangle``).
"""

from __future__ import annotations

import re

_ESC = re.compile(r"__([0-9a-f]+)_")


def _kept(name: str) -> bool:
    return name.isascii() and bool(re.fullmatch(r"[A-Za-z0-9_]+", name)) and "__" not in name


def mangle(name: str) -> str:
    """``name`` as a string of ``[A-Za-z0-9_]`` (see the module docstring)."""
    if _kept(name):
        return name
    out = []
    for ch in name:
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        else:
            out.append(f"__{ord(ch):x}_")
    # the empty name: "__" alone, which no other name produces
    return "".join(out) or "__"


def demangle(symbol: str) -> str:
    """The inverse of ``mangle`` (for messages and tests)."""
    if "__" not in symbol:
        return symbol
    if symbol == "__":
        return ""
    out, i = [], 0
    while i < len(symbol):
        m = _ESC.match(symbol, i)
        if m:
            out.append(chr(int(m.group(1), 16)))
            i = m.end()
        else:
            out.append(symbol[i])
            i += 1
    return "".join(out)


__all__ = ["demangle", "mangle"]
