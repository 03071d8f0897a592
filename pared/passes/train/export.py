"""The ``train_export`` pass: a trained graph back to a normal compressed one.

``ste_mask(@w, @w.mask)`` becomes the param ``@w`` holding ``w * mask`` with the ``Sparse``
encoding its pattern promises (as ``sparsify`` leaves it); ``fake_quant(@w, @w.scale[, @w.zero])``
becomes a ``qlinear`` whose codes are the trained weight on the training grid (the same scale and
zero point, so the codes reproduce the fake-quantized weight exactly). Masks and training grids
leave the graph; what remains saves and runs like any one-shot artifact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import Graph, Param, Var
from ...ir.ops.train import fake_quant
from ..base import Pass, register_pass
from ..cleanup.dce import referenced_params
from ..context import PassContext
from ..quantize.linears import QuantizedWeight, apply_quantized, find_linears
from ..quantize.scheme import WeightScheme, dequantize_with, quantize_with
from .patterns import parse_train_pattern


@register_pass("train_export")
@dataclass(frozen=True)
class TrainExport(Pass):
    """Fold the training transforms into compressed weights (see the module docstring)."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        values: dict[str, np.ndarray] = {}
        types = {}
        resolved: dict[Var, Param] = {}
        grids: dict[str, tuple] = {}  # weight -> (scale, zero, attrs) of its fake_quant
        eqns = []
        for e in graph.eqns:
            ins = [resolved.get(a, a) if isinstance(a, Var) else a for a in e.inputs]
            w = ins[0] if ins else None
            if e.op in ("ste_mask", "fake_quant") and isinstance(w, Param):
                val = values.get(w.name, np.asarray(graph.weight(w.name)))
                if e.op == "ste_mask":
                    mask = np.asarray(graph.weight(ins[1].name))
                    val = (val * mask).astype(val.dtype)
                    pat = parse_train_pattern(e.attrs["pattern"])
                    in_axes = (e.attrs["perm"] or tuple(range(val.ndim)))[e.attrs["outs"]:]
                    in_axis = in_axes[0] if len(in_axes) == 1 else None
                    enc = pat.base.encoding(in_axis, val.ndim) if pat.base is not None else _bitmask()
                    types[w.name] = w.type.with_(encoding=enc)
                else:
                    scale = np.asarray(graph.weight(ins[1].name))
                    zero = np.asarray(graph.weight(ins[2].name)) if len(ins) > 2 else None
                    attrs = dict(e.attrs)
                    val = fake_quant(val, scale, zero, **attrs)
                    grids[w.name] = (scale, zero, attrs)
                values[w.name] = val
                resolved[e.out] = Param(w.name, types.get(w.name, w.type))
                continue
            eqns.append(e.replace(inputs=ins))
        if not values:
            return graph
        outputs = [resolved.get(a, a) if isinstance(a, Var) else a for a in graph.outputs]
        eqns = [e.replace(inputs=[Param(a.name, types[a.name]) if isinstance(a, Param) and a.name in types else a
                                  for a in e.inputs]) for e in eqns]
        g = graph.replace(eqns=tuple(eqns), outputs=tuple(outputs)).with_weights(values, types)
        used = referenced_params(g)
        g = g.replace(params=tuple(p for p in g.params if p.name in used),
                      weights={k: v for k, v in g.weights.items() if k in used})
        for name in values:
            if name not in grids:
                ctx.report.add(self.name, name, sparsity=float(1 - np.count_nonzero(values[name]) / values[name].size),
                               encoding=str(types[name].encoding))
        if grids:
            g = _quantize_on_grids(g, ctx, self.name, grids)
        return g


def _bitmask():
    from ...ir import Sparse

    return Sparse("bitmask")


def _quantize_on_grids(graph: Graph, ctx: PassContext, name: str, grids: dict) -> Graph:
    """Rewrite the fake-quantized linears into ``qlinear`` with the codes of their training grid."""
    sites = [s for s in find_linears(graph) if s.name in grids]

    def solve(site, w_nk):
        scale, zero, attrs = grids[site.name]
        if site.layout == "kn":
            scale, zero = scale.T, (None if zero is None else zero.T)
        dt = attrs["dtype"]  # i4 / u4 / i8 / u8 (train_quant's grids)
        scheme = WeightScheme(4 if dt.bits <= 4 else 8, symmetric=dt.name.startswith("i"),
                              group_size=attrs["group_size"])
        s2 = np.ascontiguousarray(scale, np.float32)
        z2 = None if zero is None else np.ascontiguousarray(zero, np.float32)
        if attrs["group_size"] is None:  # per channel: [N, 1]
            s2 = s2.reshape(-1, 1)
            z2 = None if z2 is None else z2.reshape(-1, 1)
        q = quantize_with(w_nk, s2, z2, scheme)
        return QuantizedWeight(q, s2, z2, scheme.q_type(*w_nk.shape), scheme.group_size,
                               dequantized=dequantize_with(q, s2, z2, scheme), fields={"grid": "trained (QAT)"})

    return apply_quantized(graph, ctx, name, sites, solve)
