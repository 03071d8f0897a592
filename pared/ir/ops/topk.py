"""``topk_mask``: the boolean mask of the ``k`` largest entries along one axis.

Activation sparsity (top-k per token, WINA) keeps the k largest scores of every row and zeroes the
rest: ``where(topk_mask(score){k, axis}, x, 0)``. Ties are broken by position (the lower index is
kept, as a stable descending sort would), so every backend selects exactly the same entries; a
nan is never selected ahead of a number.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..opdef import Cost, OpDef, attr, register
from ..types import TensorType
from .checks import FLOATS, check_axis, same_dtype


def _infer(ts, attrs):
    (x,) = ts
    same_dtype("topk_mask", ts, ("float",))
    a = check_axis("topk_mask", attrs["axis"], x)
    k, n = attrs["k"], x.shape[a]
    if k < 0 or (isinstance(n, int) and k > n):
        raise TypeInferenceError(f"topk_mask: k={k} must be in [0, {n}] (the size of axis {a} of {x})")
    return [TensorType(x.shape, DT.boolean)]


def topk_mask(x: np.ndarray, *, k: int, axis: int = -1) -> np.ndarray:
    """The reference: a stable descending sort (nan last), then the first ``k`` positions."""
    x = np.asarray(x)
    key = np.where(np.isnan(x), -np.inf, x.astype(np.float64))
    order = np.argsort(-key, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    mask = np.zeros(x.shape, bool)
    np.put_along_axis(mask, idx, True, axis=axis)
    return mask


def _cost(ins, outs, attrs):
    n = max(int(ins[0].shape[attrs["axis"]]), 2) if ins[0].shape else 2
    return Cost(ins[0].numel * int(np.ceil(np.log2(n))), ins[0].nbytes + outs[0].nbytes)  # a sort per row


register(
    OpDef(
        "topk_mask",
        _infer,
        topk_mask,
        attrs={"k": attr("int"), "axis": attr("int", -1)},
        arity=1,
        cost=_cost,
        dtypes=FLOATS,
        doc="Bool mask of the `k` largest entries along `axis` (ties: lower index wins; nan never first).",
    )
)
