"""Normalisations: softmax, log_softmax, layer_norm, rms_norm, batch_norm (inference).

References compute in float64 (max-subtracted softmax, two-pass variance) and return the input's
storage dtype. Optional inputs are positional: a bias needs a weight before it.
"""

from __future__ import annotations

import numpy as np

from ..errors import TypeInferenceError
from ..opdef import OpDef, attr, elementwise_cost, register
from ..shapes import format_shape
from ..types import TensorType
from .checks import FLOATS, check_axes, check_axis, same_dtype


def _softmax_infer(name):
    def infer(ts, attrs):
        (x,) = ts
        same_dtype(name, ts, ("float",))
        check_axis(name, attrs["axis"], x)
        return [TensorType(x.shape, x.dtype)]

    return infer


def _log_softmax(x, *, axis):
    x64 = x.astype(np.float64)
    z = x64 - np.max(x64, axis=axis, keepdims=True)  # stable: the largest exponent is e^0
    return (z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))).astype(x.dtype)


def _softmax(x, *, axis):
    return np.exp(_log_softmax(x.astype(np.float64), axis=axis)).astype(x.dtype)


for _name, _impl, _doc in (
    ("softmax", _softmax, "exp(x) / sum(exp(x)) along `axis`"),
    ("log_softmax", _log_softmax, "x - logsumexp(x) along `axis`"),
):
    register(
        OpDef(
            _name,
            _softmax_infer(_name),
            _impl,
            attrs={"axis": attr("int", -1)},
            arity=1,
            cost=elementwise_cost(5),
            dtypes=FLOATS,
            doc=f"{_doc}, numerically stable.",
            traits={"row"},
        )
    )


def _norm_infer(name):
    """x, then optional affine params each shaped like the normalised (trailing) dims."""

    def infer(ts, attrs):
        x = ts[0]
        same_dtype(name, ts, ("float",))
        axes = check_axes(name, attrs["axes"], x)
        if not axes or axes != tuple(range(x.rank - len(axes), x.rank)):
            raise TypeInferenceError(f"{name}: axes {attrs['axes']} must be the trailing axes of {x}")
        norm_shape = x.shape[axes[0] :]
        for t in ts[1:]:
            if t.shape != norm_shape:
                raise TypeInferenceError(
                    f"{name}: weight/bias shape {format_shape(t.shape)} must equal the normalised dims "
                    f"{format_shape(norm_shape)} of {x}"
                )
        return [TensorType(x.shape, x.dtype)]

    return infer


def _layer_norm(x, weight=None, bias=None, *, axes, eps):
    x64 = x.astype(np.float64)
    ax = tuple(axes)
    mean = x64.mean(axis=ax, keepdims=True)
    var = np.square(x64 - mean).mean(axis=ax, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)


def _rms_norm(x, weight=None, *, axes, eps):
    x64 = x.astype(np.float64)
    y = x64 / np.sqrt(np.square(x64).mean(axis=tuple(axes), keepdims=True) + eps)
    return (y if weight is None else y * weight).astype(x.dtype)


register(
    OpDef(
        "layer_norm",
        _norm_infer("layer_norm"),
        _layer_norm,
        attrs={"axes": attr("ints"), "eps": attr("float", 1e-5)},
        arity=(1, 3),
        cost=elementwise_cost(8),
        dtypes=FLOATS,
        doc="(x - mean) / sqrt(var + eps) * weight + bias over the trailing `axes` (biased variance).",
        traits={"row"},
    )
)
register(
    OpDef(
        "rms_norm",
        _norm_infer("rms_norm"),
        _rms_norm,
        attrs={"axes": attr("ints"), "eps": attr("float", 1e-6)},
        arity=(1, 2),
        cost=elementwise_cost(5),
        dtypes=FLOATS,
        doc="x / sqrt(mean(x^2) + eps) * weight over the trailing `axes` (Llama's RMSNorm).",
        traits={"row"},
    )
)


def _bn_infer(ts, attrs):
    x = ts[0]
    same_dtype("batch_norm", ts, ("float",))
    a = check_axis("batch_norm", attrs["axis"], x)
    for t in ts[1:]:
        if t.shape != (x.shape[a],):
            raise TypeInferenceError(
                f"batch_norm: mean/var/weight/bias must have shape [{x.shape[a]}] (dim {a} of {x}), got {t}"
            )
    return [TensorType(x.shape, x.dtype)]


def _batch_norm(x, mean, var, weight=None, bias=None, *, axis, eps):
    shape = [-1 if i == axis % x.ndim else 1 for i in range(x.ndim)]  # per-channel stats along axis

    def chan(v):
        return v.astype(np.float64).reshape(shape)

    y = (x.astype(np.float64) - chan(mean)) / np.sqrt(chan(var) + eps)
    if weight is not None:
        y = y * chan(weight)
    if bias is not None:
        y = y + chan(bias)
    return y.astype(x.dtype)


register(
    OpDef(
        "batch_norm",
        _bn_infer,
        _batch_norm,
        attrs={"axis": attr("int", 1), "eps": attr("float", 1e-5)},
        arity=(3, 5),
        cost=elementwise_cost(4),
        dtypes=FLOATS,
        doc="Inference batch norm: (x - mean) / sqrt(var + eps) * weight + bias, stats per channel `axis`.",
    )
)
