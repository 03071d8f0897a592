"""Bad input: clear errors or reported skips, never a silent full-precision fallback."""

import numpy as np
import pytest

from pared.compiler.context import make_context
from pared.ir import GraphBuilder, sym, verify
from pared.passes.base import PassOptionError
from pared.passes.calibration import CalibrationError
from pared.passes.quantize import (
    FP8,
    GPTQ,
    GQSA,
    W8A8,
    AdaRound,
    QuantizationError,
    QuantizeWeights,
    SmoothQuant,
    WeightScheme,
)
from pared.passes.quantize.linears import unquantizable_layers

from .conftest import calibration, mlp_graph


def ctx_with(cal=None):
    return make_context(calibration=cal, progress=False)


CALIBRATED = [GPTQ(weights="int4", group=32), AdaRound(weights="int4", group=32, iters=5), GQSA(group=32)]
ALL = [QuantizeWeights(weights="int4", group=32), W8A8(), W8A8(activations="static"), FP8(), *CALIBRATED]


@pytest.mark.parametrize("make", [
    lambda: QuantizeWeights(weights="int9"), lambda: QuantizeWeights(weights="int1"),
    lambda: GPTQ(weights="int16"), lambda: AdaRound(weights="uint9"), lambda: GQSA(weights="int0"),
    lambda: QuantizeWeights(weights="int4", group=0), lambda: AdaRound(weights="fp8"),
    lambda: GPTQ(weights="int4", activations="dynamic"),
])
def test_unsupported_formats_fail_at_construction(make):
    with pytest.raises(QuantizationError, match="bit-width|group size|fp8|needs weights=int8|cannot read"):
        make()


def test_unsupported_bit_width_from_a_pipeline_string():
    with pytest.raises((QuantizationError, PassOptionError), match="unsupported bit-width 12"):
        QuantizeWeights.from_options({"weights": "int12"})
    with pytest.raises(QuantizationError, match="unsupported bit-width 9"):
        WeightScheme(9, True)


@pytest.mark.parametrize("p", [QuantizeWeights(weights="int4", group=32, ragged="skip"),
                               GPTQ(weights="int4", group=32, ragged="skip"),
                               AdaRound(weights="int4", group=32, ragged="skip", iters=5)])
def test_ragged_skip_is_reported_for_every_pass(rng, p):
    g = mlp_graph(rng, k=72)  # 72 % 32 = 8
    ctx = ctx_with(calibration(rng, k=72))
    out = p(g, ctx)
    verify(out)
    skipped = {r.name for r in ctx.report.for_pass(p.name) if "skipped" in r.fields}
    assert skipped == {"q.weight", "k.weight", "up.weight", "gate.weight"}
    assert all("does not divide the input width 72" in r.fields["skipped"]
               for r in ctx.report.for_pass(p.name) if "skipped" in r.fields)
    assert [e.op for e in out.eqns].count("qlinear") == 1  # down (K = 128) only


@pytest.mark.parametrize("p", [GPTQ(weights="int4", group=32, ragged="error"),
                               AdaRound(weights="int4", group=32, ragged="error", iters=5)])
def test_ragged_error_names_the_layer(rng, p):
    with pytest.raises(QuantizationError, match=r"q.weight: group size 32 does not divide the input width 72"):
        p(mlp_graph(rng, k=72), ctx_with(calibration(rng, k=72)))


@pytest.mark.parametrize("p", [GPTQ(weights="int4", group=32), AdaRound(weights="int4", group=32, iters=5)])
def test_ragged_allow_gives_a_short_last_group(rng, p):
    ctx = ctx_with(calibration(rng, k=72))
    out = p(mlp_graph(rng, k=72), ctx)
    assert out.param_types["q.weight.scale"].shape == (72, 3)
    assert not any("skipped" in r.fields for r in ctx.report.for_pass(p.name))


