"""GQSA-style sparse + quantized weights: group sparsity, then GPTQ int4 of the kept weights.

Each row of W [N, K] is cut into blocks of ``block`` consecutive input channels; a block's score is
the optimal-brain-surgeon error of removing it, ``w_b [(H^-1)_bb]^-1 w_b^T`` with ``(H^-1)_bb`` the
block's (block x block) piece of the damped inverse Hessian (or, with ``score=wanda``, the cheaper
``sum_j (|W_ij| * ||X_j||)^2``), and the lowest-scoring ``sparsity`` fraction of blocks per row is
zeroed (structured, so a kernel skips whole blocks). The kept weights are then re-solved by least
squares for that mask (:func:`..sparsify.refit.refit_kept`), which compensates the removed blocks'
error, and quantized with GPTQ, whose updates keep the pruned blocks at zero (GQSA, Zeng et al.,
2025: "W4S50%" = 4-bit weights, 50% group sparsity).
The quantized weight is declared ``#sparse_quant`` (blocks of [1, block]), so the reported bytes
(:func:`.linears.stored_nbytes`) are the kept values at ``bits`` + one mask bit per block + scales/zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from ...ir import Sparse, SparseQuant, TensorType
from ..base import register_pass
from ..calibration import Stats
from ..sparsify.refit import refit_kept
from .calibrated import CalibratedWeightQuantizer, Solution, reconstruction_error
from .gptq import gptq_quantize
from .scheme import QuantizationError, SchemeKind, WeightScheme


def group_mask(
    w: np.ndarray, h: np.ndarray, block: int, sparsity: float, score: str = "obs", damp: float = 0.01
) -> np.ndarray:
    """Bool (out, in) keep-mask without the lowest-scoring ``sparsity`` fraction of [1, block] blocks of each row."""
    n, k = w.shape
    if k % block:
        raise QuantizationError(f"gqsa: block {block} does not divide the input width {k}")
    if score == "obs":
        hd = np.array(h, np.float64)
        hd[np.diag_indices_from(hd)] += damp * float(np.mean(np.diag(hd)))
        hinv = np.linalg.inv(hd)
        nb = k // block
        blocks = np.stack([hinv[b * block : (b + 1) * block, b * block : (b + 1) * block] for b in range(nb)])
        binv = np.linalg.inv(blocks)  # (nb, block, block)
        wb = w.astype(np.float64).reshape(n, nb, block)
        cost = np.einsum("rbi,bij,rbj->rb", wb, binv, wb)
    else:
        per = (np.abs(w) * np.sqrt(np.maximum(np.diag(h), 0.0))[None, :]) ** 2
        cost = per.reshape(n, k // block, block).sum(-1)
    drop = int(round(sparsity * (k // block)))
    order = np.argsort(cost, axis=1, kind="stable")[:, :drop]
    mask = np.ones((n, k // block), bool)
    np.put_along_axis(mask, order, False, axis=1)
    return np.repeat(mask, block, axis=1)


@register_pass("gqsa")
@dataclass(frozen=True)
class GQSA(CalibratedWeightQuantizer):
    """Group sparsity (per-row blocks) followed by GPTQ of the kept weights.

    Options:
        sparsity: fraction of blocks removed per row.
        block: block width (input channels).
        weights, group, scheme: the quantization of the kept weights (as for ``gptq``).
        act_order, damp: GPTQ options.
        score: how a block is ranked: ``obs`` (default) the error of removing it alone with the
            rest of the row re-fitted, ``w_b (H^-1)_bb^-1 w_b^T``; ``wanda`` the sum of
            ``(|W_ij| ||X_j||)^2`` over its channels (cheaper, coarser).
        steps: prune in this many rounds (sparsity/steps more per round, re-scored and re-fitted
            after each); 1 is one shot.
        refit: re-solve the kept weights by least squares for the block mask before GPTQ (as
            ``sparsify``'s refit), so the removed blocks' error is compensated; ``refit_iters`` CG steps.
        ignore, targets: regexes of weight names to skip / to compress.
    """

    sparsity: float = 0.5
    block: int = 16
    weights: str = "uint4"
    group: Optional[int] = 64
    scheme: SchemeKind = "auto"
    act_order: bool = False
    damp: float = 0.01
    refit: bool = True
    score: Literal["obs", "wanda"] = "obs"
    steps: int = 1
    refit_iters: int = 15
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"gqsa sparsity must be in [0, 1), got {self.sparsity}")
        if self.score not in ("obs", "wanda"):
            raise ValueError(f"gqsa score must be 'obs' or 'wanda', got {self.score!r}")
        if self.steps < 1 or self.block < 1:
            raise ValueError(f"gqsa steps and block must be >= 1, got steps={self.steps}, block={self.block}")
        super().__post_init__()

    def skip_reason(self, name: str, w: np.ndarray, scheme: WeightScheme) -> Optional[str]:
        why = super().skip_reason(name, w, scheme)
        if why is None and w.shape[1] % self.block:
            why = f"block {self.block} does not divide the input width {w.shape[1]}"
        return why

    def q_type(self, scheme: WeightScheme, n: int, k: int) -> TensorType:
        # the pruned blocks are declared, so byte counts (stored_nbytes) see kept values + mask
        return TensorType((n, k), scheme.dtype, SparseQuant(Sparse("block", block=(1, self.block)), scheme.encoding()))

    def solve(self, w: np.ndarray, stats: Stats) -> Solution:
        h = stats.hessian
        pruned = w
        for t in range(1, self.steps + 1):
            keep = group_mask(pruned, h, self.block, self.sparsity * t / self.steps, self.score, self.damp)
            pruned = w * keep
            if self.refit:  # the kept weights re-solved for the mask: the pruning error is compensated
                pruned = refit_kept(w, pruned, keep, h, damp=self.damp, iters=self.refit_iters)
        q, s, z, dq = gptq_quantize(
            pruned, h, self.weight_scheme(), act_order=self.act_order, damp=self.damp, keep_zeros=True
        )
        return Solution(
            q,
            s,
            z,
            dequantized=dq,
            info={
                "recon_err": reconstruction_error(w, dq, h),
                "density": float((pruned != 0).mean()),
                "block": self.block,
            },
        )
