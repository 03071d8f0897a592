"""XLA lowering of the training ops (``ste_mask``, ``fake_quant``) as ``jax.custom_vjp`` functions.

The forward is the op's numpy reference, the backward the VJP written next to it in
:mod:`pared.ir.ops.train`, so ``jax.grad`` of a lowered training graph computes what the training
method prescribes (straight-through, SR-STE decay, clipped STE). jax is imported at the first
lowering, not with this module.
"""

from __future__ import annotations

import functools

from ...ir.dtypes import int_range
from ..lowering import register_lowering


@functools.cache
def _ste_mask_fn():
    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
    def ste_mask(w, mask, backward, decay):
        return w * mask

    def fwd(w, mask, backward, decay):
        return w * mask, (w, mask)

    def bwd(backward, decay, res, g):
        w, mask = res
        if backward == "masked":
            gw = g * mask
        elif backward == "srste":
            gw = g + decay * (1 - mask) * w
        else:
            gw = g
        return gw, g

    ste_mask.defvjp(fwd, bwd)
    return ste_mask


def _groups(p, n, group_axis, group_size):
    import jax.numpy as jnp

    if group_axis is None or p.ndim == 0:
        return p
    rep = jnp.repeat(p, group_size, axis=group_axis)
    return jnp.take(rep, jnp.arange(n), axis=group_axis)


def _grid(w, scale, zero, lo, hi, group_axis, group_size):
    import jax.numpy as jnp

    ct = jnp.promote_types(w.dtype, jnp.float32)
    n = w.shape[group_axis] if group_axis is not None else 0
    s = _groups(scale, n, group_axis, group_size).astype(ct)
    q = jnp.round(w.astype(ct) / s)  # round half to even
    z = None
    if zero is not None:
        z = _groups(zero, n, group_axis, group_size).astype(ct)
        q = q + z
    inside = (q >= lo) & (q <= hi)
    return jnp.clip(jnp.nan_to_num(q, nan=0.0), lo, hi), s, z, inside


@functools.cache
def _fake_quant_fn():
    import jax
    import jax.numpy as jnp

    def forward(w, scale, zero, lo, hi, group_axis, group_size):
        q, s, z, inside = _grid(w, scale, zero, lo, hi, group_axis, group_size)
        return ((q - z if z is not None else q) * s).astype(w.dtype), inside

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
    def fake_quant(w, scale, zero, lo, hi, group_axis, group_size, backward):
        return forward(w, scale, zero, lo, hi, group_axis, group_size)[0]

    def fwd(w, scale, zero, lo, hi, group_axis, group_size, backward):
        out, inside = forward(w, scale, zero, lo, hi, group_axis, group_size)
        return out, (inside, scale, zero)

    def bwd(lo, hi, group_axis, group_size, backward, res, g):
        inside, scale, zero = res
        gw = g if backward == "ste" else g * inside.astype(g.dtype)
        zs = None if zero is None else jnp.zeros_like(zero)
        return gw, jnp.zeros_like(scale), zs

    fake_quant.defvjp(fwd, bwd)
    return fake_quant


@register_lowering("ste_mask", "xla")
def _ste_mask(env, eqn, w, mask):
    return _ste_mask_fn()(w, mask, eqn.attrs["backward"], eqn.attrs["decay"])


@register_lowering("fake_quant", "xla")
def _fake_quant(env, eqn, w, scale, *zero):
    a = eqn.attrs
    lo, hi = int_range(a["dtype"])
    return _fake_quant_fn()(w, scale, zero[0] if zero else None, lo, hi, a["group_axis"], a["group_size"],
                            a["backward"])
