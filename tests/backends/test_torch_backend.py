"""The torch backend against the reference interpreter: lowering patterns (op chains, weights as
params, bias fusion; every op alone runs in test_every_op.py), symbolic dims read at run time,
weights as buffers, opaque calls and the reference fallback for ops the table lacks."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pared.backends.reference.interpreter import run_graph  # noqa: E402
from pared.backends.torch import lower  # noqa: E402
from pared.ir import GraphBuilder, sym  # noqa: E402
from pared.ir import dims as D  # noqa: E402

RNG = np.random.default_rng(0)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def case(build, *inputs):
    """build(b, *input_vars) -> outputs; inputs are numpy arrays (their shapes give the types)."""
    return build, inputs


CASES = {
    "log_sqrt_rsqrt": case(
        lambda b, x: b.op("log", b.op("sqrt", b.op("rsqrt", b.op("add", b.op("abs", x), 0.5)))), f32(3, 4)
    ),
    "binary_broadcast": case(
        lambda b, x, y: b.op("div", b.op("sub", b.op("mul", x, y), y), b.op("add", b.op("abs", y), 1.0)),
        f32(2, 3, 4),
        f32(3, 1),
    ),
    "literal_first": case(lambda b, x: b.op("sub", b.op("pow", x, 2.0), 1.0), f32(5)),
    "max_min": case(lambda b, x, y: b.op("minimum", b.op("maximum", x, y), 0.5), f32(4, 4), f32(4)),
    "compare_where": case(
        lambda b, x, y: b.op("where", b.op("logical_and", b.op("gt", x, y), b.op("ne", x, 0.0)), x, -1.0),
        f32(3, 3),
        f32(3, 3),
    ),
    "cast_clamp": case(lambda b, x: b.op("cast", b.op("clamp", x, min=-0.5, max=0.5), dtype="f64"), f32(6)),
    "reductions": case(
        lambda b, x: b.op(
            "add",
            b.op("reduce_sum", x, axes=(0, 2)),
            b.op("reduce_max", b.op("reduce_mean", x, axes=(2,), keepdims=True), axes=(0, 2)),
        ),
        f32(2, 3, 4),
    ),
    "argmax_cumsum": case(lambda b, x: (b.op("argmax", x, axis=1), b.op("cumsum", x, axis=0)), f32(3, 5)),
    "softmax": case(lambda b, x: b.op("log_softmax", b.op("softmax", x, axis=1), axis=-1), f32(2, 3, 4)),
    "layer_norm": case(
        lambda b, x: b.op("layer_norm", x, b.param("ln.w", f32(4)), b.param("ln.b", f32(4)), axes=(2,), eps=1e-5),
        f32(2, 3, 4),
    ),
    "rms_norm": case(lambda b, x: b.op("rms_norm", x, b.param("n.w", f32(3, 4)), axes=(1, 2), eps=1e-6), f32(2, 3, 4)),
    "batch_norm": case(
        lambda b, x: b.op(
            "batch_norm",
            x,
            b.param("m", f32(3)),
            b.param("v", np.abs(f32(3)) + 0.5),
            b.param("w", f32(3)),
            b.param("bb", f32(3)),
            axis=1,
            eps=1e-5,
        ),
        f32(2, 3, 4, 4),
    ),
    "linear_bias": case(
        lambda b, x: b.op(
            "add", b.op("dot_general", x, b.param("fc.w", f32(5, 4)), contract=((2,), (1,))), b.param("fc.b", f32(5))
        ),
        f32(2, 3, 4),
    ),
    "matmul_kn": case(lambda b, x: b.op("dot_general", x, b.param("w", f32(4, 6)), contract=((1,), (0,))), f32(3, 4)),
    "batched_qk": case(
        lambda b, q, k: b.op("dot_general", q, k, contract=((3,), (3,)), batch=((0, 1), (0, 1))),
        f32(2, 2, 3, 4),
        f32(2, 2, 5, 4),
    ),
    "batched_pv": case(
        lambda b, p, v: b.op("dot_general", p, v, contract=((3,), (2,)), batch=((0, 1), (0, 1))),
        f32(2, 2, 3, 5),
        f32(2, 2, 5, 4),
    ),
    "dot_einsum": case(
        lambda b, x, y: b.op("dot_general", x, y, contract=((0,), (1,)), batch=((2,), (0,))), f32(4, 3, 2), f32(2, 4, 5)
    ),
    "conv_pool": case(
        lambda b, x: b.op(
            "avg_pool",
            b.op(
                "max_pool",
                b.op(
                    "conv",
                    x,
                    b.param("k", f32(4, 2, 3, 3)),
                    strides=(1, 1),
                    dilation=(1, 1),
                    padding=((1, 1), (1, 1)),
                    groups=1,
                ),
                window=(2, 2),
                strides=(2, 2),
                padding=((0, 0), (0, 0)),
            ),
            window=(3, 3),
            strides=(1, 1),
            padding=((1, 1), (1, 1)),
            count_include_pad=False,
        ),
        f32(1, 2, 8, 8),
    ),
    "conv_asym_pad": case(
        lambda b, x: b.op(
            "conv", x, b.param("k", f32(2, 1, 2)), strides=(2,), dilation=(1,), padding=((0, 1),), groups=2
        ),
        f32(1, 2, 7),
    ),
    "shape_ops": case(
        lambda b, x: b.op(
            "concat",
            b.op(
                "slice",
                b.op("transpose", b.op("reshape", x, shape=(4, 6)), perm=(1, 0)),
                start=(1, 0),
                limit=(5, 4),
                stride=(2, 1),
            ),
            b.op("broadcast_in_dim", b.op("reduce_sum", x, axes=(0, 1)), shape=(2, 4), dims=(1,)),
            axis=0,
        ),
        f32(2, 3, 4),
    ),
    "broadcast_middle": case(lambda b, x: b.op("broadcast_in_dim", x, shape=(2, 3, 4), dims=(0, 2)), f32(2, 4)),
    "take_embedding": case(
        lambda b, i: b.op("take", b.param("emb", f32(10, 4)), i, axis=0), np.array([[1, 2], [9, 0]], dtype=np.int64)
    ),
    "take_axis1": case(lambda b, x, i: b.op("take", x, i, axis=1), f32(3, 5, 2), np.array([4, 0, 4], dtype=np.int64)),
    "topk_mask_where": case(
        lambda b, x: b.op("where", b.op("topk_mask", b.op("abs", x), k=3, axis=-1), x, 0.0), f32(4, 2, 8)
    ),
    "topk_mask_ties_axis0": case(
        lambda b, x: b.op("cast", b.op("topk_mask", b.op("floor", x), k=2, axis=0), dtype="f32"), f32(6, 5)
    ),
    "pad_iota": case(
        lambda b, x: b.op(
            "add",
            b.op("pad", x, low=(1, 0), high=(0, 2), value=0.5),
            b.op("cast", b.op("iota", shape=(3, 5), axis=1, dtype="i32"), dtype="f32"),
        ),
        f32(2, 3),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_op_matches_reference(name):
    build, inputs = CASES[name]
    b = GraphBuilder()
    xs = [b.input(a.shape, {"float32": "f32", "int64": "i64"}[a.dtype.name]) for a in inputs]
    outs = build(b, *xs)
    g = b.build(*(outs if isinstance(outs, tuple) else (outs,)))
    want = run_graph(g, list(inputs))
    gm = lower(g)
    got = gm(*(torch.from_numpy(a) for a in inputs))
    for w, o in zip(want, got):
        np.testing.assert_allclose(o.numpy(), w, rtol=1e-5, atol=1e-5)


def test_linear_bias_fuses_into_f_linear():
    b = GraphBuilder()
    x = b.input((3, 4))
    y = b.op("add", b.op("dot_general", x, b.param("w", f32(5, 4)), contract=((1,), (1,))), b.param("b", f32(5)))
    gm = lower(b.build(y))
    calls = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert calls == [torch.nn.functional.linear]


def test_symbolic_dims_read_at_run_time():
    b = GraphBuilder()
    x = b.input(("B", "S", 4))
    B, S = sym("B"), sym("S")
    flat = b.op("reshape", x, shape=(D.mul(B, S), 4))
    y = b.op("reshape", b.op("dot_general", flat, b.param("w", f32(6, 4)), contract=((1,), (1,))), shape=(B, S, 6))
    z = b.op("add", y, b.op("cast", b.op("iota", shape=(B, S, 6), axis=1, dtype="i64"), dtype="f32"))
    g = b.build(b.op("slice", z, start=(0, 1, 0), limit=(B, S, 6), stride=(1, 1, 1)))
    gm = lower(g)
    for shape in [(2, 3, 4), (5, 7, 4)]:
        a = f32(*shape)
        np.testing.assert_allclose(gm(torch.from_numpy(a))[0].numpy(), run_graph(g, [a])[0], rtol=1e-5, atol=1e-5)


def test_weights_are_buffers_on_device_and_not_copied():
    w = torch.randn(5, 4)
    b = GraphBuilder()
    x = b.input((3, 4))
    g = b.build(b.op("dot_general", x, b.param("w", w.numpy()), contract=((1,), (1,))))
    gm = lower(g, tensors={"w": w}, device="cpu")
    (buf,) = list(gm.buffers())
    assert buf.data_ptr() == w.data_ptr() and not buf.requires_grad


def test_opaque_runs_the_side_table_callable():
    b = GraphBuilder()
    x = b.input((2, 3))
    y = b.op("opaque", x, target="double#0", out_types=(("f32", (2, 3)),))
    g = b.build(b.op("add", y, 1.0))
    gm = lower(g, opaque={"double#0": lambda t: t * 2})
    torch.testing.assert_close(gm(torch.ones(2, 3))[0], torch.full((2, 3), 3.0))
    with pytest.raises(Exception, match="side table"):
        lower(g)


def test_unlowered_op_falls_back_to_reference(monkeypatch):
    from pared.backends import lowering

    monkeypatch.setitem(lowering._TABLE["torch"], "tanh", lambda L, eqn, *inputs: NotImplemented)  # the rule declines
    b = GraphBuilder()
    x = b.input((2, 3))
    g = b.build(b.op("mul", b.op("tanh", x), 2.0))
    gm = lower(g)
    a = f32(2, 3)
    np.testing.assert_allclose(gm(torch.from_numpy(a))[0].numpy(), np.tanh(a) * 2, rtol=1e-6)


def test_fused_region_lowers_inline():
    """A graph after the fusion passes (fused region ops) runs on the torch backend."""
    import numpy as np

    import pared.ir as I
    from pared.backends.reference import run_graph
    from pared.backends.torch import lower
    from pared.compiler.pass_manager import run_pipeline

    rng = np.random.default_rng(0)
    b = I.GraphBuilder()
    x = b.input(["B", 8])
    w = b.param("fc.weight", rng.standard_normal((16, 8)).astype(np.float32))
    bias = b.param("fc.bias", rng.standard_normal(16).astype(np.float32))
    h = b.add(b.dot_general(x, w, contract=((1,), (1,))), bias)
    y = b.mul(b.silu(h), b.tanh(h))
    g = run_pipeline(b.build(b.softmax(y, axis=-1)), "fuse")
    assert any(e.op == "fused" for e in g.eqns)
    xs = rng.standard_normal((3, 8)).astype(np.float32)
    (ref,) = run_graph(g, [xs])
    (out,) = lower(g)(torch.from_numpy(xs))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_triton_target_without_gpu_is_a_clear_error():
    """compress(..., target="triton") on a CPU-only machine raises at once, saying what to do."""
    import pytest

    from pared.backends.triton import TritonUnavailableError
    from pared.compiler.torch_api import compress_torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
    with pytest.raises(TritonUnavailableError, match="target='torch'"):
        compress_torch(m, (torch.randn(2, 8),), recipe="fuse", target="triton")


def test_densify_nm_lowers_to_scatter():
    import numpy as np

    import pared.ir as I
    from pared.backends.reference import run_graph
    from pared.backends.torch import lower
    from pared.ir.ops.sparse import pack_nm

    g = np.random.default_rng(0).standard_normal((6, 4, 4)).astype(np.float32)
    np.put_along_axis(g, np.argsort(np.abs(g), -1)[..., :2], 0.0, -1)  # keep the 2 largest of every 4
    values, idx = pack_nm(g.reshape(6, 16), 2, 4)
    b = I.GraphBuilder()
    v = b.param("w.values", values)
    i = b.param("w.indices", idx)
    x = b.input([3, 16])
    g = b.build(b.dot_general(x, b.densify_nm(v, i, n=2, m=4), contract=((1,), (1,))))
    xs = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    (ref,) = run_graph(g, [xs])
    (out,) = lower(g)(torch.from_numpy(xs))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-6)


def test_sparse_then_quantized_weights_lower_and_match_reference():
    """The demo's recipe shape (2:4 sparsity, then int8/int4 weights) through pared.compress on torch."""
    import numpy as np

    import pared
    from pared.backends.reference import run_graph

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 32)).eval()
    x = torch.randn(4, 64)
    for recipe in (
        "sparsify{method=magnitude,pattern=2:4},quantize{weights=int8}",
        "sparsify{method=magnitude,pattern=2:4},quantize{weights=int4,group=32}",
    ):
        cm, report = pared.compress(m, (x,), recipe=recipe)
        g = cm.graph
        assert sum(e.op == "qlinear" for e in g.eqns) == 2
        assert all(p.type.sparse is not None and p.type.quant is not None for p in g.params if p.type.encoding)
        (ref,) = run_graph(g, [x.numpy()])
        with torch.no_grad():
            out = cm(x)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_whole_graph_check_second_opinion_on_the_per_layer_cost_model(monkeypatch):
    """Layers the per-layer cost model kept dense get a whole-graph timing against all-compressed
    kernels; the faster module is the one returned, and the report says which and by how much."""
    import warnings

    import pared
    import pared.backends.costmodel.measured as measured
    import pared.backends.torch.quantized as tq
    import pared.passes.quantize  # noqa: F401

    monkeypatch.setattr(
        measured, "measure", lambda fn, k, n, baseline=None, rows=measured.PROBE_M, **kw: {m: (2.0, 1.0) for m in rows}
    )
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64)).eval()
    x = torch.randn(4, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm, report = pared.compress(m, (x,), recipe="quantize{weights=int8,act_dtype=bf16}")
    rows = [r for r in report.for_pass("cost_model") if r.name == "whole graph"]
    assert len(rows) == 1 and rows[0].fields["per_layer_kernels"] == "{'dense': 2}"
    f = rows[0].fields
    assert f["per_layer_ms"] > 0 and f["all_compressed_ms"] > 0
    want = {"int8pack": 2} if f["kept"] == "all compressed" else {"dense": 2}
    assert f["kept"] == ("all compressed" if f["all_compressed_ms"] < f["per_layer_ms"] else "per-layer choice")
    assert tq.kernel_choices(cm.compiled.fn) == want
    (ref,) = run_graph(cm.graph, [x.numpy()])
    with torch.no_grad():
        out = cm(x)
    assert np.abs(out.numpy() - ref).max() <= 2e-2 * np.abs(ref).max()
