"""Binary elementwise ops with numpy broadcasting (arithmetic, comparisons, logical), where, cast
and clamp. Inputs of a binary op must share one dtype: frontends insert ``cast``."""

from __future__ import annotations

import numpy as np

from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..opdef import OpDef, attr, elementwise_cost, register
from ..shapes import format_shape
from ..types import TensorType
from .checks import ALL_DTYPES, FLOATS, NUMERIC, broadcast, same_dtype


def _binary(name, fn, dtypes, doc, commutative=False, out_dtype=None, flops=1):
    kinds = tuple(dict.fromkeys(d.kind for d in dtypes))

    def infer(ts, attrs):
        d = same_dtype(name, ts, kinds)
        return [TensorType(broadcast(name, ts), out_dtype or d)]

    def impl(x, y):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(x, y)

    register(
        OpDef(
            name,
            infer,
            impl,
            arity=2,
            cost=elementwise_cost(flops),
            commutative=commutative,
            dtypes=dtypes,
            doc=doc,
            traits={"elementwise"},
        )
    )


def _div(x, y):
    if x.dtype.kind == "f":
        return np.true_divide(x, y)
    # integer division truncates toward zero (C, lax.div); numpy's // floors, so fix it up
    q = np.floor_divide(x, y)
    return np.where((q < 0) & (q * y != x), q + 1, q).astype(x.dtype)


_binary("add", np.add, NUMERIC, "x + y", commutative=True)
_binary("sub", np.subtract, NUMERIC, "x - y")
_binary("mul", np.multiply, NUMERIC, "x * y", commutative=True)
_binary("div", _div, NUMERIC, "x / y; integer division truncates toward zero (lax.div), x / 0 is 0 for ints")
_binary("pow", np.power, FLOATS, "x ** y (float only)", flops=8)
_binary("maximum", np.maximum, NUMERIC, "elementwise max, nan propagates", commutative=True)
_binary("minimum", np.minimum, NUMERIC, "elementwise min, nan propagates", commutative=True)
for _name, _fn, _sym in (("eq", np.equal, "=="), ("ne", np.not_equal, "!=")):
    _binary(_name, _fn, NUMERIC + (DT.boolean,), f"x {_sym} y -> bool", commutative=True, out_dtype=DT.boolean)
for _name, _fn, _sym in (
    ("lt", np.less, "<"),
    ("le", np.less_equal, "<="),
    ("gt", np.greater, ">"),
    ("ge", np.greater_equal, ">="),
):
    _binary(_name, _fn, NUMERIC, f"x {_sym} y -> bool", out_dtype=DT.boolean)
_binary("logical_and", np.logical_and, (DT.boolean,), "boolean and", commutative=True)
_binary("logical_or", np.logical_or, (DT.boolean,), "boolean or", commutative=True)


def _where_infer(ts, attrs):
    c, x, y = ts
    if c.dtype != DT.boolean:
        raise TypeInferenceError(f"where: condition must be bool, got {c}")
    return [TensorType(broadcast("where", ts), same_dtype("where", [x, y]))]


register(
    OpDef(
        "where",
        _where_infer,
        np.where,
        arity=3,
        dtypes=ALL_DTYPES,
        doc="cond ? x : y, all three broadcast together; x and y share a dtype",
        traits={"elementwise"},
    )
)


def _cast_impl(x, *, dtype):
    if dtype.kind == "bool":
        return x != 0
    if dtype.is_int and x.dtype.kind == "f":
        # float -> int truncates toward zero and saturates (nan -> 0), like XLA's convert
        lo, hi = DT.int_range(dtype)
        x = np.clip(np.trunc(np.nan_to_num(x.astype(np.float64), nan=0.0)), lo, hi)
    return x.astype(dtype.storage)  # bf16/fp8/int4 are then rounded by dtypes.round_to


register(
    OpDef(
        "cast",
        lambda ts, attrs: [TensorType(ts[0].shape, attrs["dtype"])],
        _cast_impl,
        attrs={"dtype": attr("dtype")},
        arity=1,
        dtypes=ALL_DTYPES,
        doc="Convert to `dtype`: floats round to nearest even, float->int truncates and saturates, "
        "anything->bool is x != 0.",
        traits={"elementwise"},
    )
)


def _clamp_infer(ts, attrs):
    (x,) = ts
    if x.dtype.kind not in ("float", "int", "uint"):
        raise TypeInferenceError(f"clamp: needs a numeric input, got {x}")
    lo, hi = attrs["min"], attrs["max"]
    if lo is not None and hi is not None and lo > hi:
        raise TypeInferenceError(f"clamp: min {lo} > max {hi} for {format_shape(x.shape)}")
    return [TensorType(x.shape, x.dtype)]


def _bound(x, v, to_int):
    if x.dtype.kind == "f":
        return np.asarray(v, dtype=x.dtype)
    info = np.iinfo(x.dtype)  # an integer input clamps to the integers inside [min, max]
    return np.asarray(np.clip(to_int(v), info.min, info.max), dtype=x.dtype)


def _clamp_impl(x, *, min, max):  # the spec's attribute names shadow the builtins here
    if min is not None:
        x = np.maximum(x, _bound(x, min, np.ceil))
    if max is not None:
        x = np.minimum(x, _bound(x, max, np.floor))
    return x


register(
    OpDef(
        "clamp",
        _clamp_infer,
        _clamp_impl,
        attrs={"min": attr("optional_float", None), "max": attr("optional_float", None)},
        arity=1,
        dtypes=NUMERIC,
        doc="min(max(x, min), max); a bound of none is absent, nan propagates",
        traits={"elementwise"},
    )
)
