"""SparseGPT's and GPTQ's two-level lazy sweeps against the plain column-by-column algorithm.

The solvers update the columns of a sub-block eagerly and carry the error to the rest of the block
and to later blocks by matrix products. Mathematically that equals updating every later column
after each column (the papers' Algorithm 1 without lazy batching), which is what the references
below do, in float64.
"""

import numpy as np
import pytest

from pared.passes.quantize import gptq as gptq_mod
from pared.passes.quantize.scheme import WeightScheme
from pared.passes.sparsify import sparsegpt as sg

RNG = np.random.default_rng(7)


def _layer(rows, cols, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3 * cols, cols)) * np.exp(rng.normal(0, 0.7, cols))
    x[:, 1:] += 0.5 * x[:, :-1]  # correlated neighbours: the updates matter
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    return w, x.T @ x


def _eager_sparsegpt(w, h, sparsity, n, m, blocksize, damp):
    u, dead = sg.inverse_hessian_factor(h, damp)
    W = np.array(w, np.float64)
    W[:, dead] = 0
    rows, cols = W.shape
    pruned = np.zeros(W.shape, bool)
    d = np.diag(u)
    for i in range(cols):
        if m and i % m == 0:
            score = W[:, i:i + m] ** 2 / d[None, i:i + m] ** 2
            idx = np.argpartition(score, m - n - 1, axis=1)[:, : m - n]
            pruned[np.arange(rows)[:, None], i + idx] = True
        elif not m and i % blocksize == 0:
            i2 = min(i + blocksize, cols)
            score = W[:, i:i2] ** 2 / d[None, i:i2] ** 2
            k = int(round(score.size * sparsity))
            flat = np.zeros(score.size, bool)
            flat[np.argpartition(score.reshape(-1), k - 1)[:k]] = True
            pruned[:, i:i2] = flat.reshape(score.shape)
        q = np.where(pruned[:, i], 0.0, W[:, i])
        err = (W[:, i] - q) / u[i, i]
        W[:, i:] -= np.outer(err, u[i, i:])
        W[:, i] = q
    W[pruned] = 0
    return W, ~pruned


@pytest.mark.parametrize("sub", [1, 4, 16])
@pytest.mark.parametrize("shape,nm,block", [((37, 72), (2, 4), 16), ((20, 50), (None, None), 16), ((9, 40), (4, 8), 24),
                                            ((1, 30), (None, None), 128)])
def test_sparsegpt_two_level_sweep_equals_eager(monkeypatch, sub, shape, nm, block):
    monkeypatch.setattr(sg, "SUB_BLOCK", sub)
    w, h = _layer(*shape, seed=shape[0])
    n, m = nm
    new, keep = sg.sparsegpt(w, h, 0.5, n, m, blocksize=block, damp=0.01)
    ref, ref_keep = _eager_sparsegpt(w, h, 0.5, n, m, max(m, block // m * m) if m else block, 0.01)
    assert np.array_equal(keep, ref_keep)
    np.testing.assert_allclose(new, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    assert new.flags.c_contiguous and new.dtype == np.float32


@pytest.mark.parametrize("scheme,kw", [
    (WeightScheme(4, False, 24), dict(act_order=False, block=40)),  # groups straddle sub-blocks and blocks
    (WeightScheme(4, False, 32), dict(act_order=False)),
    (WeightScheme(4, True, 16), dict(act_order=True, block=24)),
    (WeightScheme(8, True, None), dict(act_order=False, observer="mse", mse_weight="obs")),
    (WeightScheme(4, False, 20), dict(act_order=False, block=30, sparse=True)),
])
def test_gptq_two_level_sweep_equals_one_level(monkeypatch, scheme, kw):
    kw = dict(kw)
    w, h = _layer(23, 90, seed=3)
    if kw.pop("sparse", False):
        w[RNG.random(w.shape) < 0.5] = 0.0
    monkeypatch.setattr(gptq_mod, "SUB_BLOCK", 1)  # every column carries its error by a product: eager
    q1, s1, z1, dq1 = gptq_mod.gptq_quantize(w, h, scheme, **kw)
    for sub in (5, 16):
        monkeypatch.setattr(gptq_mod, "SUB_BLOCK", sub)
        q, s, z, dq = gptq_mod.gptq_quantize(w, h, scheme, **kw)
        assert np.array_equal(q, q1)
        np.testing.assert_allclose(s, s1, rtol=1e-6)
        np.testing.assert_allclose(dq, dq1, rtol=0, atol=1e-5 * np.abs(dq1).max())
    if (w == 0).mean() > 0.1:
        assert (dq[w == 0] == 0).all()  # zeros stay zero
