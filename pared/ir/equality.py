"""Structural equality of graphs: same structure up to renaming of Vars.

Weight values are not compared (a parsed graph has none); param names and types are.
"""

from __future__ import annotations

from typing import Optional

from .core import Attrs, Graph, Literal, Param, Var


class _Mismatch(Exception):
    pass


def _match_atom(a, b, m: dict[Var, Var], where: str) -> None:
    if isinstance(a, Var) and isinstance(b, Var):
        if m.get(a) is not b:
            raise _Mismatch(f"{where}: different values ({a.type} vs {b.type})")
    elif isinstance(a, Literal) and isinstance(b, Literal) or isinstance(a, Param) and isinstance(b, Param):
        if a != b:
            raise _Mismatch(f"{where}: {a!r} != {b!r}")
    else:
        raise _Mismatch(f"{where}: {type(a).__name__} vs {type(b).__name__}")


def _define(a: Var, b: Var, m: dict[Var, Var], where: str) -> None:
    if a.type != b.type:
        raise _Mismatch(f"{where}: type {a.type} != {b.type}")
    m[a] = b


def _match_graph(g: Graph, h: Graph, m: dict[Var, Var], where: str) -> None:
    if len(g.inputs) != len(h.inputs):
        raise _Mismatch(f"{where}: {len(g.inputs)} inputs vs {len(h.inputs)}")
    for i, (a, b) in enumerate(zip(g.inputs, h.inputs)):
        _define(a, b, m, f"{where} input {i}")
    if g.params != h.params:
        ga, ha = {p.name: p.type for p in g.params}, {p.name: p.type for p in h.params}
        diff = sorted(set(ga.items()) ^ set(ha.items()), key=str)
        raise _Mismatch(f"{where}: params differ: {diff[:4]}")
    if len(g.eqns) != len(h.eqns):
        raise _Mismatch(f"{where}: {len(g.eqns)} equations vs {len(h.eqns)}")
    for i, (e, f) in enumerate(zip(g.eqns, h.eqns)):
        w = f"{where} equation {i} ({e.op})"
        if e.op != f.op:
            raise _Mismatch(f"{w}: op {e.op} != {f.op}")
        if len(e.inputs) != len(f.inputs) or len(e.outputs) != len(f.outputs):
            raise _Mismatch(f"{w}: arity differs")
        for j, (a, b) in enumerate(zip(e.inputs, f.inputs)):
            _match_atom(a, b, m, f"{w} input {j}")
        if Attrs(e.attrs) != Attrs(f.attrs):
            raise _Mismatch(f"{w}: attrs {dict(e.attrs)} != {dict(f.attrs)}")
        if e.loc != f.loc:
            raise _Mismatch(f"{w}: loc {e.loc!r} != {f.loc!r}")
        if len(e.regions) != len(f.regions):
            raise _Mismatch(f"{w}: region count differs")
        for k, (r, s) in enumerate(zip(e.regions, f.regions)):
            _match_graph(r, s, m, f"{w} region {k}")
        for j, (a, b) in enumerate(zip(e.outputs, f.outputs)):
            _define(a, b, m, f"{w} output {j}")
    if len(g.outputs) != len(h.outputs):
        raise _Mismatch(f"{where}: {len(g.outputs)} outputs vs {len(h.outputs)}")
    for i, (a, b) in enumerate(zip(g.outputs, h.outputs)):
        _match_atom(a, b, m, f"{where} output {i}")


def graph_diff(g: Graph, h: Graph) -> Optional[str]:
    """None if ``g`` and ``h`` are structurally equal, else the first difference."""
    try:
        _match_graph(g, h, {}, "graph")
    except _Mismatch as e:
        return str(e)
    return None


def graph_equal(g: Graph, h: Graph) -> bool:
    return graph_diff(g, h) is None


def assert_graph_equal(g: Graph, h: Graph) -> None:
    diff = graph_diff(g, h)
    if diff is not None:
        from .printer import print_graph

        raise AssertionError(f"graphs differ: {diff}\n--- got:\n{print_graph(g)}--- expected:\n{print_graph(h)}")
