"""IR -> a function of jax.lax / jax.numpy ops, to run under ``jax.jit``.

:func:`lower` returns an :class:`XlaFunction` ``f(weights, *inputs) -> list of arrays`` where
``weights`` maps param names to arrays. Because weights are an argument (a flat dict pytree),
compressed params can be saved, sharded with ``jax.sharding`` and differentiated like any
params, and the function composes with ``jax.jit``, ``jax.grad`` and ``jax.vmap``: JAX
transforms the lowering itself.

Per-op lowering is the ``xla`` column of the lowering table (:mod:`pared.backends.lowering`):
``rule(env, eqn, *arrays)`` with an :class:`XlaEnv`. An op without a rule, or whose rule
declines, runs its decomposition (a ``fused`` region's equations), else its numpy reference
through ``jax.pure_callback`` (correct, not differentiable, slow), so an unclaimed op never crashes.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ...ir import dims as D
from ...ir import dtypes as DT
from ...ir.core import Eqn, Graph, Literal, Param, Var
from ...ir.dtypes import DType
from ...ir.errors import IRError
from ...ir.opdef import get_op
from ...ir.printer import format_eqn
from ...ir.shapes import resolve_dims
from ..lowering import lower_eqn, register_lowering


class XlaLoweringError(IRError):
    """An equation failed to lower; the message names it."""


IR_TO_JAX = DT.JAX_NAMES


def jax_dtype(dt: DType):
    import jax.numpy as jnp

    return jnp.dtype(IR_TO_JAX[dt.name])


def to_jax_array(value, dt: DType):
    """A weight value as a jax array of the param's dtype (emulated storage is converted)."""
    import jax.numpy as jnp

    return jnp.asarray(np.asarray(value)).astype(jax_dtype(dt))


def lowers(*names: str):
    """``register_lowering(names, "xla")``."""
    return register_lowering(names, "xla")


# --- elementwise ------------------------------------------------------------------------------


def _jnp():
    import jax.numpy as jnp

    return jnp


def _simple(path: str):
    """A rule calling the jax function at ``path`` (``"jax.numpy.add"``) on the inputs; jax is
    imported at the first call, not when this module is."""
    module, _, name = path.rpartition(".")

    def rule(env, eqn, *xs):
        return getattr(importlib.import_module(module), name)(*xs)

    rule.__qualname__ = f"_simple({path})"
    return rule


for _op, _path in {
    "add": "jax.numpy.add", "sub": "jax.numpy.subtract", "mul": "jax.numpy.multiply", "pow": "jax.numpy.power",
    "maximum": "jax.numpy.maximum", "minimum": "jax.numpy.minimum",
    "eq": "jax.numpy.equal", "ne": "jax.numpy.not_equal", "lt": "jax.numpy.less", "le": "jax.numpy.less_equal",
    "gt": "jax.numpy.greater", "ge": "jax.numpy.greater_equal",
    "logical_and": "jax.numpy.logical_and", "logical_or": "jax.numpy.logical_or",
    "logical_not": "jax.numpy.logical_not", "neg": "jax.numpy.negative", "abs": "jax.numpy.abs",
    "exp": "jax.numpy.exp", "log": "jax.numpy.log", "sqrt": "jax.numpy.sqrt", "rsqrt": "jax.lax.rsqrt",
    "tanh": "jax.numpy.tanh", "sigmoid": "jax.nn.sigmoid", "silu": "jax.nn.silu", "sin": "jax.numpy.sin",
    "cos": "jax.numpy.cos", "erf": "jax.lax.erf", "floor": "jax.numpy.floor", "sign": "jax.numpy.sign",
    "reciprocal": "jax.numpy.reciprocal", "where": "jax.numpy.where",
}.items():
    lowers(_op)(_simple(_path))


@lowers("relu")
def _relu(env, eqn, x):
    jnp = _jnp()
    return jnp.maximum(x, jnp.zeros((), x.dtype))


@lowers("div")
def _div(env, eqn, x, y):
    jnp = _jnp()
    if jnp.issubdtype(x.dtype, jnp.integer):
        from jax import lax

        x, y = jnp.broadcast_arrays(x, y)
        safe = jnp.where(y == 0, jnp.ones_like(y), y)
        return jnp.where(y == 0, jnp.zeros_like(x), lax.div(x, safe))
    return jnp.divide(x, y)


