"""``fuse_attention``: scaled dot-product attention becomes one ``attention`` op.

The pattern, as the torch frontend decomposes SDPA and as eager attention code writes it::

    s = dot_general(q, k)            one contraction over the head dim, the rest batch dims
    s = mul(s, c) | div(s, c)        optional: c a finite scalar literal (div: scale = 1/c)
    s = where(m, s, -inf)            optional: a bool mask (also where(m, -inf, s): mask = not m)
      | add(s, m)                    or a float mask of s's dtype
    p = softmax(s, axis=-1)
    o = dot_general(p, v)            contracting p's last axis, the same batch dims in order

becomes ``attention(q', k', v'[, m]){scale}`` with q', k', v' transposed (when needed) to
``[batch..., L, E]``, ``[batch..., S, E]``, ``[batch..., S, Ev]``. When k and v are HF's
``repeat_kv`` (``reshape(broadcast_in_dim(...))`` adding a repeat axis after the kv heads), the op
reads the un-repeated tensors: grouped-query attention without the copies.

Conservative: every intermediate value must be read only by the next step (else the scores are
needed elsewhere), both contractions must have rank >= 3 operands and no out_dtype, the softmax
must run over the key axis, and the op's type must equal the replaced output's. Anything else
is left alone. Semantics: equal to the unfused graph except that a query row whose every key is
masked gives zeros instead of nan (torch SDPA's behaviour, which the frontend's decomposition
loses); ``div`` by c becomes a multiply by 1/c (within a rounding of the unfused result).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ...ir import Eqn, Graph, Literal, TypeInferenceError, Var, make_eqn
from ...ir import dims as D
from ...ir.core import Atom
from ..base import Pass, register_pass
from ..context import PassContext
from ..rewrite import Replacement, RewriteView, RuleTable, rewrite
from .ops import in_region


def _once(view: RewriteView, a: Atom) -> Optional[Eqn]:
    """The producer of ``a`` when ``a`` is a Var read by exactly one equation."""
    if not isinstance(a, Var) or view.uses(a) != 1:
        return None
    return view.producer(a)


def _is_neg_inf(a: Atom) -> bool:
    return isinstance(a, Literal) and a.type.dtype.is_float and a.value == -math.inf


def _finite_scalar(a: Atom) -> Optional[float]:
    if isinstance(a, Literal) and a.type.dtype.is_float and a.is_finite:
        return float(a.value)
    return None


def _dot_axes(e: Eqn) -> tuple[tuple[int, ...], ...]:
    """(lhs contract, rhs contract, lhs batch, rhs batch), axes made non-negative."""
    (lc, rc), (lb, rb) = e.attrs["contract"], e.attrs["batch"]
    lr, rr = e.inputs[0].type.rank, e.inputs[1].type.rank
    return (
        tuple(lc_ % lr for lc_ in lc),
        tuple(a % rr for a in rc),
        tuple(a % lr for a in lb),
        tuple(a % rr for a in rb),
    )


def _free(rank: int, used: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(a for a in range(rank) if a not in used)


def _scores_dot(s: Atom, view: RewriteView) -> Optional[tuple[float, Eqn]]:
    """(scale, q.k^T dot) when ``s`` is ``dot_general`` optionally times / over a scalar literal."""
    e = _once(view, s)
    if e is None:
        return None
    scale = 1.0
    if e.op in ("mul", "div"):
        x, c = e.inputs
        if e.op == "mul" and isinstance(x, Literal):
            x, c = c, x
        val = _finite_scalar(c)
        if val is None or not isinstance(x, Var) or x.type != e.out.type or (e.op == "div" and val == 0.0):
            return None
        scale = val if e.op == "mul" else 1.0 / val
        e = _once(view, x)
        if e is None:
            return None
    if e.op != "dot_general" or e.attrs["out_dtype"] is not None:
        return None
    return scale, e


@dataclass
class _Mask:
    atom: Optional[Atom]  # None: no mask
    negate: bool = False  # where(m, -inf, s): the kept scores are where m is false


def _strip_mask(x: Atom, view: RewriteView) -> list[tuple[_Mask, Atom]]:
    """Ways to read the softmax input ``x`` as (mask, scores), the maskless reading last; the
    caller takes the first whose scores lead to a q.k^T dot."""
    out = [(_Mask(None), x)]
    e = _once(view, x)
    if e is None:
        return out
    if e.op == "where":
        c, a, b = e.inputs
        if isinstance(c, Literal):
            return out
        if _is_neg_inf(b) and isinstance(a, Var) and a.type == e.out.type:
            out.insert(0, (_Mask(c), a))
        elif _is_neg_inf(a) and isinstance(b, Var) and b.type == e.out.type:
            out.insert(0, (_Mask(c, negate=True), b))
    elif e.op == "add":
        a, b = e.inputs
        for s, m in ((a, b), (b, a)):
            if isinstance(s, Var) and not isinstance(m, Literal) and s.type == e.out.type:
                out.insert(len(out) - 1, (_Mask(m), s))
    return out


def _repeat_kv(t: Atom, view: RewriteView, nb: int) -> Optional[tuple[Atom, int]]:
    """(x, rep) when ``t [..., Hkv*rep, S, E]`` repeats each head of ``x [..., Hkv, S, E]`` rep
    times in a row: ``reshape(broadcast_in_dim(x'))`` with the repeat axis right after the heads,
    x' being x with a size-1 axis there (HF's repeat_kv) or x itself (the frontend's GQA)."""
    rs = view.producer(t)
    if rs is None or rs.op != "reshape":
        return None
    bc = view.producer(rs.inputs[0])
    if bc is None or bc.op != "broadcast_in_dim" or bc.out.type.rank != t.type.rank + 1:
        return None
    shape = bc.out.type.shape
    lead, hkv, rep, tail = shape[: nb - 1], shape[nb - 1], shape[nb], shape[nb + 1 :]
    if not isinstance(rep, int) or rep < 2 or t.type.shape != (*lead, D.mul(hkv, rep), *tail):
        return None
    src, dims = bc.inputs[0], tuple(bc.attrs["dims"])
    want = (*lead, hkv, *tail)
    if src.type.shape == want and dims == (*range(nb), nb + 1, nb + 2):
        return src, rep  # broadcast straight from [..., Hkv, S, E]
    if src.type.shape == (*lead, hkv, 1, *tail) and dims == tuple(range(nb + 2 + 1)):
        un = view.producer(src)  # [..., Hkv, 1, S, E] made by unsqueezing [..., Hkv, S, E]
        if un is not None and un.op == "reshape" and un.inputs[0].type.shape == want:
            return un.inputs[0], rep
    return None


def fuse_attention(e: Eqn, view: RewriteView):
    """``dot_general(softmax(scores), v)`` -> ``attention`` (see the module docstring)."""
    if in_region(view) or e.attrs["out_dtype"] is not None:
        return None
    p, v = e.inputs
    sm = _once(view, p)
    r = p.type.rank
    if sm is None or sm.op != "softmax" or r < 3 or v.type.rank != r or sm.attrs["axis"] % r != r - 1:
        return None
    nb = r - 2
    pc, vc, pb, vb = _dot_axes(e)
    if pc != (r - 1,) or pb != tuple(range(nb)) or len(vc) != 1 or len(vb) != nb:
        return None
    found = next(((m, *d) for m, s in _strip_mask(sm.inputs[0], view) if (d := _scores_dot(s, view)) is not None), None)
    if found is None:
        return None
    mask, scale, qk = found
    q, k = qk.inputs
    qc, kc, qb, kb = _dot_axes(qk)
    if q.type.rank != r or k.type.rank != r or len(qc) != 1 or len(qb) != nb or not q.type.dtype.is_float:
        return None
    new: list[Eqn] = []

    def canonical(t: Atom, perm: tuple[int, ...]) -> Atom:
        if perm == tuple(range(r)):
            return t
        new.append(make_eqn("transpose", [t], {"perm": perm}, loc=e.loc))
        return new[-1].out

    perms = [(*qb, *_free(r, qb + qc), *qc), (*kb, *_free(r, kb + kc), *kc), (*vb, *vc, *_free(r, vb + vc))]
    q2 = canonical(q, perms[0])
    kv = [_repeat_kv(t, view, nb) if perm == tuple(range(r)) else None for t, perm in ((k, perms[1]), (v, perms[2]))]
    if (
        kv[0] is not None
        and kv[1] is not None
        and kv[0][1] == kv[1][1]
        and kv[0][0].type.shape[nb - 1] == kv[1][0].type.shape[nb - 1]
    ):
        k2, v2 = kv[0][0], kv[1][0]  # grouped-query: read the kv heads once each
    else:
        k2, v2 = canonical(k, perms[1]), canonical(v, perms[2])
    ins = [q2, k2, v2]
    if mask.atom is not None:
        m = mask.atom
        if mask.negate:
            pn = view.producer(m)
            if pn is not None and pn.op == "logical_not":
                m = pn.inputs[0]
            else:
                new.append(make_eqn("logical_not", [m], loc=e.loc))
                m = new[-1].out
        ins.append(m)
    try:
        att = make_eqn("attention", ins, {"scale": scale}, loc=e.loc)
    except TypeInferenceError:
        return None  # defensive: whatever the op's rule rejects stays unfused
    if att.out.type != e.out.type:
        return None
    return Replacement([*new, att], att.out)


ATTENTION_RULES = RuleTable([("dot_general", fuse_attention)])


@register_pass("fuse_attention")
@dataclass(frozen=True)
class FuseAttention(Pass):
    """Replace scaled dot-product attention patterns with the ``attention`` op (module docstring).

    The torch target runs this after every recipe (``presets.LOWERING``): the torch backend
    lowers ``attention`` to ``F.scaled_dot_product_attention`` (flash kernels on CPU and GPU).
    """

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        out = rewrite(graph, ATTENTION_RULES)
        n = sum(e.op == "attention" for e in out.eqns) - sum(e.op == "attention" for e in graph.eqns)
        if n:
            ctx.report.add(self.name, "attention", fused=n)
        return out
