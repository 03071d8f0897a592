"""Pooling over the spatial dims of (N, C, spatial...) tensors: max_pool and avg_pool.

The reference pads, takes a strided ``sliding_window_view`` and reduces the window axes.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..opdef import Cost, OpDef, attr, register
from ..types import TensorType
from .checks import FLOATS, same_dtype, window_dims


def windows(x: np.ndarray, window, strides, padding, fill) -> np.ndarray:
    """A (N, C, out..., window...) view of ``x`` padded with ``fill``."""
    k = len(window)
    xp = np.pad(x, [(0, 0), (0, 0), *padding], constant_values=fill)
    v = sliding_window_view(xp, tuple(window), axis=tuple(range(2, 2 + k)))
    return v[(slice(None), slice(None), *(slice(None, None, s) for s in strides))]


def _infer(name):
    def infer(ts, attrs):
        (x,) = ts
        same_dtype(name, ts, ("float",))
        spatial = window_dims(name, x, attrs["window"], attrs["strides"], attrs["padding"])
        return [TensorType(x.shape[:2] + spatial, x.dtype)]

    return infer


def _max_pool(x, *, window, strides, padding):
    v = windows(x, window, strides, padding, -np.inf)
    return v.max(axis=tuple(range(-len(window), 0)))


def _avg_pool(x, *, window, strides, padding, count_include_pad):
    k = len(window)
    sums = windows(x.astype(np.float64), window, strides, padding, 0.0).sum(axis=tuple(range(-k, 0)))
    if count_include_pad:
        return (sums / np.prod(window)).astype(x.dtype)
    ones = np.ones((1, 1, *x.shape[2:]))  # each window's count of real (unpadded) elements
    counts = windows(ones, window, strides, padding, 0.0).sum(axis=tuple(range(-k, 0)))
    return (sums / counts).astype(x.dtype)


def _pool_cost(ins, outs, attrs):
    return Cost(outs[0].numel * int(np.prod(attrs["window"])), sum(t.nbytes for t in (*ins, *outs)))


_ATTRS = {"window": attr("ints"), "strides": attr("ints"), "padding": attr("nested_ints")}
register(
    OpDef(
        "max_pool",
        _infer("max_pool"),
        _max_pool,
        attrs=_ATTRS,
        arity=1,
        cost=_pool_cost,
        dtypes=FLOATS,
        doc="Max over each window; padding is -inf (never selected).",
    )
)
register(
    OpDef(
        "avg_pool",
        _infer("avg_pool"),
        _avg_pool,
        attrs={**_ATTRS, "count_include_pad": attr("bool", True)},
        arity=1,
        cost=_pool_cost,
        dtypes=FLOATS,
        doc="Mean over each window, dividing by the window size (count_include_pad) or its unpadded count.",
    )
)
