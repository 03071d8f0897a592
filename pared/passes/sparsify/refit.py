"""Least-squares refit of the kept weights of a pruned layer, for a fixed mask.

SparseGPT's column sweep spreads each pruning error only over the columns AFTER it, so its final
weights are not the best ones for its final mask; DSnoT's regrown weights get a single-weight
value. For a fixed mask the best kept weights of each row solve a small least-squares problem:

    min_{w'_S} (w - w') H (w - w')^T   with w' = 0 outside S   <=>   H_SS w'_S = (H w)_S

(H = X^T X + damp * mean(diag H) * I, w the reconstruction target). Every row has its own S, so
the rows are solved together by preconditioned conjugate gradients on the masked operator
``P_S H P_S`` (one (rows, in) x (in, in) product per iteration, started from the given weights)
instead of one (|S| x |S|) factorisation per row. The preconditioner is the masked inverse
``P_S H^-1 P_S``: (H^-1)_SS is the inverse of the Schur complement H_SS - H_ST H_TT^-1 H_TS rather
than of H_SS, close enough that CG reaches the optimum in about 8 iterations where the diagonal
(Jacobi) preconditioner was still short of it after 15 on SmolLM2's Hessians.

A row leaves the iteration once r^T z, the preconditioned residual (about the error the row can
still shed), is below ``tol`` of its current error r_w^T H r_w; rows started at their optimum (a
refit after a few DSnoT swaps leaves most rows untouched) cost one product. The layer error never
increases: CG on this convex quadratic only goes down from its start.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..calibration.linalg import inverse_from_cholesky


def damped_hessian(h: np.ndarray, damp: float) -> np.ndarray:
    """H + damp * mean(diag H) * I in float64 (the matrix the refit solves with)."""
    H = np.array(h, dtype=np.float64)
    H[np.diag_indices_from(H)] += damp * float(np.mean(np.diag(H)))
    return H


def refit_preconditioner(h: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """(H + damp * mean(diag H) * I)^-1, to share between refits of layers with the same Hessian."""
    H = damped_hessian(h, damp)
    try:
        return inverse_from_cholesky(H)
    except np.linalg.LinAlgError:  # singular (damp=0 with dead channels): the diagonal (Jacobi) one
        return np.diag(1.0 / np.maximum(np.diag(H), 1e-30))


def refit_kept(w_target: np.ndarray, w_init: np.ndarray, keep: np.ndarray, h: np.ndarray, *, damp: float = 0.01,
               iters: int = 15, tol: float = 1e-3, hinv: Optional[np.ndarray] = None) -> np.ndarray:
    """Kept weights minimising ||(w_target - w') X^T||^2 (damped) with w' zero where ``~keep``.

    ``w_target``, ``w_init``: (out, in); ``keep``: bool (out, in); ``h``: (in, in) = X^T X;
    ``iters``: at most this many CG iterations; ``hinv``: :func:`refit_preconditioner` of ``h``
    (computed when not given). Returns float32 weights, zero outside ``keep``.

    Products, vectors and the solution are float32 (half the time of float64 on the CPU's BLAS,
    and the weights are stored as float32); every per-row scalar of the iteration (the step
    lengths and each row's error) is float64. The two products of each step are written into
    buffers allocated once.
    """
    H = damped_hessian(h, damp).astype(np.float32)
    Hinv = np.asarray(refit_preconditioner(h, damp) if hinv is None else hinv, dtype=np.float32)
    M = np.asarray(keep, bool)
    mf = M.astype(np.float32)
    out = np.asarray(w_init, np.float32) * mf
    d = np.asarray(w_target, np.float32) - out
    g = d @ H
    err = np.einsum("ij,ij->i", d, g, dtype=np.float64)  # each row's damped error^2
    del d
    live = np.arange(M.shape[0])  # rows still iterating; x, r, p, mf hold only them
    x = out
    r = np.multiply(g, mf, out=g)  # minus the gradient of the row's error, on its kept weights
    zbuf = r @ Hinv  # the products are written into these two buffers (no fresh pages per step)
    zbuf *= mf
    qbuf = np.empty_like(zbuf)
    z = zbuf
    p = z.copy()
    rz = np.einsum("ij,ij->i", r, z, dtype=np.float64)
    for it in range(iters + 1):
        go = rz > tol * np.maximum(err, 1e-300)
        if not go.all():
            if x is out:  # the first time rows leave: from here on, out holds only final rows
                x = out.copy()
            out[live[~go]] = x[~go]
            live, x, r, p, mf, rz, err = live[go], x[go], r[go], p[go], mf[go], rz[go], err[go]
        if not live.size or it == iters:
            break
        n = live.size
        q = np.matmul(p, H, out=qbuf[:n])
        q *= mf
        pq = np.einsum("ij,ij->i", p, q, dtype=np.float64)
        alpha = np.where(pq > 0, rz / np.where(pq > 0, pq, 1.0), 0.0)
        a32 = alpha.astype(np.float32)[:, None]
        q *= a32
        r -= q
        np.multiply(p, a32, out=q)
        x += q
        err -= alpha * rz  # a CG step lowers the quadratic by alpha r^T z
        z = np.matmul(r, Hinv, out=zbuf[:n])
        z *= mf
        rz_new = np.einsum("ij,ij->i", r, z, dtype=np.float64)
        beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        p *= beta.astype(np.float32)[:, None]
        p += z
        rz = rz_new
    if x is not out:
        out[live] = x
    out *= M
    return out
