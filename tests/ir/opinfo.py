"""The op sample table (OpInfo, as in JAX's lax_test and lightning-thunder).

For every core op: a sample generator ``samples(dtype, rng) -> [Sample]`` (several shapes, with
broadcasting, size-1 and odd sizes) and an independent reference ``ref(*arrays, **attrs)`` that
sees float inputs as float64 and integers as int64. torch is the oracle where it has the op;
plain numpy formulas elsewhere. test_ops.py runs every sample through the reference interpreter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from pared.ir import GraphBuilder
from pared.ir import dtypes as DT
from pared.ir.dtypes import DType

from .opinfo_qlinear import qlinear_ref, qlinear_samples
from .opinfo_sparse import densify_nm_ref, densify_nm_samples
from .opinfo_train import fake_quant_ref, fake_quant_samples, ste_mask_ref, ste_mask_samples

# Relative and absolute tolerance per output dtype: ~2 units in the last place for the narrow
# formats (the reference rounds once from float64; so does the op), looser for accumulating f32.
TOL = {"f64": 1e-10, "f32": 1e-5, "f16": 2 * 2**-10, "bf16": 2 * 2**-7, "f8e4m3": 2 * 2**-3, "f8e5m2": 2 * 2**-2}


@dataclass(frozen=True)
class Sample:
    args: tuple  # (DType, storage array) per input
    attrs: dict = field(default_factory=dict)
    regions: tuple = ()


@dataclass(frozen=True)
class OpInfo:
    name: str
    samples: Callable[[Optional[DType], np.random.Generator], list]
    ref: Callable[..., Any]
    tol: float = 1.0  # multiplies the per-dtype tolerance in test_ops


def arr(dt: DType, shape, rng, lo=None, hi=None, ints=False) -> np.ndarray:
    """Random values of ``dt`` (in its storage): normal or uniform(lo, hi) floats, small ints."""
    shape = tuple(shape)
    if dt.kind == "bool":
        return rng.random(shape) < 0.5
    if dt.is_int or ints:
        a, b = DT.int_range(dt) if dt.is_int else (-100, 100)
        lo_i, hi_i = (max(a, -8), min(b, 8)) if lo is None else (max(a, lo), min(b, hi))
        v = rng.integers(lo_i, hi_i + 1, size=shape)
        return DT.round_to(dt, v if dt.is_int else v.astype(np.float64))
    v = rng.standard_normal(shape) if lo is None else rng.uniform(lo, hi, shape)
    return DT.round_to(dt, v)


def T(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, order="C"))  # a copy; ascontiguousarray makes 0-d 1-d


def tref(fn):
    """A torch function as a reference on numpy arrays."""
    return lambda *xs, **kw: fn(*(T(x) for x in xs), **kw).numpy()


def S(*args, regions=(), **attrs) -> Sample:
    return Sample(tuple(args), attrs, regions)


UNARY_SHAPES = [(), (1,), (7,), (3, 5), (2, 1, 4)]
BINARY_SHAPES = [((3, 5), (3, 5)), ((2, 1, 4), (3, 1)), ((1,), (6,)), ((), (2, 3)), ((4, 1), (1, 5))]


def unary(lo=None, hi=None, **attrs_list):
    def samples(dt, rng):
        out = [S((dt, arr(dt, s, rng, lo, hi))) for s in UNARY_SHAPES]
        for k, vals in attrs_list.items():
            out += [S((dt, arr(dt, (3, 4), rng, lo, hi)), **{k: v}) for v in vals]
        return out

    return samples


def binary(x_range=(None, None), y_range=(None, None), ints=False, signed_y=False):
    """Samples over BINARY_SHAPES; ``signed_y`` flips the sign of half of y's (positive) values."""

    def samples(dt, rng):
        out = []
        for sx, sy in BINARY_SHAPES:
            y = arr(dt, sy, rng, *y_range, ints=ints)
            if signed_y:
                y = DT.round_to(dt, y * np.where(rng.random(sy) < 0.5, -1, 1).astype(y.dtype))
            out.append(S((dt, arr(dt, sx, rng, *x_range, ints=ints)), (dt, y)))
        return out

    return samples


