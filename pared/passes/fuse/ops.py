"""Which equations the fusion passes may put in a kernel, and in which role.

* elementwise: one output element from the same-position elements of the (broadcast) inputs;
* row reductions: reduce over the last axis only (keepdims), softmax/log_softmax over the last
  axis, layer_norm/rms_norm over the last axis: a kernel computes them one row per lane group;
* linear GEMMs: ``dot_general`` of x[..., K] with a 2-d weight [N, K] or [K, N], no batch dims.
"""

from __future__ import annotations

from ...ir import Eqn, Literal

UNARY = frozenset(
    "neg abs exp log sqrt rsqrt tanh sigmoid relu silu sin cos erf reciprocal floor sign gelu logical_not".split()
)
BINARY = frozenset("add sub mul div pow maximum minimum eq ne lt le gt ge logical_and logical_or".split())
ELEMENTWISE = UNARY | BINARY | {"where", "cast", "clamp", "quantize", "dequantize"}
ROW_REDUCE = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_mean"})
ROW_OPS = frozenset({"softmax", "log_softmax", "layer_norm", "rms_norm"})
GEMM_KINDS = ("gemm", "dequant_gemm", "int8_gemm")


def is_elementwise(e: Eqn) -> bool:
    """Elementwise ops a generated kernel can compute (see the module docstring)."""
    if e.op not in ELEMENTWISE or len(e.outputs) != 1:
        return False
    if e.op in ("quantize", "dequantize") and e.attrs["group_axis"] is not None:
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
    x = e.inputs[0]
    if e.op in ROW_REDUCE or e.op in ("layer_norm", "rms_norm"):
        axes = tuple(a % x.type.rank for a in e.attrs["axes"])
        return axes == (x.type.rank - 1,)
    return e.attrs["axis"] % x.type.rank == x.type.rank - 1


def is_row_op(e: Eqn) -> bool:
    """A reduction or normalisation along the last axis (see the module docstring)."""
    if e.op in ROW_REDUCE:
        ok = e.attrs["keepdims"] and e.inputs[0].type.rank >= 1 and last_axis(e)
    elif e.op in ROW_OPS:
        ok = e.inputs[0].type.rank >= 1 and last_axis(e)
    else:
        return False
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
