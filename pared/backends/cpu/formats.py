"""Sparse weight formats for the CPU kernels, packed once from a layer's weight.

Two layouts (``sparse_kernels.cpp`` explains the kernels that read them):

* :class:`EllWeight` ("constant fan-in", SRigL's condensed layout): every output row keeps the
  same number of slots F, ``vals[N, F]`` and ascending ``cols[N, F]`` (uint16). It carries every
  sparse encoding of the IR: N:M (F = K n / m, no padding), a constant fan-in mask (every row
  keeps the same count: a row-wise magnitude/Wanda mask, SRigL), blocks (1x16 blocks make
  runs of 16 consecutive columns, which the M = 1 kernel loads without a gather) and an
  unstructured mask (padded to its fullest row: :attr:`EllWeight.padding` says how much).
  Values: ``f32``, ``bf16``, ``i8`` (per-channel scales) or ``u4`` (4-bit, two per byte, with
  scales and zero points per group of input columns). Scale groups must hold the same number
  of slots in every row (P; F = G P): each (row, group) is padded to the fullest one, so an
  N:M weight with groups of a multiple of M columns has no padding at all.
* :class:`Nm8Weight` (W8A8, AVX512-VBMI + VNNI): int8 weights with at most 4 nonzeros in every
  aligned window of 8 input columns (2:4 and 4:8), as one (positions, values) dword pair per
  (row, window), interleaved for blocks of 8 output rows.

A padding slot holds a value that dequantizes to exactly 0 (the zero point, or 0), at a column
of its own group, so padded and unpadded rows compute the same sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

VTYPES = {"f32": 0, "bf16": 1, "i8": 2, "u4": 3}
MAX_K = 1 << 16  # columns are uint16
NM8_ROWS = 8  # output rows per block of Nm8Weight.meta (R in the kernel)


@dataclass(frozen=True, eq=False)
class EllWeight:
    """A row-sparse weight [N, K] with F slots per row (see the module doc).

    Attributes:
        n, k: the dense weight's shape.
        cols: uint16 [N, F], ascending within each scale group.
        vals: f32 [N, F]; bf16 as its uint16 bits [N, F]; int8 [N, F]; u4 as bytes [N, ceil(F / 2)]
            (low nibble first), 8 spare bytes at the end (the kernel reads 8 bytes at a time).
        vtype: ``f32`` | ``bf16`` | ``i8`` | ``u4``.
        group: P, the slots per scale group (F when per channel or unscaled).
        scales, zeros: f32 [N, F / P] (None: unscaled; zeros None: symmetric). The weight is
            ``(q - zero) * scale``.
        contiguous: every full chunk of 16 slots in a group covers 16 consecutive columns.
        nnz: the nonzeros packed (the rest of the N * F slots are padding).
    """

    n: int
    k: int
    cols: np.ndarray
    vals: np.ndarray
    vtype: str
    group: int
    scales: Optional[np.ndarray]
    zeros: Optional[np.ndarray]
    contiguous: bool
    nnz: int

    @property
    def fanin(self) -> int:
        return int(self.cols.shape[1])

    @property
    def padding(self) -> float:
        """Fraction of the slots that are padding (0 for N:M and constant fan-in)."""
        slots = self.n * self.fanin
        return 1.0 - self.nnz / slots if slots else 0.0

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.n * self.k)

    @property
    def nbytes(self) -> int:
        extra = sum(a.nbytes for a in (self.scales, self.zeros) if a is not None)
        return int(self.cols.nbytes + self.vals.nbytes + extra)


@dataclass(frozen=True, eq=False)
class Nm8Weight:
    """int8 weights with <= 4 nonzeros per aligned window of 8 columns (2:4, 4:8), for W8A8.

    Attributes:
        meta: uint32 [ceil(N / 8), ceil(K / 8), 8, 2]: per (row, window) the vpermt2b positions
            (byte i: the column of the window feeding product i, +60 past the first 4) and the
            4 int8 values (byte i: product i's weight).
        wsum: int32 [N], each row's sum of values (removes the activations' +128 offset).
        scale: f32 [N], the per-channel weight scale.
    """

    n: int
    k: int
    meta: np.ndarray
    wsum: np.ndarray
    scale: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.meta.nbytes + self.wsum.nbytes + self.scale.nbytes)


def _bf16_bits(a: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even bf16 bits of f32 values (the values the IR's bf16 holds)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def pack_ell(w: np.ndarray, *, vtype: str = "f32", q: Optional[np.ndarray] = None,
             scales: Optional[np.ndarray] = None, zeros: Optional[np.ndarray] = None,
             group_size: Optional[int] = None, pad_to: int = 1) -> EllWeight:
    """Pack a sparse weight into :class:`EllWeight`.

    Args:
        w: the weight's float values [N, K] (dequantized for a quantized weight): its nonzeros
            are what gets packed.
        vtype: the stored values: ``f32``/``bf16`` (from ``w``), ``i8``/``u4`` (from ``q``).
        q: the integer values [N, K] of a quantized weight (int8; int4 as int8 in [-8, 7] or
            uint4 as uint8 in [0, 15]).
        scales, zeros: [N, G] per-channel (G = 1) or per-group (G = ceil(K / group_size)).
        group_size: the quantization group along K (None: per channel).
        pad_to: F and P are rounded up to a multiple of this (u4 needs even P).

    Raises ValueError for a layout the kernels do not take (K >= 65536, u4 without groups of
    whole bytes, a zero point that is not an integer).
    """
    w = np.asarray(w, np.float32)
    n, k = w.shape
    if k >= MAX_K:
        raise ValueError(f"pack_ell: K={k} exceeds the uint16 column range")
    if vtype not in VTYPES:
        raise ValueError(f"pack_ell: vtype {vtype!r} not one of {tuple(VTYPES)}")
    quantized = vtype in ("i8", "u4")
    if quantized and (q is None or scales is None):
        raise ValueError(f"pack_ell: vtype {vtype} needs q and scales")
    if vtype == "u4":
        pad_to = max(2, pad_to + pad_to % 2)
    gs = group_size if (quantized and group_size is not None) else k
    gs = max(1, gs)
    groups = -(-k // gs) if k else 1
    kept = w != 0
    counts = np.add.reduceat(kept.astype(np.int32), np.arange(0, max(k, 1), gs), axis=1) if k else np.zeros((n, 1),
                                                                                                           np.int32)
    p = int(counts.max(initial=0))
    p = -(-p // pad_to) * pad_to if p else 0
    f = p * groups
    cols = np.zeros((n, f), np.int64)
    slot_vals = np.zeros((n, f), np.float32 if not quantized else np.int32)
    real = np.zeros((n, f), bool)
    if quantized:
        qi = np.asarray(q).astype(np.int32)
        offset = 8 if (vtype == "u4" and np.asarray(q).dtype == np.int8) else 0  # int4 -> nibble u = q + 8
        if zeros is not None:
            z = np.asarray(zeros, np.float64)
            if np.any(z != np.round(z)):
                raise ValueError("pack_ell: zero points must be integers (a padding slot must dequantize to 0)")
            pad_q = np.round(z).astype(np.int32) + offset  # [N, G]
        else:
            pad_q = np.full((n, groups), offset, np.int32)
    if p:
        for g in range(groups):
            c0, c1 = g * gs, min(k, (g + 1) * gs)
            sub = kept[:, c0:c1]
            # each row's kept columns first (ascending), then the pruned ones as padding positions
            order = np.argsort(~sub, axis=1, kind="stable")[:, :p] if c1 - c0 >= p else None
            if order is None:  # a group narrower than P (a ragged last group): repeat its last column
                order = np.argsort(~sub, axis=1, kind="stable")
                order = np.concatenate([order, np.repeat(order[:, -1:], p - order.shape[1], axis=1)], axis=1)
            cnt = counts[:, g]
            is_real = np.arange(p)[None, :] < cnt[:, None]
            cc = order + c0
            # padding slots sit on the row's last kept column of the group (or the group's first)
            last = np.where(cnt > 0, np.take_along_axis(cc, np.maximum(cnt - 1, 0)[:, None], 1)[:, 0], c0)
            cc = np.where(is_real, cc, last[:, None])
            cols[:, g * p:(g + 1) * p] = cc
            real[:, g * p:(g + 1) * p] = is_real
            if quantized:
                qv = np.take_along_axis(qi, cc, 1) + offset
                slot_vals[:, g * p:(g + 1) * p] = np.where(is_real, qv, pad_q[:, g:g + 1])
            else:
                slot_vals[:, g * p:(g + 1) * p] = np.where(is_real, np.take_along_axis(w, cc, 1), 0.0)
    if vtype == "f32":
        vals = slot_vals.astype(np.float32)
    elif vtype == "bf16":
        vals = _bf16_bits(slot_vals)
    elif vtype == "i8":
        if slot_vals.size and (slot_vals.min() < -128 or slot_vals.max() > 127):
            raise ValueError("pack_ell: i8 values outside [-128, 127]")
        vals = slot_vals.astype(np.int8)
    else:
        if slot_vals.size and (slot_vals.min() < 0 or slot_vals.max() > 15):
            raise ValueError("pack_ell: 4-bit values outside [0, 15] after the offset")
        u = slot_vals.astype(np.uint8)
        if f % 2:
            u = np.concatenate([u, np.zeros((n, 1), np.uint8)], axis=1)
        vals = (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)
        vals = np.concatenate([vals.reshape(-1), np.zeros(8, np.uint8)])  # the kernel reads 8 bytes at a time
    sc = zc = None
    if quantized:
        sc = np.ascontiguousarray(np.asarray(scales, np.float32).reshape(n, -1))
        if sc.shape[1] != groups:
            sc = np.ascontiguousarray(np.repeat(sc, groups, axis=1)) if sc.shape[1] == 1 else sc
        if zeros is not None or vtype == "u4":
            z = np.zeros((n, groups), np.float32) if zeros is None else np.asarray(zeros, np.float32).reshape(n, -1)
            zc = np.ascontiguousarray(z + (8 if (vtype == "u4" and np.asarray(q).dtype == np.int8) else 0),
                                      np.float32)
            if zc.shape[1] != groups:
                zc = np.ascontiguousarray(np.repeat(zc, groups, axis=1))
            if not np.any(zc):
                zc = None
    return EllWeight(n, k, np.ascontiguousarray(cols.astype(np.uint16)), np.ascontiguousarray(vals), vtype,
                     p if p else 1, sc, zc, _contiguous(cols, p), int(real.sum()))


def _contiguous(cols: np.ndarray, p: int) -> bool:
    """Every full 16-slot chunk of every group covers 16 consecutive columns (e.g. 1x16 blocks)."""
    if p < 16:
        return False
    n, f = cols.shape
    for start in range(0, f, p):
        for j in range(start, start + p - 15, 16):
            chunk = cols[:, j:j + 16].astype(np.int64)
            if not np.all(chunk == chunk[:, :1] + np.arange(16)):
                return False
    return True


def pack_nm8(q: np.ndarray, scale: np.ndarray) -> Optional[Nm8Weight]:
    """Pack an int8 weight [N, K] with per-channel ``scale`` [N] or [N, 1] into :class:`Nm8Weight`;
    None when some aligned window of 8 columns has more than 4 nonzeros."""
    q = np.asarray(q)
    if q.dtype != np.int8 or q.ndim != 2:
        return None
    n, k = q.shape
    k8 = -(-k // 8)
    qp = np.zeros((n, k8 * 8), np.int8)
    qp[:, :k] = q
    win = qp.reshape(n, k8, 8)
    nz = win != 0
    if (nz.sum(-1) > 4).any():
        return None
    pos = np.sort(np.argsort(~nz, axis=-1, kind="stable")[..., :4], axis=-1)  # nonzeros first, then zeros
    vals = np.take_along_axis(win, pos, -1).astype(np.int8)  # [N, K8, 4]
    sel = np.where(pos < 4, pos, pos + 60).astype(np.uint8)  # vpermt2b: bit 6 picks the window's second group
    nb = -(-n // NM8_ROWS)
    meta = np.zeros((nb * NM8_ROWS, k8, 2), np.uint32)
    meta[:n, :, 0] = sel.view(np.uint32).reshape(n, k8) if sel.size else 0
    meta[:n, :, 1] = vals.view(np.uint32).reshape(n, k8) if vals.size else 0
    meta = meta.reshape(nb, NM8_ROWS, k8, 2).transpose(0, 2, 1, 3)
    wsum = q.astype(np.int32).sum(axis=1).astype(np.int32)
    return Nm8Weight(n, k, np.ascontiguousarray(meta), wsum, np.asarray(scale, np.float32).reshape(n).copy())


__all__ = ["MAX_K", "VTYPES", "EllWeight", "Nm8Weight", "pack_ell", "pack_nm8"]
