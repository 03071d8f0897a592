"""Errors raised by the IR layer. Each says what is wrong and where."""

from __future__ import annotations


class IRError(Exception):
    """Base class for IR errors."""


class TypeInferenceError(IRError):
    """An op's inputs or attributes do not fit its shape/dtype rule."""


class AttrError(IRError):
    """An attribute is missing, unknown, or has a value of the wrong kind."""


class UnknownOpError(IRError):
    pass


class VerifyError(IRError):
    """A graph breaks an IR invariant. ``context`` shows the equations around the bad one."""

    def __init__(self, message: str, context: str = ""):
        self.message = message
        self.context = context
        super().__init__(message + ("\n" + context if context else ""))


class ParseError(IRError):
    """Malformed IR text, with the 1-based ``line`` and ``col`` of the problem."""

    def __init__(self, message: str, line: int, col: int, source_line: str = ""):
        self.message = message
        self.line = line
        self.col = col
        text = f"line {line}, col {col}: {message}"
        if source_line:
            text += f"\n  {source_line}\n  {' ' * (col - 1)}^"
        super().__init__(text)


class BindError(IRError):
    """Actual shapes do not fit a graph's (symbolic) types: wrong rank, or a symbol bound twice."""
