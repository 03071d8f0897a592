"""Which equations the fusion passes may put in a kernel, and in which role (by op traits).

* elementwise (the ``elementwise`` trait): one output element from the same-position elements of
  the (broadcast) inputs;
* row ops (the ``row`` trait): reductions over the last axis only (keepdims), softmax/log_softmax
  over the last axis, layer_norm/rms_norm over the last axis: a kernel computes them one row per
  lane group;
* linear GEMMs: ``dot_general`` of x[..., K] with a 2-d weight [N, K] or [K, N], no batch dims.
"""

from __future__ import annotations

from ...ir import Eqn, Literal
from ...ir.opdef import get_op, ops_with
from ...ir.ops.region import GEMM_KINDS

ELEMENTWISE = ops_with("elementwise")

__all__ = ["ELEMENTWISE", "GEMM_KINDS", "broadcasts_to", "in_region", "is_elementwise", "is_row_op", "last_axis",
           "linear_weight", "row_shape"]


def is_elementwise(e: Eqn) -> bool:
    """Elementwise ops a generated kernel can compute (see the module docstring)."""
    op = get_op(e.op)
    if not op.has("elementwise") or len(e.outputs) != 1:
        return False
    if op.has("quant") and e.attrs["group_axis"] is not None:
        return False  # group-wise scales need index arithmetic; the GEMM prologue handles weights
    if e.op == "div" and not e.out.type.dtype.is_float:
        return False  # integer division truncates; keep it out of kernels
    if e.op == "pow":
        y = e.inputs[1]
        if not (isinstance(y, Literal) and (float(y.value).is_integer() or y.value == 0.5) and abs(y.value) <= 8):
            return False
    if e.op == "quantize" and not e.out.type.dtype.is_int:
        return False  # fp8 rounding is not generated
    return all(_kernel_dtype(a.type.dtype) for a in (*e.inputs, *e.outputs))


def _kernel_dtype(dt) -> bool:
    return dt.name in ("f32", "f16", "bf16", "i8", "u8", "i32", "bool")


def last_axis(e: Eqn) -> bool:
    """Whether a row op works along the last axis (its ``axes`` or ``axis`` attribute)."""
    x = e.inputs[0]
    if "axes" in e.attrs:
        axes = tuple(a % x.type.rank for a in e.attrs["axes"])
        return axes == (x.type.rank - 1,)
    return e.attrs["axis"] % x.type.rank == x.type.rank - 1


def is_row_op(e: Eqn) -> bool:
    """A reduction or normalisation along the last axis (see the module docstring)."""
    op = get_op(e.op)
    if not op.has("row"):
        return False
    ok = e.inputs[0].type.rank >= 1 and last_axis(e) and (e.attrs["keepdims"] if op.has("reduction") else True)
    return ok and e.inputs[0].type.dtype.is_float and _kernel_dtype(e.inputs[0].type.dtype)


def broadcasts_to(shape, domain) -> bool:
    """Whether ``shape``, right-aligned, broadcasts to ``domain`` (each dim 1 or equal)."""
    if len(shape) > len(domain):
        return False
    return all(d == 1 or d == t for d, t in zip(reversed(shape), reversed(domain)))


def row_shape(domain) -> tuple:
    return tuple(domain[:-1]) + (1,)


def linear_weight(e: Eqn):
    """For a linear ``dot_general`` return (weight atom, transposed) where transposed means [N, K];
    None for other contractions."""
    if e.op != "dot_general":
        return None
    x, w = e.inputs
    (lc, rc), (lb, rb) = e.attrs["contract"], e.attrs["batch"]
    if lb or rb or w.type.rank != 2 or x.type.rank < 1 or lc != (x.type.rank - 1,):
        return None
    if rc == (1,):
        return w, True
    if rc == (0,):
        return w, False
    return None


def in_region(view) -> bool:
    """Whether the rewrite engine is visiting a region body (fusion rules act on the top level only).

    ``RewriteView`` keeps its enclosing view private; reading it here is the one coupling point.
    """
    return getattr(view, "_parent", None) is not None