def over_axes(fn, x, axes, keepdims):
    """Apply a one-dim torch reduction over several axes (highest first)."""
    t = T(x)
    if not axes:
        return x
    for a in sorted((a % x.ndim for a in axes), reverse=True):
        t = fn(t, a, keepdim=keepdims)
        t = t if isinstance(t, torch.Tensor) else t.values  # max/min return (values, indices)
    return t.numpy()


def _red_samples(dt, rng):
    shapes = [((3, 4, 5), (1,), False), ((3, 4, 5), (0, 2), False), ((3, 4, 5), (-1,), True),
              ((7,), (0,), False), ((2, 3), (), False), ((), (), False), ((2, 1, 3), (0, 1, 2), True)]
    return [S((dt, arr(dt, s, rng)), axes=a, keepdims=k) for s, a, k in shapes]


def _int_div(x, y):
    if x.dtype.kind == "f":
        return tref(torch.div)(x, y)
    return tref(lambda a, b: torch.div(a, b, rounding_mode="trunc"))(x, y)


def _cast_samples(dt, rng):
    x = arr(dt, (4, 5), rng, -300, 300) if dt.is_float else arr(dt, (4, 5), rng)
    targets = (DT.f32, DT.f16, DT.bf16, DT.f8e4m3, DT.i32, DT.i8, DT.u8, DT.i4, DT.boolean)
    return [S((dt, x), dtype=t) for t in targets] + [S((dt, arr(dt, (), rng)), dtype=DT.f64)]


def _cast_ref(x, *, dtype):
    if dtype.kind == "bool":
        return x != 0
    if dtype.is_int and x.dtype.kind == "f":
        lo, hi = DT.int_range(dtype)
        return np.clip(T(x).trunc().numpy(), lo, hi).astype(np.int64)
    return x  # the test rounds/wraps the result to `dtype` with dtypes.round_to


def _clamp_samples(dt, rng):
    bounds = [(-0.5, 0.5), (None, 1.0), (-1.0, None), (None, None), (-2.5, 3.0)]
    return [S((dt, arr(dt, (3, 7), rng)), min=lo, max=hi) for lo, hi in bounds]


def _clamp_ref(x, *, min, max):  # noqa: A002
    if x.dtype.kind != "f":
        min, max = (None if min is None else math.ceil(min)), (None if max is None else math.floor(max))  # noqa: A001
    return x if min is None and max is None else T(x).clamp(min, max).numpy()


def _where_samples(dt, rng):
    shapes = [((3, 4), (3, 4), (3, 4)), ((3, 1), (1, 4), ()), ((1,), (5,), (5,)), ((2, 1, 3), (4, 1), (3,))]
    return [
        S((DT.boolean, arr(DT.boolean, c, rng)), (dt, arr(dt, a, rng)), (dt, arr(dt, b, rng))) for c, a, b in shapes
    ]


def _argmax_samples(dt, rng):
    return [
        S((dt, arr(dt, s, rng)), axis=a, keepdims=k)
        for s, a, k in [((3, 4, 5), 1, False), ((3, 4, 5), -1, True), ((7,), 0, False), ((2, 1), 0, True)]
    ]


def _topk_samples(dt, rng):
    tied = DT.round_to(dt, np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.5, 0.5, 0.5, 0.5, 0.5]]))  # ties: lower index wins
    return [
        S((dt, arr(dt, s, rng)), k=k, axis=a)
        for s, k, a in [((3, 8), 3, -1), ((4, 5, 6), 2, 1), ((7,), 0, 0), ((2, 6), 6, 1)]
    ] + [S((dt, tied), k=2, axis=1)]


def _topk_ref(x, *, k, axis):
    """Independent of the op's sort: an entry is kept when fewer than k entries beat it (larger, or
    equal and earlier)."""
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    earlier = np.tril(np.ones((n, n), bool), -1)  # earlier[i, j]: j < i
    beats = (x[..., None, :] > x[..., :, None]) | ((x[..., None, :] == x[..., :, None]) & earlier)
    return np.moveaxis(beats.sum(-1) < k, -1, axis)


