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

The pass runs through the calibration engine sequentially: each layer sees the activations of the
already-quantized layers before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from ...ir import Graph
from ..base import Pass, register_pass
from ..calibrated import hessian_norm2
from ..context import PassContext
from .linears import QuantizedWeight, apply_quantized, find_linears, report_unquantizable, select
from .observers import weight_range
from .rtn import Observer, Ragged, make_scheme, skip_ignored
from .scheme import QuantizationError, WeightScheme, check_weight, grouped, params_from_range


def _params(w: np.ndarray, scheme: WeightScheme, observer: str):
    """scale/zero [N, G] for the current values of ``w`` [N, k] under ``scheme``'s grouping."""
    lo, hi = weight_range(grouped(w, scheme.group_size), scheme, observer)
    return params_from_range(lo, hi, scheme)


def _quant_col(w: np.ndarray, s: np.ndarray, z: Optional[np.ndarray], scheme: WeightScheme):
    """(q, dequantized) of one column with per-row scale ``s`` and zero ``z`` (the IR arithmetic)."""
    s = s.astype(np.float64)
    if scheme.fp8:
        from ...ir import dtypes as DT

        q = DT.round_to(DT.f8e4m3, (w / s).astype(np.float32)).astype(np.float64)
        return q, q * s
    q = np.rint(w / s)
    if z is not None:
        q = q + z
    q = np.clip(q, scheme.qmin, scheme.qmax)
    return q, ((q - z) if z is not None else q) * s


