"""Executors for the calibration engine, one per backend; the compiler picks one per graph.

The engine (:mod:`pared.passes.calibration.engine`) walks a graph equation by equation and asks an
executor to run each one. ``torch`` lowers each equation with the torch lowering table (fast, and
what ``auto`` picks when torch is installed); ``reference`` runs the numpy interpreter.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from ..ir.core import Graph

EXECUTOR_BACKENDS = ("auto", "torch", "reference")


def make_executor(graph: Graph, backend: str = "auto", opaque: Optional[Mapping[str, Any]] = None):
    """An executor for ``graph``: ``torch`` if asked for (or ``auto`` and torch imports), else ``reference``."""
    if backend not in EXECUTOR_BACKENDS:
        raise ValueError(f"calibration backend {backend!r} unknown; valid: {', '.join(EXECUTOR_BACKENDS)}")
    if backend in ("auto", "torch"):
        try:
            from .torch.executor import TorchExecutor
        except ImportError:
            if backend == "torch":
                raise
        else:
            return TorchExecutor(graph, opaque)
    from .reference.executor import ReferenceExecutor

    return ReferenceExecutor(graph)
