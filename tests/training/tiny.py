"""A tiny MLP (IR graph, and the same model in plain torch / JAX) and its data, for the training tests."""

from __future__ import annotations

import numpy as np

from pared import ir

D_IN, D_HID, D_OUT = 8, 16, 4


def weights(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": (rng.standard_normal((D_HID, D_IN)) / np.sqrt(D_IN)).astype(np.float32),
        "fc1.bias": (0.1 * rng.standard_normal(D_HID)).astype(np.float32),
        "fc2.weight": (rng.standard_normal((D_OUT, D_HID)) / np.sqrt(D_HID)).astype(np.float32),
        "fc2.bias": (0.1 * rng.standard_normal(D_OUT)).astype(np.float32),
    }


def mlp_graph(w: dict) -> ir.Graph:
    """y = relu(x W1^T + b1) W2^T + b2 over a dynamic batch."""
    b = ir.GraphBuilder()
    x = b.input(("B", D_IN), "f32")
    p = {k: b.param(k, v) for k, v in w.items()}
    h = b.relu(b.add(b.dot_general(x, p["fc1.weight"], contract=((1,), (1,))), p["fc1.bias"]))
    return b.build(b.add(b.dot_general(h, p["fc2.weight"], contract=((1,), (1,))), p["fc2.bias"]))


def batches(n: int = 4, size: int = 6, seed: int = 1) -> list[tuple]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, D_IN)).astype(np.float32),) for _ in range(n)]


def teacher_fn(w: dict):
    """The dense teacher in numpy (framework-neutral): inputs -> outputs."""

    def run(x):
        x = np.asarray(x)
        h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
        return h @ w["fc2.weight"].T + w["fc2.bias"]

    return run
