"""The prologue every weight quantization pass shares: which layers, which scheme, which to skip.

:class:`WeightQuantizer` is the base of ``quantize``, ``w8a8``, ``fp8`` and (through
:class:`.calibrated.CalibratedWeightQuantizer`) the calibrated methods. It reads the pass's own
option fields: ``ignore``/``targets`` pick the layers (:func:`.linears.select_layers`, which
gives every other weight layer a report row), ``weights``/``group``/``scheme`` make the
:class:`.scheme.WeightScheme` (override :meth:`WeightQuantizer.weight_scheme` for a fixed
format), and ``ragged``, ``act_dtype`` and ``tied_embedding`` default to ``allow``, None and
``float`` in a pass that does not declare them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, ClassVar, Optional, Sequence

import numpy as np

from ...ir import Graph
from ..base import Pass
from ..context import PassContext
from .linears import LinearSite, QuantizedWeight, apply_quantized, select_layers
from .scheme import WeightScheme, check_weight, make_scheme


class WeightQuantizer(Pass):
    """Base of the passes that rewrite linear layers into ``qlinear`` (see the module docstring)."""

    if TYPE_CHECKING:  # option fields the subclass declares
        weights: str
        group: Optional[int]
        scheme: str
        ignore: tuple[str, ...]
        targets: tuple[str, ...]

    ragged: ClassVar[str] = "allow"
    rewrites_layers: ClassVar[bool] = True
    act_dtype: ClassVar[Optional[str]] = None
    tied_embedding: ClassVar[str] = "float"

    def __post_init__(self) -> None:
        self.weight_scheme()  # a bad format fails at construction, not halfway through a pipeline

    def weight_scheme(self) -> WeightScheme:
        """The scheme every selected layer is quantized with."""
        return make_scheme(self.weights, self.group, self.scheme)

    def layers(self, graph: Graph, ctx: PassContext) -> list[LinearSite]:
        """The linear layers to quantize; the other weight layers get a report row saying why not."""
        return select_layers(graph, ctx, self.name, self.ignore, self.targets)

    def skip_reason(self, name: str, w: np.ndarray, scheme: WeightScheme) -> Optional[str]:
        """Why layer ``name`` (weight ``w`` [N, K]) is left in float, or None to quantize it.

        Raises QuantizationError where skipping would hide a problem (a non-finite weight,
        ``ragged=error``).
        """
        return check_weight(name, w, scheme, self.ragged)

    def quantize_layers(self, graph: Graph, ctx: PassContext, sites: Sequence[LinearSite], scheme: WeightScheme,
                        quantize: Callable[[LinearSite, np.ndarray], QuantizedWeight]) -> Graph:
        """Rewrite ``sites`` into ``qlinear`` from ``quantize(site, W[N, K])``; a layer
        :meth:`skip_reason` refuses gets a skip row instead."""

        def checked(site: LinearSite, w: np.ndarray) -> Optional[QuantizedWeight]:
            why = self.skip_reason(site.name, w, scheme)
            if why:
                ctx.report.add(self.name, site.name, skipped=why)
                return None
            return quantize(site, w)

        return apply_quantized(graph, ctx, self.name, sites, checked, tied_embedding=self.tied_embedding)
