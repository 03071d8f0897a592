"""Rules for contractions: linear, matmul/bmm/addmm, scaled dot-product attention, convolution.

Each becomes ``dot_general`` (or ``conv``); attention is decomposed as torch's math reference
computes it: ``softmax(q k^T * scale + mask) v``.
"""

from __future__ import annotations

import math

from ...ir import dims as D
from ...ir import dtypes as DT
from .rules import Unsupported, binary, channel, promote, rule


def dot(cx, x, w, xc: int, wc: int, nbatch: int = 0):
    """dot_general contracting x's axis ``xc`` with w's ``wc`` over ``nbatch`` leading batch axes."""
    b = tuple(range(nbatch))
    return cx.emit("dot_general", x, w, contract=((xc,), (wc,)), batch=(b, b))


@rule("linear", "aten.linear")
def _linear(cx, x, weight, bias=None):
    if weight.type.rank != 2:
        raise Unsupported("linear with a non-matrix weight")
    y = dot(cx, x, weight, x.type.rank - 1, 1)
    return y if bias is None else cx.emit("add", y, bias)


def matmul(cx, a, b):
    ra, rb = a.type.rank, b.type.rank
    if ra == 0 or rb == 0:
        raise Unsupported("matmul of a scalar")
    if rb == 1:
        return dot(cx, a, b, ra - 1, 0)
    if ra == 1:
        out = dot(cx, a, b, 0, rb - 2)  # (k) x (..., k, m) -> (..., m): free dims of b stay in order
        return out
    if rb == 2:
        return dot(cx, a, b, ra - 1, 0)
    batch = _broadcast_batch(a.type.shape[:-2], b.type.shape[:-2])
    a = _expand_to(cx, a, batch + a.type.shape[-2:])
    b = _expand_to(cx, b, batch + b.type.shape[-2:])
    return dot(cx, a, b, len(batch) + 1, len(batch), len(batch))


def _broadcast_batch(sa, sb):
    from ...ir.shapes import broadcast_shapes

    return broadcast_shapes(sa, sb)


def _expand_to(cx, x, shape):
    shape = tuple(shape)
    if x.type.shape == shape:
        return x
    off = len(shape) - x.type.rank
    return cx.emit("broadcast_in_dim", x, shape=shape, dims=tuple(range(off, len(shape))))


@rule("matmul", "aten.matmul", "bmm", "aten.bmm", "mm", "aten.mm")
def _matmul(cx, a, b):
    dt = promote(a, b)
    return matmul(cx, cx.cast(a, dt), cx.cast(b, dt))


@rule("addmm", "aten.addmm", "baddbmm", "aten.baddbmm")
def _addmm(cx, bias, a, b, *, beta=1, alpha=1):
    y = matmul(cx, a, b)
    if alpha != 1:
        y = binary(cx, "mul", y, alpha)
    if beta != 1:
        bias = binary(cx, "mul", bias, beta)
    return cx.emit("add", bias, y) if beta != 0 else y


@rule("scaled_dot_product_attention", "aten.scaled_dot_product_attention")
def _sdpa(cx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """softmax(q k^T * scale + mask) v, as torch computes it (a query row with every key masked gives zeros)."""
    if dropout_p:
        raise Unsupported("attention dropout")
    r = q.type.rank
    if enable_gqa and q.type.shape[-3] != k.type.shape[-3]:
        k, v = (_repeat_heads(cx, t, q.type.shape[-3]) for t in (k, v))
    batch = _broadcast_batch(q.type.shape[:-2], k.type.shape[:-2])
    q, k, v = (_expand_to(cx, t, batch + t.type.shape[-2:]) for t in (q, k, v))
    s = dot(cx, q, k, r - 1, r - 1, r - 2)
    e = q.type.shape[-1]
    if scale is None:
        if not isinstance(e, int):
            raise Unsupported("symbolic head size")
        scale = 1.0 / math.sqrt(e)
    s = cx.emit("mul", s, cx.lit(scale, s.type.dtype))
    L, S = s.type.shape[-2], s.type.shape[-1]
    if is_causal:
        row = cx.emit("iota", shape=(L, S), axis=0, dtype=DT.i64)
        col = cx.emit("iota", shape=(L, S), axis=1, dtype=DT.i64)
        attn_mask = cx.emit("ge", row, col)
    if attn_mask is not None:
        if attn_mask.type.dtype == DT.boolean:
            s = cx.emit("where", attn_mask, s, cx.lit(float("-inf"), s.type.dtype))
        else:
            s = cx.emit("add", s, cx.cast(attn_mask, s.type.dtype))
    p = cx.emit("softmax", s, axis=r - 1)
    out = dot(cx, p, v, r - 1, r - 2, r - 2)
    if attn_mask is None or is_causal:
        return out
    # torch gives zeros, not nan, for a query row whose every key is masked (a left-padded batch
    # has them). Read off the mask, after the product, so fuse_attention still sees its pattern.
    m, dead = (cx.cast(attn_mask, DT.i32), 0) if attn_mask.type.dtype == DT.boolean else (attn_mask, float("-inf"))
    best = cx.emit("reduce_max", m, axes=(m.type.rank - 1,), keepdims=True)
    alive = cx.emit("gt", best, cx.lit(dead, m.type.dtype))
    return cx.emit("where", alive, out, cx.lit(0, out.type.dtype))


def _repeat_heads(cx, t, heads):
    """(..., Hkv, S, E) -> (..., H, S, E) repeating each kv head H/Hkv times (GQA)."""
    *lead, hk, s, e = t.type.shape
    rep = D.exact_div(heads, hk)
    x = cx.emit(
        "broadcast_in_dim",
        t,
        shape=(*lead, hk, rep, s, e),
        dims=(*range(len(lead)), len(lead), len(lead) + 2, len(lead) + 3),
    )
    return cx.emit("reshape", x, shape=(*lead, heads, s, e))


def _pair(v, n):
    return tuple(v) * (n // len(v)) if isinstance(v, (tuple, list)) else (v,) * n


def conv(cx, x, w, b, stride, padding, dilation, groups):
    n = x.type.rank - 2
    stride, dilation = _pair(stride, n), _pair(dilation, n)
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0),) * n
        else:  # "same": total padding dilation*(k-1), the extra one at the end (as torch does)
            tot = [dilation[i] * (w.type.shape[2 + i] - 1) for i in range(n)]
            pads = tuple((t // 2, t - t // 2) for t in tot)
    else:
        pads = tuple((p, p) for p in _pair(padding, n))
    y = cx.emit("conv", x, w, strides=stride, dilation=dilation, padding=pads, groups=groups)
    return y if b is None else cx.emit("add", y, channel(cx, b, y.type.rank))


@rule("conv1d", "conv2d", "conv3d", "aten.conv1d", "aten.conv2d", "aten.conv3d")
def _conv(cx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return conv(cx, x, weight, bias, stride, padding, dilation, groups)


@rule("aten.convolution", "convolution")
def _convolution(cx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    if transposed:
        raise Unsupported("transposed convolution")
    return conv(cx, x, weight, bias, stride, padding, dilation, groups)
