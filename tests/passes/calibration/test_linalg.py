"""The Hessian factorisations shared by SparseGPT, GPTQ and the refit, against numpy's direct forms."""

import numpy as np
import pytest

from pared.passes.calibration import linalg
from pared.passes.sparsify.sparsegpt import inverse_hessian_factor


def _spd(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2 * n + 3, n)) * np.exp(rng.normal(0, 1, n))
    return x.T @ x + 0.1 * np.eye(n)


@pytest.mark.parametrize("n", [1, 2, 7, 64, 301])
@pytest.mark.parametrize("overwrite", [False, True])
def test_upper_cholesky_of_inverse(n, overwrite):
    h = _spd(n, n)
    h0 = h.copy()
    ref = np.linalg.cholesky(np.linalg.inv(h0)).T
    u = linalg.upper_cholesky_of_inverse(h, overwrite=overwrite)
    np.testing.assert_allclose(u, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    assert np.array_equal(np.triu(u), u) and (np.diag(u) > 0).all()
    if not overwrite:
        assert np.array_equal(h, h0)  # the input is left alone


def test_inverse_from_cholesky_and_errors():
    h = _spd(40)
    np.testing.assert_allclose(linalg.inverse_from_cholesky(h), np.linalg.inv(h), rtol=1e-9, atol=1e-12)
    with pytest.raises(np.linalg.LinAlgError):
        linalg.upper_cholesky_of_inverse(-np.eye(3))
    with pytest.raises(np.linalg.LinAlgError):
        linalg.cholesky_lower(np.diag([1.0, -1.0]))


def test_numpy_fallback_agrees(monkeypatch):
    h = _spd(33)
    fast = linalg.upper_cholesky_of_inverse(h)
    monkeypatch.setattr(linalg, "_lapack", None)
    np.testing.assert_allclose(linalg.upper_cholesky_of_inverse(h), fast, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(linalg.inverse_from_cholesky(h), np.linalg.inv(h), rtol=1e-9, atol=1e-12)


def test_sparsegpt_factor_dampens_dead_and_indefinite():
    h = _spd(20)
    h[:, 3] = h[3, :] = 0.0  # a dead channel
    u, dead = inverse_hessian_factor(h, 0.01)
    assert dead.tolist() == [i == 3 for i in range(20)]
    hd = h.copy()
    hd[3, 3] = 1.0
    hd[np.diag_indices(20)] += 0.01 * np.mean(np.diag(hd))
    np.testing.assert_allclose(u.T @ u, np.linalg.inv(hd), rtol=1e-8, atol=1e-12)
    # indefinite by a little: more dampening makes it positive definite instead of failing
    bad = _spd(10) - 1.05 * np.linalg.eigvalsh(_spd(10))[0] * np.eye(10)
    u, _ = inverse_hessian_factor(bad, 0.01)
    assert np.isfinite(u).all()


@pytest.mark.parametrize("n", [1, 7, 256, 300])
@pytest.mark.parametrize("order", ["C", "F"])
def test_symmetric_from_upper_in_place_and_copied(n, order):
    """The lower triangle comes from the upper one; garbage below the diagonal is ignored; with
    ``overwrite`` the result lives in the input's memory (no n x n temporary), else the input is kept."""
    from pared.passes.calibration.linalg import symmetric_from_upper

    a = np.random.default_rng(n).standard_normal((n, n))
    want = np.triu(a) + np.triu(a, 1).T
    u = np.array(a, order=order)
    kept = u.copy(order=order)
    got = symmetric_from_upper(u, block=64)
    assert got.flags.c_contiguous and np.array_equal(got, want) and np.array_equal(u, kept)
    got = symmetric_from_upper(u, overwrite=True, block=64)
    assert got.flags.c_contiguous and np.shares_memory(got, u) and np.array_equal(got, want)
