"""``fuse_gemm_epilogue``: a linear GEMM absorbs the elementwise ops applied to its result.

Patterns (rules for the rewrite engine, plus one multi-output sweep):

* ``dot_general(x, W)`` followed by elementwise ops on its result (bias add, activation,
  residual add, casts, scale multiplies, static quantize) -> ``fused{kind="gemm"}``;
* ``silu(x @ Wg) * (x @ Wu)`` -> one region holding both GEMMs (a dual GEMM sharing x);
* int8 x int8 -> int32 GEMMs (W8A8) become ``fused{kind="int8_gemm"}``, and GEMMs whose weight is
  a ``dequantize`` (from ``fuse_dequant``) stay ``dequant_gemm``;
* per-token dynamic quantize of the result (``s = reduce_max(abs(y), -1) / c``,
  ``q = quantize(y, s)``) joins as well, returning ``q`` and ``s``.

The accumulator never goes to memory: the epilogue runs on the output tile in registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...ir import Eqn, Graph, Literal, Var
from ...ir.regions import inline_region
from ..base import Pass, register_pass
from ..context import PassContext
from ..rewrite import RewriteView, RuleTable, rewrite
from .ops import ELEMENTWISE, GEMM_KINDS, broadcasts_to, in_region, is_elementwise, last_axis, linear_weight
from .region import build_region, exported_values


def gemm_kind(e: Eqn) -> Optional[str]:
    """The region kind a GEMM-like equation belongs to, or None if it is not one we fuse."""
    if e.op == "fused":
        k = e.attrs["kind"]
        return k if k in GEMM_KINDS and len(e.outputs) == 1 else None
    if linear_weight(e) is None:
        return None
    x, w = e.inputs
    od = e.attrs["out_dtype"]
    if x.type.dtype.name in ("f16", "bf16", "f32") and w.type.dtype == x.type.dtype and od in (None, x.type.dtype):
        return "gemm"
    if x.type.dtype.name == "i8" and w.type.dtype.name == "i8" and od is not None and od.name == "i32":
        return "int8_gemm"
    return None


def _members(e: Eqn) -> list[Eqn]:
    return inline_region(e)[0] if e.op == "fused" else [e]


def _lhs(e: Eqn):
    """The activation operand of a GEMM region (the first dot's lhs)."""
    for m in _members(e):
        if m.op == "dot_general":
            return m.inputs[0]
    return None


def absorb_epilogue(c: Eqn, view: RewriteView):
    """elementwise(gemm(...), ...) -> one GEMM region (see the module docstring)."""
    if in_region(view):
        return None
    if not is_elementwise(c):
        return None
    S = c.out.type.shape
    for a in dict.fromkeys(x for x in c.inputs if isinstance(x, Var)):
        p = view.producer(a)
        kind = gemm_kind(p) if p is not None else None
        if kind is None or a.type.shape != S or view.uses(a) != c.inputs.count(a):
            continue
        extra: list[Eqn] = []
        ok = True
        for b in c.inputs:
            if b is a:
                continue
            q = view.producer(b) if isinstance(b, Var) else None
            if (q is not None and gemm_kind(q) == "gemm" and q.op == "dot_general" and kind == "gemm"
                    and b.type.shape == S and view.uses(b) == c.inputs.count(b) and q.inputs[0] is _lhs(p)
                    and q not in extra):
                extra.append(q)  # a second GEMM on the same activations: the dual GEMM of SwiGLU
            elif not broadcasts_to(b.type.shape, S):
                ok = False
        if not ok:
            continue
        if p.op == "fused":
            inner, outmap = inline_region(p)
            c = c.replace(inputs=tuple(outmap.get(x, x) if isinstance(x, Var) else x for x in c.inputs))
        else:
            inner = [p]
        return build_region(inner + extra + [c], [c.out], kind, loc=p.loc)
    return None


EPILOGUE_RULES = RuleTable([(op, absorb_epilogue) for op in sorted(ELEMENTWISE)])


@register_pass("fuse_gemm_epilogue")
@dataclass(frozen=True)
class FuseGemmEpilogue(Pass):
    """Fold elementwise epilogues (and per-token quantize) into linear GEMMs; see the module doc."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        graph = rewrite(graph, EPILOGUE_RULES)
        return fuse_token_quantize(graph)


def fuse_token_quantize(graph: Graph) -> Graph:
    """Merge ``q = quantize(y, reduce_max(abs(y))/c)`` into the GEMM region producing ``y``."""
    eqns = list(graph.eqns)
    changed = True
    while changed:
        changed = False
        pos = {v: i for i, e in enumerate(eqns) for v in e.outputs}
        readers: dict[Var, list[int]] = {}
        for i, e in enumerate(eqns):
            for a in e.inputs:
                if isinstance(a, Var):
                    readers.setdefault(a, []).append(i)
        for qi, q in enumerate(eqns):
            match = _match_token_quantize(qi, eqns, pos, readers, graph.outputs)
            if match is None:
                continue
            fi, chain = match
            f = eqns[fi]
            inner, outmap = inline_region(f) if f.op == "fused" else ([f], {})

            members = inner + [_substitute(eqns[i], outmap) for i in chain] + [_substitute(q, outmap)]
            taken = {fi, *chain, qi}
            outside = [a for i, e in enumerate(eqns) if i not in taken for a in e.inputs]
            exports = exported_values(members, [*outside, *graph.outputs])
            fe = build_region(
                members, exports, eqns[fi].attrs["kind"] if eqns[fi].op == "fused" else gemm_kind(eqns[fi])
            )
            subst = dict(zip(exports, fe.outputs))
            new = []
            for i, e in enumerate(eqns):
                if i == qi:
                    new.append(fe)
                elif i not in taken:
                    new.append(e.replace(inputs=tuple(subst.get(a, a) if isinstance(a, Var) else a for a in e.inputs)))
            eqns = new
            graph = graph.replace(outputs=tuple(subst.get(a, a) if isinstance(a, Var) else a for a in graph.outputs))
            changed = True
            break
    return graph.replace(eqns=tuple(eqns))


def _substitute(e: Eqn, m) -> Eqn:
    return e.replace(inputs=tuple(m.get(a, a) if isinstance(a, Var) else a for a in e.inputs))


def _match_token_quantize(qi: int, eqns, pos, readers, outputs):
    q = eqns[qi]
    if q.op != "quantize" or q.attrs["group_axis"] is not None or len(q.inputs) != 2 or not q.out.type.dtype.is_int:
        return None
    y, s = q.inputs
    if not isinstance(y, Var) or y not in pos or not isinstance(s, Var) or s not in pos:
        return None
    fi = pos[y]
    if gemm_kind(eqns[fi]) is None or y.type.rank < 1:
        return None
    chain: list[int] = []
    v = s
    while True:  # back from the scale through scalar-literal elementwise ops to reduce_max(abs(y))
        i = pos.get(v)
        if i is None:
            return None
        e = eqns[i]
        chain.append(i)
        if e.op == "reduce_max":
            break
        lits = [a for a in e.inputs if isinstance(a, Literal)]
        if not is_elementwise(e) or len(e.inputs) - len(lits) != 1 or len(readers.get(e.inputs[0], [])) != 1:
            return None
        v = next(a for a in e.inputs if not isinstance(a, Literal))
    red = eqns[chain[-1]]
    if not (red.attrs["keepdims"] and last_axis(red)) or len(readers.get(red.inputs[0], [])) != 1:
        return None
    ai = pos.get(red.inputs[0])
    if ai is None or eqns[ai].op != "abs" or eqns[ai].inputs[0] is not y:
        return None
    chain.append(ai)
    if sorted(readers.get(y, [])) != sorted([ai, qi]) or any(o is y for o in outputs):
        return None
    # every outside reader of the scale must come after the quantize (the region takes its place)
    if any(r < qi for r in readers.get(s, []) if r != qi):
        return None
    return fi, sorted(chain)
