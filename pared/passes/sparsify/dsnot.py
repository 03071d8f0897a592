"""DSnoT (Zhang et al. 2024, "Dynamic Sparse No Training"): training-free prune-and-grow of a mask.

DSnoT keeps the sparsity fixed and, row by row, swaps one kept weight for one pruned weight when
the swap reduces the layer's reconstruction error. The paper scores swaps with the expected
output error sum_j (W_ij - W'_ij) E[x_j], i.e. the rank-one approximation E[x] E[x]^T of the
Hessian H = X^T X. The engine already gives us H itself, so here every swap is scored with the
exact change of ||(W - W') X^T||^2 = r H r^T (r = W - W' per row), which makes the refinement
monotone: it never increases the error. Each cycle, every row
  1. prunes the kept weight p whose removal costs least:  2 w'_p h_p + w'_p^2 H_pp  (h = r H),
  2. regrows the pruned weight g (same N:M group when patterned) with the best single-weight
     OBS value t = h'_g / H_gg, gaining h'_g^2 / H_gg (h' = h after step 1),
and the swap is applied only where the total change is negative.

Rows are independent and a row changes only when it swaps, so a row whose best swap does not help
will never find one later: it leaves the working set for good. Each cycle therefore costs in
proportion to the rows still swapping, and the result is the same as sweeping every row each cycle.
At N:M nearly every row keeps finding a tiny gain for all ``cycles``: once its mask has settled, its
best step is a regrow of the weight just pruned (p = g), i.e. coordinate descent on the kept values.
When a least-squares refit follows (:func:`~pared.passes.sparsify.refit.refit_kept`, which re-values
all kept weights exactly), ``settle=k`` retires a row after k such steps in a row. On SmolLM2's 2:4
layers, k=1 cut the cycles about 4x but cost up to 1.3% of layer error (a row may find a swap after
a few value steps).

The row loop runs compiled (``pared_dsnot`` in the CPU kernel library, rows over threads; 7-13x
the numpy loop's speed on SmolLM2's layers, the same swaps) where that library builds, so the
sparsify pass runs every cycle (no ``settle``); the numpy loop below is the fallback and the
reference the compiled one is tested against.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np


def dsnot(w_dense: np.ndarray, w_sparse: np.ndarray, keep: np.ndarray, h: np.ndarray, *, n: Optional[int] = None,
          m: Optional[int] = None, cycles: int = 50, damp: float = 0.0,
          settle: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Refine ``(w_sparse, keep)`` for the dense ``w_dense`` given ``h = X^T X``.

    Returns (new weight, new keep-mask, number of swaps). Every row keeps its number of nonzeros
    (and every N:M group its count when ``m`` is given). ``settle``: when > 0, a row also stops after
    that many consecutive steps that change no mask entry (for callers that refit the weights afterwards).
    """
    H = np.asarray(h, np.float64)
    if damp:
        H = H + damp * float(np.mean(np.diag(H))) * np.eye(H.shape[0])
    dH = np.diag(H).copy()
    dH[dH <= 0] = np.inf  # dead channels: never worth growing
    inv = np.where(np.isfinite(dH), 1.0 / dH, 0.0)
    W_out = np.array(w_sparse, np.float64, order="C")
    K_out = np.array(keep, bool, order="C")
    R = np.asarray(w_dense, np.float64) - W_out
    hr = R @ H
    native = _native()
    if native is not None and (not m or (m in (4, 8) and W_out.shape[1] % m == 0)):
        swaps = native(np.ascontiguousarray(H), dH, W_out, R, hr, K_out, m or 0, cycles, settle)
        W_out[~K_out] = 0.0
        return W_out.astype(np.asarray(w_sparse).dtype), K_out, swaps
    live = np.arange(W_out.shape[0])  # rows still swapping; the state below holds only them
    Wc, keep = W_out, K_out
    idle = np.zeros(live.size, int)  # consecutive steps that only re-valued a kept weight
    err = np.einsum("ij,ij->i", R, hr)  # each row's r H r^T, carried forward by each swap's exact change
    swaps = 0
    for _ in range(cycles):
        if not live.size:
            break
        p_row, g_row, s_row, t, delta = _best_swaps(Wc, keep, hr, H, dH, inv, m)
        ok = np.isfinite(delta) & (delta < -1e-12 * (1 + np.abs(err)))
        rr = np.flatnonzero(ok)
        pr, gr, sr, tr = p_row[ok], g_row[ok], s_row[ok], t[ok]
        Wc[rr, pr] = 0.0
        keep[rr, pr] = False
        Wc[rr, gr] += tr
        keep[rr, gr] = True
        R[rr, pr] += sr
        R[rr, gr] -= tr
        hr[rr] += sr[:, None] * H[pr] - tr[:, None] * H[gr]
        err[rr] += delta[ok]
        swaps += int((pr != gr).sum())
        idle = np.where(p_row == g_row, idle + 1, 0)
        go = ok & (idle < settle) if settle else ok
        if not go.all():  # rows without a helpful swap are final: write them back, keep the rest
            W_out[live[~go]], K_out[live[~go]] = Wc[~go], keep[~go]
            live, Wc, keep, R, hr, idle, err = live[go], Wc[go], keep[go], R[go], hr[go], idle[go], err[go]
    W_out[live], K_out[live] = Wc, keep
    W_out[~K_out] = 0.0
    return W_out.astype(np.asarray(w_sparse).dtype), K_out, swaps


