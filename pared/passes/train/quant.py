"""The ``train_quant`` pass (QAT): each linear weight becomes ``fake_quant(@w, @w.scale[, @w.zero])``.

    train_quant{weights=int4,group=128}
    train_sparse{pattern=2:4},train_quant{weights=int4,group=128}     sparse then quantized

The grid (scale and zero point per output channel or group) is the RTN grid of the weight as it
is when the pass runs (:func:`pared.passes.quantize.weight_grid`, minmax observer; after
``train_sparse``, of the masked weight) and stays fixed while training, so the quantized grid
holds at every step; the backward is the straight-through estimator (``clipped``: zero outside the
grid's range). ``train_export`` turns the trained weight into ``qlinear`` codes on the same grid.
Layers are the ``quantize`` pass's linear layers (:func:`pared.passes.quantize.linears.linear_kind`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

import numpy as np

from ...ir import Graph, Param, TensorType, Var, make_eqn
from ...ir import dtypes as DT
from ..base import Pass, register_pass
from ..context import PassContext
from ..layer_patterns import as_patterns, check_targets, compile_patterns, selected
from ..quantize.grid import weight_grid
from ..quantize.linears import linear_kind
from ..quantize.scheme import QuantizationError, WeightScheme, make_scheme
from .sites import insert_transforms


@register_pass("train_quant")
@dataclass(frozen=True)
class TrainQuant(Pass):
    """Quantization-aware training of linear weights on a fixed integer grid.

    Options:
        weights: int4, uint4 (asymmetric), int8 or uint8.
        group: group size along the input axis (None: one scale per output channel).
        scheme: sym, asym or auto (asym for uintN).
        backward: ``ste`` (identity) or ``clipped`` (zero gradient outside the grid's range).
        targets / ignore: regexes of weight names (as in ``quantize``).
    """

    rewrites_layers: ClassVar[bool] = True

    weights: str = "int4"
    group: Optional[int] = None
    scheme: Literal["sym", "asym", "auto"] = "auto"
    backward: Literal["ste", "clipped"] = "ste"
    targets: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        for opt in ("targets", "ignore"):
            object.__setattr__(self, opt, as_patterns(getattr(self, opt)))
        s = self.weight_scheme()
        if s.fp8 or s.bits not in (4, 8):
            raise QuantizationError(f"train_quant trains int4/uint4/int8/uint8 grids, not {self.weights}")

    def weight_scheme(self) -> WeightScheme:
        return make_scheme(self.weights, self.group, self.scheme)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        scheme = self.weight_scheme()
        masked = {e.out: e for e in graph.eqns if e.op == "ste_mask" and isinstance(e.inputs[0], Param)}
        layers = []  # (weight param, layout, the value that feeds the dot: a param or an ste_mask output)
        for e in graph.eqns:
            w = e.inputs[1] if e.op == "dot_general" and len(e.inputs) == 2 else None
            if isinstance(w, Var) and w in masked:  # after train_sparse: judge the layer by its weight param
                kind = linear_kind(e.replace(inputs=(e.inputs[0], masked[w].inputs[0])))
                if kind:
                    layers.append((masked[w].inputs[0], kind, w))
            elif isinstance(w, Param) and (kind := linear_kind(e)):
                layers.append((w, kind, w))
        names = list(dict.fromkeys(p.name for p, _, _ in layers))
        check_targets(self.targets, names, "targets", f"{self.name}: ")
        inc, exc = compile_patterns(self.targets, "targets"), compile_patterns(self.ignore, "ignore")
        new, updates, types, done = {}, {}, {}, set()
        for p, kind, fed in layers:
            if p.name in done:
                continue
            done.add(p.name)
            if not selected(p.name, inc, exc):
                ctx.report.add(self.name, p.name, skipped="matched ignore= (or not in targets=); kept in float")
                continue
            w = np.asarray(graph.weight(p.name), np.float32)
            if isinstance(fed, Var):
                w = w * np.asarray(graph.weight(masked[fed].inputs[1].name), np.float32)
            w_nk = w if kind == "nk" else w.T
            scale, zero = weight_grid(np.ascontiguousarray(w_nk), scheme)  # [N, G]
            if kind == "kn":
                scale, zero = scale.T, (None if zero is None else zero.T)
            ga = (1 if kind == "nk" else 0) if scheme.group_size else None
            st = TensorType(scale.shape, DT.f32)
            ins = [fed, Param(p.name + ".scale", st)]
            updates[p.name + ".scale"], types[p.name + ".scale"] = scale.astype(np.float32), st
            if zero is not None:
                ins.append(Param(p.name + ".zero", st))
                updates[p.name + ".zero"], types[p.name + ".zero"] = zero.astype(np.float32), st
            attrs = dict(dtype=scheme.dtype, group_axis=ga, group_size=scheme.group_size if ga is not None else None,
                         backward=self.backward)
            key = p.name if isinstance(fed, Param) else masked[fed]
            new[key] = make_eqn("fake_quant", ins, attrs)
            ctx.report.add(self.name, p.name, weights=scheme.describe(), backward=self.backward, layout=kind)
        if not new:
            return graph
        g = graph.with_weights(updates, types)
        direct = {k: v for k, v in new.items() if isinstance(k, str)}
        chained = {k.out: v for k, v in new.items() if not isinstance(k, str)}
        g = insert_transforms(g, direct) if direct else g
        return _after(g, chained) if chained else g


def _after(graph: Graph, chained) -> Graph:
    """Each ``ste_mask`` output in ``chained`` is read through its ``fake_quant`` by every later use."""
    out, swap = [], {}
    for e in graph.eqns:
        e = e.replace(inputs=[swap.get(a, a) if isinstance(a, Var) else a for a in e.inputs])
        out.append(e)
        for v in e.outputs:
            if v in chained:
                out.append(chained[v])
                swap[v] = chained[v].out
    outputs = [swap.get(a, a) if isinstance(a, Var) else a for a in graph.outputs]
    return graph.replace(eqns=tuple(out), outputs=tuple(outputs))
