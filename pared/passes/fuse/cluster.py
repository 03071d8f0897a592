"""Greedy producer-consumer clustering of elementwise and row-reduction equations.

Equations are visited in topological order. Each fusible equation joins the cluster of one of
its producers when (1) it fits that cluster's iteration domain (the shape ``S = [..., N]`` the
kernel tiles: elementwise results shaped ``S``, and in reduction clusters per-row values shaped
``[..., 1]``), (2) every tensor it reads from outside broadcasts to ``S``, and (3) joining
creates no cycle: no other input of the equation may depend on the cluster through an outside
equation. Otherwise it starts a cluster of its own. A cluster becomes one ``fused`` equation;
values it defines that are read afterwards become extra outputs (multi-output regions, e.g. the
residual sum a residual + RMSNorm kernel also returns). The result is re-sorted topologically.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Optional

from ...ir import Eqn, Graph, Var
from ..rewrite import substitute_uses
from .ops import broadcasts_to, is_elementwise, is_row_op, row_shape
from .region import build_region, exported_values


@dataclass
class _Cluster:
    domain: tuple
    members: list[int] = field(default_factory=list)
    reductions: int = 0


def cluster_graph(graph: Graph, *, allow_reductions: bool, keep: Callable[[_Cluster], bool]) -> Graph:
    """Fuse ``graph``'s top-level equations; clusters for which ``keep`` is false stay unfused."""
    eqns = graph.eqns
    producer: dict[Var, int] = {v: i for i, e in enumerate(eqns) for v in e.outputs}
    where: dict[int, int] = {}  # eqn index -> cluster id
    clusters: list[_Cluster] = []

    def reaches(cid: int, starts: list[int]) -> bool:
        """Whether cluster ``cid`` is upstream of any equation index in ``starts`` (through any path)."""
        first = min(clusters[cid].members)
        seen: set[int] = set()
        stack = list(starts)
        while stack:
            i = stack.pop()
            if i in seen or i < first:
                continue
            seen.add(i)
            if where.get(i) == cid:
                return True
            stack.extend(producer[a] for a in eqns[i].inputs if isinstance(a, Var) and a in producer)
        return False

    for i, e in enumerate(eqns):
        role = _role(e, allow_reductions)
        if role is None:
            continue
        joined = False
        for a in e.inputs:
            p = producer.get(a) if isinstance(a, Var) else None
            cid = where.get(p) if p is not None else None
            if cid is None or not _fits(e, role, clusters[cid]):
                continue
            others = [
                producer[b] for b in e.inputs if isinstance(b, Var) and b in producer and where.get(producer[b]) != cid
            ]
            if reaches(cid, others):
                continue
            clusters[cid].members.append(i)
            clusters[cid].reductions += role == "row"
            where[i] = cid
            joined = True
            break
        if not joined:
            domain = tuple(e.inputs[0].type.shape) if role == "row" else tuple(e.out.type.shape)
            c = _Cluster(domain, [i], int(role == "row"))
            if _fits(e, role, c):
                where[i] = len(clusters)
                clusters.append(c)
    chosen = [c for c in clusters if len(c.members) >= 2 and keep(c)]
    if not chosen:
        return graph
    return _materialize(graph, chosen)


def _role(e: Eqn, allow_reductions: bool) -> Optional[str]:
    if is_elementwise(e):
        return "elementwise"
    if allow_reductions and is_row_op(e):
        return "row"
    return None


def _fits(e: Eqn, role: str, c: _Cluster) -> bool:
    S = c.domain
    if not S:
        return False
    if role == "row":
        x = e.inputs[0].type.shape
        if tuple(x) != S:
            return False
        out_ok = tuple(e.out.type.shape) in (S, row_shape(S))
    else:
        out = tuple(e.out.type.shape)
        # per-row values only next to a reduction (else every column tile would recompute them)
        out_ok = out == S or (out == row_shape(S) and c.reductions > 0)
    return out_ok and all(broadcasts_to(a.type.shape, S) for a in e.inputs)


def _materialize(graph: Graph, chosen: list[_Cluster]) -> Graph:
    eqns = graph.eqns
    owner: dict[int, int] = {i: k for k, c in enumerate(chosen) for i in c.members}
    # nodes: ("c", k) for a chosen cluster, ("e", i) for any other equation
    node_of = {i: ("c", owner[i]) if i in owner else ("e", i) for i in range(len(eqns))}
    member_sets = [set(c.members) for c in chosen]
    new_eqn: dict[tuple, Eqn] = {}
    subst: dict[Var, Var] = {}
    for k, c in enumerate(chosen):
        members = [eqns[i] for i in sorted(c.members)]
        outside = [a for i, e in enumerate(eqns) if i not in member_sets[k] for a in e.inputs]
        outside += [a for i, e in enumerate(eqns) if i not in member_sets[k] for r in e.regions for a in _reads(r)]
        exports = exported_values(members, [*outside, *graph.outputs])
        kind = "reduction" if c.reductions else "elementwise"
        fe = build_region(members, exports, kind)
        subst.update(zip(exports, fe.outputs))
        new_eqn[("c", k)] = fe
    # topological order over nodes, stable by original position
    nodes = sorted(set(node_of.values()), key=lambda n: min(chosen[n[1]].members) if n[0] == "c" else n[1])
    defined_by: dict[Var, tuple] = {v: node_of[i] for i, e in enumerate(eqns) for v in e.outputs}

    def deps(n):
        idx = chosen[n[1]].members if n[0] == "c" else [n[1]]
        out = set()
        for i in idx:
            for a in (*eqns[i].inputs, *(x for r in eqns[i].regions for x in _reads(r))):
                d = defined_by.get(a) if isinstance(a, Var) else None
                if d is not None and d != n:
                    out.add(d)
        return out

    rank = {n: r for r, n in enumerate(nodes)}
    pending = {n: deps(n) for n in nodes}
    users: dict[tuple, list] = {}
    for n, ds in pending.items():
        for d in ds:
            users.setdefault(d, []).append(n)
    heap = [(rank[n], n) for n in nodes if not pending[n]]
    heapq.heapify(heap)
    order = []
    while heap:
        _, n = heapq.heappop(heap)
        order.append(n)
        for u in users.get(n, ()):
            pending[u].discard(n)
            if not pending[u]:
                heapq.heappush(heap, (rank[u], u))
    if len(order) != len(nodes):  # pragma: no cover - the join rule prevents cycles
        raise RuntimeError("fusion created a cycle between clusters")

    def atom(a):
        return subst.get(a, a) if isinstance(a, Var) else a

    out_eqns = []
    for n in order:
        if n[0] == "c":
            out_eqns.append(new_eqn[n])
        else:  # regions of unfused equations may read fused values from the enclosing graph
            e = eqns[n[1]]
            regions = tuple(substitute_uses(r, subst) for r in e.regions)
            out_eqns.append(e.replace(inputs=tuple(atom(a) for a in e.inputs), regions=regions))
    return graph.replace(eqns=tuple(out_eqns), outputs=tuple(atom(a) for a in graph.outputs))


def _reads(r: Graph):
    for e in r.eqns:
        yield from e.inputs
        for rr in e.regions:
            yield from _reads(rr)
    yield from r.outputs