@lowers("gelu")
def _gelu(env, eqn, x):
    import jax

    return jax.nn.gelu(x, approximate=eqn.attrs["approximate"] == "tanh")


@lowers("cast")
def _cast(env, eqn, x):
    return x.astype(jax_dtype(eqn.attrs["dtype"]))


@lowers("clamp")
def _clamp(env, eqn, x):
    jnp = _jnp()
    lo, hi = eqn.attrs["min"], eqn.attrs["max"]
    if lo is not None:
        x = jnp.maximum(x, jnp.asarray(lo, x.dtype))
    if hi is not None:
        x = jnp.minimum(x, jnp.asarray(hi, x.dtype))
    return x


# --- reductions and nn ------------------------------------------------------------------------

_REDUCE = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min", "reduce_mean": "mean", "reduce_prod": "prod"}


def _reduce(env, eqn, x):
    fn = getattr(_jnp(), _REDUCE[eqn.op])
    return fn(x, axis=tuple(eqn.attrs["axes"]), keepdims=eqn.attrs["keepdims"])


lowers(*_REDUCE)(_reduce)


@lowers("argmax")
def _argmax(env, eqn, x):
    return _jnp().argmax(x, axis=eqn.attrs["axis"], keepdims=eqn.attrs["keepdims"])


@lowers("cumsum")
def _cumsum(env, eqn, x):
    return _jnp().cumsum(x, axis=eqn.attrs["axis"])


@lowers("softmax")
def _softmax(env, eqn, x):
    import jax

    return jax.nn.softmax(x, axis=eqn.attrs["axis"])


@lowers("log_softmax")
def _log_softmax(env, eqn, x):
    import jax

    return jax.nn.log_softmax(x, axis=eqn.attrs["axis"])


def _norm_axes(axes, rank):
    return tuple(a % rank for a in axes)


@lowers("layer_norm")
def _layer_norm(env, eqn, x, *wb):
    from jax import lax

    jnp = _jnp()
    axes = _norm_axes(eqn.attrs["axes"], x.ndim)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    xc = x - mean
    var = jnp.mean(xc * xc, axis=axes, keepdims=True)
    y = xc * lax.rsqrt(var + jnp.asarray(eqn.attrs["eps"], x.dtype))
    return _affine(y, eqn, wb)


def _affine(y, eqn, wb):
    if len(wb) >= 1:
        y = y * wb[0]
    if len(wb) >= 2:
        y = y + wb[1]
    return y


@lowers("rms_norm")
def _rms_norm(env, eqn, x, *w):
    from jax import lax

    jnp = _jnp()
    axes = _norm_axes(eqn.attrs["axes"], x.ndim)
    ms = jnp.mean(x * x, axis=axes, keepdims=True)
    y = x * lax.rsqrt(ms + jnp.asarray(eqn.attrs["eps"], x.dtype))
    return y * w[0] if w else y


@lowers("batch_norm")
def _batch_norm(env, eqn, x, mean, var, *wb):
    from jax import lax

    jnp = _jnp()
    axis = eqn.attrs["axis"] % x.ndim
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]

    def b(v):
        return v.reshape(shape)

    y = (x - b(mean)) * lax.rsqrt(b(var) + jnp.asarray(eqn.attrs["eps"], x.dtype))
    if len(wb) >= 1:
        y = y * b(wb[0])
    if len(wb) >= 2:
        y = y + b(wb[1])
    return y


