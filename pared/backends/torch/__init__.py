"""The torch backend: IR -> an FX GraphModule of torch ops on the inputs' device."""

from .lower import LoweringError, lower

__all__ = ["LoweringError", "lower"]

from . import train  # noqa: E402,F401  (registers the training ops' autograd lowerings)
