"""A weight's quantization grid from an observer, and round-to-nearest onto it.

The grid (a scale, and a zero point when asymmetric, per output channel or per group of input
channels) is where every method starts: RTN rounds onto it (:func:`rtn_quantize`, the weight
transform of ``quantize``, ``w8a8`` and ``fp8``, and the baseline GPTQ and AdaRound report
against), AdaRound learns the rounding on it, and GPTQ recomputes it per group as its sweep
updates the weight.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .observers import weight_range
from .scheme import WeightScheme, grouped, params_from_range, quantize_with


def weight_grid(w: np.ndarray, scheme: WeightScheme, observer: str = "minmax", percentile: float = 99.9,
                importance: Optional[np.ndarray] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(scale, zero-or-None), each [N, G], of a [N, K] weight from ``observer``'s per-group ranges.

    ``importance`` [K] (one nonnegative weight per input channel) weights the ``mse`` observer's error.
    """
    imp = None if importance is None else grouped(np.asarray(importance, np.float64)[None, :], scheme.group_size)
    lo, hi = weight_range(grouped(w, scheme.group_size), scheme, observer, percentile, importance=imp)
    return params_from_range(lo, hi, scheme)


def rtn_quantize(w: np.ndarray, scheme: WeightScheme, observer: str = "minmax", percentile: float = 99.9):
    """(q, scale, zero) of a [N, K] weight by round-to-nearest on the observer's grid."""
    scale, zero = weight_grid(w, scheme, observer, percentile)
    return quantize_with(w, scale, zero, scheme), scale, zero
