"""The sparsify pass on small graphs: encodings, targets, reports, sequential calibration, errors."""

import re

import numpy as np
import pytest

from pared.backends.reference.interpreter import run_graph
from pared.compiler.context import make_context
from pared.compiler.pipeline import parse_pipeline
from pared.ir import Sparse, verify
from pared.passes.calibration import CalibrationError
from pared.passes.sparsify import Sparsify

from .layers import correlated, mlp


def ctx(cal=None, **opts):
    return make_context(calibration=cal, progress=False, **opts)


@pytest.mark.parametrize("method", ["magnitude", "random", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "4:8"])
def test_every_method_reaches_the_pattern(method, pattern):
    g = mlp()
    c = ctx(correlated())
    out = Sparsify(method=method, pattern=pattern)(g, c)
    verify(out)
    for name in ("fc1.weight", "fc2.weight"):
        w = np.asarray(out.weight(name))
        assert (w == 0).mean() == pytest.approx(0.5, abs=1e-9)
        enc = out.param(name).type.encoding
        if pattern == "unstructured":
            assert enc == Sparse("bitmask")
        else:
            n, m = map(int, pattern.split(":"))
            assert enc == Sparse("nm", n=n, m=m, axis=1)
            assert ((w.reshape(w.shape[0], -1, m) != 0).sum(-1) <= n).all()
    rows = c.report.for_pass("sparsify")
    assert [r.name for r in rows] == ["fc1.weight", "fc2.weight"]
    assert all(0 < r.fields["error"] < 1 and r.fields["sparsity"] == pytest.approx(0.5) for r in rows)


def test_data_free_magnitude_without_calibration_and_global():
    g = mlp()
    c = ctx()
    out = Sparsify(method="magnitude", sparsity=0.75, granularity="global")(g, c)
    w1, w2 = (np.asarray(out.weight(n)) for n in ("fc1.weight", "fc2.weight"))
    total = (w1 == 0).sum() + (w2 == 0).sum()
    assert total == pytest.approx(0.75 * (w1.size + w2.size), abs=1)
    thr = max(np.abs(w1[w1 != 0]).min(), np.abs(w2[w2 != 0]).min())
    dropped = np.concatenate(
        [np.abs(np.asarray(g.weight(n)))[np.asarray(out.weight(n)) == 0] for n in ("fc1.weight", "fc2.weight")]
    )
    assert dropped.max() <= thr
    assert "error" not in c.report.rows[0].fields  # no data, no reconstruction error


def test_sparsegpt_beats_magnitude_on_the_model_output():
    g = mlp(d_in=64)
    *cal, test = correlated(n_batches=5, rows=64)  # same distribution, held-out batch
    ref = run_graph(g, [test])[0]

    def err(graph):
        return np.linalg.norm(run_graph(graph, [test])[0] - ref) / np.linalg.norm(ref)

    e = {m: err(Sparsify(method=m, pattern="2:4")(g, ctx(cal))) for m in ("magnitude", "wanda", "sparsegpt")}
    e["sparsegpt+dsnot"] = err(Sparsify(method="sparsegpt", pattern="2:4", dsnot=True)(g, ctx(cal)))
    assert e["sparsegpt"] < e["magnitude"] and e["wanda"] < e["magnitude"]
    assert e["sparsegpt+dsnot"] < e["sparsegpt"] * 1.05



def test_calibrated_solvers_print_an_estimate_first(capsys):
    """SparseGPT/DSnoT print one line with the estimated solver time before calibrating."""
    Sparsify(method="sparsegpt", pattern="2:4", dsnot=True)(mlp(), ctx(correlated()))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[pared sparsify]")]
    assert len(lines) == 1
    assert re.match(r"\[pared sparsify\] estimated (\d+ min )?\d+ s for 2 layers \(.*probe \d+x\d+ in ", lines[0])
    Sparsify(method="magnitude", pattern="2:4")(mlp(), ctx(correlated()))
    assert "[pared sparsify]" not in capsys.readouterr().err

@pytest.mark.parametrize("dsnot", [False, True])
def test_dense_target_reconstructs_the_dense_model_better(dsnot):
    """reconstruct=dense: fc2 is rebuilt against the dense model's output, so it makes up for fc1's
    pruning error; the model output (held-out batch) gets closer to the dense one."""
    g = mlp(d_in=64)
    *cal, test = correlated(n_batches=8, rows=64)
    ref = run_graph(g, [test])[0]

    def err(**kw):
        c = ctx(cal)
        out = Sparsify(method="sparsegpt", pattern="2:4", dsnot=dsnot, **kw)(g, c)
        return np.linalg.norm(run_graph(out, [test])[0] - ref) / np.linalg.norm(ref), c

    e_self, _ = err()
    e_dense, c = err(reconstruct="dense")
    assert e_dense < e_self
    rows = {r.name: r.fields for r in c.report.for_pass("sparsify")}
    assert rows["fc2.weight"]["reconstruct"] == "dense" and rows["fc2.weight"]["sparsity"] == pytest.approx(0.5)


def test_sequential_calibration_sees_pruned_activations():
    g = mlp()
    cal = correlated()
    seen = {}
    from pared.passes.calibration import CalibrationRequest, calibrate, find_weight_sites

    def rewrite(site, w, stats):
        seen[site.param] = stats.mean.copy()
        return np.zeros_like(w) if site.param == "fc1.weight" else None

    sites = find_weight_sites(g)
    calibrate(g, ctx(cal), CalibrationRequest("t", sites, lambda s: ("mean",), rewrite))
    assert np.all(seen["fc2.weight"] == 0)  # fc2 saw relu(x @ 0) = 0
    calibrate(g, ctx(cal), CalibrationRequest("t", sites, lambda s: ("mean",), rewrite, sequential=False))
    assert np.any(seen["fc2.weight"] != 0)


