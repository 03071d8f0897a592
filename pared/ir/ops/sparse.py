"""Packed sparse weights: ``densify_nm`` expands N:M values + index metadata back to dense.

A weight promised N:M sparse along its last axis (``Sparse("nm", n, m, axis=-1)`` on a dense
param) can be stored packed for backends with sparse kernels: ``values`` holds the kept entries
(shape [..., K * n / m]) and ``indices`` (uint8) each entry's position inside its group of m.
``densify_nm(values, indices){n, m}`` is the reference semantics of that storage: the dense
[..., K] tensor, so the reference interpreter runs packed graphs; :func:`pack_nm` produces the
pair from a dense array.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..opdef import OpDef, attr, elementwise_cost, register
from ..types import TensorType


def pack_nm(w: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, uint8 indices) of an array with at most ``n`` nonzeros per ``m`` along the last axis."""
    w = np.asarray(w)
    if w.shape[-1] % m:
        raise ValueError(f"pack_nm: last dim {w.shape[-1]} is not a multiple of {m}")
    g = w.reshape(*w.shape[:-1], w.shape[-1] // m, m)
    if ((g != 0).sum(-1) > n).any():
        raise ValueError(f"pack_nm: some group of {m} has more than {n} nonzeros")
    idx = np.sort(np.argsort(g == 0, axis=-1, kind="stable")[..., :n], axis=-1)  # nonzeros first, in order
    vals = np.take_along_axis(g, idx, -1)
    return vals.reshape(*w.shape[:-1], -1), idx.astype(np.uint8).reshape(*w.shape[:-1], -1)


def _densify_infer(ts, attrs):
    v, i = ts
    n, m = attrs["n"], attrs["m"]
    if not 0 < n < m:
        raise TypeInferenceError(f"densify_nm: needs 0 < n < m, got n={n} m={m}")
    if v.shape != i.shape or not i.dtype.is_int:
        raise TypeInferenceError(f"densify_nm: values {v} and integer indices {i} must have one shape")
    k = v.shape[-1]
    if not isinstance(k, int) or k % n:
        raise TypeInferenceError(f"densify_nm: last dim of values ({k}) must be a multiple of n={n}")
    return [TensorType((*v.shape[:-1], k // n * m), v.dtype)]


def _densify_impl(values, indices, *, n, m):
    lead = values.shape[:-1]
    groups = values.shape[-1] // n
    out = np.zeros((*lead, groups, m), values.dtype)
    np.put_along_axis(out, indices.reshape(*lead, groups, n).astype(np.int64), values.reshape(*lead, groups, n), -1)
    return out.reshape(*lead, groups * m)


register(
    OpDef(
        "densify_nm",
        _densify_infer,
        _densify_impl,
        attrs={"n": attr("int"), "m": attr("int")},
        arity=2,
        cost=elementwise_cost(1),
        dtypes=(DT.f32, DT.f16, DT.bf16),
        doc="N:M packed values [..., K*n/m] + uint8 positions within each group of m -> dense [..., K].",
    )
)
