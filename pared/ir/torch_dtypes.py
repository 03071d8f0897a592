"""The mapping between pared's IR dtypes and torch dtypes (both directions)."""

from __future__ import annotations

import torch

from . import dtypes as DT

TO_TORCH = {
    DT.f64: torch.float64,
    DT.f32: torch.float32,
    DT.f16: torch.float16,
    DT.bf16: torch.bfloat16,
    DT.f8e4m3: torch.float8_e4m3fn,
    DT.f8e5m2: torch.float8_e5m2,
    DT.i64: torch.int64,
    DT.i32: torch.int32,
    DT.i16: torch.int16,
    DT.i8: torch.int8,
    DT.i4: torch.int8,  # 4-bit values stored one per byte (the IR's reference storage)
    DT.u8: torch.uint8,
    DT.u4: torch.uint8,
    DT.boolean: torch.bool,
}
FROM_TORCH = {
    torch.float64: DT.f64,
    torch.float32: DT.f32,
    torch.float16: DT.f16,
    torch.bfloat16: DT.bf16,
    torch.float8_e4m3fn: DT.f8e4m3,
    torch.float8_e5m2: DT.f8e5m2,
    torch.int64: DT.i64,
    torch.int32: DT.i32,
    torch.int16: DT.i16,
    torch.int8: DT.i8,
    torch.uint8: DT.u8,
    torch.bool: DT.boolean,
}


def to_torch(dt: DT.DType) -> torch.dtype:
    return TO_TORCH[dt]


def from_torch(dt: torch.dtype) -> DT.DType:
    try:
        return FROM_TORCH[dt]
    except KeyError:
        raise TypeError(f"torch dtype {dt} has no pared dtype") from None
