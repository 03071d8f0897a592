"""The roofline chooser: which weight format a GPU GEMM should run in, predicted from peaks.

``time = max(flops / (peak * compute_eff), bytes / (hbm * memory_eff)) + launch`` per kernel.
The dense GEMM's flops and bytes are the IR's own cost of a ``dot_general``
(:func:`pared.ir.eqn_cost`); a compressed format moves fewer weight bytes (:func:`weight_bytes`).
Peaks are the vendor's dense figures (DESIGN.md, Performance references); the efficiencies are
what a Triton kernel of that kind reaches: in-register dequantization and 2:4 decompression
cost ALU work on the same tensor-core dot (these kernels do not use sparse tensor cores), so
they win only where the weight stream dominates (small M) and lose where compute does (prefill).
A compressed kernel predicted slower than the dense one is refused and the refusal reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ...ir import Cost, TensorType, Var, eqn_cost, make_eqn
from .choice import KernelChoice
from .chooser import Candidate, Gemm, decide


@dataclass(frozen=True)
class DevicePeaks:
    name: str
    hbm_bytes_s: float
    bf16_flops: float  # dense tensor-core peak (fp16 the same)
    int8_ops: float
    fp32_flops: float


DEVICES = {
    "H100": DevicePeaks("H100 SXM", 3.35e12, 989e12, 1979e12, 67e12),
    "H200": DevicePeaks("H200", 4.8e12, 989e12, 1979e12, 67e12),
    "A100": DevicePeaks("A100 SXM 80GB", 2.039e12, 312e12, 624e12, 19.5e12),
}
DEFAULT_DEVICE = "H100"

# (compute efficiency, memory efficiency) of each kernel kind relative to the peaks above
EFFICIENCY = {
    "dense": (0.70, 0.80),
    "int8": (0.55, 0.80),  # weight-only int8: dequant in the main loop
    "int4": (0.45, 0.75),
    "w8a8": (0.65, 0.80),  # int8 x int8 tensor cores, scales in the epilogue
    "sparse24": (0.40, 0.75),  # 2:4 decompression by select, dense dot
    "sparse24_int4": (0.30, 0.70),
}
LAUNCH_S = 4e-6
_ELEM_DTYPE = {2: "bf16", 4: "f32"}


def device_peaks(name: str | None) -> DevicePeaks:
    """Peaks for a device name as torch reports it (``NVIDIA H100 80GB HBM3``); H100 otherwise."""
    for key, peaks in DEVICES.items():
        if name and key in name.upper():
            return peaks
    return DEVICES[DEFAULT_DEVICE]


def weight_bytes(fmt: str, n: int, k: int, group_size: int | None, elem_bytes: int = 2,
                 has_zero: bool = False) -> float:
    """Bytes of an [n, k] weight stored as ``fmt`` (with its group scales, and zeros if any)."""
    groups = 0 if group_size is None else n * -(-k // group_size) * elem_bytes * (2 if has_zero else 1)
    if fmt == "dense":
        return n * k * elem_bytes
    if fmt in ("int8", "w8a8"):
        return n * k + groups
    if fmt == "int4":
        return n * k / 2 + groups
    if fmt == "sparse24":
        return n * k / 2 * elem_bytes + n * k / 8
    if fmt == "sparse24_int4":
        return n * k / 4 + n * k / 8 + groups
    raise ValueError(f"unknown format {fmt!r}")


def dense_gemm_cost(m: int, n: int, k: int, elem_bytes: int = 2) -> Cost:
    """The IR's cost of ``x[m, k] . w[n, k]^T`` in the activation dtype (flops, bytes moved)."""
    if elem_bytes not in _ELEM_DTYPE:
        raise ValueError(f"roofline: no dtype with {elem_bytes}-byte elements; use one of {sorted(_ELEM_DTYPE)}")
    dt = _ELEM_DTYPE[elem_bytes]
    x, w = Var(TensorType((m, k), dt)), Var(TensorType((n, k), dt))
    dot = make_eqn("dot_general", [x, w], {"contract": ((1,), (1,))})
    return eqn_cost(dot)


def gemm_cost(fmt: str, m: int, n: int, k: int, *, group_size: int | None = 128, elem_bytes: int = 2,
              has_zero: bool = False) -> Cost:
    """Flops and bytes of one GEMM with the weight stored as ``fmt`` (activations, weight, output)."""
    if fmt == "dense":
        return dense_gemm_cost(m, n, k, elem_bytes)
    a_bytes = m * k * (1 if fmt == "w8a8" else elem_bytes)
    out_bytes = m * n * elem_bytes
    return Cost(2 * m * n * k, a_bytes + weight_bytes(fmt, n, k, group_size, elem_bytes, has_zero) + out_bytes)


def gemm_time(fmt: str, m: int, n: int, k: int, peaks: DevicePeaks, *, group_size: int | None = 128,
              elem_bytes: int = 2, has_zero: bool = False) -> float:
    """Predicted seconds of one GEMM of x[m, k] and a weight [n, k] stored as ``fmt``."""
    ce, me = EFFICIENCY[fmt]
    peak = peaks.int8_ops if fmt == "w8a8" else (peaks.fp32_flops if elem_bytes == 4 else peaks.bf16_flops)
    c = gemm_cost(fmt, m, n, k, group_size=group_size, elem_bytes=elem_bytes, has_zero=has_zero)
    return max(c.flops / (peak * ce), c.bytes / (peaks.hbm_bytes_s * me)) + LAUNCH_S


@dataclass(frozen=True)
class RooflineChooser:
    """Predicts each candidate format (``Candidate.kernel``) on ``peaks`` and applies :func:`decide`."""

    peaks: DevicePeaks = DEVICES[DEFAULT_DEVICE]

    def choose(self, layer: Gemm, candidates: Sequence[Candidate]) -> KernelChoice:
        elem = 4 if layer.dtype == "f32" else 2
        seconds = [tuple(gemm_time(c.kernel, m, layer.n, layer.k, self.peaks, group_size=c.group_size, elem_bytes=elem,
                                   has_zero=c.has_zero) for m in layer.rows) for c in candidates]
        return decide(layer, candidates, seconds, "roofline")


def choose(compressed: str, m: int, n: int, k: int, peaks: DevicePeaks, *, group_size: Optional[int] = 128,
           elem_bytes: int = 2, has_zero: bool = False, layer: str = "", op: str = "dot_general") -> KernelChoice:
    """Keep ``compressed`` unless the roofline predicts the dense kernel is faster at M = ``m``."""
    gemm = Gemm(layer, op, n, k, (m,), "f32" if elem_bytes == 4 else "bf16")
    dense = Candidate("dense")
    cands = [dense]
    if compressed != "dense":
        cands.insert(0, Candidate(compressed, group_size=group_size, has_zero=has_zero))
    return RooflineChooser(peaks).choose(gemm, cands)
