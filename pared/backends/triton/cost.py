"""A roofline cost model for the GEMM kernels: which weight format is fastest for a shape.

``time = max(flops / (peak * compute_eff), bytes / (hbm * memory_eff)) + launch`` per kernel.
Peaks are the vendor's dense figures (DESIGN.md, Performance references); the efficiencies are
what a Triton kernel of that kind reaches: in-register dequantization and 2:4 decompression
cost ALU work on the same tensor-core dot (these kernels do not use sparse tensor cores), so
they win only where the weight stream dominates (small M) and lose where compute does (prefill).
A compressed kernel predicted slower than the dense one is refused and the refusal reported.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def device_peaks(name: str | None) -> DevicePeaks:
    """Peaks for a device name as torch reports it (``NVIDIA H100 80GB HBM3``); H100 otherwise."""
    for key, peaks in DEVICES.items():
        if name and key in name.upper():
            return peaks
    return DEVICES[DEFAULT_DEVICE]


def weight_bytes(fmt: str, n: int, k: int, group_size: int | None, elem_bytes: int = 2, has_zero: bool = False) -> float:
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


def gemm_time(fmt: str, m: int, n: int, k: int, peaks: DevicePeaks, *, group_size: int | None = 128,
              elem_bytes: int = 2, has_zero: bool = False) -> float:
    """Predicted seconds of one GEMM of x[m, k] and a weight [n, k] stored as ``fmt``."""
    ce, me = EFFICIENCY[fmt]
    peak = peaks.int8_ops if fmt == "w8a8" else (peaks.fp32_flops if elem_bytes == 4 else peaks.bf16_flops)
    a_bytes = m * k * (1 if fmt == "w8a8" else elem_bytes)
    out_bytes = m * n * elem_bytes
    wb = weight_bytes(fmt, n, k, group_size if fmt != "dense" else None, elem_bytes, has_zero)
    return max(2.0 * m * n * k / (peak * ce), (a_bytes + wb + out_bytes) / (peaks.hbm_bytes_s * me)) + LAUNCH_S


@dataclass(frozen=True)
class Choice:
    """The format a GEMM runs in, with both predictions; ``refused`` when compression lost."""

    fmt: str
    compressed: str
    compressed_s: float
    dense_s: float

    @property
    def refused(self) -> bool:
        return self.fmt == "dense" and self.compressed != "dense"

    @property
    def speedup(self) -> float:
        return self.dense_s / self.compressed_s


def choose(compressed: str, m: int, n: int, k: int, peaks: DevicePeaks, **kw) -> Choice:
    """Keep ``compressed`` unless the model predicts the dense kernel is faster."""
    tc = gemm_time(compressed, m, n, k, peaks, **kw)
    td = gemm_time("dense", m, n, k, peaks, **kw)
    return Choice(compressed if tc <= td else "dense", compressed, tc, td)
