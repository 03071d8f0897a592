"""The quantization passes on small graphs, against the reference interpreter."""

import numpy as np
import pytest

from pared.backends.reference.interpreter import run_graph
from pared.compiler.context import make_context
from pared.ir import GraphBuilder, parse, print_graph, verify
from pared.ir.ops.qops import quantize_activation
from pared.passes.quantize import (
    FP8,
    GPTQ,
    W8A8,
    QuantizationError,
    QuantizeWeights,
    SmoothQuant,
    gptq_quantize,
    rtn_quantize,
)
from pared.passes.quantize.calibrated import reconstruction_error
from pared.passes.quantize.scheme import WeightScheme, dequantize_with

from .conftest import calibration, mlp_graph


def ctx_with(cal=None):
    return make_context(calibration=cal, progress=False)


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_int8_dot_equals_dequantized_float_dot(rng):
    """qlinear(act=dynamic) == (dequantized x) @ (dequantized w)^T, and is close to the float dot."""
    x = rng.standard_normal((5, 48)).astype(np.float32)
    w = rng.standard_normal((24, 48)).astype(np.float32)
    s = WeightScheme(8)
    q, scale, _ = rtn_quantize(w, s)
    b = GraphBuilder()
    xi = b.input((5, 48))
    y = b.qlinear(xi, b.param("q", q, type=s.q_type(24, 48)), b.param("s", scale), act="dynamic")
    got, = run_graph(b.build(y), [x])
    xq, sx = quantize_activation(x, "i8")
    want = (xq.astype(np.float64) * sx) @ dequantize_with(q, scale, None, s).astype(np.float64).T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert rel(got, x @ w.T) < 0.02


def test_rtn_rewrites_linears_and_stays_close(rng):
    g = mlp_graph(rng)
    x = calibration(rng)[0][0]
    ref, = run_graph(g, [x])
    errs = {}
    for bits in (8, 4):
        ctx = ctx_with()
        out = QuantizeWeights(weights=f"int{bits}", group=32 if bits == 4 else None)(g, ctx)
        verify(out)
        assert [e.op for e in out.eqns].count("qlinear") == 5 and not any(p.name == "q.weight" for p in out.params)
        got, = run_graph(out, [x])
        errs[bits] = rel(got, ref)
        rows = ctx.report.for_pass("quantize")
        assert len(rows) == 5 and all(r.fields["bytes_after"] < r.fields["bytes_before"] for r in rows)
    assert errs[8] < 0.02 and errs[4] < 0.3 and errs[8] < errs[4]


def test_quantized_graph_prints_and_parses_back(rng):
    out = QuantizeWeights(weights="uint4", group=24)(mlp_graph(rng))
    again = parse(print_graph(out))
    assert print_graph(again) == print_graph(out)


def test_ragged_groups_allow_skip_error(rng):
    g = mlp_graph(rng, k=72)  # 72 % 32 = 8: a short last group
    ctx = ctx_with()
    out = QuantizeWeights(weights="int4", group=32)(g, ctx)
    assert [e.op for e in out.eqns].count("qlinear") == 5
    ctx = ctx_with()
    out = QuantizeWeights(weights="int4", group=32, ragged="skip")(g, ctx)
    skipped = [r for r in ctx.report.for_pass("quantize") if "skipped" in r.fields]
    assert {r.name for r in skipped} == {"q.weight", "k.weight", "up.weight", "gate.weight"}  # down has K=128
    with pytest.raises(QuantizationError, match="does not divide the input width 72"):
        QuantizeWeights(weights="int4", group=32, ragged="error")(g, ctx_with())


def test_ignored_layers_are_reported_not_silent(rng):
    ctx = ctx_with()
    out = QuantizeWeights(weights="int8", ignore=("down",))(mlp_graph(rng), ctx)
    assert any(p.name == "down.weight" for p in out.params)
    assert any(r.name == "down.weight" and "skipped" in r.fields for r in ctx.report)


