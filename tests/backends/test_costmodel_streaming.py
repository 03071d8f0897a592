"""The cost model when weights stream from memory (an LLM decode step): a measured roofline floor,
and the int4 kernel offered on bf16 activations for an fp32 layer whose recipe left act_dtype unset.

No real kernel is timed: the measured chooser gets injected timings and bandwidth."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pared.backends.costmodel import (  # noqa: E402
    Candidate,
    Gemm,
    measured,  # noqa: E402
)
from pared.backends.costmodel.measured import MeasuredChooser, llc_bytes, read_bandwidth, streams_weights  # noqa: E402
from pared.backends.torch import lower  # noqa: E402
from pared.backends.torch.quantized import INT4_BF16, kernel_choices  # noqa: E402
from pared.passes.quantize import QuantizeWeights  # noqa: E402
from tests.passes.quantize.conftest import mlp_graph  # noqa: E402


def _timer(seconds: dict):
    """A fake ``measure``: each candidate kernel's hot seconds from ``seconds`` (by its fn), baseline 1e-5."""
    def fake(fn, k, n, baseline=None, rows=measured.PROBE_M, **kw):
        return {m: (seconds[fn], 1e-5) for m in rows}
    return fake


def test_hot_timings_decide_when_the_weights_fit_in_cache():
    layer = Gemm("w", "qlinear", 1024, 1024, (1,))
    c = Candidate("int4pack", "int4", weight_bytes=1024 * 1024 // 2)
    choice = MeasuredChooser(timer=_timer({"int4": 2e-5})).choose(layer, [c, Candidate("dense")])
    assert choice.chosen == "dense" and choice.refused


def test_streamed_weights_charge_each_kernel_for_its_bytes(monkeypatch):
    """Hot, int4 is 2x slower than dense; streamed at 1 GB/s, dense reads 4 MB (4 ms) and int4
    0.5 MB (0.5 ms): int4 wins, and the decision's timings are hot time + stream time."""
    monkeypatch.setattr(measured, "read_bandwidth", lambda: 1e9)
    layer = Gemm("w", "qlinear", 1024, 1024, (1,))
    c = Candidate("int4pack", "int4", weight_bytes=1024 * 1024 // 2)
    choice = MeasuredChooser(timer=_timer({"int4": 2e-5}), cold=True).choose(layer, [c, Candidate("dense")])
    assert choice.chosen == "int4pack" and not choice.refused
    (_, (t4,)), (_, (td,)) = choice.candidates
    assert t4 == pytest.approx(2e-5 + 0.5 * 2**20 / 1e9) and td == pytest.approx(1e-5 + 4 * 2**20 / 1e9)


def test_the_streaming_test_compares_weight_bytes_with_the_llc():
    assert llc_bytes() > 0 and read_bandwidth() > 1e8
    assert not streams_weights(llc_bytes() // 2) and streams_weights(2 * llc_bytes())


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _lower_with(monkeypatch, graph, times: dict, cold: bool):
    """Lower ``graph`` with fake timings: each layer shape times its fp32-activation int4 candidate,
    then its bf16 one (the chooser's order), so calls alternate f32, bf16; baseline 1e-5 s."""
    seen = []

    def timer(fn, k, n, baseline=None, rows=measured.PROBE_M, **kw):
        seen.append(fn)
        return {m: (times["bf16" if len(seen) % 2 == 0 else "f32"], 1e-5) for m in rows}

    monkeypatch.setattr(measured, "measure", timer)
    monkeypatch.setattr(measured, "streams_weights", lambda nbytes: cold)
    import sys

    monkeypatch.setattr(sys.modules["pared.backends.torch.lower"], "streams_weights", lambda nbytes: cold)
    return lower(graph)


def test_an_unset_act_dtype_lets_the_int4_kernel_read_bf16_and_says_so(rng, monkeypatch):
    g = QuantizeWeights(weights="uint4", group=32)(mlp_graph(rng))
    # fp32-activation int4 (first candidate) 50x slower than dense, the bf16 one as fast as dense
    gm = _lower_with(monkeypatch, g, {"f32": 5e-4, "bf16": 1e-5}, cold=True)
    assert kernel_choices(gm) == {INT4_BF16: 5}
    from pared.backends.costmodel import decisions_of

    assert "round their fp32 activations to bf16" in decisions_of(gm).summary()
    x = rng.standard_normal((2, 16, 64)).astype(np.float32)
    from pared.backends.reference.interpreter import run_graph

    (want,) = run_graph(g, [x])
    got = gm(torch.from_numpy(x))[0].numpy()
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()  # bf16 rounding of the activations


def test_an_explicit_f32_act_dtype_never_gets_bf16_activations(rng, monkeypatch):
    g = QuantizeWeights(weights="uint4", group=32, act_dtype="f32")(mlp_graph(rng))
    gm = _lower_with(monkeypatch, g, {"f32": 5e-4, "bf16": 1e-5}, cold=True)
    assert INT4_BF16 not in kernel_choices(gm)


def test_weights_that_fit_in_cache_keep_fp32_activations(rng, monkeypatch):
    g = QuantizeWeights(weights="uint4", group=32)(mlp_graph(rng))
    gm = _lower_with(monkeypatch, g, {"f32": 5e-4, "bf16": 1e-5}, cold=False)
    assert INT4_BF16 not in kernel_choices(gm)
