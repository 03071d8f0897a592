"""SparseGPT (Frantar & Alistarh 2023): one-shot OBS pruning with lazy blocked updates.

Columns are processed left to right in blocks; each pruned weight's error is spread over the
not-yet-processed columns of its row through the upper Cholesky factor of H^-1 (H = X^T X +
damp * mean(diag H) * I), which is the paper's Algorithm 1. The mask is chosen per block
("adaptive mask selection") from w^2 / [H^-1]_jj^2, or per group of M for N:M.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def inverse_hessian_factor(h: np.ndarray, damp: float) -> tuple[np.ndarray, np.ndarray]:
    """(upper Cholesky factor U of (H + damp I)^-1 with Hinv = U^T U, dead-channel mask)."""
    h = np.array(h, dtype=np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += damp * float(np.mean(np.diag(h)))
    for _ in range(5):
        try:
            low = np.linalg.cholesky(h)
            break
        except np.linalg.LinAlgError:  # not positive definite: dampen more
            h[np.diag_indices_from(h)] += damp * float(np.mean(np.diag(h)))
    else:
        raise np.linalg.LinAlgError("SparseGPT: the Hessian stays singular after dampening; raise damp")
    inv_low = np.linalg.inv(low)
    hinv = inv_low.T @ inv_low
    return np.linalg.cholesky(hinv).T, dead


def sparsegpt(w: np.ndarray, h: np.ndarray, sparsity: float = 0.5, n: Optional[int] = None, m: Optional[int] = None,
              blocksize: int = 128, damp: float = 0.01,
              factor: Optional[tuple[np.ndarray, np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Prune the (out, in) weight ``w`` given ``h = X^T X``; returns (new weight, keep-mask).

    Unstructured when ``n`` is None (``sparsity`` of every block of columns is pruned), else
    N:M: ``n`` kept in every ``m`` consecutive input columns (``sparsity`` is then ignored).
    ``factor``: :func:`inverse_hessian_factor` of ``(h, damp)`` when already computed (layers that
    share an input, such as q/k/v, share it).
    """
    rows, cols = w.shape
    hinv, dead = inverse_hessian_factor(h, damp) if factor is None else factor
    hinv = hinv.astype(np.float32)
    W = np.array(w, dtype=np.float32)
    W[:, dead] = 0
    pruned = np.zeros(W.shape, bool)
    if m:
        blocksize = max(m, blocksize // m * m)
    r = np.arange(rows)[:, None]
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].copy()
        H1 = hinv[i1:i2, i1:i2]
        d1 = np.diag(H1)
        Err1 = np.zeros_like(W1)
        if not m:
            score = W1 ** 2 / d1[None, :] ** 2
            k = int(round(score.size * sparsity))
            p1 = np.zeros(score.size, bool)
            if k:
                p1[np.argpartition(score.reshape(-1), k - 1)[:k]] = True
            p1 = p1.reshape(score.shape)
        else:
            p1 = np.zeros(W1.shape, bool)
        for i in range(i2 - i1):
            if m and i % m == 0:
                score = W1[:, i:i + m] ** 2 / d1[None, i:i + m] ** 2
                idx = np.argpartition(score, m - n - 1, axis=1)[:, : m - n]
                p1[r, i + idx] = True
            q = np.where(p1[:, i], 0.0, W1[:, i])
            err = (W1[:, i] - q) / H1[i, i]
            W1[:, i:] -= np.outer(err, H1[i, i:])
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        pruned[:, i1:i2] = p1
        W[:, i2:] -= Err1 @ hinv[i1:i2, i2:]
    W[pruned] = 0
    return W, ~pruned

