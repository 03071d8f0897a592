"""The ``structured`` pass: remove whole MLP channels and attention heads, shrinking the weights.

    structured{sparsity=0.25}                          # a quarter of every group's units
    structured{sparsity=0.5,kinds=heads,score=activation}

Groups come from :mod:`.channel_groups`: the producers' output rows (gate/up, q/k/v, BERT's
intermediate) and the consumers' input columns (down, o, BERT's output) of each unit, with the
biases and the reshape/broadcast/slice sizes that depend on them. Removing unit u of a group is
exactly the dense model with the consumer's columns of u set to zero (the unit then contributes
nothing), but the producers, biases and consumer all shrink, and every shape attribute that
carried the old size (``reshape`` to (B, S, H, D), ``broadcast_in_dim`` of GQA's repeat_kv,
``slice`` limits) is rewritten. Groups the tracking cannot rewrite safely are left alone and
reported with the reason.

Scores per unit (the lowest are removed):
  weight:     sum over the group's producer and consumer weights of ||W restricted to the unit||^2 / ||W||^2
              (biases do not vote);
  activation: sum over consumers and the unit's input columns j of ||X_j||^2 ||W[:, j]||^2,
              the output energy the unit carries on calibration data (cross terms ignored, as in
              Wanda's structured variant and FLAP's fluctuation-free baseline), each consumer
              normalized by its total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...ir import Graph, Param, TensorType, Var, make_eqn
from ..base import Pass, register_pass
from ..calibration import CalibrationError, CalibrationRequest, calibrate, check_finite_weights, find_weight_sites
from ..context import PassContext
from ..layer_patterns import as_patterns, check_targets, compile_patterns, selected
from .channel_groups import Group, find_channel_groups
from .selection import HEAD_OR_EMBEDDING

KINDS = ("channels", "heads")


@register_pass("structured")
@dataclass(frozen=True)
class StructuredRemoval(Pass):
    """Remove the lowest-scoring units (channels or heads) of every channel group.

    Options:
        sparsity: fraction of each group's units removed, in [0, 1) (rounded to whole units).
        score: ``weight`` (norms) or ``activation`` (calibrated; see the module docstring).
        kinds: which groups: ``channels`` (MLP hidden units) and/or ``heads`` (attention).
        targets / ignore: regexes over weight names; a group is taken when one of its weights
            matches ``targets`` (empty: all) and none matches ``ignore``.
        skip_embeddings: leave groups touching embeddings / the LM head alone.
        multiple_of: round the kept unit count up to a multiple (e.g. 8 for kernel tiles).
    """

    def needs_calibration(self) -> bool:
        return self.score == "activation"

    sparsity: float = 0.25
    score: Literal["weight", "activation"] = "weight"
    kinds: tuple[str, ...] = KINDS
    targets: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    skip_embeddings: bool = True
    multiple_of: int = 1

    def __post_init__(self):
        for opt in ("targets", "ignore", "kinds"):
            object.__setattr__(self, opt, as_patterns(getattr(self, opt)))
        if not (isinstance(self.sparsity, (int, float)) and 0.0 <= self.sparsity < 1.0):
            raise ValueError(f"sparsity={self.sparsity!r} must be in [0, 1)")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds={self.kinds!r}: choose from {KINDS}")
        if self.multiple_of < 1:
            raise ValueError(f"multiple_of={self.multiple_of} must be >= 1")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        where = f"{self.name}: "
        inc, exc = compile_patterns(self.targets, "targets", where), compile_patterns(self.ignore, "ignore", where)
        check_targets(self.targets, list(dict.fromkeys(s.param for s in find_weight_sites(graph))), "targets", where,
                      what="weight of a linear layer")
        chosen: list[Group] = []
        for g in find_channel_groups(graph):
            names = g.params()
            if not any(selected(n, inc, exc) for n in names) or any(p.search(n) for p in exc for n in names):
                continue
            if g.refused:
                ctx.report.add(self.name, g.name, skipped="; ".join(dict.fromkeys(g.refused)))
            elif g.kind not in self.kinds:
                continue
            elif self.skip_embeddings and any(HEAD_OR_EMBEDDING.search(n) for n in names):
                ctx.report.add(self.name, g.name, skipped="touches an embedding / LM head (skip_embeddings=true)")
            else:
                chosen.append(g)
        check_finite_weights(graph, [n for g in chosen for n in g.params()], self.name)
        if self.score == "activation" and ctx.calibration is None:
            raise CalibrationError(f"{self.name}: score=activation needs calibration data (calibration=[batches...])")
        if not chosen or self.sparsity == 0.0:
            return graph
        sqnorms = self._activation_sqnorms(graph, ctx, chosen) if self.score == "activation" else {}

        new_w: dict[str, np.ndarray] = {}
        edits: dict[int, list] = {}
        for g in chosen:
            u = g.units
            scores = self._scores(graph, g, sqnorms, new_w)
            keep_n = min(u, -(-max(1, u - int(round(u * self.sparsity))) // self.multiple_of) * self.multiple_of)
            if keep_n == u:
                continue
            keep = np.sort(np.argsort(-scores, kind="stable")[:keep_n])
            before = {}
            for p, axis, n in (*g.producers, *g.consumers, *g.biases):
                w = new_w.get(p, np.asarray(graph.weight(p)))
                before.setdefault(p, tuple(np.shape(graph.weight(p))))
                new_w[p] = np.take(w, unit_indices(keep, n, u), axis=axis)
            for i, name, pos, n in g.attrs:
                edits.setdefault(i, []).append((name, pos, n // u * keep_n))
            ctx.report.add(self.name, g.name, kind=g.kind, units=u, kept=keep_n,
                           removed=",".join(str(x) for x in sorted(set(range(u)) - set(keep.tolist()))),
                           shapes="; ".join(f"{p} {list(s)}->{list(new_w[p].shape)}" for p, s in before.items()))
        return rebuild(graph, new_w, edits)

    def _scores(self, graph: Graph, g: Group, sqnorms: dict, new_w: dict) -> np.ndarray:
        u = g.units
        total = np.zeros(u)
        if self.score == "weight":
            for p, axis, _ in (*g.producers, *g.consumers):
                e = unit_energy(np.asarray(graph.weight(p), np.float64) ** 2, axis, u)
                total += e / max(e.sum(), 1e-300)
            return total
        for p, axis, _ in g.consumers:
            w2 = np.moveaxis(np.asarray(graph.weight(p), np.float64) ** 2, axis, 0)
            w2 = w2.reshape(np.shape(graph.weight(p))[axis], -1)
            e = (sqnorms[p] * w2.sum(1)).reshape(u, -1).sum(1)
            total += e / max(e.sum(), 1e-300)
        return total

    def _activation_sqnorms(self, graph: Graph, ctx: PassContext, groups) -> dict[str, np.ndarray]:
        consumers = {p for g in groups for p, _, _ in g.consumers}
        sites = [s for s in find_weight_sites(graph) if s.param in consumers]
        got: dict[str, np.ndarray] = {}

        def keep_stats(site, w, stats):
            got[site.param] = np.asarray(stats["sqnorms"], np.float64)
            return None

        calibrate(
            graph, ctx, CalibrationRequest(self.name, sites, lambda s: ("sqnorms",), keep_stats, sequential=False)
        )
        return got


def unit_energy(w2: np.ndarray, axis: int, units: int) -> np.ndarray:
    """Sum of ``w2`` over each of ``units`` equal blocks along ``axis``."""
    m = np.moveaxis(w2, axis, 0)
    return m.reshape(units, -1).sum(1)


def unit_indices(keep: np.ndarray, n: int, units: int) -> np.ndarray:
    """Positions along an axis of size ``n`` that the kept units cover (blocks of n / units)."""
    block = n // units
    return (keep[:, None] * block + np.arange(block)[None, :]).reshape(-1)


def rebuild(graph: Graph, new_w: dict[str, np.ndarray], edits: dict[int, list]) -> Graph:
    """The graph with resized weights and attrs; every equation downstream of a changed type is
    re-inferred (its outputs get new Vars), the others are kept as they are."""
    old = graph.param_types
    types = {p: TensorType(w.shape, old[p].dtype, old[p].encoding) for p, w in new_w.items()}
    env: dict[Var, Var] = {}

    def sub(a):
        if isinstance(a, Param) and a.name in types:
            return Param(a.name, types[a.name])
        return env.get(a, a) if isinstance(a, Var) else a

    eqns = []
    for i, e in enumerate(graph.eqns):
        ins = [sub(a) for a in e.inputs]
        attrs = e.attrs
        for name, pos, val in edits.get(i, ()):
            v = list(attrs[name])
            v[pos] = val
            attrs = attrs.set(**{name: tuple(v)})
        if attrs is e.attrs and all(x is y for x, y in zip(ins, e.inputs)):
            eqns.append(e)
            continue
        ne = make_eqn(e.op, ins, attrs, e.regions, e.loc)
        if [o.type for o in ne.outputs] == [o.type for o in e.outputs]:
            ne = ne.replace(outputs=e.outputs)
        else:
            env.update(zip(e.outputs, ne.outputs))
        eqns.append(ne)
    g = graph.with_weights(new_w, types)
    return g.replace(eqns=eqns, outputs=[sub(a) for a in graph.outputs])
