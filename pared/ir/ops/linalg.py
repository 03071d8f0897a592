"""Contractions: dot_general (matmul, batched matmul, attention) and conv (im2col + einsum)."""

from __future__ import annotations

import numpy as np

from .. import dims as D
from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..opdef import Cost, OpDef, attr, register
from ..types import TensorType
from .checks import window_dims
from .pool import windows


def _dot_axes(contract, batch, lrank: int, rrank: int):
    """(lc, rc, lb, rb) with negative axes counted from the end."""
    (lc, rc), (lb, rb) = contract, batch
    return tuple(
        tuple(a % n if -n <= a < 0 else a for a in ax) for ax, n in ((lc, lrank), (rc, rrank), (lb, lrank), (rb, rrank))
    )


def _dot_dims(ts, attrs):
    x, y = ts
    lc, rc, lb, rb = _dot_axes(attrs["contract"], attrs["batch"], x.rank, y.rank)
    for name, axes, t in (("lhs contract", lc, x), ("rhs contract", rc, y), ("lhs batch", lb, x), ("rhs batch", rb, y)):
        for a in axes:
            if not 0 <= a < t.rank:
                raise TypeInferenceError(f"dot_general: {name} axis {a} out of range for {t}")
    if len(lc) != len(rc) or len(lb) != len(rb):
        raise TypeInferenceError("dot_general: lhs and rhs need as many contract (and batch) axes")
    if len(set(lc) | set(lb)) != len(lc) + len(lb) or len(set(rc) | set(rb)) != len(rc) + len(rb):
        raise TypeInferenceError("dot_general: an axis is used twice")
    for a, b in zip(lc, rc):
        if x.shape[a] != y.shape[b]:
            raise TypeInferenceError(f"dot_general: contracted dims differ: {x.shape[a]} vs {y.shape[b]} ({x} . {y})")
    for a, b in zip(lb, rb):
        if x.shape[a] != y.shape[b]:
            raise TypeInferenceError(f"dot_general: batch dims differ: {x.shape[a]} vs {y.shape[b]} ({x} . {y})")
    return lc, rc, lb, rb


def _dot_infer(ts, attrs):
    x, y = ts
    lc, rc, lb, rb = _dot_dims(ts, attrs)
    out_dtype = attrs["out_dtype"]
    if out_dtype is None:
        if x.dtype != y.dtype:
            raise TypeInferenceError(f"dot_general: dtype mismatch {x.dtype} vs {y.dtype}; set out_dtype or cast")
        out_dtype = x.dtype
    batch = [x.shape[a] for a in lb]
    lfree = [d for i, d in enumerate(x.shape) if i not in lc and i not in lb]
    rfree = [d for i, d in enumerate(y.shape) if i not in rc and i not in rb]
    return [TensorType(tuple(batch + lfree + rfree), out_dtype)]


def _dot_impl(x, y, *, contract, batch, out_dtype):
    """Reference dot_general: result dims are (batch..., lhs free..., rhs free...), like lax."""
    lc, rc, lb, rb = _dot_axes(contract, batch, x.ndim, y.ndim)
    lfree = [i for i in range(x.ndim) if i not in lc and i not in lb]
    rfree = [i for i in range(y.ndim) if i not in rc and i not in rb]
    acc = np.int64 if x.dtype.kind in "iub" and y.dtype.kind in "iub" else np.float64
    if x.dtype == np.float32 and y.dtype == np.float32 and out_dtype in (None, DT.f32):
        acc = np.float32  # fp32 x fp32 accumulates in fp32, as every backend does
    xt = np.transpose(x, [*lb, *lfree, *lc]).astype(acc, copy=False)
    yt = np.transpose(y, [*rb, *rc, *rfree]).astype(acc, copy=False)
    nb = len(lb)
    bshape = xt.shape[:nb]
    lf = xt.shape[nb : nb + len(lfree)]
    rf = yt.shape[nb + len(rc) :]
    k = int(np.prod(xt.shape[nb + len(lfree) :], dtype=np.int64))
    x2 = xt.reshape(*bshape, int(np.prod(lf, dtype=np.int64)), k)
    y2 = yt.reshape(*bshape, k, int(np.prod(rf, dtype=np.int64)))
    return np.matmul(x2, y2).reshape(*bshape, *lf, *rf)


