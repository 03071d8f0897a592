"""Building ``fused`` region equations out of a set of equations (shared by the fusion passes).

A region reads every tensor it needs through its inputs: the Vars and Params its member
equations read from outside become the ``fused`` op's inputs (in first-use order) and fresh
Vars inside the region; Literals stay inline. The region returns the member values that are
read after it (``exports``), in member order.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ...ir import Eqn, Graph, Literal, Param, Var, make_eqn

Atom = Var | Literal | Param


def build_region(members: Sequence[Eqn], exports: Sequence[Var], kind: str, loc: str = "") -> Eqn:
    """One ``fused`` equation computing ``exports`` from ``members`` (topologically ordered).

    Every value inside the region is a fresh Var (the members' own outputs keep meaning what they
    meant outside, which a rewrite engine substituting them must not see inside the region).
    The new equation's outputs are fresh Vars with the types of ``exports``, in order.
    """
    renamed: dict[Var, Var] = {}
    outer: list[Atom] = []
    inner: dict[object, Var] = {}
    body: list[Eqn] = []

    def local(a: Atom) -> Atom:
        if isinstance(a, Literal):
            return a
        if isinstance(a, Var) and a in renamed:
            return renamed[a]
        key = ("p", a.name) if isinstance(a, Param) else a
        if key not in inner:
            inner[key] = Var(a.type)
            outer.append(a)
        return inner[key]

    for e in members:
        ins = tuple(local(a) for a in e.inputs)
        outs = tuple(Var(v.type) for v in e.outputs)
        renamed.update(zip(e.outputs, outs))
        body.append(e.replace(inputs=ins, outputs=outs))
    keys = [("p", a.name) if isinstance(a, Param) else a for a in outer]
    region = Graph(tuple(inner[k] for k in keys), tuple(body), tuple(renamed[v] for v in exports))
    return make_eqn("fused", outer, {"kind": kind}, regions=[region], loc=loc or (members[0].loc if members else ""))


def exported_values(members: Sequence[Eqn], readers: Iterable[Atom]) -> list[Var]:
    """The member outputs that some atom in ``readers`` (reads after the region) names, in member order."""
    wanted = {a for a in readers if isinstance(a, Var)}
    return [v for e in members for v in e.outputs if v in wanted]
