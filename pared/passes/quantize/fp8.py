"""fp8 (e4m3) quantization: per-channel fp8 weights, with fp8 per-token activations or none.

``fp8`` (activations=dynamic, the default) is W8A8-FP8 as llm-compressor's FP8_DYNAMIC scheme:
weights ``round_to(e4m3, w / s)`` with s = max|w_row| / 448, activations quantized per token
the same way at run time. ``fp8{activations=none}`` is weight-only fp8 (W8A16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..base import register_pass
from .observers import Observer
from .scheme import WeightScheme, make_scheme
from .w8a8 import ActivationQuantizer


@register_pass("fp8")
@dataclass(frozen=True)
class FP8(ActivationQuantizer):
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

    def weight_scheme(self) -> WeightScheme:
        return make_scheme("fp8", None, "sym")
