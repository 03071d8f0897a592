"""Fold dequantize/quantize pairs and keep quantized values integer through reshapes/transposes.

Rules (a table for the rewrite engine, :mod:`pared.passes.rewrite`):

* ``quantize(dequantize(q, s, z), s, z)`` -> ``q`` when the two use the same scale, zero point,
  grouping and integer/fp8 dtype, and the float in between is wide enough to carry ``(q - z) * s``
  back to ``q`` exactly (f32/f64 always; f16/bf16 for ints narrow enough; fp8 via f32/f64 only).
  Scales are assumed finite and nonzero (checked when their values are known).
* ``dequantize(quantize(x, s, z), s, z)`` -> ``fused{kind="fake_quant"}`` of the pair, only with
  ``fake_quant=true`` and when nothing else reads the integer tensor.
* ``transpose(dequantize(q, s, z))`` and ``reshape(dequantize(q, s, z))`` -> the same shape op on
  ``q`` followed by ``dequantize`` with the scale/zero transposed/reshaped alike, when the scale's
  layout survives: per-tensor always; per-channel and group-wise when every scaled axis (and the
  group axis) maps onto whole output axes. Otherwise the equation is left alone.

Only pairs whose intermediate value has no other reader are rewritten, so nothing is computed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ...ir import Eqn, Graph, Literal, Param, make_eqn
from ...ir import dims as D
from ...ir import dtypes as DT
from ..base import Pass, register_pass
from ..context import PassContext
from ..fuse.region import build_region
from ..rewrite import Replacement, RewriteView, RuleTable, rewrite

# significand bits (with the implicit one) of the floats a dequantized value may travel in
_PRECISION = {"f64": 53, "f32": 24, "f16": 11, "bf16": 8}
_FP8 = ("f8e4m3", "f8e5m2")


def _same(a, b, view: RewriteView) -> bool:
    """Whether two scale/zero operands are the same value (same atom, equal literal or equal param)."""
    if a is None or b is None:
        return a is None and b is None
    if a is b:
        return True
    if isinstance(a, Param) and isinstance(b, Param) and a.type == b.type:
        if a.name == b.name:
            return True
        va, vb = view.weight(a), view.weight(b)
        return va is not None and vb is not None and np.array_equal(np.asarray(va), np.asarray(vb))
    if isinstance(a, Literal) and isinstance(b, Literal):
        return a.type == b.type and a.value == b.value
    return False


def _qparams(e: Eqn):
    """(scale, zero-or-None, (group_axis, group_size)) of a quantize/dequantize equation."""
    zero = e.inputs[2] if len(e.inputs) > 2 else None
    ga = e.attrs["group_axis"]
    if ga is not None:
        ga %= e.inputs[0].type.rank
    return e.inputs[1], zero, (ga, e.attrs["group_size"])


def _same_qparams(a: Eqn, b: Eqn, view: RewriteView) -> bool:
    sa, za, ga = _qparams(a)
    sb, zb, gb = _qparams(b)
    return ga == gb and _same(sa, sb, view) and _same(za, zb, view)


def _scale_ok(s, view: RewriteView) -> bool:
    """False when the scale's value is known and holds a zero or a non-finite entry."""
    v = s.value if isinstance(s, Literal) else view.weight(s) if isinstance(s, Param) else None
    if v is None:
        return True
    v = np.asarray(v, dtype=np.float64)
    return bool(np.isfinite(v).all() and (v != 0).all())


def _exact(qdtype: DT.DType, fdtype: DT.DType) -> bool:
    """Whether (q - z) * s in ``fdtype`` always rounds back to q (error < half a step)."""
    prec = _PRECISION.get(fdtype.name)
    if prec is None:
        return False
    if qdtype.name in _FP8:
        return prec >= 24
    # |q - z| < 2^bits; two roundings of relative size 2^-prec each
    return prec >= qdtype.bits + 3


def fold_dequantize_quantize(e: Eqn, view: RewriteView):
    """quantize(dequantize(q, s, z), s, z) -> q."""
    p = view.producer(e.inputs[0])
    if p is None or p.op != "dequantize":
        return None
    q = p.inputs[0]
    if q.type != e.out.type or not _same_qparams(p, e, view):
        return None  # also when q carries an encoding the quantize output does not declare
    if not _exact(q.type.dtype, p.attrs["dtype"]) or not _scale_ok(p.inputs[1], view):
        return None
    return q


def make_fake_quant(e: Eqn, view: RewriteView):
    """dequantize(quantize(x, s, z), s, z) -> fused{kind="fake_quant"}(x, s, z)."""
    if view.in_region:
        return None
    p = view.producer(e.inputs[0])
    if p is None or p.op != "quantize" or view.uses(p.out) != 1 or not _same_qparams(p, e, view):
        return None
    return build_region([p, e], [e.out], "fake_quant", loc=e.loc)


def _lone_dequantize(e: Eqn, view: RewriteView) -> Optional[Eqn]:
    p = view.producer(e.inputs[0])
    if p is None or p.op != "dequantize" or view.uses(p.out) != 1:
        return None
    return p


def _padded_shape(p, rank: int) -> tuple:
    """A scale/zero's shape left-padded with 1s to ``rank`` (numpy broadcasting)."""
    return (1,) * (rank - p.type.rank) + tuple(p.type.shape)


def _move(e: Eqn, p: Eqn, q_op: Eqn, params, group_axis) -> Replacement:
    """``q_op`` (the shape op on q), then a dequantize reading the moved scale/zero ``params``."""
    new_params, pre = [], []
    for a, shape in params:
        if shape is None:
            new_params.append(a)
        else:
            r = make_eqn("reshape", [a], {"shape": shape}, loc=e.loc)
            pre.append(r)
            new_params.append(r.out)
    attrs = dict(p.attrs)
    attrs["group_axis"] = group_axis
    deq = make_eqn("dequantize", [q_op.out, *new_params], attrs, loc=p.loc)
    return Replacement([*pre, q_op, deq], deq.out)


