"""GPTQ: quantize a layer's weight column by column, compensating each rounding error on the
not-yet-quantized columns with the inverse Hessian of the layer's inputs (Frantar et al., 2022).

For W [N, K] and H = X^T X (from the calibration engine), with U the upper Cholesky factor of
(H + damp I)^-1, column i is quantized to q_i and the error e = (w_i - dq(q_i)) / U_ii is spread
over the remaining columns: W[:, j>i] -= e U_i,j (Algorithm 1 of the paper, with lazy block
updates of ``block`` columns). Options:

* ``act_order``: process columns by decreasing H_ii (the "desc_act" heuristic); group scales are
  then computed up front from the original weight ("static groups") so each group stays a
  contiguous block of input channels, as ``qlinear`` stores it.
* groups: scale/zero per ``group_size`` input channels (ragged last group allowed).
* sparse weights: zeros present before quantization stay zero (the updates are masked), so GPTQ
  after SparseGPT/GQSA keeps the sparsity pattern ("without refilling zeros").
* ``observer=mse`` searches each group's clipping range (for dynamic groups, on the weights as
  updated when the sweep reaches the group); ``mse_weight`` weights that search's error per input
  channel by diag(H) or by GPTQ's own cost of a column's rounding error, 1 / [H_F^-1]_ii.
* ``refit``: after the sweep, the group scales (and zero points) are re-solved by least squares
  for the final codes against the layer error ||(W - W') X^T||^2, optionally alternating with
  further sweeps at the fitted parameters (``refit_rounds``).

The pass runs through the calibration engine sequentially: each layer sees the activations of the
already-quantized layers before it. With ``reconstruct=dense`` each layer instead quantizes the
weight that best rebuilds the DENSE model's output from those activations
(:func:`pared.passes.calibration.sites.dense_target`, from a dense shadow stream; the "asymmetric
calibration" of GPTQv2), so it also makes up for the error of the layers before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from ...ir import dtypes as DT
from ..base import register_pass
from ..calibration import Stats, dense_target
from ..calibration.linalg import upper_cholesky_of_inverse
from .calibrated import CalibratedWeightQuantizer, Solution, reconstruction_error
from .grid import rtn_quantize, weight_grid
from .observers import Observer
from .scheme import QuantizationError, Ragged, SchemeKind, WeightScheme, dequantize_with


def _quant_col(w: np.ndarray, s: np.ndarray, z: Optional[np.ndarray], scheme: WeightScheme):
    """(q, dequantized) of one column with per-row scale ``s`` and zero ``z`` (the IR arithmetic)."""
    s = s.astype(np.float64)
    if scheme.fp8:
        q = DT.round_to(DT.f8e4m3, (w / s).astype(np.float32)).astype(np.float64)
        return q, q * s
    if z is None:
        q = np.rint(w / s)
    else:  # rint(w / s) + z for an integer zero (the IR op); a fitted real zero rounds w / s + z
        zi = np.rint(z)
        q = np.rint(w / s + (z - zi)) + zi
    q = np.clip(q, scheme.qmin, scheme.qmax)
    return q, ((q - z) if z is not None else q) * s


SUB_BLOCK = 16  # columns updated one by one before a matrix product carries their error on
MSE_WEIGHTS = ("none", "hessian", "obs")
REFITS = ("none", "scale", "scale_zero")


def refit_params(w: np.ndarray, h: np.ndarray, q: np.ndarray, scale: np.ndarray, zero: Optional[np.ndarray],
                 scheme: WeightScheme, fit_zero: bool = False):
    """Least-squares scales (and, with ``fit_zero``, zero points) for fixed codes ``q``.

    Each row's dequantized weight ``dq = s_g (q - z_g)`` is linear in the group scales (and in
    ``m_g = s_g z_g``), so the scales minimizing the layer error ``(w - dq) H (w - dq)^T`` solve a
    small [G, G] (or [2G, 2G]) normal system per row, built in O(N K^2). A group whose solution is
    not finite or not positive keeps its old parameters. Fitted zeros are real numbers (not integer
    codes). Returns (scale, zero) as float32.
    """
    n, k = w.shape
    gs = scheme.group_size or k
    G = scheme.groups(k)
    w = np.asarray(w, np.float64)
    h = np.asarray(h, np.float64)
    pad = G * gs - k
    fz = fit_zero and zero is not None
    z0 = zero.astype(np.float64) if zero is not None else np.zeros((n, G))
    # dq = s_g c with c = q - z_g (scales only) or dq = s_g q - m_g (scales and m = s z)
    c = q.astype(np.float64) - (0.0 if fz else np.repeat(z0, gs, axis=1)[:, :k])
    if pad:
        c = np.pad(c, ((0, 0), (0, pad)))
        h = np.pad(h, ((0, pad), (0, pad)))
        w = np.pad(w, ((0, 0), (0, pad)))
    cg = c.reshape(n, G, gs)
    hw = (w @ h).reshape(n, G, gs)
    nb = 2 * G if fz else G
    m = np.zeros((n, nb, nb))
    b = np.zeros((n, nb))
    b[:, :G] = (cg * hw).sum(-1)
    for g in range(G):
        sl = slice(g * gs, (g + 1) * gs)
        p = (c[:, sl] @ h[sl, :]).reshape(n, G, gs)  # row r: (c_g^T H[g, :]) split by groups
        m[:, :G, g] = (cg * p).sum(-1)
        if fz:
            hs = h[sl, :].sum(0).reshape(G, gs)  # 1_g^T H[g, :]
            m[:, G:, G + g] = hs.sum(-1)[None, :]  # (-1_g')^T H (-1_g)
            m[:, :G, G + g] = -(cg * hs[None]).sum(-1)  # c_g'^T H (-1_g)
            m[:, G + g, :G] = m[:, :G, G + g]
    if fz:
        b[:, G:] = -hw.sum(-1)
    s0 = scale.astype(np.float64)
    x0 = np.concatenate([s0, s0 * z0], axis=1) if fz else s0
    # a tiny ridge toward the current parameters keeps empty / degenerate groups well posed
    dg = np.einsum("nii->ni", m)
    lam = 1e-6 * dg.mean(-1, keepdims=True) + 1e-30
    m[:, np.arange(nb), np.arange(nb)] += lam
    b = b + lam * x0
    try:
        x = np.linalg.solve(m, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return scale, zero
    s_new = x[:, :G]
    ok = np.isfinite(x).all(-1, keepdims=True) & (s_new > 0)
    s_out = np.where(ok, s_new, s0)
    if fz:
        z_out = np.where(ok, x[:, G:] / np.where(ok, s_new, 1.0), z0)
        return s_out.astype(np.float32), z_out.astype(np.float32)
    return s_out.astype(np.float32), zero


def gptq_quantize(w: np.ndarray, h: np.ndarray, scheme: WeightScheme, *, block: int = 128, damp: float = 0.01,
                  act_order: bool = True, observer: str = "minmax", keep_zeros: Optional[bool] = None,
                  mse_weight: str = "none", refit: str = "none", refit_rounds: int = 1):
    """GPTQ of ``w`` [N, K] given ``h`` = X^T X [K, K]; returns (q, scale [N, G], zero or None, dequantized w).

    ``keep_zeros`` (default: when more than 10% of ``w`` is exactly zero) keeps zero weights zero.
    ``mse_weight`` weights the ``mse`` observer's clipping error per input channel: ``none``
    (GPTQ's unweighted ``|err|^2.4``), ``hessian`` (by diag(H)) or ``obs`` (by 1 / [H_F^-1]_ii,
    the cost GPTQ itself charges for column i's rounding error, F = the columns not yet quantized).
    ``refit`` re-solves the group scales (``scale``) or scales and zero points (``scale_zero``,
    real-valued zeros; falls back to ``scale`` when zeros are kept) by least squares against the
    original weight for the final codes (:func:`refit_params`); with ``refit_rounds`` > 1 the
    column sweep is re-run with the fitted parameters held fixed before each further refit.
    Raises QuantizationError on a non-finite Hessian.
    """
    if mse_weight not in MSE_WEIGHTS:
        raise QuantizationError(f"gptq: unknown mse_weight {mse_weight!r}; valid: {', '.join(MSE_WEIGHTS)}")
    if refit not in REFITS:
        raise QuantizationError(f"gptq: unknown refit {refit!r}; valid: {', '.join(REFITS)}")
    w = np.asarray(w, dtype=np.float64).copy()
    h_in = np.asarray(h)
    n, k = w.shape
    if h_in.shape != (k, k):
        raise QuantizationError(f"gptq: Hessian has shape {h_in.shape}, expected ({k}, {k})")
    if not np.isfinite(h_in).all():
        raise QuantizationError("gptq: the Hessian has NaN/Inf entries (non-finite calibration activations)")
    if keep_zeros is None:
        keep_zeros = bool((w == 0).mean() > 0.1)
    mask = (w != 0) if keep_zeros else None
    diag = np.diag(h_in).astype(np.float64)
    dead = diag == 0
    diag[dead] = 1.0
    w[:, dead] = 0.0
    w_orig = w.copy()
    gs = scheme.group_size
    groups = scheme.groups(k)

    perm = np.argsort(-diag, kind="stable") if act_order else np.arange(k)
    static = act_order or gs is None

    def working_hessian():
        # the one K x K float64 copy the solver works in: permuted straight from the caller's
        # statistic, with dead inputs' diagonal set to 1 (no intermediate unpermuted copy)
        out = np.ascontiguousarray(h_in[np.ix_(perm, perm)], dtype=np.float64) if act_order else \
            np.array(h_in, dtype=np.float64, order="C")
        out[np.diag_indices(k)] = diag[perm]
        return out

    h = working_hessian()
    h_orig = None  # the refit's objective, in the original column order
    if refit != "none" and not scheme.fp8:
        h_orig = np.array(h_in, dtype=np.float64, order="C")
        h_orig[np.diag_indices(k)] = diag
    if act_order:
        w = w[:, perm]
        if mask is not None:
            mask = mask[:, perm]
    d = damp * float(np.mean(np.diag(h)))
    h[np.diag_indices(k)] += d
    h_diag = np.diag(h).copy()
    try:  # in h's own memory (a copy of the caller's): U with U^T U = H^-1, column-major
        hinv = upper_cholesky_of_inverse(h, overwrite=True)
    except np.linalg.LinAlgError:  # h was overwritten: rebuild it with more dampening
        h = working_hessian()
        h[np.diag_indices(k)] += 11 * d
        h_diag = np.diag(h).copy()
        hinv = upper_cholesky_of_inverse(h, overwrite=True)
    del h
    imp = None  # per input channel (original order) weight of the mse observer's error
    if observer == "mse" and mse_weight != "none":
        imp = np.empty(k)
        imp[perm] = h_diag if mse_weight == "hessian" else 1.0 / np.diag(hinv) ** 2
        imp[dead] = 0.0
    if static:
        scale, zero = weight_grid(w_orig, scheme, observer, importance=imp)
    else:
        scale = np.zeros((n, groups), np.float32)
        zero = np.zeros((n, groups), np.float32) if not scheme.symmetric and not scheme.fp8 else None
    group_of = (perm // gs) if gs is not None else np.zeros(k, np.int64)
    sub_scheme = WeightScheme(scheme.bits, scheme.symmetric, None, scheme.fp8)

    maskT = np.ascontiguousarray(mask.T) if mask is not None else None
    sub = SUB_BLOCK

    def sweep(wT, scale, zero, dynamic):
        # wT: the permuted weight transposed, [K, N] (an input column is a contiguous row); updates
        # are lazy at two levels: column by column inside a sub-block of ``sub`` columns, one
        # product per sub-block for the rest of the block, one per block for the columns after it
        q_out = np.zeros((k, n), np.float32)  # integer codes and f8 values are exact in float32
        dq_out = np.zeros((k, n), np.float32)  # what is returned, rounded once as before
        for i1 in range(0, k, block):
            i2 = min(i1 + block, k)
            err1 = np.zeros((i2 - i1, n))
            hinv1 = hinv[i1:i2, i1:i2]
            for j1 in range(0, i2 - i1, sub):
                j2 = min(j1 + sub, i2 - i1)
                for i in range(j1, j2):
                    col = perm[i1 + i]
                    g = group_of[i1 + i]
                    if dynamic and col % gs == 0:
                        # dynamic groups (no act order, so col = i1 + i): parameters from the weights
                        # as updated so far; columns of this block see every earlier column of the
                        # block, columns after it the block-start values (as in the reference code)
                        stop = min(col + gs, k)
                        cur = wT[col:stop].copy()
                        if i > j1:  # this sub-block's earlier columns have not reached the rest of it
                            upto = min(stop, i2) - col
                            cur[j2 - i:upto] -= hinv1[j1:i, j2:i + upto].T @ err1[j1:i]
                            if maskT is not None:
                                cur[:upto] *= maskT[col:col + upto]
                        s_g, z_g = weight_grid(cur.T, sub_scheme, observer,
                                               importance=None if imp is None else imp[col:stop])
                        scale[:, g] = s_g[:, 0]
                        if zero is not None:
                            zero[:, g] = z_g[:, 0]
                    z = zero[:, g].astype(np.float64) if zero is not None else None
                    q, dq = _quant_col(wT[i1 + i], scale[:, g], z, scheme)
                    if maskT is not None:
                        keep = maskT[i1 + i]
                        q = np.where(keep, q, (z if z is not None else 0.0))
                        dq = np.where(keep, dq, 0.0)
                    q_out[col] = q
                    dq_out[col] = dq
                    e = (wT[i1 + i] - dq) / hinv1[i, i]
                    if i + 1 < j2:
                        wT[i1 + i + 1:i1 + j2] -= np.outer(hinv1[i, i + 1:j2], e)
                        if maskT is not None:
                            wT[i1 + i + 1:i1 + j2] *= maskT[i1 + i + 1:i1 + j2]
                    err1[i] = e
                if j2 < i2 - i1:
                    wT[i1 + j2:i2] -= hinv1[j1:j2, j2:].T @ err1[j1:j2]
                    if maskT is not None:
                        wT[i1 + j2:i2] *= maskT[i1 + j2:i2]
            if i2 < k:
                wT[i2:] -= hinv[i1:i2, i2:].T @ err1
                if maskT is not None:
                    wT[i2:] *= maskT[i2:]
        return np.ascontiguousarray(q_out.T), np.ascontiguousarray(dq_out.T)

    wT = np.ascontiguousarray(w.T)
    del w
    again = refit != "none" and not scheme.fp8 and refit_rounds > 1  # a later sweep needs wT as it is now
    q_out, dq_out = sweep(wT.copy() if again else wT, scale, zero, not static)
    scale = scale.astype(np.float32)
    zero = zero.astype(np.float32) if zero is not None else None
    if refit != "none" and not scheme.fp8:
        fit_zero = refit == "scale_zero" and mask is None
        for r in range(refit_rounds):
            if r:  # re-run the sweep with the fitted parameters held fixed
                q_out, _ = sweep(wT.copy(), scale, zero, False)
            scale, zero = refit_params(w_orig, h_orig, q_out, scale, zero, scheme, fit_zero=fit_zero)
        dq_out = dequantize_with(q_out, scale, zero, scheme).astype(np.float64)
    q_out = q_out.astype(np.float32) if scheme.fp8 else q_out.astype(scheme.dtype.storage)
    return q_out, scale, zero, dq_out.astype(np.float32)


@register_pass("gptq")
@dataclass(frozen=True)
class GPTQ(CalibratedWeightQuantizer):
    """GPTQ weight quantization of every linear layer, calibrated sequentially.

    Options:
        weights, group, scheme, observer, ragged, act_dtype, ignore, targets: as for ``quantize``
            (observer defaults to ``mse`` here).
        act_order: quantize columns by decreasing Hessian diagonal.
        block: columns per lazy-update block.
        damp: dampening, a fraction of the mean Hessian diagonal.
        mse_weight: with observer=mse, how the clipping search weights each input channel's
            error: ``none`` (GPTQ's unweighted |err|^2.4), ``hessian`` (diag(H)) or ``obs``
            (1 / [H_F^-1]_ii, the layer-error cost GPTQ charges for that column's rounding).
        refit: ``none``, ``scale`` (least-squares group scales for the final codes, integer zero
            points kept) or ``scale_zero`` (scales and real-valued zero points; scale-only when
            the weight's zeros are kept, as after pruning), minimizing ||(W - W') X^T||^2.
        refit_rounds: refits, each after the first preceded by a GPTQ sweep at the fitted
            scales/zeros (more rounds: lower layer error, one sweep's time each).
        activations: ``none`` (weight-only) or ``dynamic`` (W8A8 with per-token int8
            activations; needs weights=int8, no groups, scheme=sym).
        reconstruct: what each layer rebuilds: ``layer``, its own output on the quantized model's
            inputs (the paper), or ``dense``, the dense model's output of the layer (see the
            module docstring).
        tied_embedding: as for ``quantize``: ``float`` or ``quantized`` embedding lookups of a
            quantized tied LM head.
    """

    weights: str = "int4"
    group: Optional[int] = 128
    scheme: SchemeKind = "auto"
    observer: Observer = "mse"
    ragged: Ragged = "allow"
    act_order: bool = True
    block: int = 128
    damp: float = 0.01
    mse_weight: Literal["none", "hessian", "obs"] = "obs"
    refit: Literal["none", "scale", "scale_zero"] = "scale_zero"
    refit_rounds: int = 3
    activations: Literal["none", "dynamic"] = "none"
    act_dtype: Optional[str] = None
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    reconstruct: Literal["layer", "dense"] = "layer"
    tied_embedding: Literal["float", "quantized"] = "float"

    def __post_init__(self):
        s = self.weight_scheme()
        if self.reconstruct not in ("layer", "dense"):
            raise QuantizationError(f"gptq reconstruct={self.reconstruct!r}: valid values are layer and dense")
        if self.refit_rounds < 1:
            raise QuantizationError(f"gptq refit_rounds must be >= 1, got {self.refit_rounds}")
        if self.activations == "dynamic" and (s.bits != 8 or s.group_size is not None or not s.symmetric or s.fp8):
            raise QuantizationError("gptq activations=dynamic (W8A8) needs weights=int8, group=none, scheme=sym")

    def statistics(self) -> tuple[str, ...]:
        return ("hessian", "cross") if self.reconstruct == "dense" else ("hessian",)

    def solve(self, w: np.ndarray, stats: Stats) -> Solution:
        scheme = self.weight_scheme()
        h = stats.hessian
        keep_zeros = bool((w == 0).mean() > 0.1)
        ref = w
        if self.reconstruct == "dense":  # a sparse weight keeps its zeros: the target is masked too
            ref = dense_target(w, h, stats.cross, self.damp)
            if keep_zeros:
                ref = ref * (w != 0)
        q, s, z, dq = gptq_quantize(ref, h, scheme, block=self.block, damp=self.damp, act_order=self.act_order,
                                    observer=self.observer, mse_weight=self.mse_weight, refit=self.refit,
                                    refit_rounds=self.refit_rounds, keep_zeros=keep_zeros)
        qr, sr, zr = rtn_quantize(w, scheme, self.observer)
        info = {"recon_err": reconstruction_error(ref, dq, h),
                "recon_err_rtn": reconstruction_error(w, dequantize_with(qr, sr, zr, scheme), h),
                "tokens": int(stats.count), "act_order": self.act_order}
        if self.reconstruct == "dense":
            info["reconstruct"] = "dense"
        return Solution(q, s, z, dequantized=dq, info=info)
