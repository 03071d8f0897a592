"""Torch lowering of the training ops (``ste_mask``, ``fake_quant``) as ``autograd.Function``s.

The forward is the op's numpy reference, the backward the VJP written next to it in
:mod:`pared.ir.ops.train` (straight-through, SR-STE decay, clipped STE), so ``loss.backward()``
through a lowered training graph computes what the training method prescribes.
"""

from __future__ import annotations

from typing import Optional

import torch

from ...ir.dtypes import int_range
from ..lowering import register_lowering


class SteMask(torch.autograd.Function):
    """``w * mask``; backward per ``ste_mask_vjp`` (masked | ste | srste; the mask gets ``g``)."""

    @staticmethod
    def forward(ctx, w, mask, backward: str, decay: float):
        ctx.backward, ctx.decay = backward, decay
        ctx.save_for_backward(w if backward == "srste" else None, mask)
        return w * mask

    @staticmethod
    def backward(ctx, g):
        w, mask = ctx.saved_tensors
        if ctx.backward == "masked":
            gw = g * mask
        elif ctx.backward == "srste":
            gw = g + ctx.decay * (1 - mask) * w
        else:
            gw = g
        return gw, (g if ctx.needs_input_grad[1] else None), None, None


def ste_mask(w, mask, backward: str = "ste", decay: float = 0.0):
    return SteMask.apply(w, mask, backward, decay)


def _groups(p, n: int, group_axis, group_size):
    if group_axis is None or p.dim() == 0:
        return p
    return p.repeat_interleave(group_size, dim=group_axis).narrow(group_axis, 0, n)


def _grid(w, scale, zero, lo, hi, group_axis, group_size):
    """(q in float, expanded scale, expanded zero or None, in-range mask) in at least float32."""
    ct = torch.promote_types(w.dtype, torch.float32)
    n = w.shape[group_axis] if group_axis is not None else 0
    s = _groups(scale, n, group_axis, group_size).to(ct)
    q = torch.round(w.to(ct) / s)  # round half to even, as the reference
    z = None
    if zero is not None:
        z = _groups(zero, n, group_axis, group_size).to(ct)
        q = q + z
    inside = (q >= lo) & (q <= hi)
    return torch.nan_to_num(q, nan=0.0).clamp(lo, hi), s, z, inside


class FakeQuant(torch.autograd.Function):
    """``dequantize(quantize(w))`` on a fixed grid; backward per ``fake_quant_vjp`` (ste | clipped)."""

    @staticmethod
    def forward(ctx, w, scale, zero, lo, hi, group_axis, group_size, backward):
        q, s, z, inside = _grid(w, scale, zero, lo, hi, group_axis, group_size)
        ctx.save_for_backward(inside if backward == "clipped" else None)
        return ((q - z if z is not None else q) * s).to(w.dtype)

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        gw = g if inside is None else g * inside
        return gw, None, None, None, None, None, None, None


def fake_quant(w, scale, zero: Optional[torch.Tensor], lo: int, hi: int, group_axis, group_size, backward="ste"):
    return FakeQuant.apply(w, scale, zero, lo, hi, group_axis, group_size, backward)


@register_lowering("ste_mask", "torch")
def _ste_mask(L, eqn, *inputs):
    w, m = (L.tensor(a) for a in eqn.inputs)
    return L.call(ste_mask, w, m, eqn.attrs["backward"], eqn.attrs["decay"])


@register_lowering("fake_quant", "torch")
def _fake_quant(L, eqn, *inputs):
    a = eqn.attrs
    lo, hi = int_range(a["dtype"])
    args = [L.tensor(t) for t in eqn.inputs] + [None] * (3 - len(eqn.inputs))
    return L.call(fake_quant, *args, lo, hi, a["group_axis"], a["group_size"], a["backward"])
