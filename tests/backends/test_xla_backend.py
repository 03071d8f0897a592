"""The XLA backend against the reference interpreter, op by op, plus jit/grad/vmap of lowerings."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from pared.backends.reference.interpreter import run_graph  # noqa: E402
from pared.backends.xla import RULES, graph_params, lower  # noqa: E402
from pared.ir import OPS, GraphBuilder, TensorType  # noqa: E402

RNG = np.random.default_rng(0)


def _f(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _run_both(graph, inputs, atol=1e-5):
    want = run_graph(graph, inputs)
    f = jax.jit(lambda w, *xs: lower(graph)(w, *xs))
    got = f(graph_params(graph), *[jnp.asarray(x) for x in inputs])
    for g, w in zip(got, want):
        assert np.asarray(g).shape == w.shape
        np.testing.assert_allclose(np.asarray(g).astype(np.float64), w.astype(np.float64), atol=atol, rtol=1e-5)


UNARY = ["neg", "abs", "exp", "tanh", "sigmoid", "relu", "silu", "sin", "cos", "erf", "floor", "sign", "log_softmax"]
BINARY = ["add", "sub", "mul", "div", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"]


@pytest.mark.parametrize("op", UNARY)
def test_unary(op):
    b = GraphBuilder()
    x = b.input((3, 5))
    _run_both(b.build(b.op(op, x)), [_f(3, 5)])


@pytest.mark.parametrize("op", ["log", "sqrt", "rsqrt", "reciprocal"])
def test_unary_positive(op):
    b = GraphBuilder()
    x = b.input((3, 5))
    _run_both(b.build(b.op(op, x)), [np.abs(_f(3, 5)) + 0.1])


@pytest.mark.parametrize("op", BINARY)
def test_binary_broadcasting_with_params_and_literals(op):
    b = GraphBuilder()
    x = b.input((2, 3, 4))
    w = b.param("w", _f(4))
    y = b.op(op, b.op("add", x, 0.5), w)
    _run_both(b.build(y), [_f(2, 3, 4)])


@pytest.mark.parametrize(
    "op,attrs",
    [
        ("reduce_sum", {"axes": (1,)}), ("reduce_max", {"axes": (0, 2), "keepdims": True}),
        ("reduce_min", {"axes": (2,)}), ("reduce_mean", {"axes": (1, 2)}), ("reduce_prod", {"axes": (0,)}),
        ("argmax", {"axis": 1}), ("cumsum", {"axis": 2}), ("softmax", {"axis": -1}),
        ("transpose", {"perm": (2, 0, 1)}), ("reshape", {"shape": (6, 4)}),
        ("slice", {"start": (0, 1, 0), "limit": (2, 3, 4), "stride": (1, 1, 2)}),
        ("pad", {"low": (0, 1, 2), "high": (1, 0, 0), "value": -1.0}),
        ("broadcast_in_dim", {"shape": (5, 2, 3, 4), "dims": (1, 2, 3)}),
        ("cast", {"dtype": "bf16"}), ("cast", {"dtype": "i32"}),
        ("clamp", {"min": -0.5, "max": 0.5}), ("gelu", {"approximate": "none"}), ("gelu", {"approximate": "tanh"}),
        ("layer_norm", {"axes": (-1,), "eps": 1e-5}), ("rms_norm", {"axes": (-1,), "eps": 1e-6}),
    ],
)
def test_unary_with_attrs(op, attrs):
    b = GraphBuilder()
    x = b.input((2, 3, 4))
    _run_both(b.build(b.op(op, x, **attrs)), [_f(2, 3, 4)], atol=2e-5)


def test_norms_with_weights_and_batch_norm():
    b = GraphBuilder()
    x = b.input((2, 3, 4, 4))
    y = b.op("layer_norm", x, b.param("w", _f(4)), b.param("b", _f(4)), axes=(-1,), eps=1e-5)
    y = b.op("rms_norm", y, b.param("g", _f(4)), axes=(-1,), eps=1e-6)
    var = b.param("var", np.abs(_f(3)) + 0.5)
    y = b.op("batch_norm", y, b.param("mean", _f(3)), var, b.param("bw", _f(3)), b.param("bb", _f(3)), axis=1, eps=1e-5)
    _run_both(b.build(y), [_f(2, 3, 4, 4)], atol=2e-5)


def test_contractions_conv_and_pooling():
    b = GraphBuilder()
    x = b.input((2, 4, 8, 8))
    w = b.param("w", _f(6, 2, 3, 3))
    y = b.op("conv", x, w, strides=(1, 1), dilation=(1, 1), padding=((1, 1), (1, 1)), groups=2)
    y = b.op("max_pool", y, window=(2, 2), strides=(2, 2), padding=((0, 0), (0, 0)))
    y = b.op("avg_pool", y, window=(3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)
    q = b.op("reshape", y, shape=(2, 6, 16))
    att = b.op("dot_general", q, q, contract=((2,), (2,)), batch=((0,), (0,)))
    _run_both(b.build(att), [_f(2, 4, 8, 8)], atol=1e-4)


def test_take_concat_where_iota():
    b = GraphBuilder()
    ids = b.input((2, 3), "i32")
    table = b.param("emb", _f(10, 4))
    e = b.op("take", table, ids, axis=0)
    i = b.op("iota", shape=(2, 3, 4), axis=2, dtype="f32")
    c = b.op("concat", e, i, axis=2)
    y = b.op("where", b.op("gt", c, 0.0), c, b.op("neg", c))
    _run_both(b.build(y), [np.array([[1, 2, 9], [0, 0, 3]], np.int32)])


def test_int8_dot_with_int32_accumulation_and_quantize_dequantize():
    b = GraphBuilder()
    x = b.input((4, 8))
    s = b.param("s", np.full((4, 2), 0.05, np.float32))
    q = b.op("quantize", x, s, dtype="i8", group_axis=1, group_size=4)
    wq = b.param("wq", RNG.integers(-127, 127, size=(3, 8)).astype(np.int8))
    acc = b.op("dot_general", q, wq, contract=((1,), (1,)), out_dtype="i32")
    dq = b.op("dequantize", q, s, dtype="f32", group_axis=1, group_size=4)
    _run_both(b.build(acc, dq), [_f(4, 8)])


def test_unclaimed_op_falls_back_to_reference(monkeypatch):
    monkeypatch.delitem(RULES, "erf")
    b = GraphBuilder()
    x = b.input((3,))
    _run_both(b.build(b.op("erf", x)), [_f(3)])


def test_every_registered_op_has_a_lowering():
    from pared.backends.xla.lowering import _ensure_rules

    _ensure_rules()  # elementwise rules are registered on first use (they import jax.numpy)
    missing = sorted(set(OPS) - set(RULES) - {"opaque", "fused"})
    assert not missing, f"ops without an XLA rule (they fall back to pure_callback): {missing}"


def test_fused_region():
    inner = GraphBuilder()
    a = inner.input((3, 4))
    region = inner.build(inner.op("relu", inner.op("mul", a, 2.0)))
    b = GraphBuilder()
    x = b.input((3, 4))
    y = b.op("fused", x, regions=[region], kind="elementwise") if "fused" in OPS else x
    _run_both(b.build(y), [_f(3, 4)])


def test_lowering_composes_with_grad_and_vmap():
    b = GraphBuilder()
    x = b.input((5, 4))
    w = b.param("w", _f(3, 4))
    y = b.op("tanh", b.op("dot_general", x, w, contract=((1,), (1,))))
    g = b.build(y)
    f = lower(g)
    params = graph_params(g)
    xs = jnp.asarray(_f(5, 4))

    def loss(p, x):
        return jnp.sum(f(p, x)[0] ** 2)

    def ref(p, x):
        return jnp.sum(jnp.tanh(x @ p["w"].T) ** 2)

    np.testing.assert_allclose(jax.grad(loss)(params, xs)["w"], jax.grad(ref)(params, xs)["w"], rtol=1e-5, atol=1e-6)
    per_row = jax.vmap(lambda r: f(params, jnp.broadcast_to(r, (5, 4)))[0][0])(xs)
    np.testing.assert_allclose(per_row, jnp.tanh(xs @ params["w"].T), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", range(5))
def test_qlinear_matches_reference(case):
    """Weight-only (grouped, asymmetric, bf16 activations) and W8A8 (dynamic, static) layers."""
    from pared.ir import dtypes as DT
    from tests.ir.opinfo_qlinear import qlinear_samples

    samples = qlinear_samples(DT.f32, np.random.default_rng(case))
    sample = samples[case % len(samples)]
    b = GraphBuilder()
    (xt, xv), *rest = sample.args
    x = b.input(list(xv.shape), xt)
    # params typed with the sample's dtypes (i4/u4 values arrive as int8/uint8 arrays)
    params = [b.param(f"p{i}", v, type=TensorType(np.shape(v), t)) for i, (t, v) in enumerate(rest)]
    g = b.build(b.op("qlinear", x, *params, **sample.attrs))
    (ref,) = run_graph(g, [xv])
    out = lower(g)(graph_params(g), xv)
    np.testing.assert_allclose(np.asarray(out[0] if isinstance(out, (tuple, list)) else out), ref, rtol=1e-5, atol=1e-5)


def test_densify_nm_matches_reference():
    from pared.ir import dtypes as DT
    from tests.ir.opinfo_sparse import densify_nm_samples

    for sample in densify_nm_samples(DT.f32, np.random.default_rng(0)):
        (vt, v), (it, idx) = sample.args
        b = GraphBuilder()
        x = b.input(list(v.shape), vt)
        i = b.input(list(idx.shape), it)
        g = b.build(b.densify_nm(x, i, **sample.attrs))
        _run_both(g, [v, idx], atol=0)


def test_topk_mask_matches_reference():
    from pared.ir import dtypes as DT
    from tests.ir.opinfo import OPINFOS

    for dt in (DT.f32, DT.bf16):
        for sample in OPINFOS["topk_mask"].samples(dt, np.random.default_rng(0)):
            ((t, x),) = sample.args
            b = GraphBuilder()
            g = b.build(b.topk_mask(b.input(list(x.shape), t), **sample.attrs))
            _run_both(g, [x], atol=0)
