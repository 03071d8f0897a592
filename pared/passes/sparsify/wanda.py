"""Wanda (Sun et al. 2023): importance |W_ij| * ||X_j||_2, pruned per output row (or N:M)."""

from __future__ import annotations

import numpy as np


def wanda_scores(w: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """|W| scaled by the input channel's L2 norm over all calibration tokens (Wanda eq. 1)."""
    return np.abs(w) * np.asarray(norms, w.dtype)[None, :]