def _axis_samples(dt, rng, cases=(((3, 4, 5), 1), ((3, 4, 5), -1), ((7,), 0), ((4, 1), 0), ((1,), -1))):
    return [S((dt, arr(dt, s, rng)), axis=a) for s, a in cases]


def _norm_samples(eps, max_affine):
    def samples(dt, rng):
        out = []
        for shape, axes, n_affine in [
            ((2, 3, 8), (-1,), 2),
            ((2, 3, 8), (1, 2), 1),
            ((4, 5), (1,), 0),
            ((5,), (0,), 2),
            ((3, 1), (-1,), 2),
        ]:
            ns = shape[len(shape) - len(axes) :]
            affine = [(dt, arr(dt, ns, rng)) for _ in range(min(n_affine, max_affine))]
            out.append(S((dt, arr(dt, shape, rng, -3, 5)), *affine, axes=axes, eps=eps))
        return out

    return samples


def _layer_norm_ref(x, w=None, b=None, *, axes, eps):
    ns = x.shape[len(x.shape) - len(axes) :]
    return F.layer_norm(T(x), ns, None if w is None else T(w), None if b is None else T(b), eps).numpy()


def _rms_norm_ref(x, w=None, *, axes, eps):
    ns = x.shape[len(x.shape) - len(axes) :]
    out = F.rms_norm(T(x), ns, None if w is None else T(w), eps).numpy()
    return out


def _bn_samples(dt, rng):
    out = []
    for shape, axis, n in [((2, 3, 4, 5), 1, 5), ((4, 3), 1, 3), ((2, 5, 3), -1, 4), ((1, 2, 3), 1, 3)]:
        c = shape[axis]
        stats = [(dt, arr(dt, (c,), rng)), (dt, arr(dt, (c,), rng, 0.5, 2.0))]
        affine = [(dt, arr(dt, (c,), rng)) for _ in range(n - 3)]
        out.append(S((dt, arr(dt, shape, rng)), *stats, *affine, axis=axis, eps=1e-3))
    return out


def _bn_ref(x, mean, var, w=None, b=None, *, axis, eps):
    t = T(np.moveaxis(x, axis, 1))
    y = F.batch_norm(
        t, T(mean), T(var), None if w is None else T(w), None if b is None else T(b), training=False, eps=eps
    )
    return np.moveaxis(y.numpy(), 1, axis)


_POOL_CASES = [
    ((2, 3, 9, 8), (3, 3), (2, 2), ((1, 1), (1, 1))),
    ((1, 2, 7), (2,), (1,), ((0, 1),)),
    ((1, 1, 4, 5, 6), (2, 2, 2), (2, 1, 2), ((0, 0), (0, 0), (1, 0))),
    ((1, 1, 1, 1), (1, 1), (1, 1), ((0, 0), (0, 0))),
]


def _pool_samples(avg):
    def samples(dt, rng):
        out = [S((dt, arr(dt, s, rng)), window=w, strides=st, padding=p) for s, w, st, p in _POOL_CASES]
        if avg:
            out.append(
                S(
                    (dt, arr(dt, (2, 3, 9, 8), rng)),
                    window=(3, 3),
                    strides=(2, 1),
                    padding=((1, 1), (1, 1)),
                    count_include_pad=False,
                )
            )
        return out

    return samples


def _torch_pad(padding):
    return [p for pair in reversed(padding) for p in pair]


def _pool_ref(kind):
    def ref(x, *, window, strides, padding, count_include_pad=True):
        k = len(window)
        fn = getattr(F, f"{kind}_pool{k}d")
        t = T(x)
        if not count_include_pad:  # symmetric padding only, through torch's own argument
            return fn(t, window, strides, padding=[lo for lo, _ in padding], count_include_pad=False).numpy()
        t = F.pad(t, _torch_pad(padding), value=-math.inf if kind == "max" else 0.0)
        return fn(t, window, strides).numpy()

    return ref


