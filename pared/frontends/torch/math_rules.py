"""Rules for math, reductions and nn ops (the table and its helpers are in :mod:`.rules`).

Shape and indexing rules live in :mod:`pared.frontends.torch.shape_rules`, contractions in
:mod:`pared.frontends.torch.linalg_rules`, pooling in :mod:`pared.frontends.torch.pool_rules`.
"""

from __future__ import annotations

import torch

from ...ir import dims as D
from ...ir import dtypes as DT
from ...ir.torch_dtypes import from_torch, to_torch
from .rules import RULES, Unsupported, axes_of, binary, channel, is_tensor, promote, py_binary, rule


def _arith(op):
    def fn(cx, x, y, *, alpha=1, out=None):
        if out is not None:
            raise Unsupported("out= is not supported")
        if alpha != 1:
            y = binary(cx, "mul", y, alpha)
        return binary(cx, op, x, y)

    return fn


for _keys, _op in (
    (("add", "iadd", "aten.add"), "add"),
    (("sub", "isub", "aten.sub", "subtract"), "sub"),
    (("mul", "imul", "aten.mul", "multiply"), "mul"),
    (("maximum", "aten.maximum"), "maximum"),
    (("minimum", "aten.minimum"), "minimum"),
):
    rule(*_keys)(_arith(_op))


@rule("rsub", "aten.rsub")
def _rsub(cx, x, y, alpha=1):
    return binary(cx, "sub", y, binary(cx, "mul", x, alpha) if alpha != 1 else x)


@rule("div", "truediv", "itruediv", "true_divide", "aten.div", "divide")
def _div(cx, x, y, *, rounding_mode=None):
    if not is_tensor(x) and not is_tensor(y):
        if rounding_mode == "floor":
            return py_binary("floordiv", x, y)
        return py_binary("div", x, y)
    dt = promote(x, y)
    if not dt.is_float:
        if rounding_mode is None:
            dt = DT.f32
        elif rounding_mode == "trunc":
            return binary(cx, "div", x, y, dt)
    out = binary(cx, "div", x, y, dt)
    if rounding_mode == "floor":
        if not dt.is_float:
            raise Unsupported("integer floor division")
        out = cx.emit("floor", out)
    return out


@rule("floordiv", "floor_divide", "aten.floor_divide")
def _floordiv(cx, x, y):
    if not is_tensor(x) and not is_tensor(y):
        return py_binary("floordiv", x, y)
    return _div(cx, x, y, rounding_mode="floor")


@rule("pow", "aten.pow")
def _pow(cx, x, y):
    if not is_tensor(x) and not is_tensor(y):
        return py_binary("pow", x, y)
    dt = cx.out_type().dtype
    if not dt.is_float:
        raise Unsupported("integer pow")
    return cx.emit("pow", cx.cast(x, dt), cx.cast(y, dt))


