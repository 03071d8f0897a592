"""Structured removal: MLP channels and attention heads (MHA and GQA) shrink their weights; the
result equals the dense model with the removed units' consumer columns zeroed; untouched paths
stay exact; groups whose dependent shapes cannot be rewritten are refused with a reason."""

import numpy as np
import pytest

from pared.backends.reference.interpreter import run_graph
from pared.compiler.context import make_context
from pared.compiler.pipeline import parse_pipeline
from pared.ir import GraphBuilder, sym, verify
from pared.passes.layer_patterns import LayerPatternError
from pared.passes.sparsify import StructuredRemoval
from pared.passes.sparsify.channel_groups import find_channel_groups

B, S = sym("B"), sym("S")
RNG = np.random.default_rng(0)


def f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def ctx(cal=None):
    return make_context(calibration=cal, progress=False)


def mlp_with_side_path(d=16, h=32, out=8):
    """x -> fc1 (+b1) -> relu -> fc2 (+b2); and an untouched side output x -> side."""
    b = GraphBuilder()
    x = b.input([B, d])
    hid = b.relu(
        b.add(b.dot_general(x, b.param("fc1.weight", f32(h, d)), contract=((1,), (1,))), b.param("fc1.bias", f32(h)))
    )
    y = b.add(
        b.dot_general(hid, b.param("fc2.weight", f32(out, h)), contract=((1,), (1,))), b.param("fc2.bias", f32(out))
    )
    side = b.dot_general(x, b.param("side.weight", f32(4, d)), contract=((1,), (1,)))
    return b.build(y, side)


def llama_block(e=16, hq=4, hkv=2, dh=4, inter=24):
    """Attention (GQA when hkv < hq, head-aligned reshapes, repeat_kv by broadcast) + gated MLP,
    both with residual adds, on x[B, S, e] (symbolic B, S)."""
    b = GraphBuilder()
    x = b.input([B, S, e])
    rep = hq // hkv

    def heads(name, h):
        y = b.dot_general(x, b.param(f"{name}.weight", f32(h * dh, e, scale=0.5)), contract=((2,), (1,)))
        return b.transpose(b.reshape(y, shape=(B, S, h, dh)), perm=(0, 2, 1, 3))  # (B, h, S, dh)

    q, k, v = heads("q_proj", hq), heads("k_proj", hkv), heads("v_proj", hkv)
    if rep > 1:
        k, v = (
            b.reshape(
                b.broadcast_in_dim(
                    b.reshape(t, shape=(B, hkv, 1, S, dh)), shape=(B, hkv, rep, S, dh), dims=(0, 1, 2, 3, 4)
                ),
                shape=(B, hq, S, dh),
            )
            for t in (k, v)
        )
    s = b.mul(b.dot_general(q, k, contract=((3,), (3,)), batch=((0, 1), (0, 1))), dh**-0.5)
    p = b.softmax(s, axis=-1)
    o = b.reshape(
        b.transpose(b.dot_general(p, v, contract=((3,), (2,)), batch=((0, 1), (0, 1))), perm=(0, 2, 1, 3)),
        shape=(B, S, hq * dh),
    )
    h1 = b.add(x, b.dot_general(o, b.param("o_proj.weight", f32(e, hq * dh, scale=0.5)), contract=((2,), (1,))))
    gate = b.dot_general(h1, b.param("gate_proj.weight", f32(inter, e, scale=0.5)), contract=((2,), (1,)))
    up = b.dot_general(h1, b.param("up_proj.weight", f32(inter, e, scale=0.5)), contract=((2,), (1,)))
    down = b.dot_general(
        b.mul(b.silu(gate), up), b.param("down_proj.weight", f32(e, inter, scale=0.5)), contract=((2,), (1,))
    )
    return b.build(b.add(h1, down))


def removed_units(c, group_name):
    (row,) = [r for r in c.report.for_pass("structured") if r.name == group_name]
    return [int(u) for u in row.fields["removed"].split(",") if u], row.fields


def zero_columns(g, consumer, units, n_units):
    w = np.asarray(g.weight(consumer)).copy()
    block = w.shape[1] // n_units
    for u in units:
        w[:, u * block : (u + 1) * block] = 0
    return g.with_weights({consumer: w})


def test_mlp_channels_removed_equals_zeroed_and_side_path_exact():
    g = mlp_with_side_path()
    c = ctx()
    out = StructuredRemoval(sparsity=0.25)(g, c)
    verify(out)
    assert np.shape(out.weight("fc1.weight")) == (24, 16) and np.shape(out.weight("fc1.bias")) == (24,)
    assert np.shape(out.weight("fc2.weight")) == (8, 24) and out.param("fc2.weight").type.shape == (8, 24)
    removed, row = removed_units(c, "fc1.weight")
    assert len(removed) == 8 and row["kind"] == "channels" and row["units"] == 32
    x = f32(5, 16)
    y, side = run_graph(out, [x])
    y0, side0 = run_graph(zero_columns(g, "fc2.weight", removed, 32), [x])
    np.testing.assert_allclose(y, y0, rtol=1e-5, atol=1e-5)
    assert np.array_equal(side, run_graph(g, [x])[1])  # the untouched path is bit-exact


def test_weight_score_removes_the_smallest_channels():
    g = mlp_with_side_path()
    w1, w2 = np.asarray(g.weight("fc1.weight")).copy(), np.asarray(g.weight("fc2.weight")).copy()
    small = [3, 7, 20, 31]
    w1[small] *= 1e-3
    w2[:, small] *= 1e-3
    g = g.with_weights({"fc1.weight": w1, "fc2.weight": w2})
    c = ctx()
    StructuredRemoval(sparsity=0.125)(g, c)
    assert removed_units(c, "fc1.weight")[0] == small


