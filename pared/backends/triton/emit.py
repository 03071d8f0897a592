"""Triton source for IR equations: the ``triton`` rules of the lowering table, shared by every
generated kernel.

A rule is ``rule(emitter, eqn, *refs) -> expression``: ``refs`` are the Triton expressions of the
equation's inputs, and a rule may first write lines (``emitter.line``) for values it needs.
Elementwise ops are one expression; row ops (last-axis reductions, softmax, norms; in reduction
kernels only) see the whole row in the tile, its padding masked with their identity.

Generated kernels keep float values in fp32 registers and round each result to its IR dtype
(``x.to(tl.float16).to(tl.float32)``), so a fused region computes what the reference interpreter
computes op by op, without the round trips to memory. Integer and bool values keep their type.
A value is either a full tile ``[BLOCK_M, BLOCK_N]`` or a per-row column ``[BLOCK_M, 1]``;
Triton broadcasting combines them.
"""

from __future__ import annotations

import math
from typing import Callable

from ...ir import Eqn, Literal, Param, Var
from ...ir.dtypes import DType, int_range
from ..lowering import get_lowering, register_lowering


class CodegenError(Exception):
    """An equation has no Triton expression (the region cannot be generated)."""


TL_DTYPES = {"f32": "tl.float32", "f16": "tl.float16", "bf16": "tl.bfloat16", "i8": "tl.int8", "u8": "tl.uint8",
             "i32": "tl.int32", "bool": "tl.int1", "i64": "tl.int64"}


def tl_dtype(dt: DType) -> str:
    try:
        return TL_DTYPES[dt.name]
    except KeyError:
        raise CodegenError(f"dtype {dt} has no Triton kernel type") from None


def literal(a: Literal) -> str:
    v = a.value
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return 'float("nan")'
    if math.isinf(v):
        return 'float("inf")' if v > 0 else 'float("-inf")'
    return repr(float(v))


def round_to(expr: str, dt: DType) -> str:
    """Round an fp32 expression to ``dt`` and back (the reference rounds after every op)."""
    if dt.name in ("f16", "bf16"):
        return f"({expr}).to({tl_dtype(dt)}).to(tl.float32)"
    return expr


def rint(x: str) -> str:
    """Round half to even (numpy's rint), built from floor: ties move to the even neighbour."""
    return (f"tl.where((tl.floor({x} + 0.5) - {x} == 0.5) & (tl.floor({x} + 0.5) % 2 != 0), "
            f"tl.floor({x} + 0.5) - 1.0, tl.floor({x} + 0.5))")


def _unary(fn: Callable[[str], str]):
    return lambda em, e, *a: fn(a[0])


def _pow(em, e: Eqn, *a):
    y = float(e.inputs[1].value)
    if y == 0.5:
        return f"tl.sqrt({a[0]})"
    n = int(abs(y))
    prod = "(" + " * ".join([a[0]] * n) + ")" if n else "1.0"
    return f"(1.0 / {prod})" if y < 0 else prod


def _gelu(em, e: Eqn, *a):
    x = a[0]
    if e.attrs["approximate"] == "tanh":
        inner = f"0.7978845608028654 * ({x} + 0.044715 * {x} * {x} * {x})"
        return f"0.5 * {x} * (1.0 + (2.0 * tl.sigmoid(2.0 * ({inner})) - 1.0))"
    return f"0.5 * {x} * (1.0 + tl.erf({x} * 0.7071067811865476))"


def _cast(em, e: Eqn, *a):
    src, dst = e.inputs[0].type.dtype, e.attrs["dtype"]
    x = a[0]
    if dst.name == "bool":
        return f"({x} != 0)"
    if dst.is_float:
        return f"{x}.to(tl.float32)"
    if src.is_float:  # truncate toward zero, saturate, nan -> 0 (like XLA's convert)
        lo, hi = int_range(dst)
        return f"tl.minimum(tl.maximum(tl.where({x} != {x}, 0.0, {x}), {float(lo)}), {float(hi)}).to({tl_dtype(dst)})"
    return f"{x}.to({tl_dtype(dst)})"


