"""The cost model: KernelChoice records for every quantized linear, the shared refusal rule of the
measured and roofline choosers, the whole-graph second opinion, and decisions in the report.

No real kernel is timed here: the measured chooser gets injected timings."""

import time
import warnings

import numpy as np
import pytest

from pared.backends.costmodel import (
    DEVICES,
    REPORT_PASS,
    Candidate,
    Decisions,
    Gemm,
    KernelChoice,
    RooflineChooser,
    decisions_of,
    kernel_choices,
)
from pared.ir import GraphBuilder

torch = pytest.importorskip("torch")

from pared.backends.costmodel import measured  # noqa: E402
from pared.backends.costmodel.measured import MeasuredChooser  # noqa: E402
from pared.backends.costmodel.whole_graph import whole_graph_check  # noqa: E402
from pared.backends.torch import lower  # noqa: E402
from pared.passes import Report  # noqa: E402
from pared.passes.quantize import QuantizeWeights  # noqa: E402


def _fake_measure(cand_s: float, base_s: float):
    """A stand-in for :func:`measured.measure`: the same seconds at every row count, and a call log."""
    calls = []

    def fake(fn, k, n, baseline=None, rows=measured.PROBE_M, **kw):
        calls.append((k, n, rows))
        return {m: (cand_s, base_s) for m in rows}

    fake.calls = calls
    return fake


def _mlp(rng, m=4, k=64, hidden=96):
    b = GraphBuilder()
    x = b.input((m, k))
    w1 = b.param("fc1.weight", (rng.standard_normal((hidden, k)) * 0.1).astype(np.float32))
    w2 = b.param("fc2.weight", (rng.standard_normal((k, hidden)) * 0.1).astype(np.float32))
    h = b.relu(b.dot_general(x, w1, contract=((1,), (1,))))
    return b.build(b.dot_general(h, w2, contract=((1,), (1,))))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_every_quantized_linear_gets_a_kernel_choice(rng, monkeypatch):
    fake = _fake_measure(1e-5, 3e-5)  # the int8 kernel measured 3x faster than dense fp32
    monkeypatch.setattr(measured, "measure", fake)
    g = QuantizeWeights(weights="int8", act_dtype="bf16")(_mlp(rng))
    gm = lower(g)
    decisions = decisions_of(gm)
    assert isinstance(gm.pared_kernel_decisions, Decisions) and decisions is gm.pared_kernel_decisions
    qlinears = [e for e in g.eqns if e.op == "qlinear"]
    assert [c.layer for c in decisions] == [e.inputs[1].name for e in qlinears] == ["fc1.weight.q", "fc2.weight.q"]
    for c, (n, k) in zip(decisions, [(96, 64), (64, 96)]):
        assert isinstance(c, KernelChoice)
        assert (c.op, c.shape, c.chosen, c.chooser, c.reason) == ("qlinear", ((4,), n, k), "int8pack", "measured", "")
        assert c.candidates == (("int8pack", (1e-5,)), ("dense", (3e-5,)))
        assert c.ratios == {4: 3.0} and not c.refused
    assert kernel_choices(gm) == {"int8pack": 2}
    assert len(fake.calls) == 2  # two shapes, each timed once, at the graph's own M
    assert all(rows == (4,) for _, _, rows in fake.calls)


def test_measured_chooser_picks_the_faster_of_two_fake_candidates():
    timings = {"a": 2e-5, "b": 5e-5}  # seconds per kernel, keyed by the fake callables' names

    def fake(fn, k, n, baseline=None, rows=()):
        return {m: (timings[fn.__name__], timings[baseline.__name__]) for m in rows}

    def a(x):
        return x

    def b(x):
        return x

    layer = Gemm("w", "qlinear", 8, 16, (1, 128))
    won = MeasuredChooser(timer=fake).choose(layer, [Candidate("a", a, "k"), Candidate("b", b)])
    assert (won.chosen, won.chooser, won.refused) == ("a", "measured", False)
    assert won.seconds("a") == (2e-5, 2e-5) and won.seconds("b") == (5e-5, 5e-5) and won.speedup == 2.5

    timings["a"] = 9e-5
    lost = MeasuredChooser(timer=fake, slower_than="dense fp32").choose(
        layer, [Candidate("a", a, "k"), Candidate("b", b)]
    )
    assert (lost.chosen, lost.refused, lost.reason) == ("b", True, "a measured slower than dense fp32")

    memo: dict = {}
    first = MeasuredChooser(memo, timer=fake).choose(layer, [Candidate("a", a, "k"), Candidate("b", b)])
    timings["a"] = 1e-6  # would win now, but the shape was already timed in this lowering
    again = MeasuredChooser(memo, timer=fake).choose(layer, [Candidate("a", a, "k"), Candidate("b", b)])
    assert first == again and again.chosen == "b"


