"""Weight quantization schemes: what a quantized weight looks like and how RTN computes it.

A :class:`WeightScheme` fixes the bits, signedness, symmetric/asymmetric zero point, and the
granularity (per output channel, or groups of ``group_size`` along the input axis, the last group
possibly ragged). Weights are [N, K] (out, in). The arithmetic is exactly that of the IR's
``quantize``/``dequantize`` ops (round half to even, clip), so a pass's report and the
interpreter agree bit for bit.

    sym  (signed q):   scale = amax / (2^(b-1) - 1),  q = clip(rint(w / s), -2^(b-1), 2^(b-1) - 1)
    asym (unsigned q): scale = (hi - lo) / (2^b - 1), zero = rint(-lo / s),  q = clip(rint(w / s) + z, 0, 2^b - 1)
    fp8  (e4m3):       scale = amax / 448,            q = round_to(f8e4m3, w / s)

``lo``/``hi`` come from an observer (minmax, percentile, MSE clipping; :mod:`.observers`) and
always include 0, so a zero weight (a pruned one, in particular) dequantizes to exactly 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from ...ir import Quant, TensorType
from ...ir import dtypes as DT
from ...ir.ops.quant import _dequantize, _quantize


class QuantizationError(ValueError):
    """A scheme or a layer cannot be quantized as asked (the message says which and why)."""


SUPPORTED_INT_BITS = (2, 3, 4, 5, 6, 7, 8)

SchemeKind = Literal["sym", "asym", "auto"]  # the ``scheme`` option: auto is asym for uintN, else sym
Ragged = Literal["allow", "skip", "error"]  # a group size that does not divide the input width


@dataclass(frozen=True)
class WeightScheme:
    """How one weight is quantized; see the module docstring."""

    bits: int
    symmetric: bool = True
    group_size: Optional[int] = None
    fp8: bool = False

    def __post_init__(self):
        if self.fp8:
            if self.bits != 8:
                raise QuantizationError(f"fp8 weights have 8 bits, got {self.bits}")
        elif self.bits not in SUPPORTED_INT_BITS:
            raise QuantizationError(
                f"unsupported bit-width {self.bits}: integer weights take "
                f"{SUPPORTED_INT_BITS[0]}..{SUPPORTED_INT_BITS[-1]} bits"
            )
        if self.group_size is not None and self.group_size < 1:
            raise QuantizationError(f"group size must be >= 1, got {self.group_size}")

    @property
    def dtype(self) -> DT.DType:
        """The IR storage dtype of q: i4/u4 for <= 4 bits, i8/u8 up to 8, f8e4m3 for fp8."""
        if self.fp8:
            return DT.f8e4m3
        if self.symmetric:
            return DT.i4 if self.bits <= 4 else DT.i8
        return DT.u4 if self.bits <= 4 else DT.u8

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1

    def groups(self, k: int) -> int:
        return 1 if self.group_size is None else -(-k // self.group_size)

    def encoding(self) -> Quant:
        scheme = "float" if self.fp8 else ("sym" if self.symmetric else "asym")
        gs = self.group_size
        return Quant(
            self.bits,
            signed=self.symmetric or self.fp8,
            scheme=scheme,
            axis=0,
            group_size=gs,
            group_axis=1 if gs is not None else None,
        )

    def q_type(self, n: int, k: int) -> TensorType:
        return TensorType((n, k), self.dtype, self.encoding())

    def describe(self) -> str:
        kind = "fp8e4m3" if self.fp8 else f"int{self.bits}{'' if self.symmetric else '-asym'}"
        return kind + (f"-g{self.group_size}" if self.group_size else "-channel")


def parse_weights(spec: str) -> tuple[int, bool, bool]:
    """``int8``/``int4``/``int3``/``uint4``/``fp8`` -> (bits, symmetric-by-default, fp8)."""
    s = spec.strip().lower()
    if s in ("fp8", "fp8e4m3", "f8e4m3", "e4m3"):
        return 8, True, True
    m = re.fullmatch(r"(u?)int(\d+)|w?(\d+)", s)
    if not m:
        raise QuantizationError(f"cannot read weight format {spec!r}: use int2..int8, uint4 or fp8")
    bits = int(m.group(2) or m.group(3))
    if bits not in SUPPORTED_INT_BITS:
        raise QuantizationError(f"unsupported bit-width {bits} in {spec!r}: integer weights take 2..8 bits")
    return bits, not m.group(1), False


def make_scheme(weights: str, group: Optional[int], scheme: str = "auto") -> WeightScheme:
    """The scheme of the ``weights``/``group``/``scheme`` options every weight quantizer takes.

    Raises QuantizationError for an unreadable format or an asymmetric fp8 request.
    """
    bits, sym_default, fp8 = parse_weights(weights)
    symmetric = sym_default if scheme == "auto" else scheme == "sym"
    if fp8 and not symmetric:
        raise QuantizationError("fp8 weights are symmetric (no zero point); use scheme=sym")
    return WeightScheme(bits, symmetric, group, fp8)


def grouped(w: np.ndarray, group_size: Optional[int]) -> np.ndarray:
    """[N, K] -> [N, G, g] with NaN padding the ragged last group (per-channel: G = 1, g = K)."""
    n, k = w.shape
    if group_size is None:
        return w.reshape(n, 1, k)
    g = -(-k // group_size)
    pad = g * group_size - k
    if pad:
        w = np.concatenate([w, np.full((n, pad), np.nan, w.dtype)], axis=1)
    return w.reshape(n, g, group_size)


def params_from_range(lo: np.ndarray, hi: np.ndarray, scheme: WeightScheme):
    """(scale, zero-or-None) as float32 from per-group ranges (0 is always inside the range)."""
    lo = np.minimum(lo, 0.0).astype(np.float64)
    hi = np.maximum(hi, 0.0).astype(np.float64)
    tiny = np.finfo(np.float32).tiny
    if scheme.fp8:
        scale = np.maximum(np.maximum(-lo, hi) / 448.0, tiny)
        return scale.astype(np.float32), None
    if scheme.symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / scheme.qmax, tiny)
        return scale.astype(np.float32), None
    scale = np.maximum((hi - lo) / scheme.qmax, tiny).astype(np.float32)
    zero = np.clip(np.rint(-lo / scale.astype(np.float64)), 0, scheme.qmax)
    return scale, zero.astype(np.float32)


def quantize_with(w: np.ndarray, scale, zero, scheme: WeightScheme) -> np.ndarray:
    """q (storage dtype of ``scheme.dtype``) for [N, K] ``w`` and [N, G] scale/zero (the IR op's arithmetic)."""
    ga = 1 if scheme.group_size is not None else None
    q = _quantize(
        np.asarray(w, np.float32), scale, zero, dtype=scheme.dtype, group_axis=ga, group_size=scheme.group_size
    )
    if not scheme.fp8:
        q = np.clip(q, scheme.qmin, scheme.qmax).astype(scheme.dtype.storage)
    return q


def dequantize_with(q: np.ndarray, scale, zero, scheme: WeightScheme) -> np.ndarray:
    ga = 1 if scheme.group_size is not None else None
    return _dequantize(q, scale, zero, dtype=DT.f32, group_axis=ga, group_size=scheme.group_size)


def check_weight(name: str, w: np.ndarray, scheme: WeightScheme, ragged: str = "allow") -> Optional[str]:
    """None when ``w`` can be quantized with ``scheme``; else why not (for a skip row or an error).

    Raises QuantizationError for non-finite weights and, with ``ragged="error"``, for a group
    size that does not divide the input width.
    """
    if w.ndim != 2:
        return f"weight has rank {w.ndim}; quantized linears need [out, in]"
    if not np.isfinite(w).all():
        bad = int((~np.isfinite(w)).sum())
        raise QuantizationError(f"{name}: weight has {bad} NaN/Inf values; cannot quantize a non-finite weight")
    gs = scheme.group_size
    if gs is not None and w.shape[1] % gs:
        msg = f"group size {gs} does not divide the input width {w.shape[1]} (last group of {w.shape[1] % gs})"
        if ragged == "error":
            raise QuantizationError(f"{name}: {msg}; pass ragged=allow for a short last group, or ragged=skip")
        if ragged == "skip":
            return msg
    return None