def _pool(eqn, x, kind):
    from jax import lax

    jnp = _jnp()
    a = eqn.attrs
    window = (1, 1, *a["window"])
    strides = (1, 1, *a["strides"])
    padding = ((0, 0), (0, 0), *[tuple(p) for p in a["padding"]])
    if kind == "max":
        init = jnp.array(-jnp.inf, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
        return lax.reduce_window(x, init, lax.max, window, strides, padding)
    s = lax.reduce_window(x, jnp.zeros((), x.dtype), lax.add, window, strides, padding)
    if a.get("count_include_pad", True):
        return s / math.prod(a["window"])
    ones = jnp.ones((1, 1, *x.shape[2:]), x.dtype)
    n = lax.reduce_window(ones, jnp.zeros((), x.dtype), lax.add, window, strides, padding)
    return s / n


lowers("max_pool", "avg_pool")(lambda env, eqn, x: _pool(eqn, x, eqn.op.removesuffix("_pool")))


# --- contractions -----------------------------------------------------------------------------


@lowers("dot_general")
def _dot_general(env, eqn, x, y):
    from jax import lax

    out = eqn.attrs["out_dtype"]
    (lc, rc), (lb, rb) = eqn.attrs["contract"], eqn.attrs["batch"]
    lc, lb, rc, rb = (
        tuple(a % r for a in axes) for axes, r in ((lc, x.ndim), (lb, x.ndim), (rc, y.ndim), (rb, y.ndim))
    )
    return lax.dot_general(
        x,
        y,
        ((lc, rc), (lb, rb)),
        preferred_element_type=jax_dtype(out) if out is not None else None,
    )


@lowers("attention")
def _attention(env, eqn, q, k, v, *mask):
    """softmax(q k^T * scale [+ mask]) v in jnp; rows with every key masked give zeros."""
    jnp = _jnp()
    rep = q.shape[-3] // k.shape[-3]
    if rep > 1:  # grouped-query attention
        k, v = jnp.repeat(k, rep, axis=-3), jnp.repeat(v, rep, axis=-3)
    s = jnp.einsum("...le,...se->...ls", q, k) * jnp.asarray(eqn.attrs["scale"], q.dtype)
    if mask:
        m = mask[0]
        s = jnp.where(m, s, -jnp.inf) if m.dtype == jnp.bool_ else s + m
    top = jnp.max(s, axis=-1, keepdims=True)
    dead = top == -jnp.inf
    e = jnp.exp(s - jnp.where(dead, jnp.zeros_like(top), top))  # 0 on dead rows
    p = e / jnp.where(dead, jnp.ones_like(top), jnp.sum(e, axis=-1, keepdims=True))
    return jnp.einsum("...ls,...se->...le", p.astype(v.dtype), v)


@lowers("conv")
def _conv(env, eqn, x, w):
    from jax import lax

    a = eqn.attrs
    n = x.ndim - 2
    sp = "DHW"[-n:] if n <= 3 else None
    if sp is None:
        raise XlaLoweringError(f"conv with {n} spatial dims")
    dn = ("NC" + sp, "OI" + sp, "NC" + sp)
    out = a["out_dtype"]
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=tuple(a["strides"]),
        padding=[tuple(p) for p in a["padding"]],
        rhs_dilation=tuple(a["dilation"]),
        dimension_numbers=dn,
        feature_group_count=a["groups"],
        preferred_element_type=jax_dtype(out) if out is not None else None,
    )


# --- shape ------------------------------------------------------------------------------------


@lowers("reshape")
def _reshape(env, eqn, x):
    return x.reshape(eqn.attrs["shape"])


@lowers("transpose")
def _transpose(env, eqn, x):
    return _jnp().transpose(x, eqn.attrs["perm"])


@lowers("broadcast_in_dim")
def _broadcast_in_dim(env, eqn, x):
    from jax import lax

    return lax.broadcast_in_dim(x, tuple(eqn.attrs["shape"]), tuple(eqn.attrs["dims"]))


@lowers("slice")
def _slice(env, eqn, x):
    from jax import lax

    return lax.slice(x, tuple(eqn.attrs["start"]), tuple(eqn.attrs["limit"]), tuple(eqn.attrs["stride"]) or None)


@lowers("concat")
def _concat(env, eqn, *xs):
    return _jnp().concatenate(xs, axis=eqn.attrs["axis"])


@lowers("index_copy")
def _index_copy(env, eqn, x, idx, src):
    axis = eqn.attrs["axis"] % x.ndim
    where = (slice(None),) * axis + (idx,)
    return x.at[where].set(src)


@lowers("take")
def _take(env, eqn, x, idx):
    return _jnp().take(x, idx, axis=eqn.attrs["axis"])


@lowers("pad")
def _pad(env, eqn, x):
    from jax import lax

    a = eqn.attrs
    return lax.pad(x, _jnp().asarray(a["value"], x.dtype), [(lo, hi, 0) for lo, hi in zip(a["low"], a["high"])])


@lowers("iota")
def _iota(env, eqn):
    from jax import lax

    a = eqn.attrs
    return lax.broadcasted_iota(jax_dtype(a["dtype"]), tuple(a["shape"]), a["axis"] % len(a["shape"]))


