"""The ``activation_sparsity`` pass: zero most of a linear layer's input, per token, in the graph.

    activation_sparsity{method=topk,sparsity=0.5,targets=(down_proj)}
    activation_sparsity{method=threshold,sparsity=0.6}      # CHESS: calibrated per-channel thresholds
    activation_sparsity{method=wina,sparsity=0.5}           # WINA: |x_j| * ||W[:, j]||, top-k

Each selected linear ``y = x @ W`` gets its input masked by a rewrite made of existing ops, so
every backend runs it and a sparse-activation kernel can recognise it:

    topk:       x' = where(topk_mask(abs(x)){k}, x, 0)                     k = round((1 - s) * in)
    wina:       x' = where(topk_mask(abs(x) * c){k}, x, 0)                 c_j = ||W[:, j]||_2 (a new param)
    threshold:  x' = where(gt(abs(x), t), x, 0)                            t_j from calibration

topk and wina keep exactly k channels of every token. CHESS (Wang et al. 2024) instead keeps the
per-token cost of a threshold compare: t_j is the ``s``-quantile of |x_j| over the calibration
tokens, so on data like the calibration set a fraction ``s`` of each channel is zeroed. WINA
(Chen et al. 2025) scores a channel by how much it can move the output, |x_j| * ||W[:, j]||_2.
Quantiles are taken over at most ``max_tokens`` calibration tokens (an evenly strided subset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...ir import Graph, Param, TensorType, make_eqn
from ...ir import Literal as Lit
from ..base import Pass, register_pass
from ..calibration import CalibrationError, CalibrationRequest, Statistic, calibrate, check_finite_weights
from ..context import PassContext
from ..layer_patterns import as_patterns
from .selection import select_sites

METHODS = ("topk", "threshold", "wina")


class ChannelQuantile(Statistic):
    """The ``q``-quantile of |x_j| per input channel over (a strided subset of) the tokens."""

    key = "quantile"

    def __init__(self, q: float, max_tokens: int):
        self.q, self.max_tokens = q, max_tokens
        self.rows: list[np.ndarray] = []
        self.seen = 0

    def update(self, x: np.ndarray) -> None:
        self.rows.append(np.abs(np.asarray(x, np.float32)))
        self.seen += len(x)
        if sum(len(r) for r in self.rows) > 2 * self.max_tokens:  # keep memory bounded: thin out evenly
            a = np.concatenate(self.rows)
            self.rows = [a[:: max(2, len(a) // self.max_tokens)]]

    def result(self) -> np.ndarray:
        a = np.concatenate(self.rows)
        if len(a) > self.max_tokens:
            a = a[:: -(-len(a) // self.max_tokens)]
        return np.quantile(a.astype(np.float64), self.q, axis=0)


@register_pass("activation_sparsity")
@dataclass(frozen=True)
class ActivationSparsity(Pass):
    """Mask the inputs of linear layers per token (top-k, CHESS thresholds, or WINA).

    Options:
        method: ``topk``, ``threshold`` (CHESS; needs calibration) or ``wina``.
        sparsity: fraction of each token's input channels zeroed, in [0, 1).
        targets / ignore: tuples of regexes over weight names (as in the other suites).
        skip_embeddings: leave the LM head / embeddings alone.
        max_tokens: calibration tokens kept per layer for the threshold quantiles.
    """

    def needs_calibration(self) -> bool:
        return self.method == "threshold"

    method: Literal["topk", "threshold", "wina"] = "topk"
    sparsity: float = 0.5
    targets: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    skip_embeddings: bool = True
    max_tokens: int = 65536

    def __post_init__(self):
        for opt in ("targets", "ignore"):
            object.__setattr__(self, opt, as_patterns(getattr(self, opt)))
        if not (isinstance(self.sparsity, (int, float)) and 0.0 <= self.sparsity < 1.0):
            raise ValueError(f"sparsity={self.sparsity!r} must be in [0, 1)")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        sites, skipped = select_sites(graph, self.targets, self.ignore, self.skip_embeddings, where=f"{self.name}: ")
        for name, why in skipped:
            ctx.report.add(self.name, name, skipped=why)
        linear = []
        for s in sites:  # one contracted input axis (the last), activation dtype float
            x = s.activation
            if s.kind != "dot" or s.x_in != 1 or s.x_perm[-1] != x.type.rank - 1 or not x.type.dtype.is_float:
                ctx.report.add(self.name, s.param, skipped="not a linear layer over the last activation axis")
            else:
                linear.append(s)
        check_finite_weights(graph, [s.param for s in linear], self.name)
        if self.method == "threshold" and ctx.calibration is None:
            raise CalibrationError(f"{self.name}: method=threshold needs calibration data (calibration=[batches...])")
        if not linear or self.sparsity == 0.0:
            return graph
        thresholds = self._thresholds(graph, ctx, linear) if self.method == "threshold" else {}

        eqns = list(graph.eqns)
        inserted: dict[int, list] = {}
        new_w, new_t = {}, {}
        for s in linear:
            x, n_in = s.activation, s.shape2d[1]
            dt = x.type.dtype
            k = int(round((1.0 - self.sparsity) * n_in))
            ax = make_eqn("abs", [x])
            chain = [ax]
            if self.method == "threshold":
                tname = f"{s.param}.act_threshold"
                new_w[tname], new_t[tname] = thresholds[s.param].astype(dt.np), TensorType((n_in,), dt)
                keep = make_eqn("gt", [ax.out, Param(tname, new_t[tname])])
            else:
                score = ax.out
                if self.method == "wina":
                    cname = f"{s.param}.wina_colnorm"
                    w2 = s.weight_matrix(np.asarray(graph.weight(s.param), np.float64))
                    new_w[cname], new_t[cname] = np.sqrt((w2 ** 2).sum(0)).astype(dt.np), TensorType((n_in,), dt)
                    chain.append(make_eqn("mul", [ax.out, Param(cname, new_t[cname])]))
                    score = chain[-1].out
                keep = make_eqn("topk_mask", [score], {"k": k, "axis": x.type.rank - 1})
            masked = make_eqn("where", [keep.out, x, Lit(0.0, TensorType((), dt))])
            chain += [keep, masked]
            inserted[s.index] = chain
            eqns[s.index] = s.eqn.replace(inputs=[masked.out if a is x else a for a in s.eqn.inputs])
            ctx.report.add(self.name, s.param, method=self.method, sparsity=self.sparsity,
                           kept=k if self.method != "threshold" else "calibrated", channels=n_in)
        out = [e for i, orig in enumerate(eqns) for e in (*inserted.get(i, ()), orig)]
        return graph.replace(eqns=out).with_weights(new_w, new_t)

    def _thresholds(self, graph: Graph, ctx: PassContext, sites) -> dict[str, np.ndarray]:
        got: dict[str, np.ndarray] = {}

        def keep(site, w, stats):
            got[site.param] = np.asarray(stats["quantile"])
            return None

        req = CalibrationRequest(self.name, sites, lambda s: (ChannelQuantile(self.sparsity, self.max_tokens),), keep,
                                 sequential=False)
        calibrate(graph, ctx, req)
        return got
