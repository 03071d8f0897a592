"""Round-to-nearest weight-only quantization (int2..int8 sym/asym, per-channel or groups, fp8).

``quantize{weights=int4,group=128,scheme=asym}`` rewrites every linear layer into a weight-only
``qlinear``. Groups that do not divide the input width get a short last group (``ragged=allow``,
the default), or the layer is skipped with a report row (``ragged=skip``), or the pass fails
(``ragged=error``). Non-finite weights are an error naming the layer; layers matched by
``ignore`` get a report row saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from ...ir import Graph
from ..base import Pass, register_pass
from ..context import PassContext
from .linears import QuantizedWeight, apply_quantized, find_linears, report_unquantizable, select
from .observers import weight_range
from .scheme import (
    QuantizationError,
    WeightScheme,
    check_weight,
    dequantize_with,
    grouped,
    params_from_range,
    parse_weights,
    quantize_with,
)

Observer = Literal["minmax", "percentile", "mse", "sparse"]
Ragged = Literal["allow", "skip", "error"]


def rtn_quantize(w: np.ndarray, scheme: WeightScheme, observer: str = "minmax", percentile: float = 99.9):
    """(q, scale, zero) of a [N, K] weight by round-to-nearest with an observer's ranges."""
    lo, hi = weight_range(grouped(w, scheme.group_size), scheme, observer, percentile)
    scale, zero = params_from_range(lo, hi, scheme)
    return quantize_with(w, scale, zero, scheme), scale, zero


def make_scheme(weights: str, group: Optional[int], scheme: str) -> WeightScheme:
    bits, sym_default, fp8 = parse_weights(weights)
    symmetric = sym_default if scheme == "auto" else scheme == "sym"
    if fp8 and not symmetric:
        raise QuantizationError("fp8 weights are symmetric (no zero point); use scheme=sym")
    return WeightScheme(bits, symmetric, group, fp8)


def skip_ignored(ctx: PassContext, pass_name: str, ignored) -> None:
    for s in ignored:
        ctx.report.add(pass_name, s.name, skipped="matched ignore=; kept in float")


def calibration_sites(graph, ctx: PassContext, pass_name: str, ignore, targets):
    """(selected linear sites, their calibration-engine weight sites) for a calibrated quantization
    pass; unquantizable and ignored layers get their report rows."""
    from ..calibration import find_weight_sites

    report_unquantizable(graph, ctx, pass_name, ignore)
    sites, ignored = select(find_linears(graph), ignore, targets)
    skip_ignored(ctx, pass_name, ignored)
    idx = {s.index for s in sites}
    return sites, [ws for ws in find_weight_sites(graph) if ws.index in idx]


@register_pass("quantize")
@dataclass(frozen=True)
class QuantizeWeights(Pass):
    """Weight-only RTN quantization of every linear layer.

    Options:
        weights: int2..int8, uint4/uint8 (asymmetric), or fp8 (e4m3).
        group: group size along the input axis (None: one scale per output channel).
        scheme: sym, asym, or auto (asym for uintN, else sym).
        observer: minmax, percentile, mse (clipping search) or sparse (ranges over nonzeros).
        ragged: what to do when ``group`` does not divide a layer's input width.
        act_dtype: precision the kernel reads activations in (e.g. bf16 for the CPU int4 kernel);
            None keeps the activation dtype. The reference rounds to it too.
        ignore: regexes of weight names to leave in float (reported).
        targets: regexes of weight names to quantize (empty: all linears).
    """

    weights: str = "int8"
    group: Optional[int] = None
    scheme: Literal["sym", "asym", "auto"] = "auto"
    observer: Observer = "minmax"
    percentile: float = 99.9
    ragged: Ragged = "allow"
    act_dtype: Optional[str] = None
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def __post_init__(self):
        make_scheme(self.weights, self.group, self.scheme)  # fail at construction on a bad format

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        scheme = make_scheme(self.weights, self.group, self.scheme)
        report_unquantizable(graph, ctx, self.name, self.ignore)
        sites, ignored = select(find_linears(graph), self.ignore, self.targets)
        skip_ignored(ctx, self.name, ignored)

        def solve(site, w):
            why = check_weight(site.name, w, scheme, self.ragged)
            if why:
                ctx.report.add(self.name, site.name, skipped=why)
                return None
            q, scale, zero = rtn_quantize(w, scheme, self.observer, self.percentile)
            deq = dequantize_with(q, scale, zero, scheme)
            return QuantizedWeight(q, scale, zero, scheme.q_type(*w.shape), scheme.group_size, act_dtype=self.act_dtype,
                                   fields={"_deq": deq, "observer": self.observer})

        return apply_quantized(graph, ctx, self.name, sites, solve)
