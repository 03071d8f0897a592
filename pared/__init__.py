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


def finetune(compressed: Any, teacher: Any, data: Any, *, steps: int, lr: float = 1e-4, out: Any = None,
             **options: Any):
    """Distillation fine-tuning of a compressed model against its dense teacher (docs/training.md).

    ``compressed``: an IR graph, an artifact directory, a ``pared.compress`` result (torch module
    or JAX function: its graph), or a dense graph with ``recipe="train_sparse{...}"`` /
    ``"train_quant{...}"``. ``teacher``: a Graph, an artifact directory, or a callable on the
    same inputs. ``data``: batches of the graph's inputs. ``out``: save the result as an artifact.
    Returns a :class:`pared.training.FinetuneResult` (``.graph`` is the compressed graph).
    """
    import os

    from .training import finetune as _finetune

    source = None
    if isinstance(compressed, (str, os.PathLike)):
        from .tools.artifact import load_artifact

        art = load_artifact(compressed)
        compressed, source = art.graph, art
    elif not isinstance(compressed, Graph) and isinstance(getattr(compressed, "graph", None), Graph):
        compressed = compressed.graph
    if isinstance(teacher, (str, os.PathLike)):
        from .tools.artifact import load_artifact

        teacher = load_artifact(teacher).graph
    result = _finetune(compressed, teacher, data, steps=steps, lr=lr, **options)
    if out is not None:
        from .tools.artifact import save_artifact

        save_artifact(
            out,
            result.graph,
            recipe=(source.recipe + " + " if source is not None and source.recipe else "") + f"finetune{{{steps=}}}",
            source=source.source if source is not None else None,
            input_names=source.input_names if source is not None else None,
            output_names=source.output_names if source is not None else None,
            report_rows=result.report.to_dicts(),
            metrics={"finetune": result.history[-1] if result.history else {}},
            overwrite=True,
        )
    return result


__all__ = ["Graph", "backend", "compress", "finetune", "jit", "parse", "print_graph", "run_pipeline", "verify",
           "__version__"]
