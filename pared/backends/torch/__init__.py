"""The torch backend: IR -> an FX GraphModule of torch ops on the inputs' device."""

from .lower import LoweringError, lower

__all__ = ["LoweringError", "lower"]
