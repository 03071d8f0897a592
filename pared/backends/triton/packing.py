"""Weight layouts the GEMM kernels read (documented in docs/triton.md), and converters into them.

Every packed tensor is row-major ``[N, X]``: row ``n`` holds output channel ``n``'s weights along
the contraction axis K (torch ``Linear`` orientation), whatever the IR weight's orientation.

* ``dense``: the weight itself, any strides (``[N, K]`` or ``[K, N]`` storage).
* ``int8``: ``q [N, K]`` int8/uint8; ``scale [N, G]`` and optional ``zero [N, G]`` with
  ``G = ceil(K / group_size)``; ``w[n, k] = (q[n, k] - zero[n, g]) * scale[n, g]``, ``g = k // group_size``.
  Per-channel scales are ``G = 1``; broadcast scales are passed with stride 0 (no copy).
* ``int4``: ``q [N, ceil(K / 2)]`` uint8, element ``k`` in byte ``k // 2``, low nibble for even
  ``k``; signed int4 is the nibble's two's complement, unsigned is 0..15 (use a zero point).
  Scales and zeros as for ``int8``.
* ``sparse24``: 2:4 along K (``K % 4 == 0``): ``values [N, K / 2]`` (the weight dtype) holds the
  two kept elements of each group of 4 in order; ``meta [N, ceil(K / 8)]`` uint8 holds their
  positions as one nibble ``i0 | i1 << 2`` per group (``i0 < i1``; a group with fewer non-zeros
  keeps a zero), group ``g`` in byte ``g // 2``, low nibble for even ``g``.
* ``sparse24_int4``: ``codes [N, K / 4]`` uint8 with the two kept int4 codes of group ``g`` as
  ``c0 | c1 << 4``; ``meta`` as for ``sparse24`` (3 bits per weight in all); scales/zeros per
  group of ``group_size`` along the dense K. A pruned element is one whose code equals the zero
  point (it dequantizes to 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

FORMATS = ("dense", "int8", "int4", "sparse24", "sparse24_int4")


@dataclass
class Packed:
    tensors: list[torch.Tensor]
    strides: list[tuple[int, int]]  # (along N, along K-ish) per tensor, in elements
    n_k: tuple[int, int]
    group_size: Optional[int] = None


def _nk(t: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The IR weight-shaped tensor as [N, K] (a view)."""
    return t if transposed else t.t()


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """[N, K] int4 values (int8 storage, -8..7, or uint8 0..15) -> [N, ceil(K/2)] uint8 nibbles."""
    n, k = q.shape
    codes = (q.to(torch.int16) & 15).to(torch.uint8)
    if k % 2:
        codes = torch.cat([codes, torch.zeros(n, 1, dtype=torch.uint8, device=q.device)], 1)
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()


def pack_meta(meta: torch.Tensor) -> torch.Tensor:
    """[N, G] 4-bit group indices -> [N, ceil(G/2)] uint8, two groups per byte (low nibble first)."""
    return pack_int4(meta)


def _kept_positions(nonzero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For [N, K/4, 4] bool non-zero flags, the two kept positions per group (i0 < i1)."""
    if int(nonzero.sum(-1).max()) > 2 if nonzero.numel() else False:
        raise ValueError("weight is not 2:4 sparse along K: a group of 4 has more than 2 non-zeros")
    # rank positions: non-zeros first (stable), then zeros; keep the first two, sorted
    order = torch.argsort((~nonzero).to(torch.int8), dim=-1, stable=True)[..., :2]
    order, _ = torch.sort(order, dim=-1)
    return order[..., 0], order[..., 1]


def compress_24(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] 2:4-sparse weight -> (values [N, K/2], meta [N, ceil(K/8)] uint8)."""
    n, k = w.shape
    if k % 4:
        raise ValueError(f"2:4 compression needs K % 4 == 0, got K={k}")
    g = w.reshape(n, k // 4, 4)
    i0, i1 = _kept_positions(g != 0)
    v = torch.stack([g.gather(-1, i0[..., None])[..., 0], g.gather(-1, i1[..., None])[..., 0]], -1)
    meta = pack_meta((i0 | (i1 << 2)).to(torch.uint8))
    return v.reshape(n, k // 2).contiguous(), meta


def compress_24_int4(q: torch.Tensor, zero: Optional[torch.Tensor] = None, group_size: Optional[int] = None):
    """[N, K] int4 codes of a 2:4 weight (pruned elements equal the zero point) -> (codes [N, K/4]
    uint8, meta [N, ceil(K/8)] uint8). ``zero`` is [N, G] (groups of ``group_size`` along K) or None."""
    n, k = q.shape
    if k % 4:
        raise ValueError(f"2:4 compression needs K % 4 == 0, got K={k}")
    if zero is not None:
        z = torch.repeat_interleave(zero.to(torch.int16), group_size or k, dim=1)[:, :k]
        nonzero = q.to(torch.int16) != z
    else:
        nonzero = q != 0
    g = q.reshape(n, k // 4, 4)
    i0, i1 = _kept_positions(nonzero.reshape(n, k // 4, 4))
    c0 = (g.gather(-1, i0[..., None])[..., 0].to(torch.int16) & 15).to(torch.uint8)
    c1 = (g.gather(-1, i1[..., None])[..., 0].to(torch.int16) & 15).to(torch.uint8)
    return (c0 | (c1 << 4)).contiguous(), pack_meta((i0 | (i1 << 2)).to(torch.uint8))


def _groups(s: torch.Tensor, transposed: bool, n: int, k: int, group_size: int) -> tuple[torch.Tensor, int]:
    """A scale/zero broadcastable to the weight's group grid -> an [N, G] view (stride 0 where
    broadcast) and the effective group size along K."""
    s2 = s.reshape([1] * (2 - s.dim()) + list(s.shape))
    s2 = _nk(s2, transposed)
    gk = s2.shape[1]
    if gk == 1:
        return s2.expand(n, 1), max(k, 1)
    groups = -(-k // group_size)
    if gk == groups:
        return s2.expand(n, groups), group_size
    if gk == k:
        return s2.expand(n, k), 1
    raise ValueError(f"scale of shape {tuple(s.shape)} does not fit a weight of N={n}, K={k}, group_size={group_size}")


def pack_operand(op, ts: Sequence[torch.Tensor]) -> Packed:
    """Convert one operand's region inputs (see gemm.Operand) into its kernel layout."""
    w = _nk(ts[0], op.transposed)
    n, k = w.shape
    if op.fmt == "dense":
        return Packed([w], [w.stride()], (n, k))
    if op.fmt == "sparse24":
        vals, meta = compress_24(w)
        return Packed([vals, meta], [vals.stride(), meta.stride()], (n, k))
    scale, gs = _groups(ts[1], op.transposed, n, k, op.group_size or k)
    zero = _groups(ts[2], op.transposed, n, k, op.group_size or k)[0] if op.has_zero else None
    tail = [scale] + ([zero] if zero is not None else [])
    if op.fmt == "int8":
        body = [w]
    elif op.fmt == "int4":
        body = [pack_int4(w)]
    else:  # sparse24_int4
        zfull = zero.contiguous() if zero is not None else None
        body = list(compress_24_int4(w, zfull, gs))
    tensors = body + tail
    return Packed(tensors, [t.stride() for t in tensors], (n, k), gs)
