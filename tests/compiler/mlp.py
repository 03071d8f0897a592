"""A small 2-layer MLP in the IR with random weights (the artifact and report tests' model)."""

from __future__ import annotations

import numpy as np

from pared import ir


def build_mlp(d_in: int = 64, d_hidden: int = 128, d_out: int = 16, seed: int = 0) -> ir.Graph:
    """y = gelu(x W1^T + b1) W2^T + b2 over a dynamic batch dim B."""
    rng = np.random.default_rng(seed)
    b = ir.GraphBuilder()
    x = b.input(("B", d_in), "f32")
    w1 = b.param("fc1.weight", (rng.standard_normal((d_hidden, d_in)) / np.sqrt(d_in)).astype(np.float32))
    b1 = b.param("fc1.bias", (0.1 * rng.standard_normal(d_hidden)).astype(np.float32))
    w2 = b.param("fc2.weight", (rng.standard_normal((d_out, d_hidden)) / np.sqrt(d_hidden)).astype(np.float32))
    b2 = b.param("fc2.bias", (0.1 * rng.standard_normal(d_out)).astype(np.float32))
    h = b.add(b.dot_general(x, w1, contract=((1,), (1,))), b1)
    h = b.op("gelu", h) if "gelu" in ir.OPS else h
    return b.build(b.add(b.dot_general(h, w2, contract=((1,), (1,))), b2))
