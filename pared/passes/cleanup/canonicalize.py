"""Canonicalization: small local simplifications, as a rule table for the rewrite engine.

* a transpose feeding ``dot_general`` is folded into its contract/batch dims,
* ``transpose(transpose(x))`` becomes one transpose (or ``x`` when the perms cancel),
* identity ``transpose``/``reshape``/``cast`` are removed, ``reshape(reshape(x))`` merged,
* ``x*1``, ``1*x``, ``x+0``, ``0+x``, ``x-0`` become ``x`` when the result type equals x's type,
* ``neg(neg(x))`` becomes ``x``.

``x+0 -> x`` turns ``-0.0 + 0.0`` (which is ``+0.0``) into ``-0.0``: equal under ``==``, as
every compiler that removes additive identities assumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...ir import Eqn, Graph, Literal, make_eqn
from ...ir.core import Atom
from ..base import Pass, register_pass
from ..context import PassContext
from ..rewrite import RewriteView, RuleTable, rewrite


def _perm(e: Eqn) -> tuple[int, ...]:
    n = len(e.attrs["perm"])
    return tuple(p % n for p in e.attrs["perm"])


def dot_general_absorb_transpose(e: Eqn, view: RewriteView) -> Optional[Eqn]:
    """dot_general(transpose(x, perm), y) -> dot_general(x, y) with the axes mapped through perm.

    Only when the operand's free axes keep their relative order, since they set the output order.
    """
    (lc, rc), (lb, rb) = e.attrs["contract"], e.attrs["batch"]
    axes = [(lc, lb), (rc, rb)]
    for side in (0, 1):
        p = view.producer(e.inputs[side])
        if p is None or p.op != "transpose":
            continue
        perm = _perm(p)
        c, b = axes[side]
        free = [perm[i] for i in range(len(perm)) if i not in c and i not in b]
        if free != sorted(free):
            continue
        axes[side] = (tuple(perm[i] for i in c), tuple(perm[i] for i in b))
        ins = list(e.inputs)
        ins[side] = p.inputs[0]
        attrs = dict(e.attrs)
        attrs["contract"] = (axes[0][0], axes[1][0])
        attrs["batch"] = (axes[0][1], axes[1][1])
        return make_eqn("dot_general", ins, attrs, loc=e.loc)
    return None


def transpose_simplify(e: Eqn, view: RewriteView):
    perm = _perm(e)
    if perm == tuple(range(len(perm))):
        return e.inputs[0]
    p = view.producer(e.inputs[0])
    if p is not None and p.op == "transpose":
        inner = _perm(p)
        composed = tuple(inner[i] for i in perm)
        if composed == tuple(range(len(composed))):
            return p.inputs[0]
        return make_eqn("transpose", [p.inputs[0]], {"perm": composed}, loc=e.loc)
    return None


def reshape_simplify(e: Eqn, view: RewriteView):
    x = e.inputs[0]
    if x.type == e.out.type:
        return x
    p = view.producer(x)
    if p is not None and p.op == "reshape":
        return make_eqn("reshape", [p.inputs[0]], {"shape": e.attrs["shape"]}, loc=e.loc)
    return None


def identity_cast(e: Eqn, view: RewriteView) -> Optional[Atom]:
    x = e.inputs[0]
    return x if x.type == e.out.type else None


def _is_const(a: Atom, value) -> bool:
    return isinstance(a, Literal) and not isinstance(a.value, bool) and a.value == value


def _forward_if(e: Eqn, keep: int, other: int, value) -> Optional[Atom]:
    if _is_const(e.inputs[other], value) and e.inputs[keep].type == e.out.type:
        return e.inputs[keep]
    return None


def mul_by_one(e: Eqn, view: RewriteView) -> Optional[Atom]:
    return _forward_if(e, 0, 1, 1) or _forward_if(e, 1, 0, 1)


def add_zero(e: Eqn, view: RewriteView) -> Optional[Atom]:
    return _forward_if(e, 0, 1, 0) or _forward_if(e, 1, 0, 0)


def sub_zero(e: Eqn, view: RewriteView) -> Optional[Atom]:
    return _forward_if(e, 0, 1, 0)


def double_neg(e: Eqn, view: RewriteView) -> Optional[Atom]:
    p = view.producer(e.inputs[0])
    return p.inputs[0] if p is not None and p.op == "neg" else None


CANONICALIZE_RULES = RuleTable(
    [
        ("dot_general", dot_general_absorb_transpose),
        ("transpose", transpose_simplify),
        ("reshape", reshape_simplify),
        ("cast", identity_cast),
        ("mul", mul_by_one),
        ("add", add_zero),
        ("sub", sub_zero),
        ("neg", double_neg),
    ]
)


@register_pass("canonicalize")
@dataclass(frozen=True)
class Canonicalize(Pass):
    """Apply the canonicalization rules to a fixed point, then drop what they left dead."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return rewrite(graph, CANONICALIZE_RULES)
