"""Reductions: reduce_{sum,max,min,mean,prod} over `axes`, argmax and cumsum over one `axis`.

Sums, means and products accumulate in float64 (floats) or int64 (ints) and are rounded once to
the output dtype. ``axes=()`` reduces nothing (lax semantics, unlike ``torch.sum(x, [])``).
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as DT
from ..opdef import Cost, OpDef, attr, register
from ..types import TensorType
from .checks import FLOATS, NUMERIC, check_axes, check_axis, same_dtype


def reduced_shape(shape, axes, keepdims):
    return tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)


def _reduce_cost(ins, outs, attrs):
    return Cost(ins[0].numel, sum(t.nbytes for t in (*ins, *outs)))


def _acc(x):
    return np.float64 if x.dtype.kind == "f" else np.int64


def _reduction(name, fn, dtypes, doc, traits=("reduction", "row")):
    kinds = tuple(dict.fromkeys(d.kind for d in dtypes))

    def infer(ts, attrs):
        (x,) = ts
        same_dtype(name, ts, kinds)
        return [TensorType(reduced_shape(x.shape, check_axes(name, attrs["axes"], x), attrs["keepdims"]), x.dtype)]

    def impl(x, *, axes, keepdims):
        return np.asarray(fn(x, axis=tuple(axes), keepdims=keepdims)).astype(x.dtype)

    register(
        OpDef(
            name,
            infer,
            impl,
            attrs={"axes": attr("ints"), "keepdims": attr("bool", False)},
            arity=1,
            cost=_reduce_cost,
            dtypes=dtypes,
            doc=doc,
            traits=frozenset(traits),
        )
    )


_reduction("reduce_sum", lambda x, **kw: np.sum(x, dtype=_acc(x), **kw), NUMERIC, "Sum over `axes` (integers wrap).")
_reduction("reduce_prod", lambda x, **kw: np.prod(x, dtype=_acc(x), **kw), NUMERIC, "Product over `axes`.",
           traits=("reduction",))  # no row kernel computes products
_reduction("reduce_mean", lambda x, **kw: np.mean(x, dtype=np.float64, **kw), FLOATS, "Mean over `axes` (float only).")
_reduction("reduce_max", np.max, NUMERIC, "Max over `axes`; nan propagates.")
_reduction("reduce_min", np.min, NUMERIC, "Min over `axes`; nan propagates.")


def _argmax_infer(ts, attrs):
    (x,) = ts
    same_dtype("argmax", ts, ("float", "int"))
    a = check_axis("argmax", attrs["axis"], x)
    return [TensorType(reduced_shape(x.shape, (a,), attrs["keepdims"]), DT.i64)]


register(
    OpDef(
        "argmax",
        _argmax_infer,
        lambda x, *, axis, keepdims: np.argmax(x, axis=axis, keepdims=keepdims),
        attrs={"axis": attr("int"), "keepdims": attr("bool", False)},
        arity=1,
        cost=_reduce_cost,
        dtypes=NUMERIC,
        doc="Index (i64) of the first maximum along `axis`; a nan counts as the maximum.",
    )
)


def _cumsum_infer(ts, attrs):
    (x,) = ts
    same_dtype("cumsum", ts, ("float", "int"))
    check_axis("cumsum", attrs["axis"], x)
    return [TensorType(x.shape, x.dtype)]


register(
    OpDef(
        "cumsum",
        _cumsum_infer,
        lambda x, *, axis: np.cumsum(x, axis=axis, dtype=_acc(x)).astype(x.dtype),
        attrs={"axis": attr("int")},
        arity=1,
        cost=_reduce_cost,
        dtypes=NUMERIC,
        doc="Inclusive prefix sum along `axis`, in the input dtype.",
    )
)
