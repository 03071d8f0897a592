"""The calibration engine: statistics, sequential rewrites, planning, backends."""

import numpy as np
import pytest

from pared.backends.executors import make_executor
from pared.ir import GraphBuilder, sym
from pared.ir.build import literal
from pared.passes.calibration import (
    CalibrationRequest,
    Statistic,
    find_weight_sites,
    memory_plan,
    normalize_batches,
    run_calibration,
)

RNG = np.random.default_rng(0)


def attention_like():
    """x -> q/k/v (same activation) -> q+k+v -> o -> head (the head result is never needed)."""
    b = GraphBuilder()
    x = b.input([sym("B"), sym("S"), 16])
    ws = {n: b.param(f"{n}.weight", RNG.standard_normal((16, 16)).astype(np.float32)) for n in ("q", "k", "v", "o")}
    head = b.param("head.weight", RNG.standard_normal((100, 16)).astype(np.float32))
    q, k, v = (b.dot_general(x, ws[n], contract=((2,), (1,))) for n in ("q", "k", "v"))
    h = b.tanh(b.add(b.add(q, k), v))
    o = b.dot_general(h, ws["o"], contract=((2,), (1,)))
    y = b.dot_general(o, head, contract=((2,), (1,)))
    return b.build(y)


def batches(shapes):
    return normalize_batches(attention_like(), [RNG.standard_normal(s).astype(np.float32) for s in shapes])


