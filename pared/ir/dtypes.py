"""Element types.

Every IR dtype has a numpy *storage* dtype used by the reference interpreter. Types numpy
lacks are emulated: bf16 and fp8 are stored as float32 values rounded to the target
precision (:func:`round_to`), int4/uint4 as int8/uint8 clamped to their range. Emulation
keeps numpy the only hard dependency and makes rounding explicit and testable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str
    bits: int
    kind: str  # "float" | "int" | "uint" | "bool"
    storage: str  # numpy dtype name of the reference representation

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_int(self) -> bool:
        return self.kind in ("int", "uint")

    @property
    def is_signed(self) -> bool:
        return self.kind in ("int", "float")

    @property
    def np(self) -> np.dtype:
        return np.dtype(self.storage)

    @property
    def itemsize(self) -> float:
        """Bytes per element in a packed layout (0.5 for 4-bit types)."""
        return self.bits / 8

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return self.name


f64 = DType("f64", 64, "float", "float64")
f32 = DType("f32", 32, "float", "float32")
f16 = DType("f16", 16, "float", "float16")
bf16 = DType("bf16", 16, "float", "float32")
f8e4m3 = DType("f8e4m3", 8, "float", "float32")
f8e5m2 = DType("f8e5m2", 8, "float", "float32")
i64 = DType("i64", 64, "int", "int64")
i32 = DType("i32", 32, "int", "int32")
i16 = DType("i16", 16, "int", "int16")
i8 = DType("i8", 8, "int", "int8")
i4 = DType("i4", 4, "int", "int8")
u8 = DType("u8", 8, "uint", "uint8")
u4 = DType("u4", 4, "uint", "uint8")
boolean = DType("bool", 8, "bool", "bool")

ALL: dict[str, DType] = {
    d.name: d for d in (f64, f32, f16, bf16, f8e4m3, f8e5m2, i64, i32, i16, i8, i4, u8, u4, boolean)
}
FLOATS = tuple(d for d in ALL.values() if d.is_float)
INTS = tuple(d for d in ALL.values() if d.is_int)

_FROM_NUMPY = {
    np.dtype("float64"): f64,
    np.dtype("float32"): f32,
    np.dtype("float16"): f16,
    np.dtype("int64"): i64,
    np.dtype("int32"): i32,
    np.dtype("int16"): i16,
    np.dtype("int8"): i8,
    np.dtype("uint8"): u8,
    np.dtype("bool"): boolean,
}


def get(name: str | DType) -> DType:
    if isinstance(name, DType):
        return name
    try:
        return ALL[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(ALL)}") from None


def from_numpy(dt) -> DType:
    dt = np.dtype(dt)
    if dt.name == "bfloat16":  # ml_dtypes, when present
        return bf16
    try:
        return _FROM_NUMPY[dt]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no pared dtype") from None


def int_range(dt: DType) -> tuple[int, int]:
    if dt.kind == "int":
        return -(1 << (dt.bits - 1)), (1 << (dt.bits - 1)) - 1
    if dt.kind == "uint":
        return 0, (1 << dt.bits) - 1
    raise ValueError(f"{dt} is not an integer dtype")


# Finite float formats: (mantissa bits, min normal exponent, max finite value).
_FLOAT_FORMATS = {
    "bf16": (7, -126, float.fromhex("0x1.fep127")),
    "f8e4m3": (3, -6, 448.0),
    "f8e5m2": (2, -14, 57344.0),
}


def _round_float(x: np.ndarray, mant: int, emin: int, fmax: float, saturate: bool) -> np.ndarray:
    """Round float32 values to a narrower binary float (round to nearest even)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        _, e = np.frexp(x)  # x = m * 2**e, 0.5 <= |m| < 1
        e = np.maximum(e - 1, emin)  # exponent of the leading bit; subnormals share emin
        step = np.ldexp(np.float32(1.0), (e - mant).astype(np.int32))
        y = np.rint(x / step) * step  # np.rint rounds half to even
        big = np.abs(y) > fmax
        y = np.where(big, np.sign(y) * (fmax if saturate else np.inf), y)
    return np.where(np.isfinite(x), y, x).astype(np.float32)


