"""graphrnn's backends: ``ref`` (numpy, the oracle), ``llvm`` (llvmlite, CPU), ``cuda`` (CuPy).

Each backend turns a Cell (through the optimizer's Program, except the unrolled reference) into a
``graphrnn.api.CompiledCell``. They are found by name through ``graphrnn.api.BACKENDS``.
"""

GRAPHRNN_CODEGEN = True  # lets a test prove this is our package, not PyPI's ``codegen``