def test_bad_bit_width_and_nan_weights(rng):
    with pytest.raises(QuantizationError, match="unsupported bit-width"):
        QuantizeWeights(weights="int9")
    g = mlp_graph(rng)
    w = np.array(g.weight("k.weight"))
    w[0, 0] = np.nan
    with pytest.raises(QuantizationError, match="k.weight: weight has 1 NaN"):
        QuantizeWeights(weights="int8")(g.with_weights({"k.weight": w}))


def test_gptq_beats_rtn_on_correlated_inputs(rng):
    k = 128
    mix = np.eye(k) + 0.4 * rng.standard_normal((k, k))
    x = rng.standard_normal((1024, k)) @ mix
    x[:, :4] *= 8
    h = x.T @ x
    w = rng.standard_normal((48, k)).astype(np.float32)
    for bits, group, sym in [(4, None, True), (4, 32, False), (3, 64, True)]:
        s = WeightScheme(bits, sym, group)
        for act_order in (True, False):
            q, scale, zero, dq = gptq_quantize(w, h, s, act_order=act_order)
            np.testing.assert_allclose(dequantize_with(q, scale, zero, s), dq, atol=1e-5)
            qr, sr, zr = rtn_quantize(w, s)
            e_gptq = reconstruction_error(w, dq, h)
            e_rtn = reconstruction_error(w, dequantize_with(qr, sr, zr, s), h)
            assert e_gptq < 0.6 * e_rtn, (bits, group, act_order, e_gptq, e_rtn)


def test_gptq_keeps_zeros_of_sparse_weights(rng):
    k = 64
    x = rng.standard_normal((512, k))
    w = rng.standard_normal((16, k)).astype(np.float32)
    w[:, 1::2] = 0  # 50% sparse
    q, scale, zero, dq = gptq_quantize(w, x.T @ x, WeightScheme(4, False, 32))
    assert (dq[:, 1::2] == 0).all()


def _correlated_layer(rng, k=128, n=48):
    mix = np.eye(k) + 0.4 * rng.standard_normal((k, k))
    x = (rng.standard_normal((1024, k)) @ mix) * np.exp(rng.standard_normal(k))  # uneven channel scales
    return rng.standard_normal((n, k)).astype(np.float32), x.T @ x


def test_gptq_weighted_mse_clipping_lowers_layer_error(rng):
    w, h = _correlated_layer(rng)
    s = WeightScheme(4, False, 32)
    for act_order in (True, False):
        errs = {}
        for mw in ("none", "hessian", "obs"):
            q, scale, zero, dq = gptq_quantize(w, h, s, act_order=act_order, observer="mse", mse_weight=mw)
            np.testing.assert_allclose(dequantize_with(q, scale, zero, s), dq, atol=1e-5)
            errs[mw] = reconstruction_error(w, dq, h)
        errs["minmax"] = reconstruction_error(w, gptq_quantize(w, h, s, act_order=act_order)[3], h)
        assert errs["obs"] < 0.97 * errs["minmax"] and errs["obs"] < errs["none"], (act_order, errs)
    with pytest.raises(QuantizationError, match="mse_weight"):
        gptq_quantize(w, h, s, observer="mse", mse_weight="diag")


def test_gptq_refit_lowers_layer_error(rng):
    w, h = _correlated_layer(rng)
    for s in (WeightScheme(4, False, 32), WeightScheme(4, True, 32), WeightScheme(4, True, None)):
        base = reconstruction_error(w, gptq_quantize(w, h, s)[3], h)
        prev = base
        for refit, rounds in (("scale", 1), ("scale_zero", 1), ("scale_zero", 3)):
            q, scale, zero, dq = gptq_quantize(w, h, s, refit=refit, refit_rounds=rounds)
            np.testing.assert_allclose(dequantize_with(q, scale, zero, s), dq, rtol=1e-5, atol=1e-5)
            assert (scale > 0).all()
            e = reconstruction_error(w, dq, h)
            assert e < 0.99 * base and e <= prev * 1.0001, (s, refit, rounds, e, prev, base)
            prev = e
        if not s.symmetric:
            z1 = gptq_quantize(w, h, s, refit="scale")[2]
            assert (z1 == np.rint(z1)).all()  # scale-only refit keeps integer zero points


