"""The jaxpr primitive -> IR rule table, with a default rule that refuses clearly.

Each rule is ``rule(em, eqn, ins) -> list[Atom]``: ``em`` is the frontend's emitter (``em.op``
appends an IR equation, ``em.inline`` emits a sub-jaxpr, ``em.refuse`` raises an error naming the
primitive and the user's source line), ``eqn`` the jaxpr equation, ``ins`` its inputs already
mapped to IR atoms. Primitives the IR lacks are decomposed here (``integer_pow`` -> a chain of
``mul``, ``exp2`` -> ``exp``, ``erfc`` -> ``1 - erf``, ...).
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

import numpy as np

from ...ir.core import Literal
from .types import ir_dtype

Rule = Callable[..., list]
RULES: dict[str, Rule] = {}

# Function names that mark a nested ``jax.jit`` call as one IR op (see :func:`ir_op` in jax_api).
IR_OP_PREFIX = "pared:"


def _ints(xs) -> tuple[int, ...]:
    return tuple(int(x) for x in xs)


def rule(*names: str):
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn

    return deco


def default_rule(em, eqn, ins):
    em.refuse(f"jaxpr primitive {eqn.primitive.name!r} has no pared IR mapping")


def get_rule(name: str) -> Rule:
    return RULES.get(name, default_rule)


# --- elementwise ------------------------------------------------------------------------------

_DIRECT = {
    "add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow",
    "max": "maximum", "min": "minimum",
    "neg": "neg", "abs": "abs", "exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt",
    "tanh": "tanh", "logistic": "sigmoid", "sin": "sin", "cos": "cos", "erf": "erf",
    "floor": "floor", "sign": "sign",
    "eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge",
}


def _direct(ir_name):
    def fn(em, eqn, ins):
        return [em.op(ir_name, *ins)]

    return fn


for _p, _ir in _DIRECT.items():
    RULES[_p] = _direct(_ir)


def _aval_dtype(v):
    return ir_dtype(v.aval.dtype)


def _lit(em, value, like):
    return Literal(value, em.scalar_type(like.type.dtype))


@rule("and", "or")
def _logical_binary(em, eqn, ins):
    if ins[0].type.dtype.kind != "bool":
        em.refuse(f"bitwise {eqn.primitive.name} on integers has no IR op")
    return [em.op("logical_" + eqn.primitive.name, *ins)]


@rule("not")
def _not(em, eqn, ins):
    if ins[0].type.dtype.kind != "bool":
        em.refuse("bitwise not on integers has no IR op")
    return [em.op("logical_not", *ins)]


@rule("square")
def _square(em, eqn, ins):
    return [em.op("mul", ins[0], ins[0])]


@rule("integer_pow")
def _integer_pow(em, eqn, ins):
    (x,), y = ins, eqn.params["y"]
    if y == 0:
        return [em.op("add", em.op("mul", x, _lit(em, 0, x)), _lit(em, 1, x))]
    acc, base, n = None, x, abs(y)
    while n:  # square-and-multiply, as lax does
        if n & 1:
            acc = base if acc is None else em.op("mul", acc, base)
        n >>= 1
        if n:
            base = em.op("mul", base, base)
    return [em.op("reciprocal", acc) if y < 0 else acc]


@rule("exp2")
def _exp2(em, eqn, ins):
    return [em.op("exp", em.op("mul", ins[0], _lit(em, math.log(2.0), ins[0])))]


@rule("log1p")
def _log1p(em, eqn, ins):
    return [em.op("log", em.op("add", ins[0], _lit(em, 1.0, ins[0])))]


@rule("expm1")
def _expm1(em, eqn, ins):
    return [em.op("sub", em.op("exp", ins[0]), _lit(em, 1.0, ins[0]))]


@rule("erfc")
def _erfc(em, eqn, ins):
    return [em.op("sub", _lit(em, 1.0, ins[0]), em.op("erf", ins[0]))]


@rule("tan")
def _tan(em, eqn, ins):
    return [em.op("div", em.op("sin", ins[0]), em.op("cos", ins[0]))]


@rule("ceil")
def _ceil(em, eqn, ins):
    return [em.op("neg", em.op("floor", em.op("neg", ins[0])))]


@rule("is_finite")
def _is_finite(em, eqn, ins):
    # x - x is 0 exactly for finite x and nan for +-inf and nan
    x = ins[0]
    return [em.op("eq", em.op("sub", x, x), _lit(em, 0.0, x))]


@rule("select_n")
def _select_n(em, eqn, ins):
    pred, *cases = ins
    if len(cases) == 1:
        return [cases[0]]
    if len(cases) != 2:
        em.refuse(f"select_n with {len(cases)} cases (only 2 map to where)")
    if pred.type.dtype.kind != "bool":
        pred = em.op("ne", pred, _lit(em, 0, pred))
    return [em.op("where", pred, cases[1], cases[0])]


@rule("clamp")
def _clamp(em, eqn, ins):
    lo, x, hi = ins
    if isinstance(lo, Literal) and isinstance(hi, Literal) and x.type.dtype.is_float:
        return [em.op("clamp", x, min=float(lo.value), max=float(hi.value))]
    return [em.op("minimum", em.op("maximum", x, lo), hi)]


@rule("convert_element_type")
def _convert(em, eqn, ins):
    dt = _aval_dtype(eqn.outvars[0])
    x = ins[0]
    if dt == x.type.dtype:
        return [x]
    if isinstance(x, Literal) and dt.kind != "bool" and (dt.is_float or x.type.dtype.kind != "float"):
        return [Literal(x.value, em.scalar_type(dt))]  # fold: a constant stays a Literal
    return [em.op("cast", x, dtype=dt)]


# (exponent bits, mantissa bits) -> the IR dtype with that float format
_FLOAT_FORMATS = {(8, 23): "f32", (8, 7): "bf16", (5, 10): "f16", (4, 3): "f8e4m3", (5, 2): "f8e5m2", (11, 52): "f64"}


@rule("reduce_precision")
def _reduce_precision(em, eqn, ins):
    x = ins[0]
    fmt = _FLOAT_FORMATS.get((eqn.params["exponent_bits"], eqn.params["mantissa_bits"]))
    if fmt is None:
        em.refuse(f"reduce_precision to {eqn.params} (no matching IR dtype)")
    if fmt == x.type.dtype.name or (fmt == "f64"):
        return [x]
    return [em.op("cast", em.op("cast", x, dtype=fmt), dtype=x.type.dtype)]


@rule("stop_gradient", "copy", "copy_p", "device_put", "sharding_constraint", "optimization_barrier")
def _identity(em, eqn, ins):
    return list(ins)


# --- reductions -------------------------------------------------------------------------------

for _p in ("sum", "max", "min", "prod"):
    RULES[f"reduce_{_p}"] = (lambda name: lambda em, eqn, ins: [em.op(name, ins[0], axes=_ints(eqn.params["axes"]))])(
        f"reduce_{_p}"
    )


def _arg_reduce(em, eqn, ins, negate):
    x = ins[0]
    (axis,) = eqn.params["axes"]
    if negate:
        x = em.op("neg", x)
    out = em.op("argmax", x, axis=axis)
    dt = _aval_dtype(eqn.outvars[0])
    return [out if out.type.dtype == dt else em.op("cast", out, dtype=dt)]


RULES["argmax"] = lambda em, eqn, ins: _arg_reduce(em, eqn, ins, False)
RULES["argmin"] = lambda em, eqn, ins: _arg_reduce(em, eqn, ins, True)


@rule("cumsum")
def _cumsum(em, eqn, ins):
    if eqn.params.get("reverse"):
        em.refuse("cumsum(reverse=True) has no IR op")
    return [em.op("cumsum", ins[0], axis=eqn.params["axis"])]


# --- contractions -----------------------------------------------------------------------------


@rule("dot_general")
def _dot_general(em, eqn, ins):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    out_dt = _aval_dtype(eqn.outvars[0])
    x, y = ins
    same = x.type.dtype == y.type.dtype == out_dt
    return [
        em.op(
            "dot_general", x, y,
            contract=(_ints(lc), _ints(rc)), batch=(_ints(lb), _ints(rb)),
            out_dtype=None if same else out_dt,
        )
    ]


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


@rule("conv_general_dilated")
def _conv(em, eqn, ins):
    p = eqn.params
    x, w = ins
    if any(d != 1 for d in p["lhs_dilation"]):
        em.refuse("conv with lhs_dilation (transposed conv) has no IR op")
    if p["batch_group_count"] != 1:
        em.refuse("conv with batch_group_count > 1 has no IR op")
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    # the IR's conv is channels-first: transpose into NC... / OI... and back out
    if tuple(lhs_spec) != tuple(range(len(lhs_spec))):
        x = em.op("transpose", x, perm=tuple(lhs_spec))
    if tuple(rhs_spec) != tuple(range(len(rhs_spec))):
        w = em.op("transpose", w, perm=tuple(rhs_spec))
    out_dt = _aval_dtype(eqn.outvars[0])
    y = em.op(
        "conv", x, w,
        strides=_ints(p["window_strides"]),
        dilation=_ints(p["rhs_dilation"]),
        padding=tuple(tuple(int(v) for v in pad) for pad in p["padding"]),
        groups=p["feature_group_count"],
        out_dtype=None if out_dt == x.type.dtype == w.type.dtype else out_dt,
    )
    if tuple(out_spec) != tuple(range(len(out_spec))):
        y = em.op("transpose", y, perm=_inverse(tuple(out_spec)))
    return [y]


# --- shape ------------------------------------------------------------------------------------


def _reshape_to(em, x, shape):
    shape = tuple(int(d) for d in shape)
    if tuple(x.type.shape) == shape:
        return x
    return em.op("reshape", x, shape=shape)


@rule("reshape")
def _reshape(em, eqn, ins):
    if eqn.params.get("dimensions"):
        em.refuse("reshape with dimensions= (a transposing reshape)")
    return [_reshape_to(em, ins[0], eqn.params["new_sizes"])]


@rule("squeeze", "expand_dims")
def _squeeze(em, eqn, ins):
    return [_reshape_to(em, ins[0], eqn.outvars[0].aval.shape)]


@rule("transpose")
def _transpose(em, eqn, ins):
    perm = _ints(eqn.params["permutation"])
    if perm == tuple(range(len(perm))):
        return [ins[0]]
    return [em.op("transpose", ins[0], perm=perm)]


@rule("broadcast_in_dim")
def _broadcast_in_dim(em, eqn, ins):
    x = ins[0]
    shape, dims = _ints(eqn.params["shape"]), _ints(eqn.params["broadcast_dimensions"])
    if tuple(x.type.shape) == shape and dims == tuple(range(len(shape))):
        return [x]
    return [em.op("broadcast_in_dim", x, shape=shape, dims=dims)]


@rule("slice")
def _slice(em, eqn, ins):
    p = eqn.params
    start = tuple(int(s) for s in p["start_indices"])
    limit = tuple(int(s) for s in p["limit_indices"])
    stride = _ints(p["strides"]) if p["strides"] is not None else (1,) * len(start)
    return [em.op("slice", ins[0], start=start, limit=limit, stride=stride)]


@rule("concatenate")
def _concatenate(em, eqn, ins):
    if len(ins) == 1:
        return [ins[0]]
    return [em.op("concat", *ins, axis=eqn.params["dimension"])]


@rule("split")
def _split(em, eqn, ins):
    x, axis, outs, off = ins[0], eqn.params["axis"], [], 0
    for size in (int(s) for s in eqn.params["sizes"]):
        start = [0] * x.type.rank
        limit = list(x.type.shape)
        start[axis], limit[axis] = off, off + size
        outs.append(em.op("slice", x, start=tuple(start), limit=tuple(limit), stride=(1,) * x.type.rank))
        off += size
    return outs


@rule("pad")
def _pad(em, eqn, ins):
    x, value = ins
    cfg = eqn.params["padding_config"]
    if any(interior for _, _, interior in cfg):
        em.refuse("pad with interior padding has no IR op")
    if not isinstance(value, Literal):
        em.refuse("pad with a non-constant padding value")
    if any(lo < 0 or hi < 0 for lo, hi, _ in cfg):
        em.refuse("pad with negative padding (a crop)")
    return [
        em.op(
            "pad",
            x,
            low=tuple(int(lo) for lo, _, _ in cfg),
            high=tuple(int(hi) for _, hi, _ in cfg),
            value=float(value.value),
        )
    ]


@rule("iota")
def _iota(em, eqn, ins):
    p = eqn.params
    return [
        em.op("iota", shape=tuple(int(d) for d in p["shape"]), axis=p["dimension"], dtype=_aval_dtype(eqn.outvars[0]))
    ]


@rule("gather")
def _gather(em, eqn, ins):
    """Gathers that are ``np.take(x, idx, axis=a)`` (embedding lookups, ``x[ids]``) map to ``take``."""
    x, idx = ins
    p = eqn.params
    dn = p["dimension_numbers"]
    if (
        dn.operand_batching_dims
        or len(dn.collapsed_slice_dims) != 1
        or tuple(dn.start_index_map) != tuple(dn.collapsed_slice_dims)
    ):
        em.refuse(f"gather with dimension numbers {dn} (only np.take-style gathers map to take)")
    (a,) = dn.collapsed_slice_dims
    xs = tuple(x.type.shape)
    want_sizes = tuple(1 if i == a else d for i, d in enumerate(xs))
    if tuple(p["slice_sizes"]) != want_sizes or idx.type.shape[-1] != 1:
        em.refuse(f"gather with slice_sizes {p['slice_sizes']} (only whole-slice takes map to take)")
    k = idx.type.rank - 1
    offset = tuple(range(a)) + tuple(range(a + k, a + k + len(xs) - a - 1))
    if tuple(dn.offset_dims) != offset:
        em.refuse(f"gather with offset_dims {dn.offset_dims} (expected {offset} for a take)")
    idx = _reshape_to(em, idx, idx.type.shape[:-1])
    return [em.op("take", x, idx, axis=a)]


# --- calls: inlined ---------------------------------------------------------------------------


def _closed(j):
    return (j.jaxpr, j.consts) if hasattr(j, "consts") else (j, ())


@rule("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint", "custom_lin")
def _call(em, eqn, ins):
    name = eqn.params.get("name", "")
    if isinstance(name, str) and name.startswith(IR_OP_PREFIX):
        return _marked_op(em, eqn, ins, name[len(IR_OP_PREFIX) :])
    jaxpr = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    return em.inline(*_closed(jaxpr), ins)


def _marked_op(em, eqn, ins, spec: str):
    op, _, attrs = spec.partition("{")
    attrs = json.loads("{" + attrs) if attrs else {}
    attrs = {k: _untuple(v) for k, v in attrs.items()}
    ins = [a for a in ins if a is not None]
    out = em.op(op, *ins, **attrs)
    return list(out) if isinstance(out, tuple) else [out]


def _untuple(v: Any) -> Any:
    return tuple(_untuple(x) for x in v) if isinstance(v, list) else v


@rule("custom_jvp_call")
def _custom_jvp(em, eqn, ins):
    # The body is inlined; the lowering is differentiated by JAX itself, so the custom rule is
    # replaced by autodiff of its primal body (equal wherever the body is differentiable).
    return em.inline(*_closed(eqn.params["call_jaxpr"]), ins)


@rule("custom_vjp_call", "custom_vjp_call_jaxpr")
def _custom_vjp(em, eqn, ins):
    j = eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr"))
    return em.inline(*_closed(j), ins)


@rule("composite")
def _composite(em, eqn, ins):
    return em.inline(*_closed(eqn.params["jaxpr"]), ins)


# --- control flow -----------------------------------------------------------------------------

MAX_SCAN_UNROLL = 256


@rule("scan")
def _scan(em, eqn, ins):
    """``scan`` with a static length is unrolled: equal numerics with only core ops."""
    p = eqn.params
    n, nc, ncarry = p["length"], p["num_consts"], p["num_carry"]
    if n > MAX_SCAN_UNROLL:
        em.refuse(f"scan of length {n} (pared unrolls scans of at most {MAX_SCAN_UNROLL} steps)")
    body, body_consts = _closed(p["jaxpr"])
    consts, carry, xs = ins[:nc], list(ins[nc : nc + ncarry]), ins[nc + ncarry :]
    ys_steps = []
    steps = range(n - 1, -1, -1) if p["reverse"] else range(n)
    for i in steps:
        x_i = []
        for x in xs:
            r = x.type.rank
            s = em.op("slice", x, start=(i,) + (0,) * (r - 1), limit=(i + 1, *x.type.shape[1:]), stride=(1,) * r)
            x_i.append(_reshape_to(em, s, x.type.shape[1:]))
        outs = em.inline(body, body_consts, [*consts, *carry, *x_i])
        carry, ys = outs[:ncarry], outs[ncarry:]
        ys_steps.append(ys)
    if p["reverse"]:
        ys_steps.reverse()
    stacked = []
    for j, yv in enumerate(eqn.outvars[ncarry:]):
        parts = [_reshape_to(em, step[j], (1, *yv.aval.shape[1:])) for step in ys_steps]
        stacked.append(parts[0] if len(parts) == 1 else em.op("concat", *parts, axis=0))
    return [*carry, *stacked]


@rule("while", "cond")
def _control_flow(em, eqn, ins):
    em.refuse(
        f"control flow primitive {eqn.primitive.name!r} is not supported by pared's IR "
        "(scan is unrolled; rewrite loops with a static trip count as lax.scan, or move the "
        "branch outside the compressed function)"
    )


def literal_value(val) -> Any:
    """A python scalar for a rank-0 constant."""
    return np.asarray(val).item()
