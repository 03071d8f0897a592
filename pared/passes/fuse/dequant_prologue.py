"""``fuse_dequant``: a weight ``dequantize`` feeding a linear GEMM is folded into its prologue.

``dot_general(x, dequantize(q, scale[, zero]))`` -> ``fused{kind="dequant_gemm"}``: the kernel
loads the int8/int4 weight tile and its group scales and dequantizes in registers, so the
full-precision weight never exists in memory (the weight-only quantization speedup at small batch
is exactly the bytes saved). Scales may be per tensor, per output channel, or per group along the
contraction axis.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...ir import Eqn, Graph
from ..base import Pass, register_pass
from ..context import PassContext
from ..rewrite import RewriteView, RuleTable, rewrite
from .ops import in_region, linear_weight
from .region import build_region


def fold_dequant(e: Eqn, view: RewriteView):
    if in_region(view):
        return None
    lw = linear_weight(e)
    if lw is None:
        return None
    w, transposed = lw
    d = view.producer(w)
    if d is None or d.op != "dequantize" or view.uses(w) != 1:
        return None
    q = d.inputs[0]
    if q.type.dtype.name not in ("i8", "u8", "i4", "u4") or e.inputs[0].type.dtype != w.type.dtype:
        return None
    if e.attrs["out_dtype"] not in (None, w.type.dtype) or w.type.dtype.name not in ("f16", "bf16", "f32"):
        return None
    k_axis = 1 if transposed else 0
    ga = d.attrs["group_axis"]
    if ga is not None and ga % 2 != k_axis:
        return None  # groups must run along the contraction axis
    return build_region([d, e], [e.out], "dequant_gemm", loc=e.loc)


DEQUANT_RULES = RuleTable([("dot_general", fold_dequant)])


@register_pass("fuse_dequant")
@dataclass(frozen=True)
class FuseDequant(Pass):
    """Fold weight dequantization into the GEMM that reads it (see the module docstring)."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return rewrite(graph, DEQUANT_RULES)