def test_gptq_refit_keeps_zeros_of_sparse_weights(rng):
    k = 64
    x = rng.standard_normal((512, k))
    w = rng.standard_normal((16, k)).astype(np.float32)
    w[:, 1::2] = 0
    s = WeightScheme(4, False, 32)
    q, scale, zero, dq = gptq_quantize(w, x.T @ x, s, refit="scale_zero", refit_rounds=2)
    assert (dq[:, 1::2] == 0).all() and (zero == np.rint(zero)).all()


def test_gptq_pass_uses_the_calibration_engine(rng):
    g = mlp_graph(rng)
    cal = calibration(rng)
    ctx = ctx_with(cal)
    out = GPTQ(weights="int4", group=32)(g, ctx)
    verify(out)
    rows = [r for r in ctx.report.for_pass("gptq") if "recon_err" in r.fields]
    assert len(rows) == 5 and all(r.fields["recon_err"] < r.fields["recon_err_rtn"] for r in rows)
    rtn = QuantizeWeights(weights="int4", group=32)(g)
    x = cal[0][0]
    ref, = run_graph(g, [x])
    assert rel(run_graph(out, [x])[0], ref) < rel(run_graph(rtn, [x])[0], ref)


def test_gptq_pass_with_clipping_search_and_refit(rng):
    g = mlp_graph(rng)
    cal = calibration(rng)
    ctx = ctx_with(cal)
    out = GPTQ(weights="uint4", group=32, observer="mse", mse_weight="obs", refit="scale_zero", refit_rounds=2)(g, ctx)
    verify(out)
    rows = [r for r in ctx.report.for_pass("gptq") if "recon_err" in r.fields]
    assert len(rows) == 5 and all(r.fields["recon_err"] < r.fields["recon_err_rtn"] for r in rows)
    x = cal[0][0]
    ref, = run_graph(g, [x])
    assert rel(run_graph(out, [x])[0], ref) < rel(run_graph(QuantizeWeights(weights="uint4", group=32)(g), [x])[0], ref)
    with pytest.raises(QuantizationError, match="refit_rounds"):
        GPTQ(weights="uint4", group=32, refit="scale", refit_rounds=0)


def test_gptq_reconstruct_dense_is_closer_to_the_dense_model(rng):
    """reconstruct=dense quantizes each layer toward the dense model's output (a dense shadow stream
    in the engine): at 3 bits the model output on the calibration data gets closer to the dense one."""
    g = mlp_graph(rng)
    cal = calibration(rng, n=4)
    x = np.concatenate([c[0] for c in cal])
    ref, = run_graph(g, [x])
    errs = {}
    for reconstruct in ("layer", "dense"):
        ctx = ctx_with(cal)
        out = GPTQ(weights="uint3", group=32, reconstruct=reconstruct)(g, ctx)
        verify(out)
        errs[reconstruct] = rel(run_graph(out, [x])[0], ref)
    assert errs["dense"] < errs["layer"], errs
    rows = [r for r in ctx.report.for_pass("gptq") if "recon_err" in r.fields]
    assert len(rows) == 5 and all(r.fields["reconstruct"] == "dense" for r in rows)
    with pytest.raises(QuantizationError, match="valid values are layer and dense"):
        GPTQ(weights="uint4", reconstruct="teacher")
    assert GPTQ.from_options({"reconstruct": "dense"}).reconstruct == "dense"