def _clamp(em, e: Eqn, *a):
    x = a[0]
    lo, hi = e.attrs["min"], e.attrs["max"]
    if lo is not None:
        x = f"tl.maximum({x}, {float(lo)!r})"
    if hi is not None:
        x = f"tl.minimum({x}, {float(hi)!r})"
    return x


def _quantize(em, e: Eqn, *a):
    lo, hi = int_range(e.attrs["dtype"])
    q = f"(({a[0]}) / ({a[1]}))"
    r = rint(q)
    if len(a) > 2:
        r = f"({r} + {a[2]})"
    r = f"tl.where({r} != {r}, 0.0, {r})"
    return f"tl.minimum(tl.maximum({r}, {float(lo)}), {float(hi)}).to({tl_dtype(e.attrs['dtype'])})"


def _dequantize(em, e: Eqn, *a):
    q = f"{a[0]}.to(tl.float32)"
    if len(a) > 2:
        q = f"({q} - {a[2]}.to(tl.float32))"
    return f"({q} * {a[1]})"


_EXPRESSIONS: dict[str, Callable[..., str]] = {
    "neg": _unary(lambda x: f"(-{x})"),
    "abs": _unary(lambda x: f"tl.abs({x})"),
    "exp": _unary(lambda x: f"tl.exp({x})"),
    "log": _unary(lambda x: f"tl.log({x})"),
    "sqrt": _unary(lambda x: f"tl.sqrt({x})"),
    "rsqrt": _unary(lambda x: f"tl.rsqrt({x})"),
    "tanh": _unary(lambda x: f"(2.0 * tl.sigmoid(2.0 * {x}) - 1.0)"),
    "sigmoid": _unary(lambda x: f"tl.sigmoid({x})"),
    "relu": _unary(lambda x: f"tl.where({x} > 0, {x}, 0.0)"),
    "silu": _unary(lambda x: f"({x} * tl.sigmoid({x}))"),
    "sin": _unary(lambda x: f"tl.sin({x})"),
    "cos": _unary(lambda x: f"tl.cos({x})"),
    "erf": _unary(lambda x: f"tl.erf({x})"),
    "reciprocal": _unary(lambda x: f"(1.0 / {x})"),
    "floor": _unary(lambda x: f"tl.floor({x})"),
    "sign": _unary(lambda x: f"tl.where({x} > 0, 1.0, tl.where({x} < 0, -1.0, 0.0))"),
    "logical_not": _unary(lambda x: f"({x} == 0)"),
    "gelu": _gelu,
    "add": lambda em, e, *a: f"({a[0]} + {a[1]})",
    "sub": lambda em, e, *a: f"({a[0]} - {a[1]})",
    "mul": lambda em, e, *a: f"({a[0]} * {a[1]})",
    "div": lambda em, e, *a: f"({a[0]} / {a[1]})",
    "pow": _pow,
    "maximum": lambda em, e, *a: f"tl.maximum({a[0]}, {a[1]})",
    "minimum": lambda em, e, *a: f"tl.minimum({a[0]}, {a[1]})",
    "eq": lambda em, e, *a: f"({a[0]} == {a[1]})",
    "ne": lambda em, e, *a: f"({a[0]} != {a[1]})",
    "lt": lambda em, e, *a: f"({a[0]} < {a[1]})",
    "le": lambda em, e, *a: f"({a[0]} <= {a[1]})",
    "gt": lambda em, e, *a: f"({a[0]} > {a[1]})",
    "ge": lambda em, e, *a: f"({a[0]} >= {a[1]})",
    "logical_and": lambda em, e, *a: f"({a[0]} & {a[1]})",
    "logical_or": lambda em, e, *a: f"({a[0]} | {a[1]})",
    "where": lambda em, e, *a: f"tl.where({a[0]}, {a[1]}, {a[2]})",
    "cast": _cast,
    "clamp": _clamp,
    "quantize": _quantize,
    "dequantize": _dequantize,
}
for _op, _rule in _EXPRESSIONS.items():
    register_lowering(_op, "triton", _rule)


