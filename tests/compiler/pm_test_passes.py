"""Passes registered only for the compiler tests: option types, recording, and broken passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from pared.ir import Eqn, Graph, Var, make_eqn
from pared.passes import Pass, PassContext, RewriteError, register_pass


@register_pass("t_options")
@dataclass(frozen=True)
class OptionsPass(Pass):
    """Every option type a pass may declare."""

    n: int = 1
    ratio: float = 0.5
    flag: bool = False
    pattern: str = "none"
    method: Literal["magnitude", "wanda"] = "magnitude"
    group: Optional[int] = None
    dims: tuple[int, ...] = ()

    def __post_init__(self):
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {self.ratio}")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        ctx.report.add(self.name, "graph", n=self.n, ratio=self.ratio)
        return graph


@register_pass("t_record")
@dataclass(frozen=True)
class RecordPass(Pass):
    """Adds a report row, so tests can tell whether it ran."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        ctx.report.add(self.name, "graph", eqns=len(graph.eqns))
        return graph


@register_pass("t_break_ssa")
@dataclass(frozen=True)
class BreakSSA(Pass):
    """Drops the first equation but keeps its users: an invalid graph."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph.replace(eqns=graph.eqns[1:])


@register_pass("t_add_to_sub")
@dataclass(frozen=True)
class AddToSub(Pass):
    """A valid but wrong rewrite: every add becomes a sub."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        eqns = tuple(e.replace(op="sub") if e.op == "add" else e for e in graph.eqns)
        return graph.replace(eqns=eqns)


@register_pass("t_crash")
@dataclass(frozen=True)
class Crash(Pass):
    """Fails at the first equation, naming it."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        raise RewriteError("t_crash cannot handle this equation", graph.eqns[0])


@register_pass("t_not_a_graph")
@dataclass(frozen=True)
class NotAGraph(Pass):
    def run(self, graph: Graph, ctx: PassContext):
        return [graph]


@register_pass("t_retype")
@dataclass(frozen=True)
class Retype(Pass):
    """Replaces the last equation by one whose output type disagrees with the op's rule."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        last = graph.eqns[-1]
        good = make_eqn(last.op, last.inputs, last.attrs)
        t = good.out.type
        bad_out = Var(t.with_(shape=(*t.shape, 1)))
        bad = Eqn(last.op, last.inputs, last.attrs, (bad_out,))
        outs = tuple(bad_out if a is last.out else a for a in graph.outputs)
        return graph.replace(eqns=(*graph.eqns[:-1], bad), outputs=outs)