def test_calibration_with_nan_is_an_error(rng):
    cal = calibration(rng)
    cal[1][0][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GPTQ(weights="int4", group=32)(mlp_graph(rng), ctx_with(cal))
    with pytest.raises(ValueError, match="NaN"):
        W8A8(activations="static")(mlp_graph(rng), ctx_with(cal))


def test_smoothquant_leaves_the_float_function_unchanged(rng):
    g = mlp_graph(rng)
    cal = calibration(rng)
    ctx = ctx_with(cal)
    out = SmoothQuant(alpha=0.5)(g, ctx)
    verify(out)
    x = cal[0][0]
    np.testing.assert_allclose(run_graph(out, [x])[0], run_graph(g, [x])[0], rtol=1e-4, atol=1e-5)
    folded = {r.name: r.fields["folded"] for r in ctx.report.for_pass("smoothquant")}
    assert folded["q.weight"].startswith("into layer_norm")
    assert folded["down.weight"].startswith("into output rows of up")
    assert not any(
        e.op == "mul" and any(getattr(a, "name", "").endswith("smooth_inv") for a in e.inputs) for e in out.eqns[:3]
    )


def test_smoothquant_helps_w8a8_with_outliers(rng):
    g = mlp_graph(rng)
    cal = calibration(rng)
    x = cal[0][0]
    (ref,) = run_graph(g, [x])
    plain = W8A8(activations="static")(g, ctx_with(cal))
    smooth = W8A8(activations="static")(SmoothQuant(alpha=0.5)(g, ctx_with(cal)), ctx_with(cal))
    assert rel(run_graph(smooth, [x])[0], ref) < rel(run_graph(plain, [x])[0], ref)


@pytest.mark.parametrize(
    "p",
    [
        W8A8(),
        W8A8(activations="static"),
        FP8(),
        FP8(activations="none"),
        GPTQ(weights="int8", group=None, scheme="sym", activations="dynamic"),
    ],
)
def test_w8a8_and_fp8_variants_verify_and_stay_close(rng, p):
    g = mlp_graph(rng)
    cal = calibration(rng, outliers=False)
    out = p(g, ctx_with(cal))
    verify(out)
    x = cal[0][0]
    assert rel(run_graph(out, [x])[0], run_graph(g, [x])[0]) < 0.08


@pytest.mark.parametrize("opts", [{}, {"steps": 2}, {"score": "wanda", "refit": False}])
def test_gqsa_prunes_blocks_then_quantizes(rng, opts):
    g = mlp_graph(rng)
    cal = calibration(rng)
    ctx = ctx_with(cal)
    from pared.passes.quantize import GQSA

    out = GQSA(sparsity=0.5, block=16, group=32, **opts)(g, ctx)
    verify(out)
    rows = [r for r in ctx.report.for_pass("gqsa") if "density" in r.fields]
    assert len(rows) == 5 and all(abs(r.fields["density"] - 0.5) < 0.05 for r in rows)
    q = out.weights["q.weight.q"]
    z = out.weights["q.weight.zero"]
    deq = (q.astype(np.float32) - np.repeat(z, 32, axis=1)) * np.repeat(out.weights["q.weight.scale"], 32, axis=1)
    assert ((deq.reshape(64, 4, 16) == 0).all(-1).sum(1) == 2).all()  # half the blocks of every row are zero


def test_gqsa_block_choice_and_refit_lower_the_layer_error():
    """The OBS block score and the least-squares refit each lower ||(W - W') X^T|| on correlated inputs."""
    from pared.passes.quantize.gqsa import group_mask
    from pared.passes.sparsify.refit import refit_kept

    from .test_adaround import correlated_hessian

    rng = np.random.default_rng(3)
    h = correlated_hessian(rng, k=96)
    w = rng.standard_normal((48, 96)).astype(np.float32)
    errs = {}
    for score in ("wanda", "obs"):
        keep = group_mask(w, h, 16, 0.5, score)
        assert (keep.reshape(48, 6, 16).all(-1).sum(1) == 3).all()  # exactly half the blocks kept per row
        errs[score] = reconstruction_error(w, w * keep, h)
        errs[score + "+refit"] = reconstruction_error(w, refit_kept(w, w * keep, keep, h, iters=30), h)
    assert errs["obs"] < errs["wanda"]
    assert errs["obs+refit"] < 0.9 * errs["obs"] and errs["wanda+refit"] < 0.9 * errs["wanda"]
    assert errs["obs+refit"] < errs["wanda+refit"]
