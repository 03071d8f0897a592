"""Region builders for the kernel tests: a region is just a Graph (the body of a fused op)."""

from __future__ import annotations

import numpy as np
import torch

from pared.backends.reference.interpreter import run_graph
from pared.ir import GraphBuilder


def check(kernel, region, arrays, rtol=1e-5, atol=1e-5):
    """Run ``kernel`` on ``arrays`` (as torch tensors) and compare each output with the reference."""
    ref = run_graph(region, arrays)
    outs = kernel(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
    assert len(outs) == len(ref)
    for o, r in zip(outs, ref):
        got = o.float().numpy() if o.dtype == torch.bfloat16 else o.numpy()
        assert got.shape == r.shape, (got.shape, r.shape)
        np.testing.assert_allclose(got.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol)
    return outs


def linear_region(M, N, K, dtype="f32", weight_dtype=None, transposed=True):
    b = GraphBuilder()
    x = b.input([M, K], dtype)
    w = b.input([N, K] if transposed else [K, N], weight_dtype or dtype)
    y = b.dot_general(x, w, contract=((1,), (1 if transposed else 0,)))
    return b, x, w, y


def dequant_region(M, N, K, qdtype, group, zero=False, dtype="f32"):
    """x @ dequantize(q, s[, z]).T with groups of ``group`` along K (None: per channel)."""
    b = GraphBuilder()
    x = b.input([M, K], dtype)
    q = b.input([N, K], qdtype)
    G = 1 if group is None else -(-K // group)
    s = b.input([N, G], dtype)
    ins = [q, s]
    if zero:
        ins.append(b.input([N, G], dtype))
    attrs = {} if group is None else {"group_axis": 1, "group_size": group}
    w = b.dequantize(*ins, dtype=dtype, **attrs)
    y = b.dot_general(x, w, contract=((1,), (1,)))
    return b.build(y)


def to_bf16_grid(a: np.ndarray) -> np.ndarray:
    return torch.from_numpy(a.astype(np.float32)).bfloat16().float().numpy()
