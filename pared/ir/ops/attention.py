"""Scaled dot-product attention as one op: ``softmax(q k^T * scale [+ mask]) v``.

``q [..., Hq, L, E]``, ``k [..., Hkv, S, E]``, ``v [..., Hkv, S, Ev]`` -> ``[..., Hq, L, Ev]``.
Grouped-query attention: ``Hq`` is a multiple of ``Hkv`` and query head ``h`` reads key/value head
``h // (Hq / Hkv)`` (torch's ``enable_gqa``, HF's ``repeat_kv``). The optional mask broadcasts to
the scores ``[..., Hq, L, S]``: a bool mask keeps the scores where it is true (the rest become
-inf), a float mask (the inputs' dtype) is added. A query row whose scores are all -inf after
masking gives zeros, as torch's SDPA does (a plain softmax would give nan).

The reference runs the unfused steps (dot_general, scale, mask, softmax, dot_general) with the
ops' own references, rounding each intermediate to the inputs' storage dtype, so it equals the
unfused graph exactly for f32/f16/f64 (bf16 keeps f32 intermediates, as a fused kernel does).
"""

from __future__ import annotations

import numpy as np

from .. import dims as D
from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..opdef import Cost, OpDef, attr, register
from ..shapes import format_shape
from ..types import TensorType
from .checks import FLOATS, same_dtype
from .linalg import _dot_impl
from .nn import _softmax


def _attention_infer(ts, attrs):
    q, k, v = ts[:3]
    dt = same_dtype("attention", ts[:3], ("float",))
    where = f"attention: q {q}, k {k}, v {v}"
    if q.rank < 3 or k.rank != q.rank or v.rank != q.rank:
        raise TypeInferenceError(f"{where}: q, k and v need one rank >= 3 ([..., heads, seq, dim])")
    if k.shape[:-3] != q.shape[:-3] or v.shape[:-3] != q.shape[:-3]:
        raise TypeInferenceError(f"{where}: leading (batch) dims differ")
    hq, hkv = q.shape[-3], k.shape[-3]
    if v.shape[-3] != hkv or (hq != hkv and D.exact_div(hq, hkv) is None):
        raise TypeInferenceError(f"{where}: k and v need equal head counts that divide q's ({hq})")
    if k.shape[-1] != q.shape[-1]:
        raise TypeInferenceError(f"{where}: q and k head dims differ")
    if v.shape[-2] != k.shape[-2]:
        raise TypeInferenceError(f"{where}: k and v sequence lengths differ")
    if len(ts) == 4:
        m, scores = ts[3], (*q.shape[:-1], k.shape[-2])
        if m.dtype not in (DT.boolean, dt):
            raise TypeInferenceError(f"attention: the mask must be bool or {dt}, got {m}")
        fits = m.rank <= len(scores) and all(a == 1 or a == b for a, b in zip(reversed(m.shape), reversed(scores)))
        if not fits:
            raise TypeInferenceError(f"attention: mask {m} does not broadcast to the scores {format_shape(scores)}")
    return [TensorType((*q.shape[:-1], v.shape[-1]), dt)]


def _attention(q, k, v, mask=None, *, scale):
    dt = q.dtype
    rep = q.shape[-3] // k.shape[-3]
    if rep > 1:  # grouped-query attention: each kv head serves rep consecutive query heads
        k, v = np.repeat(k, rep, axis=-3), np.repeat(v, rep, axis=-3)
    nb = q.ndim - 2
    b = tuple(range(nb))
    s = _dot_impl(q, k, contract=((nb + 1,), (nb + 1,)), batch=(b, b), out_dtype=None).astype(dt)
    s = (s * dt.type(scale)).astype(dt)
    if mask is not None:
        s = np.where(mask, s, -np.inf).astype(dt) if mask.dtype == np.bool_ else (s + mask).astype(dt)
    dead = np.all(s == -np.inf, axis=-1, keepdims=True)  # every key masked: zeros, not nan
    p = np.where(dead, 0, _softmax(np.where(dead, 0, s).astype(dt), axis=-1)).astype(dt)
    return _dot_impl(p, v, contract=((nb + 1,), (nb,)), batch=(b, b), out_dtype=None).astype(dt)


def _attention_cost(ins, outs, attrs):
    q, k, v = ins[:3]
    lead_l, s, e, ev = q.numel // q.shape[-1], k.shape[-2], q.shape[-1], v.shape[-1]
    flops = 2 * lead_l * s * (e + ev) + 5 * lead_l * s  # two contractions + scale/mask/softmax
    return Cost(flops, sum(t.nbytes for t in (*ins, *outs)))  # the scores never reach memory


register(
    OpDef(
        "attention",
        _attention_infer,
        _attention,
        attrs={"scale": attr("float")},
        arity=(3, 4),
        cost=_attention_cost,
        dtypes=FLOATS,
        doc="softmax(q k^T * scale [+ mask]) v over q [..., Hq, L, E], k [..., Hkv, S, E], "
        "v [..., Hkv, S, Ev] (Hq a multiple of Hkv: grouped-query); a bool mask keeps where true, a "
        "float mask is added; fully masked rows give zeros.",
    )
)
