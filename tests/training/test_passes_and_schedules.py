"""The training passes (before -> after, text round trip, export) and the numpy mask math."""

from __future__ import annotations

import numpy as np
import pytest

from pared import ir
from pared.backends.reference import run_graph
from pared.compiler.pass_manager import run_pipeline
from pared.passes.base import PassOptionError
from pared.passes.context import PassContext
from pared.passes.train import (
    MaskSchedule,
    TrainExport,
    TrainSparse,
    holds,
    parse_train_pattern,
    rigl_update,
    select_mask,
    training_sites,
)

from .tiny import batches, mlp_graph, weights


def test_train_sparse_inserts_ste_mask_and_the_text_parses_back():
    g = run_pipeline(mlp_graph(weights()), "train_sparse{pattern=2:4,schedule=dynamic,every=5}")
    ops = [e.op for e in g.eqns]
    assert ops.count("ste_mask") == 2 and ops.index("ste_mask") < ops.index("dot_general")
    e = g.eqns[ops.index("ste_mask")]
    assert dict(e.attrs)["backward"] == "srste" and e.attrs["every"] == 5 and e.attrs["pattern"] == "2:4"
    ir.verify(g)
    assert ir.graph_equal(ir.parse(ir.print_graph(g)), g.replace(weights={}))
    m = np.asarray(g.weight("fc1.weight.mask"))
    assert holds(m, parse_train_pattern("2:4"), 0.5) is None
    # the mask keeps the largest |w| of every group of 4
    w = np.abs(weights()["fc1.weight"]).reshape(-1, 4)
    kept = np.sort(np.argsort(-w, axis=1, kind="stable")[:, :2], axis=1)
    np.testing.assert_array_equal(np.sort(np.argwhere(m.reshape(-1, 4))[:, 1].reshape(-1, 2), axis=1), kept)


def test_masked_backward_stores_zeros_and_export_restores_the_encoding():
    ctx = PassContext()
    g = TrainSparse(pattern="2:4").run(mlp_graph(weights()), ctx)
    w, m = np.asarray(g.weight("fc1.weight")), np.asarray(g.weight("fc1.weight.mask"))
    assert not w[m == 0].any()
    out = TrainExport().run(g, ctx)
    assert out.param("fc1.weight").type.encoding == ir.Sparse("nm", n=2, m=4, axis=1)
    assert not any(p.name.endswith(".mask") for p in out.params)
    x, = batches(1)[0]
    np.testing.assert_allclose(run_graph(out, [x])[0], run_graph(g, [x])[0], rtol=1e-6)


def test_train_quant_grid_and_export_codes_reproduce_the_fake_quantized_weight():
    ctx = PassContext()
    g = run_pipeline(mlp_graph(weights()), "train_quant{weights=uint4,group=4}", ctx)
    fq = [e for e in g.eqns if e.op == "fake_quant"]
    assert len(fq) == 2 and len(fq[0].inputs) == 3  # asymmetric: a zero point
    out = TrainExport().run(g, ctx)
    assert [e.op for e in out.eqns].count("qlinear") == 2
    x, = batches(1)[0]
    np.testing.assert_allclose(run_graph(out, [x])[0], run_graph(g, [x])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("recipe, why", [
    ("train_sparse{pattern=2:4,schedule=gradual}", "N:M keeps n of every m"),
    ("train_sparse{pattern=block:2x2,schedule=rigl}", "rigl grows single weights"),
    ("train_sparse{pattern=2:4,sparsity=0.3}", "contradicts"),
    ("train_sparse{pattern=3:3}", "0 < N < M"),
    ("train_quant{weights=int3}", "int4/uint4/int8/uint8"),
])
def test_bad_options_fail_before_any_work(recipe, why):
    with pytest.raises((PassOptionError, ValueError), match=why):
        run_pipeline(mlp_graph(weights()), recipe)


def test_one_shot_sparse_weights_keep_their_zeros():
    g = run_pipeline(mlp_graph(weights()), "sparsify{method=magnitude,sparsity=0.6,granularity=global}")
    t = run_pipeline(g, "train_sparse{sparsity=0.6}")
    for s in training_sites(t):
        np.testing.assert_array_equal(np.asarray(t.weight(s.mask)) != 0, np.asarray(g.weight(s.param)) != 0)


def test_patterns_select_and_check():
    rng = np.random.default_rng(0)
    s = rng.random((8, 16))
    for text, dens in (("unstructured", 0.3), ("2:4", 0.5), ("block:2x4", 0.5), ("fanin", 0.25)):
        p = parse_train_pattern(text)
        m = select_mask(s, p, dens)
        assert holds(m, p, dens) is None, text
    bad = select_mask(s, parse_train_pattern("fanin"), 0.25)
    bad[0, np.argmin(bad[0])] = True
    assert "fan-in differs" in holds(bad, parse_train_pattern("fanin"), 0.25)
    assert "exactly 2" in holds(np.ones((2, 8)), parse_train_pattern("2:4"), 0.5)
    with pytest.raises(ValueError, match="fanin"):
        parse_train_pattern("diagonal")


def test_cubic_schedule_zhu_gupta():
    sch = MaskSchedule(parse_train_pattern("unstructured"), 0.8, "gradual", start=10, end=110, every=10, initial=0.0)
    assert sch.density(0) == pytest.approx(1.0)
    assert sch.density(60) == pytest.approx(1 - (0.8 - 0.8 * 0.5 ** 3))
    assert sch.density(110) == pytest.approx(0.2) and sch.density(500) == pytest.approx(0.2)
    assert [t for t in range(0, 130) if sch.due(t)] == list(range(10, 111, 10))


def test_rigl_keeps_fanin_and_grows_by_gradient():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 12))
    active = select_mask(np.abs(w), parse_train_pattern("fanin"), 0.5)
    g = np.zeros_like(w)
    g[~active] = rng.random(int((~active).sum())) + 10  # inactive connections with large gradients
    new, grown = rigl_update(w * active, active, g, 0.5, per_row=True)
    assert (new.sum(1) == active.sum(1)).all()  # constant fan-in
    assert grown.sum() == 6 * 3 and not (grown & active).any()
    for r in range(6):  # the dropped ones are the smallest |w| of the row's active set
        dropped = active[r] & ~new[r]
        assert np.abs(w[r][dropped]).max() <= np.abs(w[r][active[r] & new[r]]).min()
    sch = MaskSchedule(parse_train_pattern("fanin"), 0.5, "rigl", start=0, end=100, every=10, alpha=0.3)
    assert sch.drop_fraction(0) == pytest.approx(0.3) and sch.drop_fraction(100) == pytest.approx(0.0)
    assert not sch.due(0) and sch.due(10) and not sch.due(100)
