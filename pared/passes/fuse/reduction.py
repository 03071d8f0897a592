"""``fuse_reductions``: last-axis reductions with their elementwise neighbours become one kernel."""

from __future__ import annotations

from dataclasses import dataclass

from ...ir import Graph
from ..base import Pass, register_pass
from ..context import PassContext
from .cluster import cluster_graph


@register_pass("fuse_reductions")
@dataclass(frozen=True)
class FuseReductions(Pass):
    """Fuse softmax, layer/RMS norm and keepdims last-axis reductions with the elementwise ops
    that feed them and consume them into one ``fused{kind="reduction"}`` region.

    The kernel owns whole rows: e.g. residual add + RMSNorm (+ static quantize) reads ``x`` and
    the residual once and writes the sum and the normalised row, and a decomposed RMSNorm
    (``pow, reduce_mean, add, rsqrt, mul, mul``) becomes one launch instead of six. Clusters
    without a reduction are left for ``fuse_elementwise``.
    """

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return cluster_graph(graph, allow_reductions=True, keep=lambda c: c.reductions > 0)