def _conv_samples(dt, rng):
    cases = [
        ((2, 4, 7, 6), (6, 4, 3, 3), dict(strides=(1, 1), dilation=(1, 1), padding=((1, 1), (1, 1)))),
        ((1, 4, 9, 8), (6, 2, 3, 2), dict(strides=(2, 1), dilation=(1, 2), padding=((0, 1), (2, 0)), groups=2)),
        ((2, 3, 10), (3, 1, 4), dict(strides=(2,), dilation=(2,), padding=((1, 2),), groups=3)),
        (
            (1, 2, 4, 5, 4),
            (3, 2, 2, 3, 2),
            dict(strides=(1, 2, 1), dilation=(1, 1, 1), padding=((0, 0), (1, 1), (0, 1))),
        ),
        ((1, 1, 1, 1), (1, 1, 1, 1), dict(strides=(1, 1), dilation=(1, 1), padding=((0, 0), (0, 0)))),
    ]
    extra = {"out_dtype": DT.i32} if dt.is_int else {}
    return [S((dt, arr(dt, xs, rng)), (dt, arr(dt, ws, rng)), **kw, **extra) for xs, ws, kw in cases]


def _conv_ref(x, w, *, strides, dilation, padding, groups=1, out_dtype=None):
    k = len(strides)
    t = F.pad(T(x.astype(np.float64)), _torch_pad(padding))
    return getattr(F, f"conv{k}d")(t, T(w.astype(np.float64)), stride=strides, dilation=dilation, groups=groups).numpy()


_DOT_CASES = [
    ((3, 4), (4, 5), ((1,), (0,)), ((), ())),
    ((2, 3, 8), (5, 8), ((2,), (1,)), ((), ())),
    ((2, 3, 4), (2, 4, 5), ((2,), (1,)), ((0,), (0,))),
    ((2, 4, 3, 8), (2, 4, 5, 8), ((3,), (3,)), ((0, 1), (0, 1))),
    ((3,), (4,), ((), ()), ((), ())),
    ((3, 4), (5, 4), ((-1,), (-1,)), ((), ())),
    ((1, 1), (1, 7), ((1,), (0,)), ((), ())),
]


def _dot_samples(dt, rng):
    extra = {"out_dtype": DT.i32} if dt == DT.i8 else {}
    return [
        S((dt, arr(dt, a, rng)), (dt, arr(dt, b, rng)), contract=c, batch=bt, **extra) for a, b, c, bt in _DOT_CASES
    ]


def _dot_ref(x, y, *, contract, batch, out_dtype=None):
    """np.einsum with subscripts built from the dimension numbers."""
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lsub = [next(letters) for _ in range(x.ndim)]
    rsub = [next(letters) for _ in range(y.ndim)]
    (lc, rc), (lb, rb) = contract, batch
    for a, b in (*zip(lc, rc), *zip(lb, rb)):
        rsub[b] = lsub[a]
    shared = {lsub[a] for a in (*lc, *lb)}
    out = [lsub[a] for a in lb] + [c for c in lsub if c not in shared] + [c for c in rsub if c not in shared]
    return np.einsum(f"{''.join(lsub)},{''.join(rsub)}->{''.join(out)}", x, y)


def _attention_samples(dt, rng):
    """(q, k, v, mask) shapes: plain, bool mask broadcast over heads, float mask, grouped-query,
    rank 3 and 5, and a bool mask with a fully masked row (zeros, as torch's SDPA)."""
    out = [
        S(
            (dt, arr(dt, (2, 3, 4, 8), rng)),
            (dt, arr(dt, (2, 3, 6, 8), rng)),
            (dt, arr(dt, (2, 3, 6, 5), rng)),
            scale=8**-0.5,
        )
    ]
    for q, kv, ev, m, mdt in [
        ((2, 4, 5, 8), (2, 4, 6, 8), 8, (2, 1, 5, 6), DT.boolean),
        ((1, 6, 3, 4), (1, 2, 3, 4), 4, (3, 3), dt),
        ((4, 5, 2), (4, 7, 2), 3, (1, 5, 7), DT.boolean),
        ((2, 2, 4, 3, 4), (2, 2, 1, 5, 4), 6, (5,), dt),
    ]:
        v = (*kv[:-1], ev)
        mask = arr(mdt, m, rng) if mdt == DT.boolean else arr(mdt, m, rng, -2, 0)
        out.append(S((dt, arr(dt, q, rng)), (dt, arr(dt, kv, rng)), (dt, arr(dt, v, rng)), (mdt, mask), scale=0.3))
    dead = np.ones((2, 1, 3, 4), bool)
    dead[0, 0, 1] = False
    out.append(
        S(
            (dt, arr(dt, (2, 2, 3, 4), rng)),
            (dt, arr(dt, (2, 2, 4, 4), rng)),
            (dt, arr(dt, (2, 2, 4, 4), rng)),
            (DT.boolean, dead),
            scale=0.5,
        )
    )
    return out


