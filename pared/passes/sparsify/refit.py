"""Least-squares refit of the kept weights of a pruned layer, for a fixed mask.

SparseGPT's column sweep spreads each pruning error only over the columns AFTER it, so its final
weights are not the best ones for its final mask; DSnoT's regrown weights get a single-weight
value. For a fixed mask the best kept weights of each row solve a small least-squares problem:

    min_{w'_S} (w - w') H (w - w')^T   with w' = 0 outside S   <=>   H_SS w'_S = (H w)_S

(H = X^T X + damp * mean(diag H) * I, w the reconstruction target). Every row has its own S, so
the rows are solved together by conjugate gradients on the masked operator ``P_S H P_S`` (one
(rows, in) x (in, in) product per iteration, Jacobi-preconditioned, started from the sweep's
weights), which costs a few GEMMs per layer instead of one (|S| x |S|) factorisation per row.
The layer error never increases: CG on this convex quadratic only goes down from its start.
"""

from __future__ import annotations

import numpy as np


def refit_kept(w_target: np.ndarray, w_init: np.ndarray, keep: np.ndarray, h: np.ndarray, *, damp: float = 0.01,
               iters: int = 30, tol: float = 1e-12) -> np.ndarray:
    """Kept weights minimising ||(w_target - w') X^T||^2 (damped) with w' zero where ``~keep``.

    ``w_target``, ``w_init``: (out, in); ``keep``: bool (out, in); ``h``: (in, in) = X^T X.
    Returns float32 weights, zero outside ``keep``.
    """
    H = np.array(h, dtype=np.float64)
    H[np.diag_indices_from(H)] += damp * float(np.mean(np.diag(H)))
    M = np.asarray(keep, bool)
    mf = M.astype(np.float64)
    x = np.where(M, np.asarray(w_init, np.float64), 0.0)
    b = (np.asarray(w_target, np.float64) @ H) * mf
    dinv = 1.0 / np.maximum(np.diag(H), 1e-30)
    r = b - (x @ H) * mf
    z = r * dinv[None, :]
    p = z.copy()
    rz = np.einsum("ij,ij->i", r, z)
    stop = tol * np.maximum(np.einsum("ij,ij->i", b, b * dinv[None, :]), 1e-300)
    for _ in range(iters):
        active = rz > stop
        if not active.any():
            break
        q = (p @ H) * mf
        pq = np.einsum("ij,ij->i", p, q)
        alpha = np.where(active & (pq > 0), rz / np.where(pq > 0, pq, 1.0), 0.0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * q
        z = r * dinv[None, :]
        rz_new = np.einsum("ij,ij->i", r, z)
        beta = np.where(active & (rz > 0), rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta[:, None] * p
        rz = rz_new
    return np.where(M, x, 0.0).astype(np.float32)
