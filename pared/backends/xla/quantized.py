"""XLA lowering of ``qlinear`` (see pared/ir/ops/qops.py for its semantics).

Weight-only layers dequantize in the jitted function (XLA fuses the dequantize into the
dot's operand on GPU/TPU); W8A8 layers quantize the activation per token (or with the static
scale) and run an int8 x int8 -> int32 ``dot_general`` (fp8 weights: an fp8 product in fp32).
"""

from __future__ import annotations

import numpy as np

from ...ir.ops.qops import ACT_QMAX, split_inputs
from .lowering import jax_dtype, lowers


def _per_channel(s, k: int, group_size):
    """[N, G] scales/zeros repeated to [N, K] (the last group may be ragged)."""
    import jax.numpy as jnp

    if group_size is None:
        return s
    return jnp.take(s, np.arange(k) // group_size, axis=1)


@lowers("qlinear")
def _qlinear(env, eqn, *xs):
    import jax.numpy as jnp
    from jax import lax

    a = eqn.attrs
    x, q, scale, zero, act_scale = split_inputs(list(xs), a["act"])
    k = q.shape[1]
    x2 = x.reshape(-1, k).astype(jnp.float32)
    if a["act"] == "none":
        w = q.astype(jnp.float32)
        if zero is not None:
            w = w - _per_channel(zero, k, a["group_size"]).astype(jnp.float32)
        w = w * _per_channel(scale, k, a["group_size"]).astype(jnp.float32)
        if a["act_dtype"] is not None:
            x2 = x2.astype(jax_dtype(a["act_dtype"])).astype(jnp.float32)
        out = lax.dot_general(x2, w, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST)
    else:
        qd = eqn.inputs[1].type.dtype.name
        qmax = ACT_QMAX[qd]
        if act_scale is None:
            s = jnp.max(jnp.abs(x2), axis=-1, keepdims=True) / qmax
            s = jnp.where(s > 0, s, 1.0)
        else:
            s = act_scale.reshape(()).astype(jnp.float32)
        y = jnp.nan_to_num(x2 / s)
        if qd == "i8":
            xq = jnp.clip(jnp.round(y), -127, 127).astype(jnp.int8)
            acc = lax.dot_general(xq, q, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
        else:
            xq = jnp.clip(y, -qmax, qmax).astype(jnp.float8_e4m3fn).astype(jnp.float32)
            acc = lax.dot_general(xq, q.astype(jnp.float32), (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST)
        out = acc.astype(jnp.float32) * s * scale.astype(jnp.float32).reshape(1, -1)
    return out.reshape(*x.shape[:-1], q.shape[0]).astype(x.dtype)
