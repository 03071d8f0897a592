"""qlinear: a linear layer whose weight is stored quantized (weight-only or W8A8).

    qlinear(x, q, scale, [zero], [act_scale]) {group_size, act, act_dtype}

x is [..., K] float, q is [N, K] (an integer dtype, or fp8), scale (and zero) are [N, G] with
G = ceil(K / group_size) (the last group may be ragged) or G = 1 without groups (per output
channel). The weight is ``w = (q - zero) * scale`` exactly as ``dequantize`` computes it. The
result is [..., N] in x's dtype. ``act`` chooses how the activation enters the product:

* ``none`` (weight-only, W4A16 / W8A16): ``out = round_to(act_dtype, x) @ w^T`` with fp32
  accumulation; ``act_dtype`` (None: x's dtype) names the precision the kernel reads x in
  (e.g. bf16 for CPU int4 kernels), so the reference rounds exactly as the kernel does.
* ``dynamic`` (W8A8, per-token): ``s_x = max|x| / Q`` over the last axis, ``x_q = quant(x / s_x)``,
  ``out = (x_q @ q^T) * s_x * scale^T``. Q is 127 and x_q = clip(rint(.), -127, 127) for an i8
  weight (an int8 x int8 -> int32 product); Q is 448 and x_q = round_to(f8e4m3, .) for an
  f8e4m3 weight. The weight must be per-channel and symmetric (G = 1, no zero).
* ``static`` (W8A8, per-tensor): as ``dynamic`` with ``s_x = act_scale`` (a calibrated scalar,
  the last input).

The unfused form is ``dequantize`` feeding ``dot_general`` (docs/ops.md); this op is the
quantization passes' graph rewrite target (thunder's "new op"), which backends map to their
low-precision kernels (torch: ``_weight_int4pack_mm_for_cpu``, ``_weight_int8pack_mm``, ``_int_mm``).
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..opdef import Cost, OpDef, attr, register
from ..types import TensorType
from .quant import FP8, _dequantize

ACT_MODES = ("none", "dynamic", "static")
ACT_QMAX = {"i8": 127.0, "f8e4m3": 448.0}


def split_inputs(inputs, act: str):
    """(x, q, scale, zero-or-None, act_scale-or-None) from qlinear's positional inputs."""
    x, q, scale, *rest = inputs
    act_scale = rest.pop() if act == "static" and rest else None
    zero = rest[0] if rest else None
    return x, q, scale, zero, act_scale