# The compiled row loop (``pared_dsnot`` in the CPU kernel library), installed by the compiler
# layer (:mod:`pared.compiler.native`; passes do not import backends): a callable that returns the
# runner, or None where the library cannot be built.
native_loop: Optional[Callable[[], Optional[Callable]]] = None


def _native():
    """The compiled runner, or None (no compiler layer loaded, no library): the numpy loop runs.

    Same steps as the numpy loop below, one row at a time with its state in cache (no per-cycle
    temporaries over the whole layer), rows spread over threads. ``PARED_CPU_KERNELS=0`` or a
    machine without a C++ compiler uses the numpy loop (the library warns once when it cannot build).
    """
    return native_loop() if native_loop is not None else None


def _best_swaps(Wc, keep, hr, H, dH, inv, m):
    """Each row's best (pruned p, grown g, old w'_p, new w'_g, error change) for one swap
    (``inv`` = 1 / dH, 0 for dead channels)."""
    rows, cols = Wc.shape
    ar = np.arange(rows)
    cost = 2 * Wc * hr + Wc * Wc * dH[None, :]
    cost[~keep] = np.inf
    if m:
        G = cols // m
        cg = cost.reshape(rows, G, m)
        p_in = np.argmin(cg, axis=2)  # (rows, G)
        p = p_in + np.arange(G)[None, :] * m
        s = Wc[ar[:, None], p]  # (rows, G)
        cp = np.take_along_axis(cg, p_in[:, :, None], 2)[:, :, 0]
        gcols = np.arange(cols).reshape(G, m)
        hg = hr.reshape(rows, G, m) + s[:, :, None] * H[p[:, :, None], gcols[None, :, :]]
        gain = hg**2 * inv.reshape(G, m)[None]
        gain[keep.reshape(rows, G, m)] = -np.inf
        gp = (
            np.take_along_axis(hg, p_in[:, :, None], 2)[:, :, 0] ** 2
            * inv.reshape(G, m)[np.arange(G)[None, :], p_in]
        )
        np.put_along_axis(gain, p_in[:, :, None], gp[:, :, None], 2)  # p may come back with a better value
        g_in = np.argmax(gain, axis=2)
        total = cp - np.take_along_axis(gain, g_in[:, :, None], 2)[:, :, 0]
        best = np.argmin(total, axis=1)
        delta = total[ar, best]
        p_row, g_row = p[ar, best], g_in[ar, best] + best * m
        t = hg[ar, best, g_in[ar, best]] * inv[g_row]
        s_row = s[ar, best]
    else:
        p_row = np.argmin(cost, axis=1)
        s_row = Wc[ar, p_row]
        cp = cost[ar, p_row]
        hp = hr + s_row[:, None] * H[p_row]
        gain = hp**2 * inv[None, :]
        gain[keep] = -np.inf
        gain[ar, p_row] = hp[ar, p_row] ** 2 * inv[p_row]
        g_row = np.argmax(gain, axis=1)
        delta = cp - gain[ar, g_row]
        t = hp[ar, g_row] * inv[g_row]
    return p_row, g_row, s_row, t, delta
