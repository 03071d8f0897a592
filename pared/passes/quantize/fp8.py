"""fp8 (e4m3) quantization: per-channel fp8 weights, with fp8 per-token activations or none.

``fp8`` (activations=dynamic, the default) is W8A8-FP8 as llm-compressor's FP8_DYNAMIC scheme:
weights ``round_to(e4m3, w / s)`` with s = max|w_row| / 448, activations quantized per token
the same way at run time. ``fp8{activations=none}`` is weight-only fp8 (W8A16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...ir import Graph
from ..base import Pass, register_pass
from ..context import PassContext
from .linears import QuantizedWeight, apply_quantized, find_linears, report_unquantizable, select
from .rtn import Observer, rtn_quantize, skip_ignored
from .scheme import WeightScheme, check_weight, dequantize_with
from .w8a8 import W8A8


@register_pass("fp8")
@dataclass(frozen=True)
class FP8(Pass):
    """fp8 e4m3 weights (per output channel) and, optionally, fp8 per-token activations.

    Options:
        activations: dynamic (per token), static (calibrated per tensor) or none (weight-only).
        observer: the static activation observer.
        ignore, targets: regexes of weight names to skip / to quantize.
    """

    activations: Literal["dynamic", "static", "none"] = "dynamic"
    observer: Observer = "minmax"
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if self.activations != "none":
            inner = W8A8(activations=self.activations, weights="fp8", observer=self.observer, ignore=self.ignore,
                         targets=self.targets)
            return _renamed(inner, self.name).run(graph, ctx)
        scheme = WeightScheme(8, True, None, fp8=True)
        report_unquantizable(graph, ctx, self.name, self.ignore)
        sites, ignored = select(find_linears(graph), self.ignore, self.targets)
        skip_ignored(ctx, self.name, ignored)

        def solve(site, w):
            why = check_weight(site.name, w, scheme)
            if why:
                ctx.report.add(self.name, site.name, skipped=why)
                return None
            q, s, z = rtn_quantize(w, scheme)
            return QuantizedWeight(q, s, z, scheme.q_type(*w.shape), None, fields={"_deq": dequantize_with(q, s, z, scheme)})

        return apply_quantized(graph, ctx, self.name, sites, solve)


def _renamed(p: W8A8, name: str) -> W8A8:
    """The W8A8 pass reporting under ``name`` (the report rows say fp8, not w8a8)."""

    class _Named(type(p)):
        pass

    _Named.name = name
    return _Named(**{f: getattr(p, f) for f in ("activations", "weights", "observer", "ignore", "targets")})
