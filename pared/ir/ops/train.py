"""Training-time weight transforms: ``ste_mask`` (pruning) and ``fake_quant`` (QAT), with their VJPs.

Both ops are straight-through: the forward computes the compressed weight the deployed model will
use, the backward is the training method's rule, not the derivative of the forward. The numpy
functions below are the specification every backend implements (the torch backend as an
``autograd.Function``, the XLA backend as a ``jax.custom_vjp``; ``tests/training`` checks them
against these):

    ste_mask(w, mask) = w * mask                               mask is 0/1, w's shape and dtype
        dL/dw    = g * mask                      backward=masked  (gradual pruning, RigL)
                 = g                             backward=ste     (straight-through)
                 = g + decay * (1 - mask) * w    backward=srste   (SR-STE, Zhou et al. 2021, eq. 6)
        dL/dmask = g   (the dense gradient at the effective weight, by convention: what RigL
                        regrows by; an optimizer never updates a mask)

    fake_quant(w, scale[, zero]) = dequantize(quantize(w))     the weight on its integer grid
        dL/dw     = g                                  backward=ste
                  = g * [qmin <= rint(w/s) + z <= qmax] backward=clipped (zero outside the range)
        dL/dscale = dL/dzero = 0                       (the grid is fixed while training)

``ste_mask`` also carries the mask's constraint and schedule as attributes (``pattern``,
``sparsity``, ``schedule``, ...) and the weight's layout (``perm``/``outs``: the axes ordered
(out..., in...) and how many are out, as :class:`pared.passes.calibration.WeightSite` has them;
``perm=()`` is a plain [out, in] matrix): the training loop reads them from the graph, so a
checkpoint's graph text says how its masks evolve. The forward never reads them.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..opdef import OpDef, attr, elementwise_cost, register
from ..types import TensorType
from .checks import FLOATS
from .quant import _check_params, _dequantize, _quantize, expand_groups

BACKWARDS = ("masked", "ste", "srste")
SCHEDULES = ("fixed", "dynamic", "gradual", "rigl")
QUANT_BACKWARDS = ("ste", "clipped")


def _ste_mask_infer(ts, attrs):
    w, m = ts
    if not w.dtype.is_float or m.dtype != w.dtype or m.shape != w.shape:
        raise TypeInferenceError(f"ste_mask: needs a float weight and a 0/1 mask of its shape and dtype, got {w}, {m}")
    if not 0.0 <= attrs["sparsity"] < 1.0 or attrs["decay"] < 0:
        raise TypeInferenceError(f"ste_mask: sparsity must be in [0, 1) and decay >= 0, got {dict(attrs)}")
    return [TensorType(w.shape, w.dtype)]


def ste_mask(w, mask, **attrs):
    """The forward: ``w * mask``."""
    return (np.asarray(w) * np.asarray(mask)).astype(np.asarray(w).dtype)


def ste_mask_vjp(w, mask, g, *, backward: str = "ste", decay: float = 0.0, **_):
    """(dL/dw, dL/dmask) for the cotangent ``g`` of the output (the module docstring's table)."""
    if backward == "masked":
        gw = g * mask
    elif backward == "srste":
        gw = g + decay * (1 - mask) * w
    else:
        gw = g
    return gw, g


register(
    OpDef(
        "ste_mask",
        _ste_mask_infer,
        ste_mask,
        attrs={
            "backward": attr("str", "ste", BACKWARDS),
            "decay": attr("float", 0.0),
            "pattern": attr("str", "unstructured"),
            "sparsity": attr("float", 0.5),
            "schedule": attr("str", "fixed", SCHEDULES),
            "start": attr("int", 0),
            "end": attr("int", 0),
            "every": attr("int", 1),
            "initial": attr("float", 0.0),
            "alpha": attr("float", 0.3),
            "perm": attr("ints", ()),
            "outs": attr("int", 1),
        },
        arity=2,
        cost=elementwise_cost(1),
        dtypes=FLOATS,
        doc="w * mask with a straight-through backward (masked | ste | srste); attrs carry the mask's schedule.",
    )
)


def _fake_quant_infer(ts, attrs):
    w, scale, *zero = ts
    dt = attrs["dtype"]
    if not dt.is_int:
        raise TypeInferenceError(f"fake_quant: the grid dtype must be an integer type, got {dt}")
    if not w.dtype.is_float or not scale.dtype.is_float:
        raise TypeInferenceError(f"fake_quant: w and scale must be float, got {w} and {scale}")
    _check_params("fake_quant", w, ts[1:], attrs)
    return [TensorType(w.shape, w.dtype)]


def fake_quant(w, scale, zero=None, *, dtype, group_axis=None, group_size=None, **_):
    """The forward: ``dequantize(quantize(w))``, the IR ops' arithmetic (round half to even, clip)."""
    w = np.asarray(w)
    q = _quantize(w, scale, zero, dtype=dtype, group_axis=group_axis, group_size=group_size)
    out = DT.from_numpy(w.dtype)
    return _dequantize(q, scale, zero, dtype=out, group_axis=group_axis, group_size=group_size).astype(w.dtype)


def fake_quant_vjp(w, scale, zero, g, *, dtype, group_axis=None, group_size=None, backward: str = "ste", **_):
    """dL/dw for the cotangent ``g`` (scale and zero get none)."""
    if backward == "ste":
        return g
    n = w.shape[group_axis] if group_axis is not None else 0
    q = np.rint(w / expand_groups(np.asarray(scale), n, group_axis, group_size))
    if zero is not None:
        q = q + expand_groups(np.asarray(zero), n, group_axis, group_size)
    lo, hi = DT.int_range(dtype)
    return g * ((q >= lo) & (q <= hi))


register(
    OpDef(
        "fake_quant",
        _fake_quant_infer,
        fake_quant,
        attrs={
            "dtype": attr("dtype"),
            "group_axis": attr("optional_int", None),
            "group_size": attr("optional_int", None),
            "backward": attr("str", "ste", QUANT_BACKWARDS),
        },
        arity=(2, 3),
        cost=elementwise_cost(5),
        dtypes=FLOATS,
        doc="dequantize(quantize(w)) on a fixed integer grid with a straight-through backward (ste | clipped).",
    )
)
