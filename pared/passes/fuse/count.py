"""How many kernels a graph launches: one per top-level equation that does work."""

from __future__ import annotations

from ...ir import Graph

# Ops a backend implements without a kernel (views of the same memory) or that hold no work.
FREE_OPS = frozenset({"reshape", "broadcast_in_dim", "transpose"})


def count_launches(graph: Graph) -> int:
    """Fused regions count one launch each; every other equation one, except free view ops."""
    return sum(1 for e in graph.eqns if e.op not in FREE_OPS)