def _attention_ref(q, k, v, mask=None, *, scale):
    gqa = q.shape[-3] != k.shape[-3]
    m = None if mask is None else T(mask)
    return F.scaled_dot_product_attention(T(q), T(k), T(v), attn_mask=m, scale=scale, enable_gqa=gqa).numpy()


def _shape_samples(fn):
    def samples(dt, rng):
        return [S(*[(dt, arr(dt, s, rng)) for s in shapes], **kw) for shapes, kw in fn()]

    return samples


def _take_samples(dt, rng):
    return [
        S((dt, arr(dt, (5, 3), rng)), (DT.i64, np.array([0, 4, -1, 2])), axis=0),
        S((dt, arr(dt, (2, 6), rng)), (DT.i32, np.array([[1, 5, 0], [3, 3, -6]], np.int32)), axis=1),
        S((dt, arr(dt, (4,), rng)), (DT.i64, np.array(2)), axis=-1),
    ]


def _take_ref(x, idx, *, axis):
    t = T(x)
    flat = T(idx.reshape(-1) % x.shape[axis])
    out = torch.index_select(t, axis, flat)
    axis = axis % x.ndim
    return out.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1 :]).numpy()


def _index_copy_samples(dt, rng):
    return [
        S((dt, arr(dt, (2, 3, 6, 4), rng)), (DT.i64, np.array([4, 1])), (dt, arr(dt, (2, 3, 2, 4), rng)), axis=2),
        S((dt, arr(dt, (5, 3), rng)), (DT.i32, np.array([0, -1, 2], np.int32)), (dt, arr(dt, (3, 3), rng)), axis=0),
    ]


def _index_copy_ref(x, idx, src, *, axis):
    return torch.index_copy(T(x), axis, T(idx.astype(np.int64) % x.shape[axis]), T(src)).numpy()


def _pad_samples(dt, rng):
    neg = -1.5 if dt.kind != "uint" else 2.5  # a fill inside every dtype's range (cast-like conversion)
    cases = [((2, 3), (1, 0), (0, 2), 0.0), ((4,), (2,), (1,), neg), ((1, 1, 2), (0, 1, 0), (1, 0, 0), 1.0)]
    return [S((dt, arr(dt, s, rng)), low=lo, high=hi, value=v) for s, lo, hi, v in cases]


def _pad_ref(x, *, low, high, value):
    fill = value if x.dtype.kind == "f" else (bool(value) if x.dtype.kind == "b" else int(value))  # like cast
    out = torch.full([n + lo + hi for n, lo, hi in zip(x.shape, low, high)], fill, dtype=T(x).dtype)
    out[tuple(slice(lo, lo + n) for n, lo in zip(x.shape, low))] = T(x)
    return out.numpy()


def _bcast_ref(x, *, shape, dims):
    missing = [i for i in range(len(shape)) if i not in dims]
    return np.broadcast_to(np.expand_dims(x, missing), shape)


def _iota_samples(dt, rng):
    return [
        S(shape=s, axis=a, dtype=d)
        for s, a, d in [((3, 4), 1, DT.i32), ((5,), 0, DT.i64), ((2, 3, 2), -3, DT.f32), ((2, 3), 0, DT.bf16)]
    ]


def _iota_ref(*, shape, axis, dtype):
    axis = axis % len(shape)
    view = [-1 if i == axis else 1 for i in range(len(shape))]
    return torch.arange(shape[axis]).reshape(view).expand(*shape).numpy()


