"""Mask selection from importance scores: per layer, per output row, global, N:M and blocks.

Every method (magnitude |W|, Wanda |W| * ||X||, random) reduces to "keep the highest scores";
these helpers do the keeping, always returning a boolean keep-mask of the (out, in) weight with
exactly the requested count (ties broken by position, never by keeping extra weights).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .pattern import Pattern


def keep_top(scores: np.ndarray, keep: int) -> np.ndarray:
    """Boolean mask keeping the ``keep`` largest entries of ``scores`` (any shape)."""
    flat = scores.reshape(-1)
    mask = np.zeros(flat.shape, bool)
    keep = int(min(max(keep, 0), flat.size))
    if keep:
        mask[np.argpartition(-flat, keep - 1)[:keep]] = True
    return mask.reshape(scores.shape)


def keep_top_rows(scores: np.ndarray, keep: int) -> np.ndarray:
    """Keep the ``keep`` largest entries of every row."""
    rows, cols = scores.shape
    mask = np.zeros(scores.shape, bool)
    keep = int(min(max(keep, 0), cols))
    if keep:
        idx = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        np.put_along_axis(mask, idx, True, axis=1)
    return mask


def keep_nm(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the ``n`` largest of every ``m`` consecutive entries along the last axis."""
    rows, cols = scores.shape
    g = scores.reshape(rows, cols // m, m)
    idx = np.argpartition(-g, n - 1, axis=2)[:, :, :n]
    mask = np.zeros(g.shape, bool)
    np.put_along_axis(mask, idx, True, axis=2)
    return mask.reshape(rows, cols)


def keep_blocks(scores: np.ndarray, block: tuple[int, int], density: float) -> np.ndarray:
    """Keep whole ``block`` tiles with the largest summed score."""
    rows, cols = scores.shape
    r, c = block
    tiles = scores.reshape(rows // r, r, cols // c, c).sum(axis=(1, 3))
    kept = keep_top(tiles, int(round(tiles.size * density)))
    return np.repeat(np.repeat(kept, r, axis=0), c, axis=1)


def select(scores: np.ndarray, pattern: Pattern, sparsity: float, granularity: str) -> np.ndarray:
    """The keep-mask of one (out, in) layer for ``pattern`` at ``sparsity`` (unstructured/block)."""
    if pattern.kind == "nm":
        return keep_nm(scores, pattern.n, pattern.m)
    density = 1.0 - sparsity
    if pattern.kind == "block":
        return keep_blocks(scores, pattern.block, density)
    if granularity == "row":
        return keep_top_rows(scores, int(round(scores.shape[1] * density)))
    return keep_top(scores, int(round(scores.size * density)))


def global_thresholds(scores: Sequence[np.ndarray], sparsity: float) -> float:
    """The score above which ``1 - sparsity`` of all entries of all layers lie (global magnitude)."""
    flat = np.concatenate([s.reshape(-1) for s in scores])
    k = int(round(flat.size * sparsity))
    if k <= 0:
        return -np.inf
    return float(np.partition(flat, k - 1)[k - 1])
