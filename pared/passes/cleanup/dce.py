"""Dead-code elimination: drop pure equations nobody reads, and params nobody references."""

from __future__ import annotations

from dataclasses import dataclass

from ...ir import Graph, Param
from ..base import Pass, register_pass
from ..context import PassContext
from ..rewrite import remove_dead_eqns


@register_pass("dce")
@dataclass(frozen=True)
class DCE(Pass):
    """Remove equations whose outputs are unused and whose op is pure (inside regions too),
    then params (and their weight values) that no equation or output references.

    Options:
        keep_params: keep unreferenced params in the parameter table.
    """

    keep_params: bool = False

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        graph = remove_dead_eqns(graph)
        if self.keep_params:
            return graph
        used = referenced_params(graph)
        if all(p.name in used for p in graph.params) and all(n in used for n in graph.weights):
            return graph
        params = tuple(p for p in graph.params if p.name in used)
        weights = {k: v for k, v in graph.weights.items() if k in used}
        return graph.replace(params=params, weights=weights)


def referenced_params(graph: Graph) -> set[str]:
    """Names of the params read by any equation (regions included) or returned as outputs."""
    names = {a.name for a in graph.outputs if isinstance(a, Param)}
    for e in graph.walk():
        names.update(a.name for a in e.inputs if isinstance(a, Param))
    for e in graph.walk():
        for r in e.regions:
            names.update(a.name for a in r.outputs if isinstance(a, Param))
    return names