def _infer(ts, attrs):
    act, gs, act_dtype = attrs["act"], attrs["group_size"], attrs["act_dtype"]
    if act == "static" and len(ts) < 4:
        raise TypeInferenceError("qlinear: act=static needs an act_scale input (the last one)")
    x, q, scale, zero, act_scale = split_inputs(ts, act)
    if not x.dtype.is_float or x.rank < 1:
        raise TypeInferenceError(f"qlinear: x must be a float tensor [..., K], got {x}")
    if q.rank != 2 or not (q.dtype.is_int or q.dtype in FP8):
        raise TypeInferenceError(f"qlinear: q must be an [N, K] integer or fp8 tensor, got {q}")
    n, k = q.shape
    if x.shape[-1] != k:
        raise TypeInferenceError(f"qlinear: x {x} has K={x.shape[-1]} but q {q} has K={k}")
    if gs is not None and gs < 1:
        raise TypeInferenceError(f"qlinear: group_size must be >= 1, got {gs}")
    groups = 1 if gs is None else -(-k // gs)
    for name, p in (("scale", scale), ("zero", zero)):
        if p is not None and (p.rank != 2 or p.shape != (n, groups) or not p.dtype.is_float):
            raise TypeInferenceError(f"qlinear: {name} must be float [{n}, {groups}] (group_size={gs}), got {p}")
    if act not in ACT_MODES:
        raise TypeInferenceError(f"qlinear: act must be one of {ACT_MODES}, got {act!r}")
    if act != "none":
        if q.dtype.name not in ACT_QMAX:
            raise TypeInferenceError(f"qlinear: act={act} needs an i8 or f8e4m3 weight, got {q.dtype}")
        if zero is not None or groups != 1:
            raise TypeInferenceError(
                "qlinear: quantized activations need a symmetric per-channel weight (no zero, no groups)"
            )
        if act_dtype is not None:
            raise TypeInferenceError(
                "qlinear: act_dtype applies to act=none only (quantized activations take q's dtype)"
            )
    if act_scale is not None and (act_scale.shape not in ((), (1,)) or not act_scale.dtype.is_float):
        raise TypeInferenceError(f"qlinear: act_scale must be a float scalar, got {act_scale}")
    if act_dtype is not None and not act_dtype.is_float:
        raise TypeInferenceError(f"qlinear: act_dtype must be a float dtype, got {act_dtype}")
    return [TensorType(tuple(x.shape[:-1]) + (n,), x.dtype)]


def dequantize_weight(q, scale, zero=None, group_size=None) -> np.ndarray:
    """The float32 weight ``(q - zero) * scale`` of a qlinear (groups along axis 1)."""
    ga = 1 if group_size is not None else None
    return _dequantize(q, scale, zero, dtype=DT.f32, group_axis=ga, group_size=group_size)


def quantize_activation(x: np.ndarray, qdtype: str, act_scale=None):
    """(x_q, s_x) with per-token (``act_scale`` None) or per-tensor scales; see the module doc."""
    x = np.asarray(x, dtype=np.float32)
    qmax = ACT_QMAX[qdtype]
    if act_scale is None:
        s = np.max(np.abs(x), axis=-1, keepdims=True) / np.float32(qmax)
        s = np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
    else:
        s = np.float32(np.asarray(act_scale, dtype=np.float32).reshape(()))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = (x / s).astype(np.float32)
    if qdtype == "i8":
        return np.clip(np.rint(np.nan_to_num(y)), -127, 127).astype(np.int8), s
    return DT.round_to(DT.f8e4m3, np.clip(y, -448.0, 448.0)), s


def _impl(*arrays, group_size, act, act_dtype):
    x, q, scale, zero, act_scale = split_inputs(list(arrays), act)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if act == "none":
        w = dequantize_weight(q, scale, zero, group_size)
        xa = DT.round_to(act_dtype, x2).astype(np.float32) if act_dtype is not None else x2.astype(np.float32)
        out = xa @ w.T
    else:
        qd = "i8" if q.dtype == np.int8 else "f8e4m3"
        xq, s = quantize_activation(x2, qd, act_scale)
        if qd == "i8":
            acc = (xq.astype(np.int64) @ q.astype(np.int64).T).astype(np.float64)
        else:
            acc = xq.astype(np.float64) @ q.astype(np.float64).T
        out = acc * np.asarray(s, dtype=np.float64) * scale.astype(np.float64).reshape(1, -1)
    return out.reshape(*lead, q.shape[0]).astype(x.dtype)


def _cost(ins, outs, attrs):
    q = ins[1]
    k = q.shape[1]
    return Cost(2 * outs[0].numel * k, sum(t.nbytes for t in (*ins, *outs)))


register(
    OpDef(
        "qlinear",
        _infer,
        _impl,
        attrs={
            "group_size": attr("optional_int", None),
            "act": attr("str", "none", choices=ACT_MODES),
            "act_dtype": attr("dtype", None),
        },
        arity=(3, 5),
        cost=_cost,
        dtypes=(DT.f32, DT.bf16, DT.f16),
        doc="x [..., K] times a quantized weight q [N, K] ((q - zero) * scale, per-channel or grouped); "
        "act=none (weight-only), dynamic (per-token int8/fp8) or static (per-tensor act_scale).",
        traits={"quant"},
    )
)