def collect(backend, g=None, bs=None, names=("hessian", "norms", "mean", "absmax"), sequential=True, rewrite=None):
    g = g or attention_like()
    bs = bs or batches([(2, 5, 16), (1, 7, 16)])  # batches of different sequence lengths
    got = {}

    def rw(site, w, stats):
        got[site.param] = dict(stats)
        return rewrite(site, w, stats) if rewrite else None

    sites = [s for s in find_weight_sites(g) if s.param != "head.weight"]
    res = run_calibration(
        g,
        bs,
        CalibrationRequest("t", sites, lambda s: names, rw, sequential),
        make_executor(g, backend),
        progress=False,
        log=lambda s: None,
    )
    return got, res


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_statistics_are_exact(backend):
    g = attention_like()
    bs = batches([(2, 5, 16), (1, 7, 16)])
    got, res = collect(backend, g, bs)
    x = np.concatenate([b[0].reshape(-1, 16) for b in bs]).astype(np.float64)
    st = got["q.weight"]
    assert st["count"] == 17
    np.testing.assert_allclose(st["hessian"], x.T @ x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(st["norms"], np.linalg.norm(x, axis=0), rtol=1e-5)
    np.testing.assert_allclose(st["mean"], x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st["absmax"], np.abs(x).max(0), rtol=1e-6)
    assert res.backend == backend


def test_torch_and_reference_agree_through_rewrites():
    def halve(site, w, stats):
        return w * 0.5

    g = attention_like()
    bs = batches([(2, 5, 16), (1, 7, 16)])
    a, ra = collect("reference", g, bs, rewrite=halve)
    b, rb = collect("torch", g, bs, rewrite=halve)
    assert set(ra.rewrites) == {"q.weight", "k.weight", "v.weight", "o.weight"}
    for k in a:
        np.testing.assert_allclose(a[k]["hessian"], b[k]["hessian"], rtol=1e-4, atol=1e-3)


def test_shared_activation_computed_once():
    calls = []

    class Counting(Statistic):
        key = "n"

        def update(self, x):
            calls.append(x.shape)

        def result(self):
            return len(calls)

    got, _ = collect("reference", names=("hessian",))
    assert np.array_equal(got["q.weight"]["hessian"], got["v.weight"]["hessian"])  # shared: same object
    assert got["q.weight"]["hessian"] is got["k.weight"]["hessian"]
    got, _ = collect("reference", names=("mean", Counting()))
    assert got["o.weight"]["n"] >= 2


def test_unneeded_equations_do_not_run_and_plan_is_reported():
    g = attention_like()
    bs = batches([(2, 5, 16)])
    sites = [s for s in find_weight_sites(g) if s.param in ("q.weight", "o.weight")]
    req = CalibrationRequest("t", sites, lambda s: ("hessian",), lambda s, w, st: None)
    plan = memory_plan(g, bs, req)
    assert "6 of 8 equations" in plan and "MiB" in plan
    logs = []
    run_calibration(g, bs, req, make_executor(g, "reference"), progress=False, log=logs.append)
    assert "peak live activations" in logs[0]


def test_rewrite_shape_is_checked():
    with pytest.raises(ValueError, match="returned shape"):
        collect("reference", rewrite=lambda s, w, st: w[:1])


def test_conv_sites_use_patches():
    b = GraphBuilder()
    x = b.input([sym("N"), 3, 6, 6])
    w = b.param("conv.weight", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32))
    y = b.conv(x, w, strides=(1, 1), dilation=(1, 1), padding=((1, 1), (1, 1)))
    g = b.build(y)
    (site,) = find_weight_sites(g)
    assert site.kind == "conv" and site.shape2d == (4, 27)
    xs = [RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)]
    out = {}
    for backend in ("reference", "torch"):
        run_calibration(
            g,
            normalize_batches(g, xs),
            CalibrationRequest(
                "t", [site], lambda s: ("hessian",), lambda s, w, st, b=backend: out.update({b: st["hessian"]})
            ),
            make_executor(g, backend),
            progress=False,
            log=lambda s: None,
        )
    np.testing.assert_allclose(out["reference"], out["torch"], rtol=1e-4, atol=1e-3)
    # patches reproduce the convolution: W2 @ patch = output
    from pared.backends.reference.interpreter import run_graph

    p = site.activation_matrix(xs[0])
    yy = (p @ site.weight_matrix(g.weight("conv.weight")).T).reshape(2, 6, 6, 4).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(yy, run_graph(g, xs)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_cross_statistic_pairs_compressed_and_dense_activations(backend):
    """'cross' = X^T X_dense: X from the rewritten model, X_dense from the original weights."""

    def halve(site, w, stats):
        return w * 0.5

    g = attention_like()
    bs = batches([(2, 5, 16), (1, 7, 16)])
    got, _ = collect(backend, g, bs, names=("hessian", "cross"), rewrite=halve)
    x = np.concatenate([b[0].reshape(-1, 16) for b in bs]).astype(np.float64)
    w = {n: np.asarray(g.weight(f"{n}.weight"), np.float64) for n in "qkvo"}
    # before any rewrite both streams agree: cross == hessian at q
    np.testing.assert_allclose(got["q.weight"]["cross"], got["q.weight"]["hessian"], rtol=1e-5, atol=1e-4)
    h_dense = np.tanh(x @ (w["q"] + w["k"] + w["v"]).T)
    h_comp = np.tanh(x @ (0.5 * (w["q"] + w["k"] + w["v"])).T)
    np.testing.assert_allclose(got["o.weight"]["hessian"], h_comp.T @ h_comp, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got["o.weight"]["cross"], h_comp.T @ h_dense, rtol=1e-4, atol=1e-3)


def test_cross_without_sequential_is_the_hessian():
    def halve(site, w, stats):
        return w * 0.5

    got, _ = collect("reference", names=("hessian", "cross"), rewrite=halve, sequential=False)
    np.testing.assert_allclose(got["o.weight"]["cross"], got["o.weight"]["hessian"], rtol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_batches_of_different_sizes_whose_shapes_only_symbols_carry(backend):
    """A value shaped by symbols alone (a literal broadcast to [B, 16]) in batches of 8 and 2 rows:
    each batch gets its own lowering (a short last batch, e.g. ``--n-calib 10``, once reused the
    first batch's and failed with ``symbol B is 2 elsewhere but 8 here``)."""
    b = GraphBuilder()
    x = b.input([sym("B"), 16])
    w = b.param("fc.weight", RNG.standard_normal((16, 16)).astype(np.float32))
    ones = b.broadcast_in_dim(literal(1.0), shape=(sym("B"), 16), dims=())
    y = b.dot_general(b.add(x, ones), w, contract=((1,), (1,)))
    g = b.build(y)
    xs = [RNG.standard_normal((n, 16)).astype(np.float32) for n in (8, 2)]
    got = {}
    (site,) = find_weight_sites(g)
    run_calibration(
        g,
        normalize_batches(g, xs),
        CalibrationRequest("t", [site], lambda s: ("hessian",), lambda s, w, st: got.update(st)),
        make_executor(g, backend),
        progress=False,
        log=lambda s: None,
    )
    x1 = np.concatenate(xs) + 1.0
    assert got["count"] == 10
    np.testing.assert_allclose(got["hessian"], x1.T.astype(np.float64) @ x1, rtol=1e-5)
