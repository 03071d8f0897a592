"""Shape ops: reshape, transpose, broadcast_in_dim, slice, concat, take, index_copy, pad, iota.

They move data and never change values, so every dtype is supported."""

from __future__ import annotations

import numpy as np

from .. import dims as D
from ..errors import TypeInferenceError
from ..opdef import OpDef, attr, memory_cost, register
from ..shapes import format_shape
from ..types import TensorType
from .checks import ALL_DTYPES, check_axis


def _reshape_infer(ts, attrs):
    (x,) = ts
    shape = attrs["shape"]
    if D.prod(x.shape) != D.prod(shape):
        raise TypeInferenceError(f"reshape: cannot reshape {format_shape(x.shape)} to {format_shape(shape)}")
    return [TensorType(shape, x.dtype)]


def _reshape_impl(x, *, shape):
    # Symbolic target dims are resolved from the input: at most one unknown, inferred by size.
    known = [d if isinstance(d, int) else -1 for d in shape]
    return np.reshape(x, known)


register(
    OpDef(
        "reshape",
        _reshape_infer,
        _reshape_impl,
        attrs={"shape": attr("dims")},
        arity=1,
        cost=lambda ins, outs, attrs: memory_cost([], []),
        dtypes=ALL_DTYPES,
        doc="Row-major reshape to `shape` (symbolic dims allowed; element counts must match).",
        traits={"free"},
    )
)


def _move_cost(ins, outs, attrs):
    return memory_cost(ins, outs, 0)


def _transpose_infer(ts, attrs):
    (x,) = ts
    perm = attrs["perm"]
    if sorted(perm) != list(range(x.rank)):
        raise TypeInferenceError(
            f"transpose: perm {perm} is not a permutation of the {x.rank} axes of {format_shape(x.shape)}"
        )
    return [TensorType(tuple(x.shape[p] for p in perm), x.dtype)]


register(
    OpDef(
        "transpose",
        _transpose_infer,
        lambda x, *, perm: np.transpose(x, perm),
        attrs={"perm": attr("ints")},
        arity=1,
        cost=_move_cost,
        dtypes=ALL_DTYPES,
        doc="Permute axes: output axis i is input axis perm[i].",
        traits={"free"},
    )
)


def _bcast_infer(ts, attrs):
    (x,) = ts
    shape, dims = attrs["shape"], attrs["dims"]
    where = f"broadcast_in_dim: {format_shape(x.shape)} -> {format_shape(shape)} with dims={dims}"
    if len(dims) != x.rank:
        raise TypeInferenceError(f"{where}: need one output dim per operand dim")
    if any(not 0 <= d < len(shape) for d in dims) or any(a >= b for a, b in zip(dims, dims[1:])):
        raise TypeInferenceError(f"{where}: dims must be strictly increasing output axes")
    for i, d in enumerate(dims):
        if x.shape[i] != 1 and x.shape[i] != shape[d]:
            raise TypeInferenceError(f"{where}: operand dim {i} ({x.shape[i]}) is neither 1 nor {shape[d]}")
    return [TensorType(tuple(shape), x.dtype)]


def _bcast_impl(x, *, shape, dims):
    expanded = [1] * len(shape)
    for i, d in enumerate(dims):
        expanded[d] = x.shape[i]
    return np.broadcast_to(x.reshape(expanded), shape).copy()


register(
    OpDef(
        "broadcast_in_dim",
        _bcast_infer,
        _bcast_impl,
        attrs={"shape": attr("dims"), "dims": attr("ints")},
        arity=1,
        cost=_move_cost,
        dtypes=ALL_DTYPES,
        doc="Broadcast to `shape`, operand dim i becoming output dim dims[i] (lax.broadcast_in_dim).",
        traits={"free"},
    )
)


def _provably_negative(d) -> bool:
    return isinstance(d, int) and d < 0


def _slice_infer(ts, attrs):
    (x,) = ts
    start, limit = attrs["start"], attrs["limit"]
    stride = attrs["stride"] or (1,) * x.rank
    where = f"slice: {format_shape(x.shape)}[{format_shape(start)}:{format_shape(limit)}:{stride}]"
    if not len(start) == len(limit) == len(stride) == x.rank:
        raise TypeInferenceError(f"{where}: start, limit and stride need one entry per axis")
    out = []
    for s, lim, st, n in zip(start, limit, stride, x.shape):
        if st < 1:
            raise TypeInferenceError(f"{where}: strides must be >= 1")
        if _provably_negative(s) or any(_provably_negative(D.sub(b, a)) for a, b in ((s, lim), (lim, n))):
            raise TypeInferenceError(f"{where}: need 0 <= start <= limit <= dim")
        size = D.sub(lim, s)
        if st > 1:
            size = -(-size // st) if isinstance(size, int) else D.exact_div(size, st)
            if size is None:
                raise TypeInferenceError(f"{where}: cannot stride a symbolic extent {D.sub(lim, s)} by {st}")
        out.append(size)
    return [TensorType(tuple(out), x.dtype)]


def _slice_impl(x, *, start, limit, stride):
    stride = stride or (1,) * x.ndim
    return x[tuple(slice(s, lim, st) for s, lim, st in zip(start, limit, stride))]


register(
    OpDef(
        "slice",
        _slice_infer,
        _slice_impl,
        attrs={"start": attr("dims"), "limit": attr("dims"), "stride": attr("ints", ())},
        arity=1,
        cost=_move_cost,
        dtypes=ALL_DTYPES,
        doc="x[start:limit:stride] per axis (lax.slice); start/limit may be symbolic, stride=() is all 1.",
    )
)


def _concat_infer(ts, attrs):
    shapes = " ".join(format_shape(t.shape) for t in ts)
    if not ts:
        raise TypeInferenceError("concat: needs at least one input")
    x = ts[0]
    axis = check_axis("concat", attrs["axis"], x)
    total = 0
    for t in ts:
        if t.dtype != x.dtype:
            raise TypeInferenceError(f"concat: dtype mismatch {x.dtype} vs {t.dtype}; insert a cast")
        if t.rank != x.rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, x.shape)) if i != axis):
            raise TypeInferenceError(f"concat: shapes {shapes} differ outside axis {attrs['axis']}")
        total = D.add(total, t.shape[axis])
    return [TensorType(x.shape[:axis] + (total,) + x.shape[axis + 1 :], x.dtype)]


