"""fp32/fp16/bf16 GEMM regions with epilogues against the reference interpreter."""

import numpy as np
import pytest
import torch

from pared.backends.reference.interpreter import run_graph
from pared.backends.triton import GemmKernel
from pared.ir import GraphBuilder
from pared.passes.fuse import FuseGemmEpilogue

from .regions import check, linear_region, to_bf16_grid

RNG = np.random.default_rng(0)


def _a(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("M,N,K,transposed", [(1, 8, 16, True), (5, 33, 40, True), (17, 20, 9, False)])
def test_bare_gemm_odd_shapes(M, N, K, transposed):
    b, x, w, y = linear_region(M, N, K, transposed=transposed)
    region = b.build(y)
    check(GemmKernel(region), region, [_a(M, K), _a(N, K) if transposed else _a(K, N)], rtol=1e-5, atol=1e-5)


def test_gemm_bias_gelu_residual_epilogue_3d_input():
    b = GraphBuilder()
    x, w, bias, res = b.input([2, 3, 24]), b.input([20, 24]), b.input([20]), b.input([2, 3, 20])
    y = b.add(b.gelu(b.add(b.dot_general(x, w, contract=((2,), (1,))), bias), approximate="none"), res)
    region = b.build(y)
    check(GemmKernel(region), region, [_a(2, 3, 24), _a(20, 24), _a(20), _a(2, 3, 20)], rtol=1e-5, atol=1e-5)


def test_swiglu_dual_gemm_from_fusion():
    b = GraphBuilder()
    x = b.input([6, 32])
    wg, wu = b.param("g", _a(40, 32)), b.param("u", _a(40, 32))
    g = b.dot_general(x, wg, contract=((1,), (1,)))
    u = b.dot_general(x, wu, contract=((1,), (1,)))
    graph = FuseGemmEpilogue()(b.build(b.mul(b.silu(g), u)))
    (e,) = graph.eqns
    k = GemmKernel(e.regions[0])
    assert len(k.spec.operands) == 2
    check(k, e.regions[0], [_a(6, 32), graph.weights["g"], graph.weights["u"]], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_precision_gemm_with_bias(dtype):
    M, N, K = 9, 24, 48
    b, x, w, y = linear_region(M, N, K, dtype=dtype)
    bias = b.input([N], dtype)
    region = b.build(b.silu(b.add(y, bias)))
    arrays = [to_bf16_grid(_a(M, K)), to_bf16_grid(_a(N, K) * 0.2), to_bf16_grid(_a(N))]
    ref = run_graph(region, arrays)[0].astype(np.float32)
    tdt = torch.float16 if dtype == "f16" else torch.bfloat16
    out = GemmKernel(region)(*[torch.from_numpy(a).to(tdt) for a in arrays])[0]
    np.testing.assert_allclose(out.float().numpy(), ref, rtol=3e-2, atol=3e-2)


def test_per_token_quantize_epilogue():
    """GEMM + bias + dynamic per-token int8 quantize: the region returns q and the row scales."""
    b = GraphBuilder()
    x, w, bias = b.input([5, 16]), b.param("w", _a(24, 16)), b.param("b", _a(24))
    y = b.add(b.dot_general(x, w, contract=((1,), (1,))), bias)
    s = b.div(b.reduce_max(b.abs(y), axes=(1,), keepdims=True), 127.0)
    q = b.quantize(y, s, dtype="i8")
    graph = FuseGemmEpilogue()(b.build(q, s))
    (e,) = graph.eqns
    assert e.attrs["kind"] == "gemm" and len(e.outputs) == 2
    k = GemmKernel(e.regions[0])
    assert k.spec.rows_in_epilogue
    ref = run_graph(e.regions[0], [_x := _a(5, 16), graph.weights["w"], graph.weights["b"]])
    outs = k(torch.from_numpy(_x), torch.from_numpy(graph.weights["w"]), torch.from_numpy(graph.weights["b"]))
    assert np.abs(outs[0].numpy().astype(int) - ref[0].astype(int)).max() <= 1  # fp32 sum order may flip a tie
    np.testing.assert_allclose(outs[1].numpy(), ref[1], rtol=1e-5)
