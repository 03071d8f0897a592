"""Essential-sparsity sweep: the one-shot magnitude curve and its knee on a tiny model."""

import numpy as np
import pytest

from pared.backends.reference.interpreter import run_graph
from pared.passes.sparsify import essential_sparsity
from pared.passes.sparsify.sweep import knee

from .layers import mlp


def test_knee_of_a_known_curve():
    s = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    q = [1.0, 1.0, 0.999, 0.998, 0.995, 0.99, 0.9, 0.6, 0.2]  # flat, then falls off after 0.6
    assert knee(s, q, 1.0) == pytest.approx(0.6)
    assert knee(s, [1.0] * 9, 1.0) is None


def test_sweep_on_a_tiny_model():
    g = mlp(d_in=32, d_hidden=64, d_out=16)
    x = np.random.default_rng(3).standard_normal((64, 32)).astype(np.float32)
    (ref,) = run_graph(g, [x])

    def cosine(graph):  # output similarity to the dense model (higher is better)
        (y,) = run_graph(graph, [x])
        return float((y * ref).sum() / (np.linalg.norm(y) * np.linalg.norm(ref)))

    r = essential_sparsity(g, cosine, sparsities=[0.1, 0.3, 0.5, 0.7, 0.9], tolerance=0.02)
    assert r.dense == pytest.approx(1.0)
    assert all(a >= b - 1e-6 for a, b in zip(r.quality, r.quality[1:]))  # quality falls with sparsity
    assert r.quality[0] > 0.99 and r.quality[-1] < 0.9
    assert r.essential is not None and r.quality[r.sparsities.index(r.essential)] >= 0.98
    nxt = [q for s, q in zip(r.sparsities, r.quality) if s > r.essential]
    assert not nxt or nxt[0] < 0.98
    assert r.knee in r.sparsities
    assert "essential" in r.table()
    # lower-is-better metric (an error): the same curve, mirrored
    r2 = essential_sparsity(g, lambda gr: 1.0 - cosine(gr), sparsities=[0.1, 0.3, 0.5, 0.7, 0.9],
                            higher_is_better=False, tolerance=0.02)
    assert r2.knee == r.knee


def test_sweep_bad_input():
    with pytest.raises(ValueError, match="inside"):
        essential_sparsity(mlp(), lambda g: 1.0, sparsities=[0.5, 1.0])
