"""Emulated dtypes round exactly like the real formats."""

from __future__ import annotations

import numpy as np
import pytest

from pared.ir import dtypes as DT


def test_bf16_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 1e3
    x[:4] = [0.0, -0.0, 1e-40, 3.0e38]
    ref = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(DT.round_to(DT.bf16, x), ref)


@pytest.mark.parametrize("name,tdt", [("f8e4m3", "float8_e4m3fn"), ("f8e5m2", "float8_e5m2")])
def test_fp8_matches_torch(name, tdt):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(10_000) * rng.choice([1e-3, 1, 30], 10_000)).astype(np.float32)
    fmax = 448.0 if name == "f8e4m3" else 57344.0
    x = np.clip(x, -fmax, fmax)  # in range: torch and pared agree exactly
    ref = torch.from_numpy(x).to(getattr(torch, tdt)).float().numpy()
    np.testing.assert_array_equal(DT.round_to(DT.get(name), x), ref)


def test_fp8_e4m3_saturates():
    assert DT.round_to(DT.f8e4m3, np.array([1e6, -1e6], np.float32)).tolist() == [448.0, -448.0]


def test_int4_clamps():
    out = DT.round_to(DT.i4, np.array([-9, -8, 7, 8, 3.7]))
    assert out.tolist() == [-8, -8, 7, 7, 3] and out.dtype == np.int8
    assert DT.int_range(DT.u4) == (0, 15)


def test_lookup_errors():
    with pytest.raises(ValueError, match="unknown dtype 'f33'"):
        DT.get("f33")
    with pytest.raises(ValueError):
        DT.from_numpy(np.complex64)
