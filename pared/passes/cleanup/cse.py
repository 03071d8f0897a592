"""Common-subexpression elimination over pure equations (regions compared structurally)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...ir import OPS, Eqn, Graph, Param, Var
from ...ir.core import Atom
from ..base import Pass, register_pass
from ..context import PassContext


@register_pass("cse")
@dataclass(frozen=True)
class CSE(Pass):
    """Replace an equation by an earlier one with the same op, inputs, attrs and regions.

    Inputs match when they are the same Var (after earlier replacements) or equal Literals/Params;
    inputs of commutative ops are compared in a canonical order; region bodies are compared up to
    renaming of their own values. Only pure ops are merged; region bodies are deduplicated inside
    themselves but never merged with values outside them.
    """

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return _CSE().graph(graph)


class _CSE:
    def __init__(self):
        self.subst: dict[Var, Atom] = {}
        self.order: dict[Var, int] = {}  # definition order, for a canonical commutative order

    def atom(self, a: Atom) -> Atom:
        return self.subst.get(a, a) if isinstance(a, Var) else a

    def define(self, vs) -> None:
        for v in vs:
            self.order[v] = len(self.order)

    def graph(self, g: Graph) -> Graph:
        self.define(g.inputs)
        table: dict[Any, Eqn] = {}
        out: list[Eqn] = []
        for e in g.eqns:
            ins = tuple(self.atom(a) for a in e.inputs)
            regs = tuple(self.graph(r) for r in e.regions)
            e = e.replace(inputs=ins, regions=regs)
            if _mergeable(e):
                key = self.key(e)
                prev = table.get(key)
                if prev is not None:
                    self.subst.update(zip(e.outputs, prev.outputs))
                    continue
                table[key] = e
            self.define(e.outputs)
            out.append(e)
        outputs = tuple(self.atom(a) for a in g.outputs)
        if len(out) == len(g.eqns) and all(a is b for a, b in zip(out, g.eqns)):
            return g.replace(outputs=outputs)
        return g.replace(eqns=tuple(out), outputs=outputs)

    def key(self, e: Eqn):
        ins = e.inputs
        if OPS[e.op].commutative:
            ins = tuple(sorted(ins, key=self.sort_key))
        regs = tuple(region_key(r) for r in e.regions)
        return (e.op, ins, e.attrs, tuple(v.type for v in e.outputs), regs)

    def sort_key(self, a: Atom):
        if isinstance(a, Var):
            return (0, self.order.get(a, -1), "")
        if isinstance(a, Param):
            return (1, 0, a.name + ":" + str(a.type))
        return (2, 0, f"{a.type}:{a.value!r}")


def _mergeable(e: Eqn) -> bool:
    d = OPS.get(e.op)
    if d is None or not d.pure or not e.outputs:
        return False
    return all(OPS.get(x.op) is not None and OPS[x.op].pure for r in e.regions for x in r.walk())


def region_key(g: Graph, local: dict | None = None):
    """A hashable form of a region body, equal for bodies equal up to renaming their own values.

    Values defined inside the body are numbered; values read from outside stay as themselves.
    """
    local = {} if local is None else local

    def ref(a):
        if isinstance(a, Var):
            n = local.get(a)
            return ("local", n) if n is not None else a
        return a

    def define(vs):
        for v in vs:
            local[v] = len(local)

    define(g.inputs)
    items: list = [tuple(v.type for v in g.inputs)]
    for e in g.eqns:
        regs = tuple(region_key(r, local) for r in e.regions)
        items.append((e.op, tuple(ref(a) for a in e.inputs), e.attrs, tuple(v.type for v in e.outputs), regs))
        define(e.outputs)
    items.append(tuple(ref(a) for a in g.outputs))
    return tuple(items)


__all__ = ["CSE", "region_key"]
