'''The calibrated weight quantizer: a new method is a ``solve()`` plus its options.

GPTQ, AdaRound and GQSA share one skeleton, owned by :class:`CalibratedWeightQuantizer`: pick
the linear layers (``targets``/``ignore``; every layer left in float gets a report row), ask the
calibration engine for the :meth:`~CalibratedWeightQuantizer.statistics` of each layer's input,
call :meth:`~CalibratedWeightQuantizer.solve` on each weight as the engine reaches it (the
engine goes on downstream with the dequantized result, so later layers calibrate on the
quantized model), then rewrite every solved layer into ``qlinear`` with one report row. A method
that picks each group's clipping range by its Hessian-weighted error is, in full::

    @register_pass("hclip")
    @dataclass(frozen=True)
    class HessianClip(CalibratedWeightQuantizer):
        """RTN on the grid whose clipping minimises each group's diag(H)-weighted error."""

        weights: str = "int4"
        group: Optional[int] = 128
        scheme: SchemeKind = "auto"
        ignore: tuple[str, ...] = ()
        targets: tuple[str, ...] = ()

        def solve(self, w, stats):
            scheme = self.weight_scheme()
            scale, zero = weight_grid(w, scheme, "mse", importance=np.diag(stats.hessian))
            return quantize_with(w, scale, zero, scheme), scale, zero

``solve`` returns ``(q, scale, zero)`` or a :class:`Solution`, which can also carry the
dequantized weight (when the method computed it more precisely than ``dequantize_with``) and the
layer's report fields. Options the base reads are described in :mod:`.quantizer`; ``ragged``,
``act_dtype`` and ``activations`` (``none``, or ``dynamic`` for W8A8) are optional.
'''

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

import numpy as np

from ...ir import Graph, TensorType
from ..calibration import CalibrationRequest, Stats, WeightSite, calibrate, find_weight_sites, hessian_norm2
from ..calibration.streaming import Staging
from ..context import PassContext
from .linears import LinearSite, QuantizedWeight, apply_quantized, find_linears
from .quantizer import WeightQuantizer
from .scheme import WeightScheme, dequantize_with


@dataclass(frozen=True)
class Solution:
    """What :meth:`CalibratedWeightQuantizer.solve` found for one layer.

    Attributes:
        q: codes [N, K] in the scheme's storage dtype.
        scale, zero: [N, G] (zero None when symmetric).
        dequantized: the float weight [N, K] the engine continues with; None means
            ``dequantize_with(q, scale, zero, scheme)``.
        info: the layer's report fields (errors, density, ...).
    """

    q: np.ndarray
    scale: np.ndarray
    zero: Optional[np.ndarray]
    dequantized: Optional[np.ndarray] = None
    info: Mapping[str, Any] = field(default_factory=dict)


SolveResult = Union[Solution, tuple]


class CalibratedWeightQuantizer(WeightQuantizer):
    """Base of the weight quantizers that solve each layer from calibration statistics."""

    def needs_calibration(self) -> bool:
        return True

    activations: ClassVar[str] = "none"

    def statistics(self) -> Sequence[str]:
        """The statistics ``solve`` reads (names from :data:`pared.passes.calibration.STATISTICS`)."""
        return ("hessian",)

    def solve(self, w: np.ndarray, stats: Stats) -> SolveResult:
        """Quantize one layer: ``w`` is its float32 weight [N, K], ``stats`` its input's statistics."""
        raise NotImplementedError(f"{type(self).__name__}.solve")

    def q_type(self, scheme: WeightScheme, n: int, k: int) -> TensorType:
        """The type of a layer's codes (override to declare more, e.g. a sparsity pattern)."""
        return scheme.q_type(n, k)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        scheme = self.weight_scheme()
        sites = self.layers(graph, ctx)
        index = {s.index for s in sites}
        wsites = [ws for ws in find_weight_sites(graph) if ws.index in index]
        solved: dict[str, Solution] = {}
        # out of core: the codes wait on disk for the rewrite (1 byte per weight of every layer would
        # otherwise accumulate over the whole calibration); the dequantized copy is never kept
        staging = getattr(ctx, "staging_dir", None)
        stage = Staging(os.path.join(staging, f"{self.name}-codes")) if staging else None

        def rewrite(ws: WeightSite, w: np.ndarray, stats: Stats) -> Optional[np.ndarray]:
            w2 = ws.weight_matrix(w).astype(np.float32)  # (out, in)
            why = self.skip_reason(ws.param, w2, scheme)
            if why:
                ctx.report.add(self.name, ws.param, skipped=why)
                return None
            sol = self.solve(w2, stats)
            sol = sol if isinstance(sol, Solution) else Solution(*sol)
            dq = sol.dequantized if sol.dequantized is not None else dequantize_with(sol.q, sol.scale, sol.zero, scheme)
            solved[ws.param] = replace(sol, dequantized=None, q=stage.stage(ws.param, sol.q) if stage else sol.q)
            return ws.from_matrix(dq)

        need = tuple(self.statistics())
        result = calibrate(graph, ctx, CalibrationRequest(self.name, wsites, lambda ws: need, rewrite))
        act = self.activations

        def quantized(site: LinearSite, w: np.ndarray) -> Optional[QuantizedWeight]:
            sol = solved.get(site.name)
            if sol is None:
                return None
            q = np.asarray(sol.q)  # read back from the staging folder out of core
            return QuantizedWeight(q, sol.scale, sol.zero, self.q_type(scheme, *q.shape), scheme.group_size,
                                   act=act, act_dtype=self.act_dtype if act == "none" else None, fields=sol.info)

        # the engine left the dequantized float weights in result.graph; its linears sit at the same
        # equation indices, so the selected layers are found there again and rewritten from `solved`
        by_index = {s.index: s for s in find_linears(result.graph)}
        return apply_quantized(result.graph, ctx, self.name, [by_index[s.index] for s in sites if s.index in by_index],
                               quantized, tied_embedding=self.tied_embedding)


def reconstruction_error(w: np.ndarray, w_new: np.ndarray, h: np.ndarray) -> float:
    """||(W - W') X^T||_F^2 / ||W X^T||_F^2 from H = X^T X."""
    dlt = np.asarray(w, np.float64) - np.asarray(w_new, np.float64)
    return hessian_norm2(dlt, h) / max(hessian_norm2(w, h), 1e-300)
