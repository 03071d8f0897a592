"""The torch frontend's rule table and the helpers its rule families share.

``RULES`` is keyed by :func:`~pared.frontends.torch.importer.target_key`: a function's or method's
name (``linear``, ``view``, ``add``) or ``aten.<op>`` for ATen ops. A rule is called as
``rule(importer, *args, **kwargs)`` with FX nodes replaced by IR atoms (tensors), Python values,
or IR dims (sizes); it returns the result in the same terms, or raises :class:`Unsupported`. A call
with no rule, or whose rule fails, becomes an ``opaque`` equation (the default rule). The families
(``math_rules``, ``linalg_rules``, ``pool_rules``, ``shape_rules``) register into ``RULES``; the
importer imports them, so this module imports none of them.
"""

from __future__ import annotations

import operator
from typing import Callable

import torch

from ...ir import dims as D
from ...ir import dtypes as DT
from ...ir.core import Literal, Param, Var
from ...ir.torch_dtypes import from_torch, to_torch


class Unsupported(Exception):
    """A rule cannot express this call in the IR; the importer keeps it as an opaque call."""


RULES: dict[str, Callable] = {}


def rule(*keys: str):
    """Register a rule under several keys; ``input=``/``self=`` keywords become the first argument."""

    def deco(fn):
        def wrapped(cx, *args, **kwargs):
            for alias in ("input", "self"):
                if alias in kwargs:
                    args = (kwargs.pop(alias), *args)
            return fn(cx, *args, **kwargs)

        wrapped.__name__ = fn.__name__
        for k in keys:
            RULES[k] = wrapped
        return fn

    return deco


def is_tensor(v) -> bool:
    return isinstance(v, (Var, Param))


def _cat(dt: DT.DType) -> int:
    return 0 if dt.kind == "bool" else 1 if dt.is_int else 2


def _scalar_dtype(v) -> DT.DType:
    v = v.value if isinstance(v, Literal) else v
    if isinstance(v, bool):
        return DT.boolean
    if isinstance(v, int):
        return DT.i64
    if isinstance(v, float):
        return DT.f32
    raise Unsupported(f"{v!r} is not a number")


def promote(*vals) -> DT.DType:
    """torch's type promotion: dimensioned tensors win over 0-d tensors over Python scalars
    within the highest category (bool < int < float)."""
    tensors = [v.type for v in vals if is_tensor(v)]
    scalars = [_scalar_dtype(v) for v in vals if not is_tensor(v) and v is not None]
    best = max(_cat(d) for d in [t.dtype for t in tensors] + scalars)
    for group in ([t.dtype for t in tensors if t.rank > 0], [t.dtype for t in tensors if t.rank == 0]):
        cands = [d for d in group if _cat(d) == best]
        if cands:
            out = to_torch(cands[0])
            for d in cands[1:]:
                out = torch.promote_types(out, to_torch(d))
            return from_torch(out)
    return DT.f32 if best == 2 else DT.i64 if best == 1 else DT.boolean


def py_binary(op, x, y):
    x = x.value if isinstance(x, Literal) else x
    y = y.value if isinstance(y, Literal) else y
    if isinstance(x, D.Sym) or isinstance(y, D.Sym):
        if op == "add":
            return D.add(x, y)
        if op == "sub":
            return D.sub(x, y)
        if op == "mul":
            return D.mul(x, y)
        if op == "floordiv":
            q = D.exact_div(x, y)
            if q is None:
                raise Unsupported(f"{x} // {y} is not exact")
            return q
        raise Unsupported(f"{op} on symbolic size {x}, {y}")
    return getattr(operator, {"div": "truediv", "logical_and": "and_", "logical_or": "or_"}.get(op, op))(x, y)


def binary(cx, op: str, x, y, dtype=None):
    """``op(x, y)`` with torch's type promotion; Python values stay Python."""
    if not is_tensor(x) and not is_tensor(y):
        return py_binary(op, x, y)
    dt = dtype or promote(x, y)
    return cx.emit(op, cx.cast(x, dt), cx.cast(y, dt))


def axes_of(x, dim) -> tuple[int, ...]:
    if dim is None or dim == () or dim == []:
        return tuple(range(x.type.rank))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted(d % max(x.type.rank, 1) for d in dims))


def channel(cx, v, rank):
    return cx.emit("reshape", v, shape=(v.type.shape[0],) + (1,) * (rank - 2))
