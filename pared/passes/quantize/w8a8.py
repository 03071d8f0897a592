"""W8A8: int8 (or fp8) per-channel weights with quantized activations, dynamic or static.

``dynamic`` quantizes each token at run time (per-token scale max|x| / 127); ``static`` uses one
calibrated per-tensor scale per layer input, from an observer over the calibration batches (run
through the calibration engine, non-sequentially: ranges of the float model). The product is an
int8 x int8 -> int32 matmul (``torch._int_mm`` on the torch backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from ...ir import Graph
from ..base import Pass, register_pass
from ..context import PassContext
from .linears import QuantizedWeight, apply_quantized, find_linears, report_unquantizable, select, weight_nk
from .observers import ActivationObserver
from .rtn import Observer, rtn_quantize, skip_ignored
from .scheme import QuantizationError, WeightScheme, check_weight, dequantize_with


class _RangeStat:
    """A calibration-engine Statistic feeding an ActivationObserver."""

    key = "act_range"

    def __init__(self, method: str, name: str):
        self.obs = ActivationObserver(method, name=name)

    def update(self, x: np.ndarray) -> None:
        self.obs.update(x)

    def result(self):
        return self.obs


def static_scales(graph: Graph, ctx: PassContext, sites, method: str, qmax: float, pass_name: str) -> dict[str, float]:
    """Per-tensor activation scale of each site's input (name -> scale) from the calibration data."""
    from ..calibration import CalibrationRequest, Statistic, calibrate, find_weight_sites

    by_index = {s.index: s for s in sites}
    wsites = [ws for ws in find_weight_sites(graph) if ws.index in by_index]
    Stat = type("ActRange", (_RangeStat, Statistic), {})
    scales: dict[str, float] = {}

    def rewrite(ws, w, stats):
        scales[ws.param] = stats["act_range"].symmetric_scale(qmax)
        return None

    calibrate(graph, ctx, CalibrationRequest(pass_name, wsites, lambda ws: (Stat(method, ws.param),), rewrite, sequential=False))
    return scales


@register_pass("w8a8")
@dataclass(frozen=True)
class W8A8(Pass):
    """Quantize linear weights per output channel and their input activations to 8 bits.

    Options:
        activations: dynamic (per token, at run time) or static (per tensor, calibrated).
        weights: int8, or fp8 (e4m3 weights and activations).
        observer: the static activation observer (minmax, percentile, mse, sparse).
        weight_observer: the weight observer.
        ignore, targets: regexes of weight names to skip / to quantize.
    """

    activations: Literal["dynamic", "static"] = "dynamic"
    weights: Literal["int8", "fp8"] = "int8"
    observer: Observer = "minmax"
    weight_observer: Observer = "minmax"
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def scheme(self) -> WeightScheme:
        return WeightScheme(8, True, None, fp8=self.weights == "fp8")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        scheme = self.scheme()
        report_unquantizable(graph, ctx, self.name, self.ignore)
        sites, ignored = select(find_linears(graph), self.ignore, self.targets)
        skip_ignored(ctx, self.name, ignored)
        qmax = 448.0 if scheme.fp8 else 127.0
        scales: dict[str, float] = {}
        if self.activations == "static":
            for site in sites:  # before calibrating: a non-finite weight would surface downstream
                check_weight(site.name, weight_nk(graph, site), scheme)
            scales = static_scales(graph, ctx, sites, self.observer, qmax, self.name)
        return apply_quantized(graph, ctx, self.name, sites, lambda site, w: self._solve(ctx, scheme, site, w, scales))

    def _solve(self, ctx, scheme: WeightScheme, site, w, scales) -> Optional[QuantizedWeight]:
        why = check_weight(site.name, w, scheme)
        if why:
            ctx.report.add(self.name, site.name, skipped=why)
            return None
        q, s, z = rtn_quantize(w, scheme, self.weight_observer)
        act_scale = None
        if self.activations == "static":
            if site.name not in scales:
                raise QuantizationError(f"{self.name}: no calibrated activation range for {site.name}")
            act_scale = scales[site.name]
        fields = {"_deq": dequantize_with(q, s, z, scheme), "act_obs": self.observer if act_scale is not None else "per-token"}
        if act_scale is not None:
            fields["act_scale"] = act_scale
        return QuantizedWeight(q, s, z, scheme.q_type(*w.shape), None, act=self.activations, act_scale=act_scale, fields=fields)