# --- quantization -----------------------------------------------------------------------------


def _expand_groups(s, x_shape, group_axis, group_size):
    """Repeat per-group scales/zeros ``group_size`` times along ``group_axis`` (ragged last)."""
    jnp = _jnp()
    if group_axis is None or group_size is None or s.ndim == 0:
        return s
    ax = group_axis % len(x_shape)
    s = jnp.repeat(s, group_size, axis=ax)
    return s[tuple(slice(0, x_shape[ax]) if i == ax else slice(None) for i in range(s.ndim))]


def _int_range(dt: DType):
    from ...ir.dtypes import int_range

    return int_range(dt)


@lowers("quantize")
def _quantize(env, eqn, x, scale, *zero):
    jnp = _jnp()
    a = eqn.attrs
    dt = a["dtype"]
    s = _expand_groups(scale, x.shape, a["group_axis"], a["group_size"])
    y = x / s
    if dt.is_float:
        return y.astype(jax_dtype(dt))
    q = jnp.round(y)  # round half to even
    if zero:
        q = q + _expand_groups(zero[0], x.shape, a["group_axis"], a["group_size"]).astype(q.dtype)
    lo, hi = _int_range(dt)
    return jnp.clip(q, lo, hi).astype(jax_dtype(dt))


@lowers("dequantize")
def _dequantize(env, eqn, q, scale, *zero):
    a = eqn.attrs
    out = jax_dtype(a["dtype"])
    v = q.astype(out)
    if zero:
        v = v - _expand_groups(zero[0], q.shape, a["group_axis"], a["group_size"]).astype(out)
    return v * _expand_groups(scale, q.shape, a["group_axis"], a["group_size"]).astype(out)


@lowers("topk_mask")
def _topk_mask(env, eqn, x):
    jnp = _jnp()
    k, axis = eqn.attrs["k"], eqn.attrs["axis"]
    key = jnp.where(jnp.isnan(x), -jnp.inf, x)  # nan is never selected ahead of a number
    idx = jnp.take(
        jnp.argsort(key, axis=axis, stable=True, descending=True), jnp.arange(k), axis=axis
    )  # ties: lower index
    return jnp.put_along_axis(jnp.zeros(x.shape, bool), idx, True, axis=axis, inplace=False)


@lowers("densify_nm")
def _densify_nm(env, eqn, values, indices):
    jnp = _jnp()
    n, m = eqn.attrs["n"], eqn.attrs["m"]
    lead, groups = values.shape[:-1], values.shape[-1] // n
    out = jnp.zeros((*lead, groups, m), values.dtype)
    idx = indices.reshape(*lead, groups, n).astype(jnp.int32)
    out = jnp.put_along_axis(out, idx, values.reshape(*lead, groups, n), axis=-1, inplace=False)
    return out.reshape(*lead, groups * m)


# --- the fallbacks: an op's decomposition, its numpy reference ------------------------------------


def _decomposition(env: XlaEnv, eqn: Eqn, eqns: list, outputs: dict) -> list:
    """An op's decomposition (a ``fused`` region's body) evaluated in place, equation by equation."""
    return env.run(Graph((), tuple(eqns), tuple(outputs[v] for v in eqn.outputs)), [])


def _fallback(env, eqn, *xs):
    """Run the op's numpy reference through ``jax.pure_callback`` (never differentiable)."""
    import jax

    op = get_op(eqn.op)
    if op.impl is None:
        raise XlaLoweringError(f"op {eqn.op} has no XLA lowering and no reference implementation: {format_eqn(eqn)}")
    shapes = [jax.ShapeDtypeStruct(tuple(int(d) for d in v.type.shape), jax_dtype(v.type.dtype)) for v in eqn.outputs]
    attrs = dict(eqn.attrs)

    def host(*arrays):
        res = op.impl(*[np.asarray(a) for a in arrays], **attrs)
        res = res if isinstance(res, (tuple, list)) else (res,)
        return tuple(np.asarray(r).astype(s.dtype) for r, s in zip(res, shapes))

    return tuple(jax.pure_callback(host, tuple(shapes), *xs))


# --- the evaluator ----------------------------------------------------------------------------


def _bind(types, arrays, env):
    for t, a in zip(types, arrays):
        for d, n in zip(t.shape, np.shape(a)):
            if isinstance(d, D.Sym) and len(d.terms) == 1 and d.terms[0][1] == 1 and len(d.terms[0][0]) == 1:
                env.setdefault(d.terms[0][0][0], int(n))
    return env