def round_to(dt: DType, x: np.ndarray) -> np.ndarray:
    """Convert ``x`` to the storage of ``dt``, rounding/clamping emulated types exactly."""
    if dt.name in _FLOAT_FORMATS:
        mant, emin, fmax = _FLOAT_FORMATS[dt.name]
        # fp8 e4m3 has no infinity: out-of-range values saturate (as torch's float8 casts do
        # for finite inputs when saturating); bf16 and e5m2 overflow to inf.
        return _round_float(x, mant, emin, fmax, saturate=dt.name == "f8e4m3")
    if dt.is_int and dt.bits < 8:
        lo, hi = int_range(dt)
        x = np.asarray(x)
        if x.dtype.kind == "f":
            x = np.trunc(x)
        return np.clip(x, lo, hi).astype(dt.storage)
    return np.asarray(x).astype(dt.storage, copy=False)


# Bit layouts of the emulated 8-bit floats: (exponent bits, mantissa bits, bias, finite top exponent).
_FP8_LAYOUTS = {"f8e4m3": (4, 3, 7), "f8e5m2": (5, 2, 15)}


def fp8_table(dt: DType) -> np.ndarray:
    """The float32 value of every one of the 256 codes of an fp8 dtype (index = code; e4m3 is the
    "fn" variant: no infinities, code 0x7f/0xff are NaN; e5m2 follows IEEE)."""
    if dt.name not in _FP8_LAYOUTS:
        raise ValueError(f"{dt} is not an fp8 dtype")
    eb, mb, bias = _FP8_LAYOUTS[dt.name]
    codes = np.arange(256)
    sign = np.where(codes >> 7, -1.0, 1.0)
    e = (codes >> mb) & ((1 << eb) - 1)
    m = codes & ((1 << mb) - 1)
    frac = m / float(1 << mb)
    val = np.where(e == 0, frac * 2.0 ** (1 - bias), (1 + frac) * 2.0 ** (e - bias))
    top = e == (1 << eb) - 1
    if dt.name == "f8e4m3":
        val = np.where(top & (m == (1 << mb) - 1), np.nan, val)
    else:
        val = np.where(top, np.where(m == 0, np.inf, np.nan), val)
    return (sign * val).astype(np.float32)


def fp8_encode(dt: DType, x: np.ndarray) -> np.ndarray | None:
    """uint8 codes of float32 values that are exactly representable in ``dt`` (as ``round_to``
    leaves them), or None when one is not."""
    table = fp8_table(dt)
    pos = table[:128]
    finite = np.isfinite(pos)
    order = np.flatnonzero(finite)  # codes of the finite non-negative values, increasing
    x = np.asarray(x, np.float32)
    a = np.abs(x)
    idx = np.clip(np.searchsorted(pos[order], a), 0, len(order) - 1)
    code = order[idx].astype(np.uint8) | np.where(np.signbit(x), np.uint8(0x80), np.uint8(0)).astype(np.uint8)
    back = table[code]
    if not np.array_equal(back, x) or not np.array_equal(np.signbit(back), np.signbit(x)):
        return None
    return code


JAX_NAMES = {
    "f64": "float64", "f32": "float32", "f16": "float16", "bf16": "bfloat16",
    "f8e4m3": "float8_e4m3fn", "f8e5m2": "float8_e5m2",
    "i64": "int64", "i32": "int32", "i16": "int16", "i8": "int8", "i4": "int4",
    "u8": "uint8", "u4": "uint4", "bool": "bool",
}
"""IR dtype name -> jax/numpy dtype name (the jax frontend and the XLA backend share it)."""
