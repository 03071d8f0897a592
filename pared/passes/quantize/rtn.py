"""Round-to-nearest weight-only quantization (int2..int8 sym/asym, per-channel or groups, fp8).

``quantize{weights=int4,group=128,scheme=asym}`` rewrites every linear layer into a weight-only
``qlinear``. Groups that do not divide the input width get a short last group (``ragged=allow``,
the default), or the layer is skipped with a report row (``ragged=skip``), or the pass fails
(``ragged=error``). Non-finite weights are an error naming the layer; layers matched by
``ignore`` get a report row saying so. The weight transform is :func:`.grid.rtn_quantize`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ...ir import Graph
from ..base import register_pass
from ..context import PassContext
from .grid import rtn_quantize
from .linears import QuantizedWeight
from .observers import Observer
from .quantizer import WeightQuantizer
from .scheme import Ragged, SchemeKind, dequantize_with


@register_pass("quantize")
@dataclass(frozen=True)
class QuantizeWeights(WeightQuantizer):
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
        tied_embedding: an embedding table that is also a quantized layer's weight (tied LM
            head): ``float`` keeps the float table for the lookup; ``quantized`` looks up the
            quantized rows, so the float table is dropped (the embedding gets the head's error).
    """

    weights: str = "int8"
    group: Optional[int] = None
    scheme: SchemeKind = "auto"
    observer: Observer = "minmax"
    percentile: float = 99.9
    ragged: Ragged = "allow"
    act_dtype: Optional[str] = None
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    tied_embedding: Literal["float", "quantized"] = "float"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        scheme = self.weight_scheme()

        def quantize(site, w):
            q, scale, zero = rtn_quantize(w, scheme, self.observer, self.percentile)
            return QuantizedWeight(
                q,
                scale,
                zero,
                scheme.q_type(*w.shape),
                scheme.group_size,
                act_dtype=self.act_dtype,
                dequantized=dequantize_with(q, scale, zero, scheme),
                fields={"observer": self.observer},
            )

        return self.quantize_layers(graph, ctx, self.layers(graph, ctx), scheme, quantize)