@dataclass(frozen=True)
class XlaEnv:
    """The XLA backend's lowering state (its rules' ``ctx``): the function being evaluated, its
    weights, the values of the graph around the equation and the symbols bound so far."""

    function: XlaFunction
    weights: Mapping[str, Any]
    values: dict
    symbols: dict[str, int]

    def run(self, graph: Graph, inputs: Sequence[Any]) -> list:
        """Evaluate a sub-graph that may read the values around the equation."""
        return self.function._run(graph, inputs, self.weights, self.values, self.symbols)


@dataclass(frozen=True)
class XlaFunction:
    """``f(weights, *inputs) -> list of arrays``: the IR graph as jax ops. Wrap in ``jax.jit``."""

    graph: Graph

    def __call__(self, weights: Mapping[str, Any], *inputs: Any) -> list:
        g = self.graph
        if len(inputs) != len(g.inputs):
            raise XlaLoweringError(f"graph takes {len(g.inputs)} inputs, got {len(inputs)}")
        missing = [p.name for p in g.params if p.name not in weights]
        if missing:
            raise XlaLoweringError(f"no value for params {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return self._run(g, list(inputs), weights, {}, _bind([v.type for v in g.inputs], inputs, {}))

    def _run(self, g: Graph, inputs: Sequence[Any], weights, outer: dict, syms: dict) -> list:
        env: dict[Var, Any] = dict(outer)
        env.update(zip(g.inputs, inputs))

        def read(a):
            if isinstance(a, Var):
                return env[a]
            if isinstance(a, Literal):
                return np.asarray(a.value, dtype=jax_dtype(a.type.dtype))
            if isinstance(a, Param):
                return weights[a.name]
            raise XlaLoweringError(f"bad atom {a!r}")

        for eqn in g.eqns:
            args = [read(a) for a in eqn.inputs]
            try:
                outs = self._eval(eqn, args, weights, env, syms)
            except XlaLoweringError:
                raise
            except Exception as e:
                raise XlaLoweringError(f"lowering {format_eqn(eqn)} failed: {type(e).__name__}: {e}") from e
            for v, o in zip(eqn.outputs, outs):
                env[v] = o
        return [read(a) for a in g.outputs]

    def _eval(self, eqn: Eqn, args, weights, env, syms) -> list:
        if any(isinstance(v, D.Sym) for v in _flat_attr_values(eqn.attrs)):
            eqn = eqn.replace(attrs={k: resolve_dims(v, syms) for k, v in eqn.attrs.items()})
        ctx = XlaEnv(self, weights, env, syms)
        out = lower_eqn("xla", ctx, eqn, args, decomposition=_decomposition, reference=_fallback)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(eqn.outputs):
            raise XlaLoweringError(f"{eqn.op} lowered to {len(outs)} values for {len(eqn.outputs)} outputs")
        res = [_coerce(o, v.type.dtype) for o, v in zip(outs, eqn.outputs)]
        _bind([v.type for v in eqn.outputs], res, syms)
        return res


def _flat_attr_values(attrs):
    for v in attrs.values():
        if isinstance(v, tuple):
            yield from (x for x in v if not isinstance(x, tuple))
            for x in v:
                if isinstance(x, tuple):
                    yield from x
        else:
            yield v


def _coerce(x, dt: DType):
    import jax

    want = jax_dtype(dt)
    if x.dtype == want:
        return x
    if dt.bits == 64 and not jax.config.jax_enable_x64:
        return x  # i64/f64 results are 32-bit unless x64 is enabled, as everywhere in JAX
    return x.astype(want)


def lower(graph: Graph) -> XlaFunction:
    """Lower ``graph`` to a jax function ``f(weights, *inputs) -> list of arrays``."""
    return XlaFunction(graph)


def graph_params(graph: Graph, weights: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The graph's weights as a flat ``{name: jax array}`` dict (the ``params_c`` pytree)."""
    table = {**graph.weights, **(weights or {})}
    out = {}
    for p in graph.params:
        if p.name not in table:
            raise XlaLoweringError(f"no value for param @{p.name}")
        out[p.name] = to_jax_array(table[p.name], p.type.dtype)
    return out
