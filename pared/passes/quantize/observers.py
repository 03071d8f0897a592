"""Observers: the value range a quantizer should cover.

Weight observers reduce a grouped weight [N, G, g] over its last axis to per-group ranges;
activation observers (:class:`ActivationObserver`) stream calibration batches and give one
per-tensor range. Methods:

* ``minmax``: the observed min and max.
* ``percentile``: the ``percentile``-th / (100 - ``percentile``)-th percentiles (clips outliers).
* ``mse``: shrink the min/max range by a factor in [``mse_min_shrink``, 1] on a grid and keep
  the factor whose quantize-dequantize error ``sum |x - dq(q(x))|^2.4`` is smallest (the search
  of GPTQ's ``Quantizer.find_params(mse=True)``; the norm 2.4 is theirs). With ``importance``
  (per-element weights, e.g. a Hessian diagonal per input channel) the error is instead the
  weighted squared error ``sum importance * (x - dq(q(x)))^2``.
* ``sparse``: min/max over the nonzero values only (LiDAR-PTQ's sparsity-based calibration);
  zeros are still exact since every range includes 0.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from ...ir import dtypes as DT
from .scheme import QuantizationError, WeightScheme, params_from_range

Observer = Literal["minmax", "percentile", "mse", "sparse"]  # the ``observer`` option of the passes
OBSERVERS = typing.get_args(Observer)


def _check(method: str) -> None:
    if method not in OBSERVERS:
        raise QuantizationError(f"unknown observer {method!r}; valid: {', '.join(OBSERVERS)}")


def weight_range(wg: np.ndarray, scheme: WeightScheme, method: str = "minmax", percentile: float = 99.9,
                 grid: int = 40, mse_min_shrink: float = 0.5, importance: Optional[np.ndarray] = None):
    """Per-group (lo, hi) of a grouped weight [N, G, g] (NaN marks ragged padding); shapes [N, G].

    ``importance`` (broadcastable to ``wg``, nonnegative) weights the ``mse`` search's squared error.
    """
    _check(method)
    with np.errstate(all="ignore"):
        if method == "sparse":
            nz = np.where(wg == 0, np.nan, wg)
            lo, hi = np.nanmin(nz, axis=-1), np.nanmax(nz, axis=-1)
            lo, hi = np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=0.0)
        elif method == "percentile":
            lo = np.nanpercentile(wg, 100.0 - percentile, axis=-1)
            hi = np.nanpercentile(wg, percentile, axis=-1)
        else:
            lo, hi = np.nanmin(wg, axis=-1), np.nanmax(wg, axis=-1)
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    if method == "mse":
        lo, hi = _mse_search(wg, lo, hi, scheme, grid, mse_min_shrink, importance)
    return lo, hi


def _fake_quant(x: np.ndarray, scale: np.ndarray, zero: Optional[np.ndarray], scheme: WeightScheme) -> np.ndarray:
    """quantize-dequantize ``x`` [..., g] with per-row scale/zero [..., 1] (the IR ops' arithmetic)."""
    if scheme.fp8:
        return DT.round_to(DT.f8e4m3, x / scale) * scale
    q = np.rint(x / scale)
    if zero is not None:
        q = q + zero
    q = np.clip(q, scheme.qmin, scheme.qmax)
    return ((q - zero) if zero is not None else q) * scale


def _mse_search(wg, lo, hi, scheme: WeightScheme, grid: int, min_shrink: float, importance=None):
    x = np.nan_to_num(wg.astype(np.float64), nan=0.0)  # padding: 0 quantizes exactly, adds no error
    imp = None if importance is None else np.nan_to_num(np.asarray(importance, np.float64), nan=0.0)
    best = np.full(lo.shape, np.inf)
    best_lo, best_hi = lo.copy(), hi.copy()
    for i in range(grid + 1):
        p = 1.0 - (1.0 - min_shrink) * i / grid
        lo_p, hi_p = lo * p, hi * p
        s, z = params_from_range(lo_p, hi_p, scheme)
        s = s.astype(np.float64)[..., None]
        zz = z.astype(np.float64)[..., None] if z is not None else None
        d = _fake_quant(x, s, zz, scheme) - x
        err = (np.abs(d) ** 2.4).sum(axis=-1) if imp is None else (imp * d * d).sum(axis=-1)
        better = err < best
        best = np.where(better, err, best)
        best_lo, best_hi = np.where(better, lo_p, best_lo), np.where(better, hi_p, best_hi)
    return best_lo, best_hi


@dataclass
class ActivationObserver:
    """Streams activation batches and returns one per-tensor range (static activation scales).

    Keeps the running min/max and, for ``percentile``/``mse``/``sparse``, a bounded random
    sample of the values (``max_samples``); raises on NaN/Inf calibration data.
    """

    method: str = "minmax"
    percentile: float = 99.99
    max_samples: int = 1 << 20
    name: str = ""

    def __post_init__(self):
        _check(self.method)
        self.lo = np.inf
        self.hi = -np.inf
        self.seen = 0
        self._sample: list[np.ndarray] = []
        self._rng = np.random.default_rng(0)

    def update(self, x) -> None:
        x = np.asarray(x, dtype=np.float32).ravel()
        if x.size == 0:
            return
        if not np.isfinite(x).all():
            raise QuantizationError(
                f"calibration activations reaching {self.name or 'a layer'} contain NaN/Inf; fix the calibration data"
            )
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        self.seen += x.size
        if self.method != "minmax":
            keep = min(x.size, self.max_samples)
            self._sample.append(x if keep == x.size else self._rng.choice(x, keep, replace=False))

    def range(self) -> tuple[float, float]:
        if self.seen == 0:
            raise QuantizationError(f"observer for {self.name or 'a layer'} saw no calibration data")
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if self.method == "minmax":
            return lo, hi
        v = np.concatenate(self._sample)
        if self.method == "sparse":
            v = v[v != 0]
            return (min(float(v.min()), 0.0), max(float(v.max()), 0.0)) if v.size else (0.0, 0.0)
        if self.method == "percentile":
            return (
                min(float(np.percentile(v, 100 - self.percentile)), 0.0),
                max(float(np.percentile(v, self.percentile)), 0.0),
            )
        s = WeightScheme(8)
        l2, h2 = _mse_search(v.reshape(1, 1, -1), np.array([[lo]]), np.array([[hi]]), s, 40, 0.3)
        return float(l2[0, 0]), float(h2[0, 0])

    def symmetric_scale(self, qmax: float = 127.0) -> float:
        lo, hi = self.range()
        return max(max(-lo, hi) / qmax, float(np.finfo(np.float32).tiny))
