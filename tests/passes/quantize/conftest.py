"""Small graphs for the quantization tests."""

import numpy as np
import pytest

from pared.ir import GraphBuilder, sym


def mlp_graph(rng, k=64, hidden=128, outliers=True):
    """layer_norm -> q,k (shared input) -> up * gate -> down: every pattern the passes fold."""
    b = GraphBuilder()
    x = b.input((sym("B"), 16, k))
    lw = b.param("ln.weight", (1 + 0.1 * rng.standard_normal(k)).astype(np.float32))
    h = b.layer_norm(x, lw, axes=(2,))
    w = lambda n, o, i: b.param(n, (rng.standard_normal((o, i)) * 0.1).astype(np.float32))
    q = b.dot_general(h, w("q.weight", k, k), contract=((2,), (1,)))
    kk = b.dot_general(h, w("k.weight", k, k), contract=((2,), (1,)))
    up = b.dot_general(b.relu(q), w("up.weight", hidden, k), contract=((2,), (1,)))
    gate = b.dot_general(kk, w("gate.weight", hidden, k), contract=((2,), (1,)))
    y = b.dot_general(b.mul(up, gate), w("down.weight", k, hidden), contract=((2,), (1,)))
    return b.build(y)


def calibration(rng, k=64, n=2, outliers=True):
    scale = np.ones(k, np.float32)
    if outliers:
        scale[-4:] = 20.0
    return [(rng.standard_normal((4, 16, k)).astype(np.float32) * scale,) for _ in range(n)]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
