"""Constant folding: evaluate pure equations whose inputs are all known, with the reference impl."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ...ir import OPS, Eqn, Graph, Literal, Param, Sym, TensorType
from ...ir.dtypes import round_to
from ..base import Pass, register_pass
from ..context import PassContext
from ..rewrite import Replacement, RewriteError, RewriteView, RuleTable, rewrite


@register_pass("fold")
@dataclass(frozen=True)
class Fold(Pass):
    """Replace equations whose inputs are all Literals or Params with known values by their result.

    Rank-0 results become Literals; other results become new Params named after the first param
    they come from (``fc.weight.transpose``, made unique). Equations whose result is bigger than
    their inputs (broadcast, iota, outer products) are kept unless ``allow_growth`` is set, so
    folding never bloats the weights. Params without a value (a graph parsed from text) and
    equations whose reference impl raises are left alone, without error. The source params stay
    in place; ``dce`` drops those left unused.

    Options:
        allow_growth: also fold equations whose result has more bytes than their inputs.
    """

    allow_growth: bool = False

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        folder = _Folder(graph, self.allow_growth)
        out = rewrite(graph, RuleTable(default=(folder.rule,)))
        if not folder.values:
            return out
        return out.with_weights(folder.values, params=folder.types)


def _nbytes(t: TensorType) -> float:
    return int(np.prod(t.shape, dtype=np.int64)) * t.dtype.bits / 8


def _has_symbol(v: Any) -> bool:
    if isinstance(v, Sym):
        return True
    if isinstance(v, tuple):
        return any(_has_symbol(x) for x in v)
    return False


class _Folder:
    """Holds one run's new params; the rewrite engine calls :meth:`rule` on every equation."""

    def __init__(self, graph: Graph, allow_growth: bool):
        self.graph = graph
        self.allow_growth = allow_growth
        self.values: dict[str, np.ndarray] = {}
        self.types: dict[str, TensorType] = {}
        self.taken = {p.name for p in graph.params} | set(graph.weights)

    def value(self, p: Param) -> Optional[np.ndarray]:
        v = self.values.get(p.name)
        if v is None:
            v = self.graph.weights.get(p.name)
        return None if v is None else round_to(p.type.dtype, np.asarray(v))

    def rule(self, e: Eqn, view: RewriteView):
        d = OPS.get(e.op)
        if d is None or not d.pure or d.impl is None or e.regions or not e.outputs:
            return None
        if not all(isinstance(a, (Literal, Param)) for a in e.inputs):
            return None
        if not all(v.type.is_static for v in e.outputs) or _has_symbol(tuple(e.attrs.values())):
            return None
        in_bytes = sum(_nbytes(a.type) for a in e.inputs if a.type.is_static)
        if not self.allow_growth and sum(_nbytes(v.type) for v in e.outputs) > in_bytes:
            return None
        args = []
        for a in e.inputs:
            if isinstance(a, Literal):
                args.append(np.asarray(a.value, dtype=a.type.dtype.np))
            else:
                v = self.value(a)
                if v is None:
                    return None  # no weight value (e.g. parsed text): leave it
                args.append(v)
        try:
            with np.errstate(all="ignore"):  # inf/nan results fold as the runtime would compute them
                res = d.impl(*args, **dict(e.attrs))
        except Exception:  # e.g. an out-of-range constant index: leave it for the runtime to report
            return None
        res = list(res) if isinstance(res, (tuple, list)) else [res]
        if len(res) != len(e.outputs):
            raise RewriteError(
                f"fold: {e.op}'s reference impl returned {len(res)} values for {len(e.outputs)} outputs", e
            )
        outs = []
        for v, r in zip(e.outputs, res):
            r = round_to(v.type.dtype, np.asarray(r))
            if r.shape != v.type.shape:
                raise RewriteError(f"fold: {e.op}'s reference impl gave shape {r.shape} for type {v.type}", e)
            if r.ndim == 0 and v.type.encoding is None:
                outs.append(Literal(r.item(), v.type))
            else:
                outs.append(self.new_param(e, v.type, r))
        return Replacement((), outs)

    def new_param(self, e: Eqn, t: TensorType, value: np.ndarray) -> Param:
        src = next((a.name for a in e.inputs if isinstance(a, Param)), "const")
        base = f"{src}.{e.op}"
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}.{i}", i + 1
        self.taken.add(name)
        self.values[name] = value
        self.types[name] = t
        return Param(name, t)