for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    rule(
        _name,
        f"aten.{_name}",
        {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal"}.get(_name, _name),
    )((lambda op: lambda cx, x, y: binary(cx, op, x, y))(_name))


def _logical(op):
    def fn(cx, x, y):
        if not is_tensor(x) and not is_tensor(y):
            return py_binary(op, x, y)
        for v in (x, y):
            if is_tensor(v) and v.type.dtype != DT.boolean:
                raise Unsupported(f"bitwise {op} on {v.type.dtype}")
        return binary(cx, op, x, y, DT.boolean)

    return fn


rule("and_", "__and__", "bitwise_and", "logical_and", "aten.__and__", "aten.bitwise_and", "aten.logical_and")(
    _logical("logical_and")
)
rule("or_", "__or__", "bitwise_or", "logical_or", "aten.__or__", "aten.bitwise_or", "aten.logical_or")(
    _logical("logical_or")
)


@rule("invert", "bitwise_not", "logical_not", "aten.bitwise_not", "aten.logical_not")
def _not(cx, x):
    if not is_tensor(x):
        return not x
    return cx.emit("logical_not", cx.cast(x, DT.boolean))


@rule("neg", "aten.neg", "negative")
def _neg(cx, x):
    if not is_tensor(x):
        return D.mul(x, -1) if isinstance(x, D.Sym) else -x
    return cx.emit("neg", x)


def _unary(op):
    def fn(cx, x, *args, **kwargs):
        if not is_tensor(x):
            raise Unsupported(f"{op} of a Python value")
        return cx.emit(op, cx.cast(x, cx.out_type().dtype))

    return fn


for _op in (
    "abs",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "tanh",
    "sigmoid",
    "relu",
    "silu",
    "sin",
    "cos",
    "erf",
    "reciprocal",
    "floor",
    "sign",
):
    rule(_op, f"aten.{_op}", f"{_op}_")(_unary(_op))


@rule("gelu", "aten.gelu")
def _gelu(cx, x, approximate="none"):
    return cx.emit("gelu", x, approximate=approximate)


def _softmax(op):
    def fn(cx, x, dim=None, _stacklevel=3, dtype=None):
        if dtype is None and isinstance(_stacklevel, torch.dtype):
            dtype = _stacklevel
        if dim is None:
            raise Unsupported("softmax without dim")
        if dtype is not None:
            x = cx.cast(x, from_torch(dtype))
        return cx.emit(op, x, axis=dim % max(x.type.rank, 1))

    return fn


def _aten_softmax(op):
    return lambda cx, x, dim, half_to_float=False: cx.emit(op, x, axis=dim % max(x.type.rank, 1))


rule("softmax", "aten.softmax")(_softmax("softmax"))
rule("log_softmax", "aten.log_softmax")(_softmax("log_softmax"))
rule("aten._softmax")(_aten_softmax("softmax"))
rule("aten._log_softmax")(_aten_softmax("log_softmax"))


@rule("clamp_min", "aten.clamp_min")
def _clamp_min(cx, x, min):  # noqa: A002 - torch's names
    return _clamp(cx, x, min, None)


@rule("clamp_max", "aten.clamp_max")
def _clamp_max(cx, x, max):  # noqa: A002 - torch's names
    return _clamp(cx, x, None, max)


@rule("clamp", "clip", "aten.clamp", "aten.clip")
def _clamp(cx, x, min=None, max=None):  # noqa: A002 - torch's names
    if is_tensor(min) or is_tensor(max):
        if min is not None:
            x = binary(cx, "maximum", x, min)
        if max is not None:
            x = binary(cx, "minimum", x, max)
        return x
    return cx.emit("clamp", x, min=min, max=max)


@rule("where", "aten.where")
def _where(cx, cond, x=None, y=None):
    if x is None:
        raise Unsupported("where(cond) has a data-dependent shape")
    dt = promote(x, y)
    return cx.emit("where", cx.cast(cond, DT.boolean), cx.cast(x, dt), cx.cast(y, dt))


@rule("masked_fill", "aten.masked_fill")
def _masked_fill(cx, x, mask, value):
    return cx.emit("where", mask, cx.cast(value, x.type.dtype), x)


@rule("dropout", "aten.dropout", "feature_dropout", "alpha_dropout")
def _dropout(cx, x, p=0.5, training=True, inplace=False):
    if training and p > 0:
        raise Unsupported("dropout in training mode")
    return x


# -- casts and identities -----------------------------------------------------------------------


def _identity(cx, x, *args, **kwargs):
    return x


for _k in (
    "contiguous",
    "clone",
    "detach",
    "aten.clone",
    "aten.alias",
    "aten.detach",
    "aten.contiguous",
    "aten.lift_fresh_copy",
    "cpu",
    "cuda",
):
    RULES[_k] = _identity


def _none(cx, *args, **kwargs):
    return None


for _k in (
    "_set_grad_enabled",
    "_log_api_usage_once",
    "_enter_autocast",
    "_exit_autocast",
    "aten._assert_tensor_metadata",
    "aten._assert_async",
    "_assert",
    "aten.sym_constrain_range_for_size",
    "aten._assert_scalar",
):
    RULES[_k] = _none


@rule("to", "aten.to", "aten._to_copy", "type")
def _to(cx, x, *args, **kwargs):
    dtype = kwargs.get("dtype")
    for a in args:
        if isinstance(a, torch.dtype):
            dtype = a
        elif is_tensor(a):
            return cx.cast(x, a.type.dtype)
    return x if dtype is None else cx.cast(x, from_torch(dtype))


@rule("type_as", "aten.type_as")
def _type_as(cx, x, other):
    return cx.cast(x, other.type.dtype)


for _m, _dt in (
    ("float", DT.f32),
    ("double", DT.f64),
    ("half", DT.f16),
    ("bfloat16", DT.bf16),
    ("long", DT.i64),
    ("int", DT.i32),
    ("bool", DT.boolean),
):
    RULES[_m] = (lambda dt: lambda cx, x, *a, **k: cx.cast(x, dt))(_dt)


# -- reductions -------------------------------------------------------------------------------


def _reduce(op):
    def fn(cx, x, dim=None, keepdim=False, *, dtype=None):
        if isinstance(dim, torch.dtype):
            dim, dtype = None, dim
        out_dt = cx.out_type().dtype if dtype is None else from_torch(dtype)
        x = cx.cast(x, out_dt)
        return cx.emit(op, x, axes=axes_of(x, dim), keepdims=bool(keepdim))

    return fn


rule("sum", "aten.sum")(_reduce("reduce_sum"))
rule("mean", "aten.mean")(_reduce("reduce_mean"))
rule("prod", "aten.prod")(_reduce("reduce_prod"))
rule("amax", "aten.amax")(_reduce("reduce_max"))
rule("amin", "aten.amin")(_reduce("reduce_min"))


def _max_min(op, arg):
    def fn(cx, x, dim=None, keepdim=False):
        if is_tensor(dim):
            return binary(cx, "maximum" if op == "reduce_max" else "minimum", x, dim)
        if dim is None:
            return cx.emit(op, x, axes=axes_of(x, None), keepdims=False)
        vals = cx.emit(op, x, axes=axes_of(x, dim), keepdims=bool(keepdim))
        if arg == "argmin":
            idx = cx.emit("argmax", cx.emit("neg", x), axis=dim % x.type.rank, keepdims=bool(keepdim))
        else:
            idx = cx.emit("argmax", x, axis=dim % x.type.rank, keepdims=bool(keepdim))
        return (vals, idx)

    return fn


rule("max", "aten.max")(_max_min("reduce_max", "argmax"))
rule("min", "aten.min")(_max_min("reduce_min", "argmin"))


@rule("argmax", "aten.argmax")
def _argmax(cx, x, dim=None, keepdim=False):
    if dim is None:
        x = cx.emit("reshape", x, shape=(x.type.numel,))
        dim = 0
    return cx.emit("argmax", x, axis=dim % x.type.rank, keepdims=bool(keepdim))


@rule("cumsum", "aten.cumsum")
def _cumsum(cx, x, dim, *, dtype=None):
    x = cx.cast(x, cx.out_type().dtype)
    return cx.emit("cumsum", x, axis=dim % x.type.rank)


def _var(sqrt: bool):
    return lambda cx, x, dim=None, unbiased=None, keepdim=False, *, correction=None: variance(
        cx, x, dim, unbiased, keepdim, correction, sqrt
    )


def variance(cx, x, dim, unbiased, keepdim, correction, sqrt):
    if isinstance(unbiased, bool):
        correction = 1 if unbiased else 0
    correction = 1 if correction is None else correction
    axes = axes_of(x, dim)
    mean = cx.emit("reduce_mean", x, axes=axes, keepdims=True)
    d = cx.emit("sub", x, mean)
    n = D.prod([x.type.shape[a] for a in axes])
    if not isinstance(n, int):
        raise Unsupported("variance over a symbolic size")
    s = cx.emit("reduce_sum", cx.emit("mul", d, d), axes=axes, keepdims=bool(keepdim))
    out = cx.emit("div", s, cx.lit(max(n - correction, 0), x.type.dtype))
    return cx.emit("sqrt", out) if sqrt else out


rule("var", "aten.var")(_var(False))
rule("std", "aten.std")(_var(True))


# -- normalisation, embedding -----------------------------------------------------------------


@rule("layer_norm", "aten.layer_norm")
def _layer_norm(cx, x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=None):
    axes = tuple(range(x.type.rank - len(normalized_shape), x.type.rank))
    ins = [x] + ([weight] if weight is not None else [])
    if bias is not None and weight is None:
        return cx.emit("add", cx.emit("layer_norm", x, axes=axes, eps=eps), bias)
    return cx.emit("layer_norm", *ins, *([bias] if bias is not None else []), axes=axes, eps=eps)


@rule("rms_norm", "aten.rms_norm")
def _rms_norm(cx, x, normalized_shape, weight=None, eps=None):
    axes = tuple(range(x.type.rank - len(normalized_shape), x.type.rank))
    if eps is None:
        eps = torch.finfo(to_torch(x.type.dtype)).eps
    return cx.emit("rms_norm", x, *([weight] if weight is not None else []), axes=axes, eps=eps)


def _bn(cx, x, mean, var, weight, bias, training, eps):
    if training:
        raise Unsupported("batch_norm in training mode updates running statistics")
    ins = [x, mean, var] + ([weight] if weight is not None else [])
    if bias is not None and weight is None:
        out = cx.emit("batch_norm", *ins, axis=1, eps=eps)
        return cx.emit("add", out, channel(cx, bias, x.type.rank))
    return cx.emit("batch_norm", *ins, *([bias] if bias is not None else []), axis=1, eps=eps)


@rule("batch_norm")
def _batch_norm(cx, x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    return _bn(cx, x, running_mean, running_var, weight, bias, training, eps)


@rule("aten.batch_norm")
def _aten_batch_norm(cx, x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled=True):
    return _bn(cx, x, running_mean, running_var, weight, bias, training, eps)


@rule("aten._native_batch_norm_legit_no_training")
def _bn_no_training(cx, x, weight, bias, running_mean, running_var, momentum, eps):
    out = _bn(cx, x, running_mean, running_var, weight, bias, False, eps)
    return (out, None, None)


@rule("embedding")
def _embedding(cx, ids, weight, padding_idx=None, max_norm=None, *args, **kwargs):
    if max_norm is not None:
        raise Unsupported("embedding with max_norm renormalises the table")
    return cx.emit("take", weight, ids, axis=0)


@rule("aten.index_copy")
def _aten_index_copy(cx, x, dim, index, source):
    return cx.emit("index_copy", x, index, source, axis=dim)


@rule("aten.embedding")
def _aten_embedding(cx, weight, ids, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return cx.emit("take", weight, ids, axis=0)
