"""SparseGPT (Frantar & Alistarh 2023): one-shot OBS pruning with lazy blocked updates.

Columns are processed left to right in blocks; each pruned weight's error is spread over the
not-yet-processed columns of its row through the upper Cholesky factor of H^-1 (H = X^T X +
damp * mean(diag H) * I), which is the paper's Algorithm 1. The mask is chosen per block
("adaptive mask selection") from w^2 / [H^-1]_jj^2, or per group of M for N:M.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..calibration.linalg import upper_cholesky_of_inverse

SUB_BLOCK = 16  # columns updated one by one before a matrix product carries their error on


def inverse_hessian_factor(h: np.ndarray, damp: float) -> tuple[np.ndarray, np.ndarray]:
    """(upper Cholesky factor U of (H + damp I)^-1 with Hinv = U^T U, dead-channel mask).

    Dead channels (zero diagonal) get a unit diagonal; when H + damp I is not positive definite
    the dampening is added again (up to 5 times). Works in one copy of ``h``.
    """
    h = np.asarray(h)
    dead = np.diag(h) == 0
    base = np.diag(h).astype(np.float64)
    base[dead] = 1.0
    add = 0.0
    for _ in range(5):
        add += damp * float(np.mean(base + add))
        work = np.array(h, dtype=np.float64, order="C")
        work[dead, dead] = 1.0
        work[np.diag_indices_from(work)] += add
        try:
            return upper_cholesky_of_inverse(work, overwrite=True), dead
        except np.linalg.LinAlgError:  # not positive definite: dampen more
            del work
    raise np.linalg.LinAlgError("SparseGPT: the Hessian stays singular after dampening; raise damp")


def sparsegpt(w: np.ndarray, h: np.ndarray, sparsity: float = 0.5, n: Optional[int] = None, m: Optional[int] = None,
              blocksize: int = 128, damp: float = 0.01,
              factor: Optional[tuple[np.ndarray, np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Prune the (out, in) weight ``w`` given ``h = X^T X``; returns (new weight, keep-mask).

    Unstructured when ``n`` is None (``sparsity`` of every block of columns is pruned), else
    N:M: ``n`` kept in every ``m`` consecutive input columns (``sparsity`` is then ignored).
    ``factor``: :func:`inverse_hessian_factor` of ``(h, damp)`` when already computed (layers that
    share an input, such as q/k/v, share it).

    The sweep works on ``w`` transposed (an input column is a contiguous row) and updates lazily at
    two levels: inside a sub-block of ~16 columns column by column, the rest of the block by one
    product per sub-block, the columns after the block by one product per block.
    """
    rows, cols = w.shape
    hinv, dead = inverse_hessian_factor(h, damp) if factor is None else factor
    hinv = np.asarray(hinv, dtype=np.float32, order="C")
    WT = np.array(np.asarray(w, dtype=np.float32).T, order="C")  # (cols, rows)
    WT[dead] = 0
    pruned = np.zeros(WT.shape, bool)
    if m:
        blocksize = max(m, blocksize // m * m)
    sub = m * max(1, SUB_BLOCK // m) if m else SUB_BLOCK
    every_row = np.arange(rows)[None, :]
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        H1 = hinv[i1:i2, i1:i2]
        d1 = np.diag(H1)
        Err1 = np.zeros((i2 - i1, rows), np.float32)
        if not m:
            score = WT[i1:i2] ** 2 / d1[:, None] ** 2
            k = int(round(score.size * sparsity))
            p1 = np.zeros(score.size, bool)
            if k:
                p1[np.argpartition(score.reshape(-1), k - 1)[:k]] = True
            p1 = p1.reshape(score.shape)
        else:
            p1 = np.zeros((i2 - i1, rows), bool)
        for j1 in range(0, i2 - i1, sub):
            j2 = min(j1 + sub, i2 - i1)
            for i in range(j1, j2):
                if m and i % m == 0:
                    score = WT[i1 + i:i1 + i + m] ** 2 / d1[i:i + m, None] ** 2
                    idx = np.argpartition(score, m - n - 1, axis=0)[: m - n]
                    p1[i + idx, every_row] = True
                col = WT[i1 + i]
                q = np.where(p1[i], np.float32(0.0), col)
                err = (col - q) / H1[i, i]
                if i + 1 < j2:
                    WT[i1 + i + 1:i1 + j2] -= np.outer(H1[i, i + 1:j2], err)
                WT[i1 + i] = q
                Err1[i] = err
            if j2 < i2 - i1:
                WT[i1 + j2:i2] -= H1[j1:j2, j2:].T @ Err1[j1:j2]
        pruned[i1:i2] = p1
        if i2 < cols:
            WT[i2:] -= hinv[i1:i2, i2:].T @ Err1
    WT[pruned] = 0
    return np.ascontiguousarray(WT.T), ~pruned.T