def _group_take(p, n, group_axis, group_size):
    """Each element's scale/zero: entry i // group_size along the group axis."""
    if group_axis is None:
        return p
    return np.take(p, np.arange(n) // group_size, axis=group_axis)


def _quantize_samples(dt, rng):
    half = DT.round_to(dt, np.array([0.125, 0.375, -0.125, 0.625, -0.375, 1.0]))  # x/s = k + 1/2: ties to even
    f32 = DT.f32
    return [
        S((dt, arr(dt, (4, 6), rng)), (f32, np.float32(0.05)), dtype=DT.i8),
        S((dt, half), (f32, np.float32(0.25)), dtype=DT.i8),
        S(
            (dt, arr(dt, (4, 6), rng)),
            (f32, arr(f32, (4, 1), rng, 0.01, 0.02)),
            (DT.i32, arr(DT.i32, (4, 1), rng, 100, 140)),
            dtype=DT.u8,
        ),
        S((dt, arr(dt, (3, 10), rng)), (f32, arr(f32, (3, 3), rng, 0.1, 0.3)), dtype=DT.i4, group_axis=1, group_size=4),
        S(
            (dt, arr(dt, (10, 2), rng)),
            (f32, arr(f32, (3, 1), rng, 0.1, 0.3)),
            (DT.u4, arr(DT.u4, (3, 1), rng)),
            dtype=DT.u4,
            group_axis=-2,
            group_size=4,
        ),
        S((dt, arr(dt, (5, 4), rng)), (f32, arr(f32, (1, 4), rng, 0.01, 0.05)), dtype=DT.f8e4m3),
        S((dt, arr(dt, (5, 4), rng)), (f32, np.float32(0.01)), dtype=DT.f8e5m2),
    ]


_TORCH_FP8 = {"f8e4m3": torch.float8_e4m3fn, "f8e5m2": torch.float8_e5m2}


def _quantize_ref(x, scale, zero=None, *, dtype, group_axis, group_size):
    n = x.shape[group_axis] if group_axis is not None else 0
    y = x / _group_take(scale, n, group_axis, group_size)
    if dtype.is_float:  # torch's float8 casts (round to nearest even) as the oracle
        return T(y.astype(np.float32)).to(_TORCH_FP8[dtype.name]).to(torch.float64).numpy()
    q = T(y).round().numpy()  # torch.round: half to even
    if zero is not None:
        q = q + _group_take(zero, n, group_axis, group_size)
    return np.clip(q, *DT.int_range(dtype)).astype(np.int64)


def _dequantize_samples(dt, rng):
    f32 = DT.f32
    zero = (lambda s: ((dt, arr(dt, s, rng)),)) if dt.is_int else (lambda s: ())
    return [
        S((dt, arr(dt, (4, 6), rng)), (f32, np.float32(0.05)), dtype=DT.f32),
        S((dt, arr(dt, (4, 6), rng)), (f32, arr(f32, (4, 1), rng, 0.01, 0.02)), *zero((4, 1)), dtype=DT.f32),
        S(
            (dt, arr(dt, (10, 3), rng)),
            (f32, arr(f32, (3, 3), rng, 0.1, 0.3)),
            *zero((3, 1)),
            dtype=DT.bf16,
            group_axis=0,
            group_size=4,
        ),
        S((dt, arr(dt, (2, 7), rng)), (f32, arr(f32, (1, 1), rng, 0.1, 0.3)), dtype=DT.f16, group_axis=1, group_size=8),
    ]


def _dequantize_ref(q, scale, zero=None, *, dtype, group_axis, group_size):
    n = q.shape[group_axis] if group_axis is not None else 0
    z = 0 if zero is None else _group_take(zero, n, group_axis, group_size)
    return (q - z) * _group_take(scale, n, group_axis, group_size)


def _fused_samples(dt, rng):
    b = GraphBuilder()
    x = b.input((2, 6), dt)
    movable = b.build(b.transpose(b.reshape(x, shape=(3, 4)), perm=(1, 0)))
    out = [S((dt, arr(dt, (2, 6), rng)), kind="move", regions=(movable,))]
    if dt.is_float:
        b = GraphBuilder()
        x, y = b.input((3, 4), dt), b.input((4,), dt)
        g = b.gelu(x)
        body = b.build(b.add(b.mul(g, y), 1.0), g)
        out.append(S((dt, arr(dt, (3, 4), rng)), (dt, arr(dt, (4,), rng)), kind="gelu_mul_add", regions=(body,)))
    return out


def _fused_ref(*xs, kind):
    if kind == "move":
        return xs[0].reshape(3, 4).T
    g = F.gelu(T(xs[0])).numpy()
    return g * xs[1] + 1.0, g


FLOAT_UNARY = {
    "exp": (torch.exp, None, None),
    "log": (torch.log, 0.05, 4.0),
    "sqrt": (torch.sqrt, 0.0, 4.0),
    "rsqrt": (torch.rsqrt, 0.1, 4.0),
    "reciprocal": (torch.reciprocal, 0.25, 4.0),
    "tanh": (torch.tanh, None, None),
    "sigmoid": (torch.sigmoid, -12.0, 12.0),
    "silu": (F.silu, -12.0, 12.0),
    "sin": (torch.sin, -6.0, 6.0),
    "cos": (torch.cos, -6.0, 6.0),
    "erf": (torch.erf, -4.5, 4.5),
    "floor": (torch.floor, -5.0, 5.0),
}
SIGNED_UNARY = {"neg": torch.neg, "abs": torch.abs, "sign": torch.sign, "relu": torch.relu}
ARITH = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "maximum": torch.maximum, "minimum": torch.minimum}
COMPARE = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge}
REDUCE = {
    "reduce_sum": lambda t, a, keepdim: t.sum(a, keepdim=keepdim),
    "reduce_prod": lambda t, a, keepdim: t.prod(a, keepdim=keepdim),
    "reduce_mean": lambda t, a, keepdim: t.mean(a, keepdim=keepdim),
    "reduce_max": lambda t, a, keepdim: t.max(a, keepdim=keepdim),
    "reduce_min": lambda t, a, keepdim: t.min(a, keepdim=keepdim),
}