def test_activation_score_finds_dead_channels():
    """Channels whose relu never fires carry no output energy on data: activation scoring removes
    them even though their weights are large; weight scoring does not."""
    g = mlp_with_side_path()
    dead = [1, 2, 9, 30]
    bias = np.asarray(g.weight("fc1.bias")).copy()
    bias[dead] = -1e3
    w1 = np.asarray(g.weight("fc1.weight")).copy()
    w1[dead] *= 10
    g = g.with_weights({"fc1.bias": bias, "fc1.weight": w1})
    cal = [f32(32, 16) for _ in range(2)]
    c = ctx(cal)
    StructuredRemoval(sparsity=0.125, score="activation")(g, c)
    assert removed_units(c, "fc1.weight")[0] == dead
    c = ctx()
    StructuredRemoval(sparsity=0.125)(g, c)
    assert not set(removed_units(c, "fc1.weight")[0]) & set(dead)


@pytest.mark.parametrize("hq, hkv", [(4, 4), (4, 2)])
def test_heads_and_gated_mlp(hq, hkv):
    g = llama_block(hq=hq, hkv=hkv)
    groups = {gr.name: gr for gr in find_channel_groups(g)}
    attn = groups["q_proj.weight+k_proj.weight+v_proj.weight"]
    assert not attn.refused and attn.kind == "heads" and attn.units == hkv
    mlp = groups["gate_proj.weight+up_proj.weight"]
    assert not mlp.refused and mlp.kind == "channels" and mlp.units == 24
    assert "residual" in " ".join(groups["o_proj.weight"].refused)  # the residual stream stays

    c = ctx()
    out = StructuredRemoval(sparsity=0.5)(g, c)
    verify(out)
    rep = hq // hkv
    assert np.shape(out.weight("q_proj.weight")) == (hq // 2 * 4, 16)
    assert np.shape(out.weight("k_proj.weight")) == (hkv // 2 * 4, 16)
    assert np.shape(out.weight("o_proj.weight")) == (16, hq // 2 * 4)
    assert np.shape(out.weight("down_proj.weight")) == (16, 12) and np.shape(out.weight("up_proj.weight")) == (12, 16)
    heads, _ = removed_units(c, attn.name)
    chans, _ = removed_units(c, mlp.name)
    dense = zero_columns(zero_columns(g, "o_proj.weight", heads, hkv), "down_proj.weight", chans, 24)
    x = f32(2, 5, 16)
    np.testing.assert_allclose(run_graph(out, [x])[0], run_graph(dense, [x])[0], rtol=1e-5, atol=1e-5)
    # the reshape attrs that carried the head count were rewritten
    shapes = [e.attrs["shape"] for e in out.eqns if e.op == "reshape"]
    assert (B, S, hq // 2, 4) in shapes and (B, S, hq // 2 * 4) in shapes
    if rep > 1:
        assert (B, hkv // 2, rep, S, 4) in [e.attrs["shape"] for e in out.eqns if e.op == "broadcast_in_dim"]


def test_kinds_option_selects_heads_only():
    g = llama_block(hq=4, hkv=4)
    out = StructuredRemoval(sparsity=0.5, kinds=("heads",))(g, ctx())
    assert np.shape(out.weight("up_proj.weight")) == (24, 16) and np.shape(out.weight("q_proj.weight")) == (8, 16)


def test_unrewritable_reshape_is_refused_with_a_reason():
    """(B, H*D) -> (B*H, D) merges the channels with the batch axis: the group is refused and
    the graph is left unchanged."""
    b = GraphBuilder()
    x = b.input([3, 8])
    h = b.dot_general(x, b.param("p.weight", f32(12, 8)), contract=((1,), (1,)))
    r = b.reshape(b.reshape(h, shape=(36,)), shape=(3, 12))
    g = b.build(b.dot_general(b.relu(r), b.param("c.weight", f32(5, 12)), contract=((1,), (1,))))
    c = ctx()
    out = StructuredRemoval(sparsity=0.5)(g, c)
    assert out is g
    (row,) = [r for r in c.report.for_pass("structured") if r.name == "p.weight"]
    assert "reshape" in row.fields["skipped"] and "across the channel axis" in row.fields["skipped"]


def test_output_and_tied_weights_are_refused():
    b = GraphBuilder()
    x = b.input([B, 8])
    w = b.param("w.weight", f32(8, 8))
    h = b.relu(b.dot_general(x, w, contract=((1,), (1,))))
    g = b.build(b.dot_general(h, w, contract=((1,), (1,))), h)
    (gr,) = [gr for gr in find_channel_groups(g) if gr.producers[0][0] == "w.weight" and gr.consumers]
    text = " ".join(gr.refused)
    assert "graph output" in text and "used 2 times" in text


def test_options_and_errors():
    (p,) = parse_pipeline("structured{sparsity=0.5,kinds=heads,score=activation}")
    assert p == StructuredRemoval(sparsity=0.5, kinds=("heads",), score="activation")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        StructuredRemoval(sparsity=1.0)
    with pytest.raises(ValueError, match="kinds"):
        StructuredRemoval(kinds=("rows",))
    with pytest.raises(LayerPatternError, match="matches no weight.*fc1.weight"):
        StructuredRemoval(targets=("nosuch",))(mlp_with_side_path(), ctx())
    with pytest.raises(ValueError, match="calibration"):
        StructuredRemoval(score="activation")(mlp_with_side_path(), ctx())


def test_multiple_of_rounds_kept_units_up():
    c = ctx()
    out = StructuredRemoval(sparsity=0.3, multiple_of=8)(mlp_with_side_path(), c)
    assert np.shape(out.weight("fc1.weight"))[0] == 24  # 32 - round(9.6) = 22 -> 24
