"""pared: a compression compiler for PyTorch and JAX models."""

__version__ = "0.1.0"
