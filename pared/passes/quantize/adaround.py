"""AdaRound: learn whether each weight rounds up or down by layer-wise reconstruction
(Nagel et al., 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization").

The grid (scale, zero per channel or group) comes from an observer as for RTN; only the rounding
direction is learned. With ``f = floor(W / s)`` and a rounding variable ``V`` per weight,

    h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)                 (eq. 23, zeta=1.1, gamma=-0.1)
    W~   = s * (clip(f + h(V) + z, qmin, qmax) - z)
    loss = tr((W - W~) H (W - W~)^T) / tr(W H W^T) + lam * sum(1 - |2 h(V) - 1|^beta)   (eq. 21, 24)

where H = X^T X is the layer's input statistic from the calibration engine, so the first term is
the relative output error ``||W X^T - W~ X^T||^2 / ||W X^T||^2`` over every calibration token.
``beta`` anneals from 20 to 2 after a warm-up without the regulariser, which pushes every h(V) to
0 or 1; the final weight is ``q = clip(f + [V >= 0] + z)``, exactly on the grid. V starts at the
value that reproduces the float weight (h = frac(W / s)). Optimised with Adam in numpy.

The pass runs sequentially through the calibration engine, like GPTQ, and reports the hard
reconstruction error next to RTN's on the same grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ...ir.ops.quant import expand_groups
from ..base import register_pass
from ..calibration import Stats, hessian_norm2
from .calibrated import CalibratedWeightQuantizer, Solution, reconstruction_error
from .grid import rtn_quantize, weight_grid
from .observers import Observer
from .scheme import QuantizationError, Ragged, SchemeKind, WeightScheme, dequantize_with

ZETA, GAMMA = 1.1, -0.1


def _h(v: np.ndarray) -> np.ndarray:
    return np.clip(1.0 / (1.0 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def adaround_quantize(w: np.ndarray, h: np.ndarray, scheme: WeightScheme, *, iters: int = 300, lr: float = 0.05,
                      reg: float = 0.01, beta: tuple[float, float] = (20.0, 2.0), warmup: float = 0.2,
                      observer: str = "minmax"):
    """AdaRound of ``w`` [N, K] given ``h`` = X^T X [K, K]; returns (q, scale [N, G], zero or None, dequantized w).

    ``iters`` Adam steps of size ``lr`` on the rounding logits; ``reg`` weighs the rounding
    regulariser (per weight) against the relative reconstruction error; ``beta`` is annealed
    from ``beta[0]`` to ``beta[1]`` after the first ``warmup`` fraction of the steps.
    """
    if scheme.fp8:
        raise QuantizationError("adaround: fp8 weights have no uniform grid to round on; use int2..int8")
    w = np.asarray(w, np.float32)
    n, k = w.shape
    h = np.asarray(h, np.float64)
    if h.shape != (k, k):
        raise QuantizationError(f"adaround: Hessian has shape {h.shape}, expected ({k}, {k})")
    if not np.isfinite(h).all():
        raise QuantizationError("adaround: the Hessian has NaN/Inf entries (non-finite calibration activations)")
    scale, zero = weight_grid(w, scheme, observer)
    ga = 1 if scheme.group_size is not None else None
    s = expand_groups(scale, k, ga, scheme.group_size).astype(np.float32) * np.ones((1, k), np.float32)
    z = expand_groups(zero, k, ga, scheme.group_size).astype(np.float32) if zero is not None else np.float32(0.0)
    floor = np.floor(w / s)
    frac = np.clip(w / s - floor, 0.0, 1.0)
    # logit of the initial h = frac (inverse of _h), kept finite at frac in {0, 1}
    r = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(r / (1 - r)).astype(np.float32)
    h32 = (h / max(hessian_norm2(w, h), 1e-30)).astype(np.float32)
    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    start = int(warmup * iters)
    for t in range(1, iters + 1):
        sig = 1.0 / (1.0 + np.exp(-v))
        hv_raw = sig * (ZETA - GAMMA) + GAMMA
        hv = np.clip(hv_raw, 0.0, 1.0)
        qs = floor + hv + z
        inside = (qs >= scheme.qmin) & (qs <= scheme.qmax)
        d = w - s * (np.clip(qs, scheme.qmin, scheme.qmax) - z)
        g_h = (-2.0 * (d @ h32)) * s * inside  # d recon / d h
        if t > start:
            b = beta[0] + (beta[1] - beta[0]) * (t - start) / max(iters - start, 1)
            u = 2.0 * hv - 1.0
            g_h = g_h - reg * 2.0 * b * np.sign(u) * np.abs(u) ** (b - 1.0)  # d/dh of lam (1 - |2h-1|^b)
        g = g_h * (ZETA - GAMMA) * sig * (1.0 - sig) * ((hv_raw > 0) & (hv_raw < 1))
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        v -= lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
    q = np.clip(floor + (v >= 0) + z, scheme.qmin, scheme.qmax).astype(scheme.dtype.storage)
    return q, scale, zero, dequantize_with(q, scale, zero, scheme)


@register_pass("adaround")
@dataclass(frozen=True)
class AdaRound(CalibratedWeightQuantizer):
    """Adaptive rounding of every linear layer's weights, calibrated sequentially.

    Options:
        weights, group, scheme, observer, ragged, act_dtype, ignore, targets: as for ``quantize``
            (the observer fixes the grid; AdaRound picks the rounding on it).
        iters: Adam steps per layer.
        lr: Adam step size on the rounding logits.
        reg: weight of the rounding regulariser.
        warmup: fraction of the steps before the regulariser starts.
    """

    weights: str = "int4"
    group: Optional[int] = 128
    scheme: SchemeKind = "auto"
    observer: Observer = "minmax"
    ragged: Ragged = "allow"
    iters: int = 300
    lr: float = 0.05
    reg: float = 0.01
    warmup: float = 0.2
    act_dtype: Optional[str] = None
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def __post_init__(self):
        if self.weight_scheme().fp8:
            raise QuantizationError("adaround: fp8 weights have no uniform grid to round on; use int2..int8")
        if self.iters < 1 or not 0.0 <= self.warmup < 1.0:
            raise QuantizationError(
                f"adaround: need iters >= 1 and 0 <= warmup < 1, got {self.iters} and {self.warmup}"
            )

    def solve(self, w: np.ndarray, stats: Stats) -> Solution:
        scheme = self.weight_scheme()
        h = stats.hessian
        q, s, z, dq = adaround_quantize(
            w, h, scheme, iters=self.iters, lr=self.lr, reg=self.reg, warmup=self.warmup, observer=self.observer
        )
        qr, _, _ = rtn_quantize(w, scheme, self.observer)
        info = {
            "recon_err": reconstruction_error(w, dq, h),
            "recon_err_rtn": reconstruction_error(w, dequantize_with(qr, s, z, scheme), h),
            "flipped": float((q != qr).mean()),
            "tokens": int(stats.count),
            "iters": self.iters,
            "observer": self.observer,
        }
        return Solution(q, s, z, dequantized=dq, info=info)
