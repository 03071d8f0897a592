"""The XLA backend: IR -> jax.lax ops under jax.jit (CPU here, GPU/TPU through XLA unchanged)."""

from .lowering import RULES, XlaFunction, XlaLoweringError, graph_params, jax_dtype, lower, to_jax_array

__all__ = ["RULES", "XlaFunction", "XlaLoweringError", "graph_params", "jax_dtype", "lower", "to_jax_array"]
