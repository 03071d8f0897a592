"""quantize / dequantize with per-tensor, per-channel and group-wise scales.

``scale`` (and ``zero``) broadcast against x like numpy (per-channel: shape [O, 1] for an [O, I]
weight). With ``group_axis=a, group_size=g`` they have ceil(x.shape[a] / g) entries along a,
each covering g consecutive elements (the last group may be shorter), and broadcast elsewhere.

    quantize:   q = clip(round_half_even(x / s) + z, dtype range)    (ints)
                q = round_to(dtype, x / s)                            (fp8; no zero point)
    dequantize: x = (q - z) * s
"""

from __future__ import annotations

import numpy as np

from .. import dims as D
from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..opdef import OpDef, attr, elementwise_cost, register
from ..shapes import broadcast_shapes, format_shape
from ..types import TensorType
from .checks import FLOATS, check_axis

FP8 = (DT.f8e4m3, DT.f8e5m2)
QUANTIZED = (DT.i8, DT.u8, DT.i4, DT.u4, DT.i16, DT.i32) + FP8


def _check_params(op, x, params, attrs):
    """Check scale/zero shapes against x; see the module docstring for the layout."""
    ga, gs = attrs["group_axis"], attrs["group_size"]
    if (ga is None) != (gs is None) or (gs is not None and gs < 1):
        raise TypeInferenceError(f"{op}: group_axis and group_size (>= 1) go together, got {ga} and {gs}")
    for p in params:
        target = x.shape
        if ga is not None:
            a = check_axis(op, ga, x, "group_axis")
            n = x.shape[a]
            groups = -(-n // gs) if isinstance(n, int) else D.exact_div(n, gs)
            if groups is None:
                raise TypeInferenceError(f"{op}: symbolic dim {n} of {x} is not a multiple of group_size {gs}")
            if p.rank != x.rank or p.shape[a] != groups:
                raise TypeInferenceError(
                    f"{op}: with group_size {gs} on axis {ga} of {x}, scale/zero need rank {x.rank} and "
                    f"{groups} entries on that axis, got {p}"
                )
            target = x.shape[:a] + (groups,) + x.shape[a + 1 :]
        try:
            ok = broadcast_shapes(target, p.shape) == tuple(target)
        except TypeInferenceError:
            ok = False
        if not ok:
            raise TypeInferenceError(f"{op}: scale/zero {p} does not broadcast to {format_shape(target)} (x is {x})")


def _quantize_infer(ts, attrs):
    x, scale, *zero = ts
    dt = attrs["dtype"]
    if not (dt.is_int or dt in FP8):
        raise TypeInferenceError(f"quantize: dtype must be an integer or fp8 type, got {dt}")
    if not x.dtype.is_float or not scale.dtype.is_float:
        raise TypeInferenceError(f"quantize: x and scale must be float, got {x} and {scale}")
    if zero and dt in FP8:
        raise TypeInferenceError(f"quantize: {dt} takes no zero point")
    _check_params("quantize", x, ts[1:], attrs)
    return [TensorType(x.shape, dt)]


def _dequantize_infer(ts, attrs):
    q, scale, *_ = ts
    if not attrs["dtype"].is_float or not scale.dtype.is_float:
        raise TypeInferenceError(f"dequantize: dtype and scale must be float, got {attrs['dtype']} and {scale}")
    _check_params("dequantize", q, ts[1:], attrs)
    return [TensorType(q.shape, attrs["dtype"])]


def expand_groups(p: np.ndarray, n: int, group_axis, group_size) -> np.ndarray:
    """Repeat each group's scale/zero over its group_size elements (trimming a ragged last group)."""
    if group_axis is None:
        return p.astype(np.float64)
    rep = np.repeat(p.astype(np.float64), group_size, axis=group_axis)
    return rep[(slice(None),) * (group_axis % rep.ndim) + (slice(0, n),)]


def _grouped(x: np.ndarray, params, group_axis, group_size):
    """``x`` split along ``group_axis`` into (groups, group_size) and each param with a size-1 axis
    after its groups, so the params broadcast over their groups without being repeated; None when
    the last group is ragged (the caller then expands the params)."""
    if group_axis is None:
        return None
    a = group_axis % x.ndim
    n = x.shape[a]
    if n % group_size:
        return None
    xs = x.reshape(x.shape[:a] + (n // group_size, group_size) + x.shape[a + 1:])
    ps = [None if p is None else np.expand_dims(np.asarray(p, np.float64), a + 1) for p in params]
    return xs, ps


def _quantize(x, scale, zero=None, *, dtype, group_axis, group_size):
    g = _grouped(x, (scale, zero), group_axis, group_size)
    if g is not None:  # same float64 arithmetic as the expanded form, without a weight-sized copy per param
        xs, (s, z) = g
        return _quantize(xs, s, z, dtype=dtype, group_axis=None, group_size=None).reshape(x.shape)
    n = x.shape[group_axis] if group_axis is not None else 0
    s = expand_groups(scale, n, group_axis, group_size)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if dtype.is_float:
            return DT.round_to(dtype, (x / s).astype(np.float32))
        q = np.rint(x / s)  # np.rint rounds half to even
        if zero is not None:
            q = q + expand_groups(zero, n, group_axis, group_size)
        lo, hi = DT.int_range(dtype)
        return np.clip(np.nan_to_num(q, nan=0.0), lo, hi).astype(dtype.storage)


def _dequantize(q, scale, zero=None, *, dtype, group_axis, group_size):
    g = _grouped(q, (scale, zero), group_axis, group_size)
    if g is not None:
        qs, (s, z) = g
        return _dequantize(qs, s, z, dtype=dtype, group_axis=None, group_size=None).reshape(q.shape)
    n = q.shape[group_axis] if group_axis is not None else 0
    x = q.astype(np.float64)
    if zero is not None:
        x = x - expand_groups(zero, n, group_axis, group_size)
    return (x * expand_groups(scale, n, group_axis, group_size)).astype(dtype.storage)


_ATTRS = {"dtype": attr("dtype"), "group_axis": attr("optional_int", None), "group_size": attr("optional_int", None)}
register(
    OpDef(
        "quantize",
        _quantize_infer,
        _quantize,
        attrs=_ATTRS,
        arity=(2, 3),
        cost=elementwise_cost(3),
        dtypes=FLOATS,
        doc="x -> clip(round_half_even(x / scale) + zero) in an int dtype, or round_to(fp8, x / scale).",
        traits={"elementwise", "quant"},
    )
)
register(
    OpDef(
        "dequantize",
        _dequantize_infer,
        _dequantize,
        attrs=_ATTRS,
        arity=(2, 3),
        cost=elementwise_cost(2),
        dtypes=QUANTIZED,
        doc="(q - zero) * scale in the float `dtype`.",
        traits={"elementwise", "quant"},
    )
)
