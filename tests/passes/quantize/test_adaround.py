"""AdaRound: learned rounding beats round-to-nearest and stays exactly on the quantization grid."""

import numpy as np
import pytest

from pared.backends.reference.interpreter import run_graph
from pared.compiler.context import make_context
from pared.ir import verify
from pared.ir.ops.qops import dequantize_weight
from pared.passes.quantize import AdaRound, QuantizationError, QuantizeWeights, adaround_quantize, rtn_quantize
from pared.passes.quantize.calibrated import reconstruction_error
from pared.passes.quantize.scheme import WeightScheme, dequantize_with

from .conftest import calibration, mlp_graph


def correlated_hessian(rng, k=96, tokens=1024):
    mix = np.eye(k) + 0.4 * rng.standard_normal((k, k))
    x = rng.standard_normal((tokens, k)) @ mix
    x[:, :4] *= 8  # a few outlier channels
    return x.T @ x


@pytest.mark.parametrize(
    "bits,group,sym", [(4, None, True), (4, 32, False), (3, 32, True), (8, 32, True), (4, 40, False)]
)
def test_adaround_beats_rtn_and_stays_on_the_grid(rng, bits, group, sym):
    k = 96  # group 40: a ragged last group of 16
    h = correlated_hessian(rng, k)
    w = rng.standard_normal((32, k)).astype(np.float32)
    s = WeightScheme(bits, sym, group)
    q, scale, zero, dq = adaround_quantize(w, h, s, iters=200)
    qr, sr, zr = rtn_quantize(w, s)
    # same grid as RTN, only the rounding differs, and by at most one step
    np.testing.assert_array_equal(scale, sr)
    if zero is not None:
        np.testing.assert_array_equal(zero, zr)
    assert q.dtype == s.dtype.np and q.min() >= s.qmin and q.max() <= s.qmax
    assert np.abs(q.astype(np.int32) - qr.astype(np.int32)).max() <= 1
    np.testing.assert_array_equal(dq, dequantize_with(q, scale, zero, s))  # exactly on the grid
    e_ada = reconstruction_error(w, dq, h)
    e_rtn = reconstruction_error(w, dequantize_with(qr, sr, zr, s), h)
    assert e_ada < 0.85 * e_rtn, (e_ada, e_rtn)


def test_adaround_rejects_fp8_and_bad_hessians(rng):
    with pytest.raises(QuantizationError, match="fp8"):
        AdaRound(weights="fp8")
    w = rng.standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(QuantizationError, match="Hessian has shape"):
        adaround_quantize(w, np.eye(6), WeightScheme(4))
    h = np.eye(8)
    h[0, 0] = np.inf
    with pytest.raises(QuantizationError, match="NaN/Inf"):
        adaround_quantize(w, h, WeightScheme(4))


def test_adaround_pass_reports_and_matches_its_weights(rng):
    g = mlp_graph(rng)
    cal = calibration(rng)
    ctx = make_context(calibration=cal, progress=False)
    out = AdaRound(weights="uint4", group=32, iters=100)(g, ctx)
    verify(out)
    assert [e.op for e in out.eqns].count("qlinear") == 5
    rows = [r for r in ctx.report.for_pass("adaround") if "recon_err" in r.fields]
    assert len(rows) == 5
    assert all(r.fields["recon_err"] < r.fields["recon_err_rtn"] for r in rows)
    assert all(r.fields["bytes_after"] < r.fields["bytes_before"] for r in rows)
    q, s, z = (out.weights[f"down.weight.{n}"] for n in ("q", "scale", "zero"))
    assert q.dtype == np.uint8 and q.max() <= 15
    assert np.isfinite(dequantize_weight(q, s, z, 32)).all()
    x = cal[0][0]
    (ref,) = run_graph(g, [x])
    err = lambda o: float(np.linalg.norm(run_graph(o, [x])[0] - ref) / np.linalg.norm(ref))
    assert err(out) < err(QuantizeWeights(weights="uint4", group=32)(g))
