"""The reference interpreter: numpy, equation by equation; the numerics oracle for every test."""

from .interpreter import InterpreterError, run_graph

__all__ = ["run_graph", "InterpreterError"]