def test_roofline_refuses_a_compressed_kernel_predicted_slower_than_dense():
    chooser = RooflineChooser(DEVICES["H100"])
    cands = [Candidate("sparse24"), Candidate("dense")]
    prefill = chooser.choose(Gemm("w", "dot_general", 4096, 4096, (2048,), "bf16"), cands)
    assert prefill.chosen == "dense" and prefill.refused and prefill.chooser == "roofline"
    assert prefill.seconds("sparse24")[0] > prefill.seconds("dense")[0]
    assert prefill.reason == "sparse24 predicted slower than dense"
    decode = chooser.choose(Gemm("w", "dot_general", 4096, 4096, (1,), "bf16"), cands)
    assert decode.chosen == "sparse24" and not decode.refused and decode.speedup > 1.2
    both = chooser.choose(Gemm("w", "dot_general", 4096, 4096, (1, 2048), "bf16"), cands)
    assert both.chosen == "dense"  # compressed must not be slower at any of the row counts


def test_roofline_dense_time_is_the_ir_cost_of_the_dot():
    from pared.backends.costmodel.roofline import EFFICIENCY, LAUNCH_S, dense_gemm_cost, gemm_time

    h100 = DEVICES["H100"]
    m, n, k = 16, 4096, 1024
    c = dense_gemm_cost(m, n, k, 2)
    assert (c.flops, c.bytes) == (2 * m * n * k, 2 * (m * k + n * k + m * n))
    ce, me = EFFICIENCY["dense"]
    want = max(c.flops / (h100.bf16_flops * ce), c.bytes / (h100.hbm_bytes_s * me)) + LAUNCH_S
    assert gemm_time("dense", m, n, k, h100) == want


def test_kernel_choice_validates_its_fields():
    with pytest.raises(ValueError, match="chooser"):
        KernelChoice("w", "qlinear", ((1,), 2, 3), (("dense", ()),), "dense", "guessed")
    with pytest.raises(ValueError, match="not one of the candidates"):
        KernelChoice("w", "qlinear", ((1,), 2, 3), (("dense", ()),), "int4pack", "policy")


class _Module:
    """A callable standing in for a lowered module: fixed run time and its decisions."""

    def __init__(self, seconds: float, choices):
        self.seconds = seconds
        self.pared_kernel_decisions = Decisions(list(choices))

    def __call__(self, *xs):
        time.sleep(self.seconds)
        return xs


def test_whole_graph_check_overrules_close_calls_and_resigns_the_decisions():
    kept = KernelChoice(
        "fc1.weight.q",
        "qlinear",
        ((1,), 8, 16),
        (("int4pack", (2e-5,)), ("dense", (1e-5,))),
        "dense",
        "measured",
        "int4pack measured slower than dense fp32",
    )
    forced = KernelChoice(
        "fc1.weight.q",
        "qlinear",
        ((1,), 8, 16),
        (("int4pack", ()), ("dense", ())),
        "int4pack",
        "policy",
        "policy=compressed",
    )
    slow, fast = _Module(0.004, [kept]), _Module(0.0, [forced])
    report = Report()
    fn, caught = whole_graph_check(slow, ["a warning"], (torch.ones(2),), report, lambda: fast)
    assert fn is fast and caught == []
    (row,) = report.for_pass(REPORT_PASS)
    assert row.name == "whole graph" and row.fields["kept"] == "all compressed"
    (c,) = decisions_of(fast)
    assert (c.chosen, c.chooser, c.candidates) == ("int4pack", "whole-graph", kept.candidates)
    assert c.reason.startswith("the whole graph ran faster")

    hopeless = KernelChoice(
        "fc1.weight.q",
        "qlinear",
        ((1,), 8, 16),
        (("int4pack", (5e-4,)), ("dense", (1e-5,))),
        "dense",
        "measured",
        "int4pack measured slower than dense fp32",
    )
    report = Report()
    fn, caught = whole_graph_check(_Module(0.0, [hopeless]), ["w"], (torch.ones(2),), report, lambda: fast)
    assert fn is not fast and caught == ["w"] and len(report) == 0  # 50x slower: not worth re-timing


def test_decisions_reach_the_report_and_the_layer_table(monkeypatch):
    import pared
    import pared.passes.quantize  # noqa: F401
    from pared.tools.report import format_table, layer_table

    monkeypatch.setattr(measured, "measure", _fake_measure(1e-5, 4e-5))
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm, report = pared.compress(m, (torch.randn(4, 64),), recipe="quantize{weights=int8,act_dtype=bf16}")
    rows = {r.name: r.fields for r in report.for_pass(REPORT_PASS)}
    assert set(rows) == {c.layer for c in decisions_of(cm.compiled.fn)} and len(rows) == 2
    for f in rows.values():
        assert f["kernel"] == "int8pack" and f["chooser"] == "measured" and f["op"] == "qlinear" and not f["refused"]
        assert f["M"] == "1,128"  # the captured batch dim is symbolic: timed at both probe sizes
        assert f["int8pack_M1_s"] == f["int8pack_M128_s"] == 1e-5 and f["dense_M128_s"] == 4e-5 and f["M1_ratio"] == 4.0
    table = layer_table(cm.graph, report.to_dicts())
    assert [r.kernel for r in table] == ["int8pack", "int8pack"]
    assert all("cost_model" not in r.method for r in table)
    assert "kernel" in format_table(table).splitlines()[0]
