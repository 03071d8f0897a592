"""Quantized graphs on the torch backend (real int4/int8 kernels) match the reference interpreter."""

import warnings

import numpy as np
import pytest

from pared.compiler.context import make_context

torch = pytest.importorskip("torch")

from pared.backends.costmodel import decisions_of  # noqa: E402
from pared.backends.reference.interpreter import run_graph  # noqa: E402
from pared.backends.torch import lower  # noqa: E402
from pared.backends.torch.quantized import kernel_choices, use_kernels  # noqa: E402
from pared.passes.quantize import FP8, GPTQ, GQSA, W8A8, AdaRound, QuantizeWeights  # noqa: E402

from .conftest import calibration, mlp_graph  # noqa: E402

CASES = [
    (QuantizeWeights(weights="int4", group=32, act_dtype="bf16"), "int4pack", 2e-2),
    (QuantizeWeights(weights="uint4", group=64, act_dtype="bf16"), "int4pack", 2e-2),
    (QuantizeWeights(weights="int3", group=32), "int4pack", 1e-5),
    (QuantizeWeights(weights="int4"), "int4pack", 1e-5),
    (QuantizeWeights(weights="int8", act_dtype="bf16"), "int8pack", 2e-2),
    (QuantizeWeights(weights="int8", group=32), "dense", 1e-5),
    (W8A8(), "int_mm", 1e-4),
    (W8A8(activations="static"), "int_mm", 1e-4),
    (FP8(), "dense", 1e-4),
    (GPTQ(weights="uint4", group=32), "int4pack", 1e-5),  # refit zeros are real-valued
]


@pytest.mark.parametrize("p,kernel,tol", CASES, ids=[c[0].options_text() for c in CASES])
def test_torch_lowering_matches_reference(rng, p, kernel, tol):
    cal = calibration(rng, k=72, outliers=False)  # K=72: ragged int4 groups and N padding exercised
    g = p(mlp_graph(rng, k=72, hidden=120), make_context(calibration=cal, progress=False))
    x = cal[0][0]
    want, = run_graph(g, [x])
    with use_kernels("compressed"):
        gm = lower(g)
    assert kernel_choices(gm) == {kernel: 5}
    got = gm(torch.from_numpy(x))[0].numpy()
    assert np.abs(got - want).max() <= tol * np.abs(want).max()


def test_cost_model_keeps_dense_when_slower_and_says_so(rng):
    """fp32 activations into the int4 kernel: measured slower than dense fp32 here, kept dense, and
    the decision (not a warning per layer) says why."""
    g = QuantizeWeights(weights="int4", group=32)(mlp_graph(rng))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm = lower(g)
    assert kernel_choices(gm) == {"dense": 5}
    assert all(c.refused and "measured slower than dense" in c.reason for c in decisions_of(gm))
    assert "5 kept on the baseline" in decisions_of(gm).summary()


def test_kept_dense_weight_only_layer_runs_the_measured_fp32_baseline(rng, monkeypatch):
    """A bf16-activation weight-only layer measured slower than dense runs dense fp32 (no bf16 cast
    of its activations, which is what made it slower than dense), within bf16 rounding of the reference."""
    import pared.backends.costmodel.measured as measured
    import pared.backends.torch.quantized as tq

    monkeypatch.setattr(measured, "measure", lambda fn, k, n, baseline=None, rows=measured.PROBE_M, **kw:
                        {m: (2.0, 1.0) for m in rows})
    g = QuantizeWeights(weights="int8", act_dtype="bf16")(mlp_graph(rng))
    gm = lower(g)
    assert kernel_choices(gm) == {"dense": 5}
    assert all("measured slower than dense" in c.reason for c in decisions_of(gm))
    calls = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is tq.dense_linear]
    assert len(calls) == 5 and all(len(n.args) < 3 or n.args[2] is None for n in calls)
    x = calibration(rng)[0][0]
    want, = run_graph(g, [x])
    got = gm(torch.from_numpy(x))[0].numpy()
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()


@pytest.mark.parametrize(
    "p",
    [GQSA(sparsity=0.5, block=16, group=32), AdaRound(weights="uint4", group=32, iters=20, act_dtype="bf16")],
    ids=["gqsa", "adaround"],
)
def test_sparse_quantized_and_adaround_weights_lower_to_torch(rng, p):
    """GQSA's #sparse_quant weights and AdaRound's weights take the int4 kernel like RTN's."""
    cal = calibration(rng, outliers=False)
    g = p(mlp_graph(rng), make_context(calibration=cal, progress=False))
    x = cal[0][0]
    (want,) = run_graph(g, [x])
    with use_kernels("compressed"):
        gm = lower(g)
    choices = kernel_choices(gm)
    # GQSA's block-sparse int4 weights prefer pared's own sparse kernel where it builds
    assert choices in ({"int4pack": 5}, {"sparse_block_u4": 5}) if p.name == "gqsa" else choices == {"int4pack": 5}
    got = gm(torch.from_numpy(x))[0].numpy()
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()


def test_cost_model_times_a_static_graph_at_its_own_rows():
    from pared.backends.costmodel.measured import PROBE_M, probe_rows
    from pared.ir import tensor

    assert probe_rows(tensor((1, 1, 576))) == (1,)  # a decode step: only M=1 matters
    assert probe_rows(tensor((2, 8, 64))) == (16,)
    assert probe_rows(tensor((32, 128, 384))) == (max(PROBE_M),)  # large M: timed where compute-bound
    assert probe_rows(tensor(("B", 128, 384))) == PROBE_M  # symbolic: every probe size


def test_gptq_real_valued_zeros_match_reference_on_xla(rng):
    """GPTQ's least-squares refit stores real-valued zero points: the XLA lowering reads them as the
    reference interpreter does."""
    pytest.importorskip("jax")
    from pared.backends.xla import graph_params
    from pared.backends.xla import lower as xla_lower

    cal = calibration(rng, k=72, outliers=False)
    g = GPTQ(weights="uint4", group=32)(mlp_graph(rng, k=72, hidden=120), make_context(calibration=cal, progress=False))
    zeros = [np.asarray(g.weight(p.name)) for p in g.params if p.name.endswith("zero")]
    assert zeros and any(np.any(z != np.round(z)) for z in zeros)  # the refit did move the zeros
    x = cal[0][0]
    (want,) = run_graph(g, [x])
    out = xla_lower(g)(graph_params(g), x)
    got = np.asarray(out[0] if isinstance(out, (tuple, list)) else out)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