def test_gqsa_block_not_dividing_is_a_reported_skip(rng):
    ctx = ctx_with(calibration(rng, k=72))
    GQSA(block=16, group=24)(mlp_graph(rng, k=72), ctx)
    skipped = {r.name: r.fields["skipped"] for r in ctx.report.for_pass("gqsa") if "skipped" in r.fields}
    assert set(skipped) == {"q.weight", "k.weight", "up.weight", "gate.weight"}
    assert "block 16 does not divide the input width 72" in skipped["q.weight"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("p", CALIBRATED + [W8A8(activations="static"), FP8(activations="static"), SmoothQuant()])
def test_non_finite_calibration_data_is_a_calibration_error(rng, p, bad):
    cal = calibration(rng)
    cal[-1][0][1, 2, 3] = bad
    with pytest.raises(CalibrationError, match="calibration batch 1, input 0 holds NaN or Inf"):
        p(mlp_graph(rng), ctx_with(cal))


@pytest.mark.parametrize("p", CALIBRATED)
def test_missing_calibration_data_is_an_error(rng, p):
    with pytest.raises(CalibrationError, match="needs calibration data"):
        p(mlp_graph(rng), ctx_with(None))


@pytest.mark.parametrize("p", ALL)
def test_non_finite_weights_name_the_layer(rng, p):
    g = mlp_graph(rng)
    w = np.array(g.weight("up.weight"))
    w[3, 4] = np.inf
    with pytest.raises(ValueError, match="up.weight"):
        p(g.with_weights({"up.weight": w}), ctx_with(calibration(rng)))


def odd_layers_graph(rng):
    """One quantizable linear plus four layers no qlinear can replace."""
    b = GraphBuilder()
    x = b.input((sym("B"), 16))
    img = b.input((sym("B"), 3, 8, 8))
    p = lambda n, s: b.param(n, (rng.standard_normal(s) * 0.1).astype(np.float32))
    y = b.dot_general(x, p("fc.weight", (16, 16)), contract=((1,), (1,)))
    t = b.dot_general(y, b.transpose(p("tied.weight", (16, 16)), perm=(1, 0)), contract=((1,), (0,)))
    left = b.dot_general(p("left.weight", (16, 16)), t, contract=((1,), (1,)))  # [16, B]: weight first
    batched = b.dot_general(b.reshape(t, shape=(sym("B"), 4, 4)), p("bmm.weight", (4, 4, 4)),
                            contract=((2,), (1,)), batch=((1,), (0,)))
    c = b.conv(img, p("conv.weight", (4, 3, 3, 3)), strides=(1, 1), dilation=(1, 1), padding=((1, 1), (1, 1)))
    return b.build(left, batched, c)


def test_unquantizable_layers_are_found_with_a_reason(rng):
    why = dict(unquantizable_layers(odd_layers_graph(rng)))
    assert set(why) == {"tied.weight", "left.weight", "bmm.weight", "conv.weight"}
    assert "not a Param but transpose(@tied.weight)" in why["tied.weight"] and "canonicalize" in why["tied.weight"]
    assert "left operand" in why["left.weight"]
    assert "batch axes" in why["bmm.weight"]
    assert "conv layers are not quantized" in why["conv.weight"]


@pytest.mark.parametrize("p", [QuantizeWeights(weights="int8"), W8A8(), FP8(), GPTQ(weights="int8", group=None),
                               AdaRound(weights="int8", group=None, iters=5)])
def test_unquantizable_layers_are_reported_skips_not_silent(rng, p):
    g = odd_layers_graph(rng)
    cal = [(rng.standard_normal((2, 16)).astype(np.float32), rng.standard_normal((2, 3, 8, 8)).astype(np.float32))]
    ctx = ctx_with(cal)
    out = p(g, ctx)
    verify(out)
    assert [e.op for e in out.eqns].count("qlinear") == 1
    rows = {r.name: r.fields for r in ctx.report.for_pass(p.name)}
    for name in ("tied.weight", "left.weight", "bmm.weight", "conv.weight"):
        assert rows[name]["skipped"].startswith("cannot quantize: ") and rows[name]["skipped"].endswith("kept in float")
        assert any(q.name == name for q in out.params)
    # every weight is either quantized or has a row saying why not
    float_weights = {q.name for q in out.params
                     if q.type.rank >= 2 and q.type.dtype.name == "f32" and not q.name.startswith("fc.weight.")}
    assert float_weights <= {n for n, f in rows.items() if "skipped" in f}


def test_ignore_silences_an_unquantizable_layer_on_purpose(rng):
    ctx = ctx_with()
    QuantizeWeights(weights="int8", ignore=("conv",))(odd_layers_graph(rng), ctx)
    assert "conv.weight" not in {r.name for r in ctx.report.for_pass("quantize")}


def test_targets_pattern_matching_no_layer_lists_real_names():
    """Quantize selects layers like every suite: a target that matches nothing is an error."""
    import numpy as np

    import pared.ir as I
    from pared.passes.layer_patterns import LayerPatternError
    from pared.passes.quantize import QuantizeWeights

    b = I.GraphBuilder()
    x = b.input(["B", 32])
    w = b.param("mlp.fc.weight", np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32))
    g = b.build(b.dot_general(x, w, contract=((1,), (1,))))
    with pytest.raises(LayerPatternError, match="mlp.fc.weight"):
        QuantizeWeights(weights="int8", targets=("attn",))(g)