def _is_one(d) -> bool:
    return isinstance(d, int) and d == 1


def transpose_through_dequantize(e: Eqn, view: RewriteView):
    """transpose(dequantize(q, s, z)) -> dequantize(transpose(q), transpose(s), transpose(z))."""
    p = _lone_dequantize(e, view)
    if p is None:
        return None
    q = p.inputs[0]
    r = q.type.rank
    perm = tuple(a % r for a in e.attrs["perm"])
    pre, params = [], []
    for a in p.inputs[1:]:
        full = _padded_shape(a, r)
        if all(_is_one(d) for d in full):  # per-tensor: broadcasts the same either way
            params.append(a)
            continue
        if a.type.rank < r:
            rs = make_eqn("reshape", [a], {"shape": full}, loc=e.loc)
            pre.append(rs)
            a = rs.out
        t = make_eqn("transpose", [a], {"perm": perm}, loc=e.loc)
        pre.append(t)
        params.append(t.out)
    ga = p.attrs["group_axis"]
    attrs = dict(p.attrs)
    attrs["group_axis"] = None if ga is None else perm.index(ga % r)
    qt = make_eqn("transpose", [q], {"perm": perm}, loc=e.loc)
    deq = make_eqn("dequantize", [qt.out, *params], attrs, loc=p.loc)
    return Replacement([*pre, qt, deq], deq.out)


def _segments(a: tuple, b: tuple) -> Optional[list[tuple[range, range]]]:
    """Split a reshape from shape ``a`` to ``b`` into minimal runs of axes with equal products.

    Each segment pairs axes a[i:i2] with b[j:j2]; trailing size-1 axes join the last segment.
    None when the products cannot be matched (e.g. symbolic dims that do not line up).
    """
    segs: list[tuple[range, range]] = []
    i = j = 0
    while i < len(a) or j < len(b):
        if all(_is_one(d) for d in a[i:]) and all(_is_one(d) for d in b[j:]):
            if segs:
                ra, rb = segs.pop()
                segs.append((range(ra.start, len(a)), range(rb.start, len(b))))
            else:
                segs.append((range(i, len(a)), range(j, len(b))))
            break
        found = None
        for i2 in range(i + 1, len(a) + 1):
            pa = D.prod(a[i:i2])
            for j2 in range(j + 1, len(b) + 1):
                if D.prod(b[j:j2]) == pa and not _is_one(pa):
                    found = (i2, j2)
                    break
            if found:
                break
        if found is None:
            return None
        segs.append((range(i, found[0]), range(j, found[1])))
        i, j = found
    return segs


def reshape_through_dequantize(e: Eqn, view: RewriteView):
    """reshape(dequantize(q, s, z)) -> dequantize(reshape(q), reshape(s), reshape(z)) when the
    scale's per-channel/group layout maps onto whole output axes."""
    p = _lone_dequantize(e, view)
    if p is None:
        return None
    q = p.inputs[0]
    a_shape, b_shape = tuple(q.type.shape), tuple(e.out.type.shape)
    segs = _segments(a_shape, b_shape)
    if segs is None:
        return None
    ga = p.attrs["group_axis"]
    ga = None if ga is None else ga % len(a_shape)
    new_ga = None
    params = []
    for s in p.inputs[1:]:
        full = _padded_shape(s, len(a_shape))
        if all(_is_one(d) for d in full):  # per-tensor
            params.append((s, None if s.type.rank <= len(b_shape) else ()))
            continue
        new_shape = []
        for ra, rb in segs:
            scaled = [k for k in ra if not _is_one(a_shape[k])]
            kinds = {full[k] == a_shape[k] and k != ga for k in scaled}
            if ga in ra:
                # the group axis must stay one whole axis (its groups keep their meaning)
                big = [m for m in rb if not _is_one(b_shape[m])]
                if scaled != [ga] or len(big) != 1 or b_shape[big[0]] != a_shape[ga]:
                    return None
                new_ga = big[0]
                new_shape += [full[ga] if m == new_ga else 1 for m in rb]
            elif kinds == {True}:
                new_shape += [b_shape[m] for m in rb]
            elif kinds <= {False} and all(_is_one(full[k]) for k in ra):
                new_shape += [1] * len(rb)
            else:
                return None  # a scaled axis is split or merged with an unscaled one
        params.append((s, tuple(new_shape) if tuple(new_shape) != tuple(s.type.shape) else None))
    if ga is not None and new_ga is None:
        return None
    qr = make_eqn("reshape", [q], {"shape": e.attrs["shape"]}, loc=e.loc)
    return _move(e, p, qr, params, new_ga)


FOLD_QDQ_RULES = RuleTable(
    [
        ("quantize", fold_dequantize_quantize),
        ("transpose", transpose_through_dequantize),
        ("reshape", reshape_through_dequantize),
    ]
)
FAKE_QUANT_RULES = RuleTable([("dequantize", make_fake_quant)])


@register_pass("fold_qdq")
@dataclass(frozen=True)
class FoldQDQ(Pass):
    """Fold dequantize->quantize pairs, move dequantize below reshapes/transposes, and (when
    ``fake_quant`` is set) turn quantize->dequantize pairs into ``fused{kind="fake_quant"}``.

    Options:
        fake_quant: also fold quantize->dequantize pairs into fake-quant regions.
    """

    fake_quant: bool = False

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        rules = FOLD_QDQ_RULES + FAKE_QUANT_RULES if self.fake_quant else FOLD_QDQ_RULES
        return rewrite(graph, rules)
