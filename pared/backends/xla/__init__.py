"""The XLA backend: IR -> jax.lax ops under jax.jit (CPU here, GPU/TPU through XLA unchanged)."""

from . import (
    quantized,  # noqa: F401,E402  (registers the qlinear rule)
    train,  # noqa: F401,E402  (registers the training ops' custom_vjp lowerings)
)
from .lowering import XlaEnv, XlaFunction, XlaLoweringError, graph_params, jax_dtype, lower, to_jax_array

__all__ = ["XlaEnv", "XlaFunction", "XlaLoweringError", "graph_params", "jax_dtype", "lower", "to_jax_array"]
