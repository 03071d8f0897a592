"""``fuse``: every fusion pass, in the order that gives GEMMs first pick of their neighbours."""

from __future__ import annotations

from dataclasses import dataclass

from ...ir import Graph
from ..base import Pass, register_pass
from ..context import PassContext
from .dequant_prologue import FuseDequant
from .elementwise import FuseElementwise
from .gemm_epilogue import FuseGemmEpilogue
from .reduction import FuseReductions


@register_pass("fuse")
@dataclass(frozen=True)
class Fuse(Pass):
    """``fuse_dequant``, ``fuse_gemm_epilogue``, ``fuse_reductions``, ``fuse_elementwise`` in turn.

    Options:
        dequant, epilogue, reductions, elementwise: switch one stage off (all on by default).
    """

    dequant: bool = True
    epilogue: bool = True
    reductions: bool = True
    elementwise: bool = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        stages = [(self.dequant, FuseDequant()), (self.epilogue, FuseGemmEpilogue()),
                  (self.reductions, FuseReductions()), (self.elementwise, FuseElementwise())]
        for on, p in stages:
            if on:
                graph = p.run(graph, ctx)
        return graph