# ---- row ops: a reduction or normalisation over the last axis, the whole row in the tile ----

NEG_INF, POS_INF = 'float("-inf")', 'float("inf")'


def _masked(x: str, neutral: str) -> str:
    return f"tl.where(mask, {x}, {neutral})"


@register_lowering("reduce_max", "triton")
def _reduce_max(em, e: Eqn, x):
    return f"tl.max({_masked(x, NEG_INF)}, axis=1)[:, None]"


@register_lowering("reduce_min", "triton")
def _reduce_min(em, e: Eqn, x):
    return f"tl.min({_masked(x, POS_INF)}, axis=1)[:, None]"


@register_lowering("reduce_sum", "triton")
def _reduce_sum(em, e: Eqn, x):
    return f"tl.sum({_masked(x, '0.0')}, axis=1)[:, None]"


@register_lowering("reduce_mean", "triton")
def _reduce_mean(em, e: Eqn, x):
    return f"({_reduce_sum(em, e, x)} / N)"


@register_lowering(("softmax", "log_softmax"), "triton")
def _softmax(em, e: Eqn, x):
    m = em.fresh("m")
    em.line(f"{m} = tl.max({_masked(x, NEG_INF)}, axis=1)[:, None]")
    z = em.fresh("z")
    em.line(f"{z} = tl.sum({_masked(f'tl.exp({x} - {m})', '0.0')}, axis=1)[:, None]")
    return f"tl.exp({x} - {m}) / {z}" if e.op == "softmax" else f"{x} - {m} - tl.log({z})"


def _eps(e: Eqn) -> str:
    return repr(float(e.attrs["eps"]))


@register_lowering("rms_norm", "triton")
def _rms_norm(em, e: Eqn, x, *weight):
    ms = em.fresh("ms")
    em.line(f"{ms} = tl.sum({_masked(f'{x} * {x}', '0.0')}, axis=1)[:, None] / N")
    r = f"{x} * tl.rsqrt({ms} + {_eps(e)})"
    return f"({r}) * {weight[0]}" if weight else r


@register_lowering("layer_norm", "triton")
def _layer_norm(em, e: Eqn, x, *affine):
    mu, var = em.fresh("mu"), em.fresh("var")
    em.line(f"{mu} = tl.sum({_masked(x, '0.0')}, axis=1)[:, None] / N")
    em.line(f"{var} = tl.sum({_masked(f'({x} - {mu}) * ({x} - {mu})', '0.0')}, axis=1)[:, None] / N")
    r = f"({x} - {mu}) * tl.rsqrt({var} + {_eps(e)})"
    if len(affine) > 0:
        r = f"({r}) * {affine[0]}"
    if len(affine) > 1:
        r = f"({r}) + {affine[1]}"
    return r


class Emitter:
    """Accumulates kernel body lines; maps IR values to the Python names holding them."""

    def __init__(self, indent: str = "    "):
        self.lines: list[str] = []
        self.names: dict[Var, str] = {}
        self.indent = indent
        self._n = 0

    def fresh(self, prefix: str = "v") -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def line(self, text: str) -> None:
        self.lines.append(self.indent + text)

    def ref(self, a) -> str:
        if isinstance(a, Literal):
            return literal(a)
        if isinstance(a, Param):
            raise CodegenError(f"param @{a.name} must be a region input")
        try:
            return self.names[a]
        except KeyError:
            raise CodegenError(f"value {a.type} is read before it is computed") from None

    def bind(self, v: Var, expr: str) -> str:
        name = self.fresh()
        self.line(f"{name} = {expr}")
        self.names[v] = name
        return name

    def emit(self, e: Eqn) -> str:
        """Write one equation with its ``triton`` rule; returns the name now holding its result."""
        rule = get_lowering(e.op, "triton")
        expr = NotImplemented if rule is None else rule(self, e, *[self.ref(a) for a in e.inputs])
        if expr is NotImplemented:
            raise CodegenError(f"no Triton expression for {e.op}")
        return self.bind(e.out, round_to(expr, e.out.type.dtype))  # round_to changes only f16/bf16