def test_embeddings_and_tied_head_are_skipped():
    g = mlp(d_in=32, d_out=32, embed_vocab=50)
    cal = [np.random.default_rng(0).integers(0, 50, (40,)) for _ in range(2)]
    c = ctx(cal)
    out = Sparsify(method="wanda")(g, c)
    verify(out)
    assert np.array_equal(np.asarray(out.weight("embed.weight")), np.asarray(g.weight("embed.weight")))
    skipped = {r.name: r.fields.get("skipped") for r in c.report if "skipped" in r.fields}
    assert "embed.weight" in skipped
    assert (np.asarray(out.weight("fc1.weight")) == 0).mean() == pytest.approx(0.5)


def test_targets_and_exclude_patterns():
    g = mlp()
    out = Sparsify(targets=r"fc2")(g, ctx())
    assert np.array_equal(np.asarray(out.weight("fc1.weight")), np.asarray(g.weight("fc1.weight")))
    assert (np.asarray(out.weight("fc2.weight")) == 0).any()
    out = Sparsify(exclude=r"fc2")(g, ctx())
    assert np.array_equal(np.asarray(out.weight("fc2.weight")), np.asarray(g.weight("fc2.weight")))


def test_pipeline_string_and_input_not_mutated():
    g = mlp()
    before = np.asarray(g.weight("fc1.weight")).copy()
    (p,) = parse_pipeline("sparsify{method=sparsegpt,pattern=2:4,dsnot=true}")
    assert p == Sparsify(method="sparsegpt", pattern="2:4", dsnot=True)
    p(g, ctx(correlated()))
    assert np.array_equal(np.asarray(g.weight("fc1.weight")), before)


# --- bad input: clear errors before any work --------------------------------------------------


@pytest.mark.parametrize(
    "opts, match",
    [
        (dict(sparsity=1.0), r"\[0, 1\)"),
        (dict(sparsity=-0.1), r"\[0, 1\)"),
        (dict(pattern="4:4"), "0 < N < M"),
        (dict(pattern="6:4"), "0 < N < M"),
        (dict(pattern="2:4", sparsity=0.7), "contradicts"),
        (dict(method="wanda", granularity="global"), "global"),
        (dict(method="wanda", reconstruct="dense"), "reconstruct=dense applies"),
        (dict(method="sparsegpt", reconstruct="teacher"), "valid values are layer and dense"),
    ],
)
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        Sparsify(**opts)


def test_bad_options_from_pipeline_string():
    from pared.compiler.pipeline import PipelineError

    with pytest.raises(PipelineError, match="0 < N < M"):
        parse_pipeline("sparsify{pattern=4:2}")


def _no_engine(*a, **k):
    raise AssertionError("the engine must not run on bad input")


def test_m_not_dividing_the_dim():
    g = mlp(d_in=60)  # 60 % 8 != 0
    with pytest.raises(ValueError, match="multiple of 8"):
        Sparsify(method="sparsegpt", pattern="4:8")(g, ctx(correlated(d=60), calibration_executor=_no_engine))


@pytest.mark.parametrize(
    "cal, match",
    [
        ([], "empty"),
        (None, "needs calibration"),
        ([np.zeros((8, 32), np.float32)], "expected shape"),
        ([np.zeros((8,), np.float32)], "rank"),
        ([np.full((8, 64), np.nan, np.float32)], "NaN"),
        ([(np.zeros((8, 64), np.float32), np.zeros((8, 64), np.float32))], "takes 1 input"),
        (np.zeros((8, 64), np.float32), "sequence of batches"),
    ],
)
def test_bad_calibration(cal, match):
    with pytest.raises((CalibrationError, ValueError), match=match):
        Sparsify(method="wanda")(mlp(), ctx(cal, calibration_executor=_no_engine))


def test_nan_weights():
    g = mlp()
    w = np.asarray(g.weight("fc2.weight")).copy()
    w[0, 0] = np.nan
    g = g.with_weights({"fc2.weight": w})
    with pytest.raises(ValueError, match="fc2.weight.*NaN"):
        Sparsify(method="sparsegpt")(g, ctx(correlated(), calibration_executor=_no_engine))


def test_targets_and_ignore_are_pattern_tuples_like_quantize():
    from pared.passes.layer_patterns import LayerPatternError

    g = mlp()
    (p,) = parse_pipeline("sparsify{targets=(fc1,fc2),ignore=(fc2)}")
    assert p.targets == ("fc1", "fc2") and p.ignore == ("fc2",)
    c = ctx()
    out = p(g, c)
    assert (np.asarray(out.weight("fc1.weight")) == 0).any()
    assert np.array_equal(np.asarray(out.weight("fc2.weight")), np.asarray(g.weight("fc2.weight")))
    assert any(r.name == "fc2.weight" and "ignore" in r.fields.get("skipped", "") for r in c.report)
    assert Sparsify(targets="fc2") == Sparsify(targets=("fc2",))  # a bare string is one pattern
    with pytest.raises(LayerPatternError, match=r"targets='decoder\\\\.layers' matches no weight.*fc1.weight"):
        Sparsify(targets=(r"decoder\.layers",))(g, ctx())
    with pytest.raises(LayerPatternError, match="not a valid regular expression"):
        Sparsify(targets=("fc[",))(g, ctx())
    c = ctx()
    Sparsify(ignore=("nosuch",))(g, c)
    assert any(r.name == "nosuch" and "matches no layer" in r.fields.get("note", "") for r in c.report)
