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


_SHOWN = 120  # characters of the offending line an EquationError shows


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
        text, offset = (self.text or "").rstrip(), self.offset or 0
        if len(text) > _SHOWN:
            # a window around the caret: a generated line can be megabytes long
            start = max(0, min(offset - 1 - _SHOWN // 2, len(text) - _SHOWN))
            end = start + _SHOWN
            text = ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")
            offset = offset - start + (3 if start else 0)
        line = f"\n    {text}" if text else ""
        caret = ""
        if text and offset > 0:
            caret = "\n    " + " " * (offset - 1) + "^"
        return f"{where}: {self.msg}{line}{caret}"


class UndefinedNameError(EquationError):
    """The equations read a name that is not declared where it must be (the right of ``@``, a
    state's next value, an output), or a state has no next value: the kind of error a file
    read with other input/state names than it uses gets, as opposed to a typo in the syntax."""


class EquationWarning(UserWarning):
    """A text equation was accepted but probably does not say what was meant; names the line."""


class UnusedNameWarning(EquationWarning):
    """A declared input or state that no output or next state depends on."""


class ConfusableNameWarning(EquationWarning):
    """Two different names of a cell that look alike (Cyrillic 'һ' and Latin 'h')."""


class BackendError(GraphRNNError, RuntimeError):
    """A backend cannot compile or run what it was given."""


class RuntimeInputError(GraphRNNError, ValueError):
    """Arrays passed to a compiled cell do not match what it was compiled for."""