register(
    OpDef(
        "concat",
        _concat_infer,
        lambda *xs, axis: np.concatenate(xs, axis=axis),
        attrs={"axis": attr("int")},
        arity=(1, None),
        cost=_move_cost,
        dtypes=ALL_DTYPES,
        doc="Join inputs along `axis`; other dims must match.",
    )
)


def _take_infer(ts, attrs):
    x, idx = ts
    if not idx.dtype.is_int:
        raise TypeInferenceError(f"take: indices must be an integer dtype, got {idx}")
    axis = check_axis("take", attrs["axis"], x)
    return [TensorType(x.shape[:axis] + idx.shape + x.shape[axis + 1 :], x.dtype)]


register(
    OpDef(
        "take",
        _take_infer,
        lambda x, idx, *, axis: np.take(x, idx, axis=axis),
        attrs={"axis": attr("int")},
        arity=2,
        cost=_move_cost,
        dtypes=ALL_DTYPES,
        doc="np.take: out = x[..., idx, ...] at `axis` (embedding lookup is take(table, ids, axis=0)); "
        "negative indices count from the end, out-of-range indices are an error.",
    )
)


def _index_copy_infer(ts, attrs):
    x, idx, src = ts
    if not idx.dtype.is_int or idx.rank != 1:
        raise TypeInferenceError(f"index_copy: indices must be a 1-d integer tensor, got {idx}")
    axis = check_axis("index_copy", attrs["axis"], x)
    want = x.shape[:axis] + idx.shape + x.shape[axis + 1 :]
    if src.dtype != x.dtype or src.rank != x.rank or any(
        isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(src.shape, want)
    ):
        raise TypeInferenceError(f"index_copy: source {src} does not fit {x} at {idx} along axis {axis}")
    return [x]


def _index_copy_impl(x, idx, src, *, axis):
    out = np.array(x, copy=True)
    n = x.shape[axis]
    if np.any((idx < -n) | (idx >= n)):
        raise ValueError(f"index_copy: an index is out of range for size {n}")
    where = [slice(None)] * x.ndim
    where[axis] = idx
    out[tuple(where)] = src
    return out


register(
    OpDef(
        "index_copy",
        _index_copy_infer,
        _index_copy_impl,
        attrs={"axis": attr("int")},
        arity=3,
        cost=_move_cost,
        dtypes=ALL_DTYPES,
        doc="torch.index_copy, out of place: x with x[..., idx[i], ...] = src[..., i, ...] at `axis` "
        "(a KV-cache update: new keys written at their positions); idx is 1-d, no duplicates.",
    )
)


def _pad_infer(ts, attrs):
    (x,) = ts
    low, high = attrs["low"], attrs["high"]
    where = f"pad: {format_shape(x.shape)} low={low} high={high}"
    if len(low) != x.rank or len(high) != x.rank:
        raise TypeInferenceError(f"{where}: need one low and one high per axis")
    if any(p < 0 for p in (*low, *high)):
        raise TypeInferenceError(f"{where}: negative padding is not supported (use slice)")
    return [TensorType(tuple(D.add(D.add(d, lo), hi) for d, lo, hi in zip(x.shape, low, high)), x.dtype)]


def _pad_impl(x, *, low, high, value):
    if x.dtype.kind in "iu":  # value converts like cast: truncate toward zero, saturate
        info = np.iinfo(x.dtype)
        value = min(max(int(value), info.min), info.max)
    return np.pad(x, list(zip(low, high)), constant_values=np.asarray(value).astype(x.dtype))


register(
    OpDef(
        "pad",
        _pad_infer,
        _pad_impl,
        attrs={"low": attr("ints"), "high": attr("ints"), "value": attr("float", 0.0)},
        arity=1,
        cost=_move_cost,
        dtypes=ALL_DTYPES,
        doc="Pad each axis with low/high copies of `value` (converted like cast; non-negative, no interior padding).",
    )
)


def _iota_infer(ts, attrs):
    shape = attrs["shape"]
    if not shape:
        raise TypeInferenceError("iota: shape must have at least one axis")
    check_axis("iota", attrs["axis"], TensorType(tuple(shape), attrs["dtype"]))
    if attrs["dtype"].kind == "bool":
        raise TypeInferenceError("iota: dtype must be numeric, got bool")
    return [TensorType(tuple(shape), attrs["dtype"])]


def _iota_impl(*, shape, axis, dtype):
    axis = axis % len(shape)
    ramp = np.arange(shape[axis]).reshape([-1 if i == axis else 1 for i in range(len(shape))])
    return np.broadcast_to(ramp, shape).astype(dtype.storage)


register(
    OpDef(
        "iota",
        _iota_infer,
        _iota_impl,
        attrs={"shape": attr("dims"), "axis": attr("int"), "dtype": attr("dtype")},
        arity=0,
        cost=_move_cost,
        dtypes=(),
        doc="0, 1, 2, ... along `axis` of a `shape` tensor (lax.broadcasted_iota); takes no inputs.",
    )
)
