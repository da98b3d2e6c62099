"""Error classes. Each subclasses the matching built-in, so ``except ValueError`` still works, and
each message says what was expected, what was received, where, and how to fix it."""

from __future__ import annotations


class GraphRNNError(Exception):
    """Base of every graphrnn error."""


class ShapeError(GraphRNNError, ValueError):
    """Shapes or dtypes of an op's operands do not fit."""


class GraphError(GraphRNNError, ValueError):
    """A graph is malformed: unused outputs, unreachable nodes, undeclared leaves, cycles."""


class ModuleUsageError(GraphRNNError, TypeError):
    """A frontend object was used the wrong way (a Module where a Node is expected, ...)."""


class EquationError(GraphRNNError, SyntaxError):
    """A text equation could not be accepted; names the line and the token."""

    def __init__(self, msg: str, filename: str = "<equations>", lineno: int | None = None,
                 col: int | None = None, text: str | None = None) -> None:
        super().__init__(msg, (filename, lineno, (col or 0) + 1, text))
        self.msg = msg

    def __str__(self) -> str:
        where = self.filename or "<equations>"
        if self.lineno is not None:
            where += f":{self.lineno}"
        line = f"\n    {self.text.rstrip()}" if self.text else ""
        caret = ""
        if self.text and self.offset:
            caret = "\n    " + " " * (self.offset - 1) + "^"
        return f"{where}: {self.msg}{line}{caret}"


class BackendError(GraphRNNError, RuntimeError):
    """A backend cannot compile or run what it was given."""


class RuntimeInputError(GraphRNNError, ValueError):
    """Arrays passed to a compiled cell do not match what it was compiled for."""
