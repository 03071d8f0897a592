"""How many kernels a graph launches: one per top-level equation that does work."""

from __future__ import annotations

from ...ir import Graph, get_op


def count_launches(graph: Graph) -> int:
    """Fused regions count one launch each; every other equation one, except the ops with the
    ``free`` trait (views of their input's memory: no kernel)."""
    return sum(1 for e in graph.eqns if not get_op(e.op).has("free"))
