"""Bit packing of narrow integers (1..8 bits) into bytes, and the packed size of a tensor.

The reference interpreter stores 4-bit (and narrower) values one per byte; packing is what a
saved artifact and the byte counts in reports use. The layout is a little-endian bit stream
along the last axis: element ``j`` of a row occupies bits ``[j*b, (j+1)*b)`` of the row's byte
string (bit 0 is the least significant bit of byte 0), each row padded to whole bytes. So for
4 bits two values share a byte, low nibble first (the layout of GGUF Q4 and torch's
``_convert_weight_to_int4pack`` *input*; the kernels' own tiled layouts are built by the backends).
Signed values are stored in two's complement of ``b`` bits.
"""

from __future__ import annotations

import math

import numpy as np

from .types import Quant, SparseQuant, TensorType


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"packing supports 1..8 bits per value, got {bits!r}")


def pack_bits(q: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Pack integers in ``[-2^(b-1), 2^(b-1))`` (signed) or ``[0, 2^b)`` into uint8 rows.

    Returns an array of shape ``q.shape[:-1] + (ceil(q.shape[-1] * bits / 8),)``.
    Raises ValueError when a value does not fit in ``bits``.
    """
    _check_bits(bits)
    q = np.asarray(q)
    if q.ndim == 0:
        q = q.reshape(1)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if q.size and (q.min() < lo or q.max() > hi):
        raise ValueError(
            f"values in [{q.min()}, {q.max()}] do not fit {'signed' if signed else 'unsigned'} {bits} bits"
        )
    u = (q.astype(np.int64) & ((1 << bits) - 1)).astype(np.uint8)
    if bits == 8:
        return u
    n = q.shape[-1]
    # one bit plane per value bit, interleaved so that the flat bit order is (element, bit)
    planes = (u[..., :, None] >> np.arange(bits, dtype=np.uint8)) & 1  # [..., n, bits]
    flat = planes.reshape(*q.shape[:-1], n * bits)
    return np.packbits(flat, axis=-1, bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, signed: bool, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``n`` values per row, as int8 (signed) or uint8."""
    _check_bits(bits)
    packed = np.asarray(packed, dtype=np.uint8)
    if bits == 8:
        u = packed[..., :n]
    else:
        flat = np.unpackbits(packed, axis=-1, count=n * bits, bitorder="little")
        planes = flat.reshape(*packed.shape[:-1], n, bits).astype(np.uint8)
        u = (planes << np.arange(bits, dtype=np.uint8)).sum(axis=-1, dtype=np.uint16).astype(np.uint8)
    if not signed:
        return u.astype(np.uint8)
    v = u.astype(np.int16)
    v = np.where(v >= (1 << (bits - 1)), v - (1 << bits), v)
    return v.astype(np.int8)


def storage_bits(t: TensorType) -> int:
    """Bits per element of ``t`` once packed: the encoding's ``bits`` when quantized, else the dtype's."""
    enc = t.encoding
    if isinstance(enc, SparseQuant):
        enc = enc.quant
    if isinstance(enc, Quant):
        return enc.bits
    return t.dtype.bits


def packed_nbytes(t: TensorType) -> int:
    """Bytes of ``t`` stored packed (rows of the last axis padded to whole bytes)."""
    if not t.is_static:
        raise ValueError(f"packed_nbytes needs a static shape, got {t}")
    bits = storage_bits(t)
    if t.rank == 0:
        return math.ceil(bits / 8)
    rows = int(np.prod(t.shape[:-1], dtype=np.int64))
    return rows * math.ceil(t.shape[-1] * bits / 8)
