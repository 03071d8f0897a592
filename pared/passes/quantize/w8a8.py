"""W8A8: int8 (or fp8) per-channel weights with quantized activations, dynamic or static.

``dynamic`` quantizes each token at run time (per-token scale max|x| / 127); ``static`` uses one
calibrated per-tensor scale per layer input, from an observer over the calibration batches (run
through the calibration engine, non-sequentially: ranges of the float model). The product is an
int8 x int8 -> int32 matmul (``torch._int_mm`` on the torch backend). :class:`ActivationQuantizer`
is shared with ``fp8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Sequence

import numpy as np

from ...ir import Graph
from ..base import register_pass
from ..calibration import CalibrationError, CalibrationRequest, Statistic, calibrate, find_weight_sites
from ..context import PassContext
from .grid import rtn_quantize
from .linears import LinearSite, QuantizedWeight, weight_nk
from .observers import ActivationObserver, Observer
from .quantizer import WeightQuantizer
from .scheme import QuantizationError, WeightScheme, check_weight, dequantize_with, make_scheme


class ActivationRange(Statistic):
    """A calibration-engine statistic: an :class:`ActivationObserver` over one layer's input."""

    key = "act_range"

    def __init__(self, method: str, name: str):
        self.obs = ActivationObserver(method, name=name)

    def update(self, x: np.ndarray) -> None:
        self.obs.update(x)

    def result(self) -> ActivationObserver:
        return self.obs

    def reduce(self, reducer) -> None:
        """Data-parallel calibration: the range over every process's batches (minmax only: the
        other observers keep a sample of values, which is not combined across processes)."""
        o = self.obs
        if o.method != "minmax":
            raise CalibrationError(
                f"{o.name or 'a layer'}: the {o.method} activation observer cannot be combined across "
                f"{reducer.world} processes; use observer=minmax or calibrate in one process")
        ends = reducer.max([np.array([-o.lo, o.hi], np.float64)])
        seen = reducer.sum([np.array([o.seen], np.float64)])
        o.lo, o.hi, o.seen = -float(ends[0]), float(ends[1]), int(seen[0])


def static_scales(graph: Graph, ctx: PassContext, sites: Sequence[LinearSite], method: str, qmax: float,
                  pass_name: str) -> dict[str, float]:
    """Per-tensor activation scale of each site's input (name -> scale) from the calibration data."""
    index = {s.index for s in sites}
    wsites = [ws for ws in find_weight_sites(graph) if ws.index in index]
    scales: dict[str, float] = {}

    def rewrite(ws, w, stats):
        scales[ws.param] = stats["act_range"].symmetric_scale(qmax)
        return None

    calibrate(
        graph,
        ctx,
        CalibrationRequest(
            pass_name, wsites, lambda ws: (ActivationRange(method, ws.param),), rewrite, sequential=False
        ),
    )
    return scales


class ActivationQuantizer(WeightQuantizer):
    """Per-channel 8-bit RTN weights, and activations quantized per token at run time
    (``activations=dynamic``), per tensor from calibration (``static``) or not at all (``none``).

    Reads the options ``activations``, ``observer`` (the static activation observer) and
    ``weight_observer`` (``minmax`` when the pass does not declare it)."""

    def needs_calibration(self) -> bool:
        return self.activations == "static"

    if TYPE_CHECKING:  # option fields the subclass declares
        activations: str
        observer: str

    weight_observer: ClassVar[str] = "minmax"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        scheme = self.weight_scheme()
        sites = self.layers(graph, ctx)
        scales: dict[str, float] = {}
        if self.activations == "static":
            for site in sites:  # before calibrating: a non-finite weight would surface downstream
                check_weight(site.name, weight_nk(graph, site), scheme)
            scales = static_scales(graph, ctx, sites, self.observer, 448.0 if scheme.fp8 else 127.0, self.name)
        return self.quantize_layers(graph, ctx, sites, scheme, lambda site, w: self._quantize(scheme, site, w, scales))

    def _quantize(
        self, scheme: WeightScheme, site: LinearSite, w: np.ndarray, scales: dict[str, float]
    ) -> QuantizedWeight:
        q, s, z = rtn_quantize(w, scheme, self.weight_observer)
        act_scale = None
        if self.activations == "static":
            if site.name not in scales:
                raise QuantizationError(f"{self.name}: no calibrated activation range for {site.name}")
            act_scale = scales[site.name]
        fields = {}
        if self.activations != "none":
            fields["act_obs"] = self.observer if act_scale is not None else "per-token"
        if act_scale is not None:
            fields["act_scale"] = act_scale
        return QuantizedWeight(
            q,
            s,
            z,
            scheme.q_type(*w.shape),
            None,
            act=self.activations,
            act_scale=act_scale,
            dequantized=dequantize_with(q, s, z, scheme),
            fields=fields,
        )


@register_pass("w8a8")
@dataclass(frozen=True)
class W8A8(ActivationQuantizer):
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

    def weight_scheme(self) -> WeightScheme:
        return make_scheme(self.weights, None, "sym")
