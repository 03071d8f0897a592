"""Encodings, packing, observers and the quantize/dequantize round trip."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pared.ir.packing import pack_bits, packed_nbytes, unpack_bits
from pared.passes.quantize.grid import rtn_quantize
from pared.passes.quantize.observers import ActivationObserver, weight_range
from pared.passes.quantize.scheme import (
    QuantizationError,
    WeightScheme,
    check_weight,
    dequantize_with,
    grouped,
    parse_weights,
)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("signed", [True, False])
def test_packing_round_trips_every_bit_width(bits, signed):
    rng = np.random.default_rng(bits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    for shape in [(3, 17), (5,), (2, 3, 8)]:
        q = rng.integers(lo, hi + 1, size=shape)
        p = pack_bits(q, bits, signed)
        assert p.dtype == np.uint8 and p.shape[-1] == -(-shape[-1] * bits // 8)
        np.testing.assert_array_equal(unpack_bits(p, bits, signed, shape[-1]), q)


def test_packing_layout_is_low_nibble_first_and_rejects_overflow():
    assert pack_bits(np.array([1, 2]), 4, False).tolist() == [0x21]
    with pytest.raises(ValueError, match="do not fit"):
        pack_bits(np.array([8]), 4, True)
    with pytest.raises(ValueError, match="1..8 bits"):
        pack_bits(np.array([1]), 9, False)


def test_packed_nbytes_uses_the_encoding_bits():
    s = WeightScheme(3, True, 64)
    assert packed_nbytes(s.q_type(10, 100)) == 10 * -(-300 // 8)


@given(
    bits=st.sampled_from([2, 3, 4, 8]), sym=st.booleans(), group=st.sampled_from([None, 16, 24, 64]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_within_half_a_step(bits, sym, group, seed):
    """Every weight inside the quantizer's range comes back within half a step (minmax covers all)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 50)).astype(np.float32) * rng.uniform(0.01, 10)
    s = WeightScheme(bits, sym, group)
    q, scale, zero = rtn_quantize(w, s)
    assert q.dtype == s.dtype.np and q.min() >= s.qmin and q.max() <= s.qmax
    deq = dequantize_with(q, scale, zero, s)
    step = np.repeat(scale, group or 50, axis=1)[:, :50]
    assert (np.abs(deq - w) <= 0.5 * step * (1 + 1e-5) + 1e-7).all()


def test_zero_stays_exact_for_asymmetric_and_sparse_weights(rng):
    w = rng.standard_normal((4, 64)).astype(np.float32) + 3.0  # all positive: range still includes 0
    w[:, ::2] = 0
    for obs in ("minmax", "sparse", "mse"):
        s = WeightScheme(4, False, 32)
        q, scale, zero = rtn_quantize(w, s, obs)
        assert (dequantize_with(q, scale, zero, s)[:, ::2] == 0).all()


def test_fp8_round_trip(rng):
    w = rng.standard_normal((6, 40)).astype(np.float32)
    s = WeightScheme(8, True, None, fp8=True)
    q, scale, zero = rtn_quantize(w, s)
    assert zero is None and np.abs(q).max() <= 448
    deq = dequantize_with(q, scale, zero, s)
    assert np.abs(deq - w).max() <= 2**-4 * np.abs(w).max() + 1e-6  # e4m3: 3 mantissa bits


def test_ragged_groups_pad_only_the_last_group(rng):
    w = rng.standard_normal((2, 70)).astype(np.float32)
    g = grouped(w, 32)
    assert g.shape == (2, 3, 32) and np.isnan(g[:, 2, 6:]).all() and not np.isnan(g[:, :2]).any()
    assert check_weight("w", w, WeightScheme(4, True, 32), "skip").startswith("group size 32 does not divide")
    with pytest.raises(QuantizationError, match="ragged=allow"):
        check_weight("w", w, WeightScheme(4, True, 32), "error")


def test_bad_inputs_are_clear_errors(rng):
    with pytest.raises(QuantizationError, match="unsupported bit-width 9"):
        WeightScheme(9)
    with pytest.raises(QuantizationError, match="unsupported bit-width 1"):
        parse_weights("int1")
    with pytest.raises(QuantizationError, match="cannot read weight format"):
        parse_weights("int4.5")
    w = np.ones((2, 4), np.float32)
    w[0, 1] = np.nan
    with pytest.raises(QuantizationError, match="layer0: weight has 1 NaN/Inf"):
        check_weight("layer0", w, WeightScheme(8))
    obs = ActivationObserver(name="fc1")
    with pytest.raises(QuantizationError, match="fc1 contain NaN/Inf"):
        obs.update(np.array([1.0, np.inf]))


def test_observers_clip_outliers(rng):
    w = rng.standard_normal((4, 1, 256))
    w[:, 0, 0] = 50.0
    s = WeightScheme(4, True, None)
    lo_m, hi_m = weight_range(w, s, "minmax")
    lo_p, hi_p = weight_range(w, s, "percentile", percentile=99.0)
    lo_e, hi_e = weight_range(w, s, "mse")
    assert (hi_p < hi_m).all() and (hi_e <= hi_m).all()
    obs = ActivationObserver("sparse")
    obs.update(np.array([0.0, 0.0, 1.0, 2.0, -3.0]))
    assert obs.range() == (-3.0, 2.0)
