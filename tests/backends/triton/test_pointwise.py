"""Generated elementwise/reduction kernels against the reference interpreter (odd shapes, masked tails)."""

import numpy as np
import pytest

from pared.backends.triton import PointwiseKernel
from pared.ir import GraphBuilder
from pared.passes.fuse import Fuse

from .regions import check, to_bf16_grid

RNG = np.random.default_rng(0)


def _arr(shape, dtype="f32"):
    a = RNG.standard_normal(shape).astype(np.float32)
    return a.astype(np.float16) if dtype == "f16" else a


def test_elementwise_chain_with_broadcasts():
    b = GraphBuilder()
    x, bias, row, sc = b.input([3, 5, 37]), b.input([37]), b.input([3, 5, 1]), b.input([1, 5, 37])
    y = b.gelu(b.add(b.mul(x, sc), bias), approximate="tanh")
    z = b.where(b.gt(y, row), b.tanh(y), b.clamp(b.sigmoid(y), min=0.1, max=0.9))
    w = b.pow(b.sub(z, 0.5), 2.0)
    region = b.build(w, y)  # two outputs
    arrays = [_arr((3, 5, 37)), _arr((37,)), _arr((3, 5, 1)), _arr((1, 5, 37))]
    check(PointwiseKernel(region), region, arrays, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["exp", "log", "sqrt", "rsqrt", "relu", "silu", "sin", "cos", "erf", "reciprocal",
                                "floor", "sign", "abs", "neg"])
def test_unary_ops(op):
    b = GraphBuilder()
    x = b.input([2, 19])
    region = b.build(b.op(op, b.add(x, 0.0)))
    a = np.abs(_arr((2, 19))) + 0.1 if op in ("log", "sqrt", "rsqrt") else _arr((2, 19))
    check(PointwiseKernel(region), region, [a], rtol=2e-6, atol=2e-6)


def test_casts_quantize_dequantize_fp16():
    b = GraphBuilder()
    x, s = b.input([4, 33], "f16"), b.input([4, 1], "f16")
    q = b.quantize(x, s, dtype="i8")
    y = b.dequantize(q, s, dtype="f16")
    region = b.build(q, b.cast(b.mul(y, 2.0), dtype="f32"), b.cast(b.mul(x, 40.0), dtype="i8"))
    arrays = [(_arr((4, 33)) * 3).astype(np.float16), np.full((4, 1), 0.05, np.float16)]
    check(PointwiseKernel(region), region, arrays, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(2, 3, 17), (5, 64), (1, 1)])
def test_softmax_region(shape):
    b = GraphBuilder()
    x, m = b.input(list(shape)), b.input([shape[-1]])
    region = b.build(b.softmax(b.add(b.mul(x, 0.3), m)), b.log_softmax(x))
    check(PointwiseKernel(region, "reduction"), region, [_arr(shape), _arr((shape[-1],))], rtol=1e-5, atol=1e-6)


def test_residual_rms_norm_and_layer_norm():
    b = GraphBuilder()
    x, r, w, bias = b.input([6, 45]), b.input([6, 45]), b.input([45]), b.input([45])
    h = b.add(x, r)
    region = b.build(h, b.rms_norm(h, w, axes=(1,), eps=1e-6), b.layer_norm(h, w, bias, axes=(-1,), eps=1e-5))
    check(PointwiseKernel(region, "reduction"), region, [_arr((6, 45)) for _ in range(2)] + [_arr((45,)), _arr((45,))],
          rtol=1e-4, atol=1e-5)


def test_decomposed_rms_norm_fused_then_generated():
    """HF Llama's RMSNorm (pow, mean, add, rsqrt, mul, mul) becomes one reduction region."""
    b = GraphBuilder()
    x, w = b.input([5, 24]), b.input([24])
    v = b.reduce_mean(b.pow(x, 2.0), axes=(1,), keepdims=True)
    y = b.mul(w, b.mul(x, b.rsqrt(b.add(v, 1e-6))))
    g = Fuse()(b.build(y))
    (e,) = g.eqns
    assert e.op == "fused" and e.attrs["kind"] == "reduction"
    check(PointwiseKernel(e.regions[0], "reduction"), e.regions[0], [_arr((5, 24)), _arr((24,))], rtol=1e-5, atol=1e-5)


def test_per_token_quantize_region_returns_scale():
    b = GraphBuilder()
    x = b.input([7, 40])
    s = b.div(b.reduce_max(b.abs(x), axes=(-1,), keepdims=True), 127.0)
    region = b.build(b.quantize(x, s, dtype="i8"), s)
    check(PointwiseKernel(region, "reduction"), region, [_arr((7, 40))], rtol=0, atol=1e-7)


def test_bf16_values_round_like_the_reference():
    b = GraphBuilder()
    x, y = b.input([3, 21], "bf16"), b.input([3, 21], "bf16")
    region = b.build(b.mul(b.add(x, y), b.exp(y)))
    arrays = [to_bf16_grid(_arr((3, 21))), to_bf16_grid(_arr((3, 21)))]
    import torch

    from pared.backends.reference.interpreter import run_graph

    ref = run_graph(region, arrays)[0].astype(np.float32)
    out = PointwiseKernel(region)(*[torch.from_numpy(a).bfloat16() for a in arrays])[0]
    # the interpreter truncates fp32 -> bf16 (a GPU rounds): allow 2 bf16 ulps
    np.testing.assert_allclose(out.float().numpy(), ref, rtol=3e-2, atol=3e-2)