def _infos() -> list[OpInfo]:
    out = [OpInfo(n, unary(lo, hi), tref(fn)) for n, (fn, lo, hi) in FLOAT_UNARY.items()]
    out += [OpInfo(n, unary(), tref(fn)) for n, fn in SIGNED_UNARY.items()]
    out += [
        OpInfo(
            "gelu",
            unary(-5.0, 5.0, approximate=("none", "tanh")),
            lambda x, approximate="none": F.gelu(T(x), approximate=approximate).numpy(),
        ),
        OpInfo("logical_not", unary(), tref(torch.logical_not)),
        OpInfo("div", binary(y_range=(1, 4), signed_y=True), _int_div),
        OpInfo("pow", binary(x_range=(0.1, 3.0), y_range=(-2.0, 2.0)), tref(torch.pow)),
        OpInfo("logical_and", binary(), tref(torch.logical_and)),
        OpInfo("logical_or", binary(), tref(torch.logical_or)),
        OpInfo("where", _where_samples, tref(torch.where)),
        OpInfo("cast", _cast_samples, _cast_ref),
        OpInfo("clamp", _clamp_samples, _clamp_ref),
        OpInfo("argmax", _argmax_samples, lambda x, *, axis, keepdims: T(x).argmax(axis, keepdim=keepdims).numpy()),
        OpInfo("topk_mask", _topk_samples, _topk_ref),
        OpInfo("cumsum", _axis_samples, lambda x, *, axis: T(x).cumsum(axis).numpy()),
        OpInfo("softmax", _axis_samples, lambda x, *, axis: T(x).softmax(axis).numpy()),
        OpInfo("log_softmax", _axis_samples, lambda x, *, axis: T(x).log_softmax(axis).numpy()),
        OpInfo("layer_norm", _norm_samples(1e-5, 2), _layer_norm_ref, tol=2),
        OpInfo("rms_norm", _norm_samples(1e-6, 1), _rms_norm_ref, tol=2),
        OpInfo("batch_norm", _bn_samples, _bn_ref, tol=2),
        OpInfo("max_pool", _pool_samples(False), _pool_ref("max")),
        OpInfo("avg_pool", _pool_samples(True), _pool_ref("avg")),
        OpInfo("conv", _conv_samples, _conv_ref, tol=2),
        OpInfo("dot_general", _dot_samples, _dot_ref, tol=2),
        OpInfo("attention", _attention_samples, _attention_ref, tol=4),
        OpInfo(
            "reshape",
            _shape_samples(
                lambda: [
                    ([(2, 3, 4)], dict(shape=(6, 4))),
                    ([(6,)], dict(shape=(2, 3))),
                    ([()], dict(shape=(1, 1))),
                    ([(1, 5)], dict(shape=(5,))),
                ]
            ),
            lambda x, *, shape: x.reshape(shape),
        ),
        OpInfo(
            "transpose",
            _shape_samples(
                lambda: [([(2, 3, 4)], dict(perm=(2, 0, 1))), ([(5,)], dict(perm=(0,))), ([(3, 1)], dict(perm=(1, 0)))]
            ),
            lambda x, *, perm: T(x).permute(*perm).numpy(),
        ),
        OpInfo(
            "broadcast_in_dim",
            _shape_samples(
                lambda: [
                    ([(3,)], dict(shape=(2, 3), dims=(1,))),
                    ([(3, 1)], dict(shape=(3, 4), dims=(0, 1))),
                    ([()], dict(shape=(2, 2), dims=())),
                    ([(1, 4)], dict(shape=(2, 3, 4), dims=(1, 2))),
                ]
            ),
            _bcast_ref,
        ),
        OpInfo(
            "slice",
            _shape_samples(
                lambda: [
                    ([(5, 6)], dict(start=(1, 0), limit=(4, 6), stride=(1, 2))),
                    ([(7,)], dict(start=(0,), limit=(7,), stride=(3,))),
                    ([(3, 4, 5)], dict(start=(0, 1, 2), limit=(3, 3, 5))),
                    ([(4,)], dict(start=(2,), limit=(2,))),
                ]
            ),
            lambda x, *, start, limit, stride=(): x[
                tuple(slice(a, b, c) for a, b, c in zip(start, limit, stride or (1,) * x.ndim))
            ],
        ),
        OpInfo(
            "concat",
            _shape_samples(
                lambda: [
                    ([(2, 3), (2, 1), (2, 4)], dict(axis=1)),
                    ([(1, 3), (2, 3)], dict(axis=0)),
                    ([(4,)], dict(axis=0)),
                    ([(2, 2, 1), (2, 2, 3)], dict(axis=-1)),
                ]
            ),
            lambda *xs, axis: torch.cat([T(x) for x in xs], axis).numpy(),
        ),
        OpInfo("take", _take_samples, _take_ref),
        OpInfo("index_copy", _index_copy_samples, _index_copy_ref),
        OpInfo("pad", _pad_samples, _pad_ref),
        OpInfo("iota", _iota_samples, _iota_ref),
        OpInfo("quantize", _quantize_samples, _quantize_ref),
        OpInfo("dequantize", _dequantize_samples, _dequantize_ref),
        OpInfo("fused", _fused_samples, _fused_ref),
    ]
    out += [OpInfo(n, binary(), tref(fn)) for n, fn in ARITH.items()]
    out += [OpInfo(n, binary((-3, 3), (-3, 3), ints=True), tref(fn)) for n, fn in COMPARE.items()]
    out += [
        OpInfo(n, _red_samples, lambda x, *, axes, keepdims, fn=fn: over_axes(fn, x, axes, keepdims))
        for n, fn in REDUCE.items()
    ]
    out.append(OpInfo("qlinear", qlinear_samples, qlinear_ref, tol=4))
    out.append(OpInfo("densify_nm", densify_nm_samples, densify_nm_ref))
    out.append(OpInfo("ste_mask", ste_mask_samples, ste_mask_ref))
    out.append(OpInfo("fake_quant", fake_quant_samples, fake_quant_ref))
    return out


OPINFOS: dict[str, OpInfo] = {i.name: i for i in _infos()}
