"""``fuse_elementwise``: chains of elementwise equations become one ``fused{kind="elementwise"}``."""

from __future__ import annotations

from dataclasses import dataclass

from ...ir import Graph
from ..base import Pass, register_pass
from ..context import PassContext
from .cluster import cluster_graph


@register_pass("fuse_elementwise")
@dataclass(frozen=True)
class FuseElementwise(Pass):
    """Fuse producer-consumer chains of elementwise ops over one iteration shape into one kernel.

    Every intermediate stays in registers: a chain of k ops reading and writing ``[..., N]``
    tensors moves 2 tensors instead of 2k. Inputs may broadcast (bias ``[N]``, scalars,
    ``[..., 1]``). Values still read after the chain become extra outputs of the region.
    Existing ``fused`` equations are left alone; run this after the GEMM and reduction fusions.
    """

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return cluster_graph(graph, allow_reductions=False, keep=lambda c: True)
