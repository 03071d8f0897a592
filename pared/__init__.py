"""pared: a compression compiler for PyTorch and JAX models.

Three ways in, one pipeline (frontend -> IR -> passes -> backend):

- ``torch.compile(model, backend="pared")`` or ``backend=pared.backend(recipe=...)``;
- ``pared.compress(model, example_inputs, recipe=...)`` (torch) or
  ``pared.compress(fn, params, *example_args, recipe=...)`` (JAX), and ``@pared.jit(recipe=...)``;
- offline graph rewriting of IR text with :func:`run_pipeline`.

Framework modules are imported only when used, so ``import pared`` stays light.
"""

from __future__ import annotations

import sys
from typing import Any

from .ir import Graph, parse, print_graph, verify
from .version import __version__


def _is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def compress(model: Any, *args: Any, recipe: Any = None, **kwargs: Any):
    """Compress a model with a recipe (a pipeline string, list, dict or YAML path).

    - torch: ``compress(module, example_inputs, recipe=...)`` -> (compiled module, report),
      captured with torch.export.
    - JAX: ``compress(fn, params, *example_args, recipe=...)`` -> (fn_c, params_c), where
      ``params_c`` is a pytree of (compressed) arrays.
    """
    if isinstance(model, type):
        raise TypeError(f"pared.compress: got the class {model.__name__}, not a model; pass an instance, "
                        f"e.g. pared.compress({model.__name__}(...), example_inputs, recipe=...)")
    if _is_torch_module(model):
        from .compiler.torch_api import compress_torch

        return compress_torch(model, *args, recipe=recipe, **kwargs)
    if callable(model):
        from .compiler.jax_api import compress_jax

        return compress_jax(model, *args, recipe=recipe, **kwargs)
    raise TypeError(
        f"pared.compress: expected a torch.nn.Module or a JAX function, got {type(model).__name__}"
    )


def jit(fn=None, **kwargs: Any):
    """JAX decorator: ``@pared.jit(recipe=...)``; composes with jax.jit, grad and vmap."""
    from .compiler.jax_api import jit as _jit

    return _jit(fn, **kwargs)


def backend(**kwargs: Any):
    """A configured torch.compile backend: ``torch.compile(m, backend=pared.backend(recipe=...))``."""
    from .compiler.torch_backend import backend as _backend

    return _backend(**kwargs)


def run_pipeline(graph: Graph, recipe: Any, ctx: Any = None, **options: Any) -> Graph:
    """Run a pass pipeline over an IR graph (offline rewriting)."""
    from .compiler.pass_manager import run_pipeline as _run

    return _run(graph, recipe, ctx, **options)


__all__ = ["Graph", "backend", "compress", "jit", "parse", "print_graph", "run_pipeline", "verify", "__version__"]