def _dot_cost(ins, outs, attrs):
    lc = attrs["contract"][0]
    k = int(np.prod([ins[0].shape[a] for a in lc], dtype=np.int64)) if lc else 1
    return Cost(2 * outs[0].numel * k, sum(t.nbytes for t in (*ins, *outs)))


register(
    OpDef(
        "dot_general",
        _dot_infer,
        _dot_impl,
        attrs={
            "contract": attr("nested_ints"),
            "batch": attr("nested_ints", ((), ())),
            "out_dtype": attr("dtype", None),
        },
        arity=2,
        cost=_dot_cost,
        dtypes=(DT.f32, DT.f64, DT.f16, DT.bf16, DT.i8, DT.i32),
        doc="Generalised contraction (lax.dot_general semantics). contract=((lhs axes),(rhs axes)), "
        "batch likewise; output dims are batch, lhs free, rhs free. A linear layer y = x W^T is "
        "dot_general(x, W){contract=((1,),(1,))}. out_dtype widens accumulation (i8 x i8 -> i32).",
    )
)


def _conv_infer(ts, attrs):
    x, w = ts
    g = attrs["groups"]
    if x.rank < 3 or w.rank != x.rank:
        raise TypeInferenceError(
            f"conv: need x (N, C, spatial...) and w (O, C/groups, k...) of equal rank, got {x} and {w}"
        )
    out_dtype = attrs["out_dtype"]
    if out_dtype is None:
        if x.dtype != w.dtype:
            raise TypeInferenceError(f"conv: dtype mismatch {x.dtype} vs {w.dtype}; set out_dtype or cast")
        out_dtype = x.dtype
    o, c = w.shape[0], x.shape[1]
    if g < 1 or D.mul(w.shape[1], g) != c or (isinstance(o, int) and o % g):
        raise TypeInferenceError(
            f"conv: x {x} has {c} channels; w {w} needs C/groups = {c}/{g} in dim 1 and O divisible by groups {g}"
        )
    spatial = window_dims("conv", x, w.shape[2:], attrs["strides"], attrs["padding"], attrs["dilation"])
    return [TensorType((x.shape[0], o, *spatial), out_dtype)]


def _conv_impl(x, w, *, strides, dilation, padding, groups, out_dtype):
    """Grouped N-d convolution (cross-correlation, as in torch/lax) by im2col + einsum."""
    k = w.ndim - 2
    acc = np.int64 if x.dtype.kind in "iub" and w.dtype.kind in "iub" else np.float64
    if x.dtype == np.float32 and w.dtype == np.float32 and out_dtype in (None, DT.f32):
        acc = np.float32  # as dot_general: fp32 convolutions accumulate in fp32
    extent = [(n - 1) * d + 1 for n, d in zip(w.shape[2:], dilation)]  # dilated kernel size
    v = windows(x.astype(acc), extent, strides, padding, 0)  # (N, C, out..., extent...)
    v = v[(Ellipsis, *(slice(None, None, d) for d in dilation))]  # (N, C, out..., k...)
    n, c, out = x.shape[0], x.shape[1], v.shape[2 : 2 + k]
    v = v.reshape(n, groups, c // groups, *out, *w.shape[2:])
    wg = w.astype(acc).reshape(groups, w.shape[0] // groups, c // groups, *w.shape[2:])
    o, kk = "xyzt"[:k], "uvwr"[:k]
    y = np.einsum(f"ngc{o}{kk},gfc{kk}->ngf{o}", v, wg, optimize=True)
    return y.reshape(n, w.shape[0], *out)


def _conv_cost(ins, outs, attrs):
    per_out = int(np.prod(ins[1].shape[1:], dtype=np.int64))  # C/groups * prod(kernel)
    return Cost(2 * outs[0].numel * per_out, sum(t.nbytes for t in (*ins, *outs)))


register(
    OpDef(
        "conv",
        _conv_infer,
        _conv_impl,
        attrs={
            "strides": attr("ints"),
            "dilation": attr("ints"),
            "padding": attr("nested_ints"),
            "groups": attr("int", 1),
            "out_dtype": attr("dtype", None),
        },
        arity=2,
        cost=_conv_cost,
        dtypes=(DT.f32, DT.f64, DT.f16, DT.bf16, DT.i8),
        doc="N-d grouped convolution (cross-correlation), x (N, C, spatial...) * w (O, C/groups, k...) "
        "-> (N, O, out...); padding=((lo, hi), ...); out_dtype as for dot_general.",
    )
)