def gptq_quantize(w: np.ndarray, h: np.ndarray, scheme: WeightScheme, *, block: int = 128, damp: float = 0.01,
                  act_order: bool = True, observer: str = "minmax", keep_zeros: Optional[bool] = None):
    """GPTQ of ``w`` [N, K] given ``h`` = X^T X [K, K]; returns (q, scale [N, G], zero or None, dequantized w).

    ``keep_zeros`` (default: when more than 10% of ``w`` is exactly zero) keeps zero weights zero.
    Raises QuantizationError on a non-finite Hessian.
    """
    w = np.asarray(w, dtype=np.float64).copy()
    h = np.asarray(h, dtype=np.float64).copy()
    n, k = w.shape
    if h.shape != (k, k):
        raise QuantizationError(f"gptq: Hessian has shape {h.shape}, expected ({k}, {k})")
    if not np.isfinite(h).all():
        raise QuantizationError("gptq: the Hessian has NaN/Inf entries (non-finite calibration activations)")
    if keep_zeros is None:
        keep_zeros = bool((w == 0).mean() > 0.1)
    mask = (w != 0) if keep_zeros else None
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    gs = scheme.group_size
    groups = scheme.groups(k)

    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(k)
    static = act_order or gs is None
    if static:
        scale, zero = _params(w, scheme, observer)
    else:
        scale = np.zeros((n, groups), np.float32)
        zero = np.zeros((n, groups), np.float32) if not scheme.symmetric and not scheme.fp8 else None
    w = w[:, perm]
    h = h[np.ix_(perm, perm)]
    if mask is not None:
        mask = mask[:, perm]
    d = damp * float(np.mean(np.diag(h)))
    h[np.diag_indices(k)] += d
    try:
        hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper Cholesky factor of H^-1
    except np.linalg.LinAlgError:
        h[np.diag_indices(k)] += 10 * d
        hinv = np.linalg.cholesky(np.linalg.inv(h)).T
    q_out = np.zeros((n, k), np.float64)
    dq_out = np.zeros((n, k), np.float64)
    group_of = (perm // gs) if gs is not None else np.zeros(k, np.int64)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = perm[i1 + i]
            g = group_of[i1 + i]
            if not static and col % gs == 0:
                # dynamic groups (no act order): parameters from the weights as updated so far
                # (columns of this block see the block-start values, as in the reference code)
                stop = min(col + gs, k)
                cur = np.concatenate([w1[:, i:], w[:, i2:]], axis=1)[:, : stop - col]
                s_g, z_g = params_from_range(*weight_range(cur.reshape(n, 1, -1), scheme, observer), scheme)
                scale[:, g] = s_g[:, 0]
                if zero is not None:
                    zero[:, g] = z_g[:, 0]
            z = zero[:, g].astype(np.float64) if zero is not None else None
            q, dq = _quant_col(w1[:, i], scale[:, g], z, scheme)
            if mask is not None:
                m = mask[:, i1 + i]
                q = np.where(m, q, (z if z is not None else 0.0))
                dq = np.where(m, dq, 0.0)
            q_out[:, col] = q
            dq_out[:, col] = dq
            e = (w1[:, i] - dq) / hinv1[i, i]
            w1[:, i:] -= np.outer(e, hinv1[i, i:])
            if mask is not None:
                w1[:, i:] *= mask[:, i1 + i : i2]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
        if mask is not None:
            w[:, i2:] *= mask[:, i2:]
    q_out = q_out.astype(np.float32) if scheme.fp8 else q_out.astype(scheme.dtype.storage)
    return q_out, scale.astype(np.float32), (zero.astype(np.float32) if zero is not None else None), dq_out.astype(np.float32)


def reconstruction_error(w: np.ndarray, w_new: np.ndarray, h: np.ndarray) -> float:
    """||(W - W') X^T||_F^2 / ||W X^T||_F^2 from H = X^T X."""
    dlt = np.asarray(w, np.float64) - np.asarray(w_new, np.float64)
    return hessian_norm2(dlt, h) / max(hessian_norm2(w, h), 1e-300)


@register_pass("gptq")
@dataclass(frozen=True)
class GPTQ(Pass):
    """GPTQ weight quantization of every linear layer, calibrated sequentially.

    Options:
        weights, group, scheme, observer, ragged, act_dtype, ignore, targets: as for ``quantize``.
        act_order: quantize columns by decreasing Hessian diagonal.
        block: columns per lazy-update block.
        damp: dampening, a fraction of the mean Hessian diagonal.
        activations: ``none`` (weight-only) or ``dynamic`` (W8A8 with per-token int8
            activations; needs weights=int8, no groups, scheme=sym).
    """

    weights: str = "int4"
    group: Optional[int] = 128
    scheme: Literal["sym", "asym", "auto"] = "auto"
    observer: Observer = "minmax"
    ragged: Ragged = "allow"
    act_order: bool = True
    block: int = 128
    damp: float = 0.01
    activations: Literal["none", "dynamic"] = "none"
    act_dtype: Optional[str] = None
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def __post_init__(self):
        s = make_scheme(self.weights, self.group, self.scheme)
        if self.activations == "dynamic" and (s.bits != 8 or s.group_size is not None or not s.symmetric or s.fp8):
            raise QuantizationError("gptq activations=dynamic (W8A8) needs weights=int8, group=none, scheme=sym")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        from ..calibrated import CalibrationRequest, Rewrite, calibrate, find_weight_sites

        scheme = make_scheme(self.weights, self.group, self.scheme)
        report_unquantizable(graph, ctx, self.name, self.ignore)
        sites, ignored = select(find_linears(graph), self.ignore, self.targets)
        skip_ignored(ctx, self.name, ignored)
        by_index = {s.index: s for s in sites}
        wsites = [ws for ws in find_weight_sites(graph) if ws.index in by_index]
        skipped: set[str] = set()

        def rewrite(ws, w, stats):
            w2 = ws.weight_matrix(w).astype(np.float32)  # (out, in)
            why = check_weight(ws.param, w2, scheme, self.ragged)
            if why:
                skipped.add(ws.param)
                ctx.report.add(self.name, ws.param, skipped=why)
                return None
            q, s, z, dq = gptq_quantize(w2, stats.hessian, scheme, block=self.block, damp=self.damp,
                                        act_order=self.act_order, observer=self.observer)
            err = reconstruction_error(w2, dq, stats.hessian)
            from .rtn import rtn_quantize
            from .scheme import dequantize_with

            qr, sr, zr = rtn_quantize(w2, scheme, self.observer)
            err_rtn = reconstruction_error(w2, dequantize_with(qr, sr, zr, scheme), stats.hessian)
            return Rewrite(ws.from_matrix(dq), info={"q": q, "scale": s, "zero": z, "err": err, "err_rtn": err_rtn,
                                                     "tokens": int(stats.count), "deq": dq})

        req = CalibrationRequest(self.name, wsites, lambda s: ("hessian",), rewrite, sequential=True)
        result = calibrate(graph, ctx, req)
        act = self.activations

        def solve(site, w):
            rw = result.rewrites.get(site.name)
            if rw is None:
                return None
            info = rw.info
            return QuantizedWeight(info["q"], info["scale"], info["zero"], scheme.q_type(*info["q"].shape),
                                   scheme.group_size, act=act, act_dtype=self.act_dtype if act == "none" else None,
                                   fields={"recon_err": info["err"], "recon_err_rtn": info["err_rtn"],
                                           "tokens": info["tokens"], "act_order": self.act_order})

        # the engine left dequantized float weights in result.graph; rewrite from the original sites
        # (same equation indices) but read q/scale/zero from the rewrites
        return apply_quantized(result.graph, ctx, self.name, [s for s in _resites(result.graph, sites)], solve)


def _resites(graph: Graph, sites):
    by_index = {s.index: s for s in find_linears(graph)}
    return [by_index[s.index] for s in sites if s.index in by_index]
