"""Weight-only int8/int4, W8A8 int8, 2:4 and 2:4+int4 GEMMs against the reference dequantize math."""

import numpy as np
import pytest
import torch

from pared.backends.triton import GemmKernel, compress_24, compress_24_int4, pack_int4
from pared.ir import GraphBuilder

from .regions import check, dequant_region

RNG = np.random.default_rng(0)


def _q(shape, dtype):
    lo, hi = {"i8": (-128, 127), "u8": (0, 255), "i4": (-8, 7), "u4": (0, 15)}[dtype]
    return RNG.integers(lo, hi + 1, size=shape).astype(np.uint8 if dtype.startswith("u") else np.int8)


@pytest.mark.parametrize("qdtype,group,zero", [("i8", None, False), ("i8", 16, False), ("u8", 16, True),
                                               ("i4", 16, False), ("u4", 8, True), ("i4", None, False)])
def test_weight_only_dequant_gemm(qdtype, group, zero):
    M, N, K = 5, 33, 40  # odd M and N, K not a multiple of the K tile: masked tails everywhere
    region = dequant_region(M, N, K, qdtype, group, zero)
    G = 1 if group is None else -(-K // group)
    arrays = [RNG.standard_normal((M, K)).astype(np.float32), _q((N, K), qdtype),
              (RNG.random((N, G)) * 0.05 + 0.01).astype(np.float32)]
    if zero:
        arrays.append(np.full((N, G), 8 if qdtype == "u4" else 128, np.float32))
    k = GemmKernel(region, "dequant_gemm")
    assert {"int8": qdtype in ("i8", "u8"), "int4": qdtype in ("i4", "u4")}[k.spec.operands[0].fmt]
    check(k, region, arrays, rtol=1e-4, atol=1e-4)


def test_w4a16_fp16():
    M, N, K = 3, 24, 64
    region = dequant_region(M, N, K, "i4", 32, dtype="f16")
    arrays = [RNG.standard_normal((M, K)).astype(np.float16), _q((N, K), "i4"),
              (RNG.random((N, 2)) * 0.05 + 0.01).astype(np.float16)]
    check(GemmKernel(region, "dequant_gemm"), region, arrays, rtol=2e-2, atol=2e-2)


def test_w8a8_int8_gemm_with_scales():
    """int8 x int8 -> int32, then per-token x per-channel scales and a bias: the W8A8 epilogue."""
    M, N, K = 7, 20, 48
    b = GraphBuilder()
    qx, qw = b.input([M, K], "i8"), b.input([N, K], "i8")
    sx, sw, bias = b.input([M, 1], "f32"), b.input([N], "f32"), b.input([N], "f32")
    acc = b.dot_general(qx, qw, contract=((1,), (1,)), out_dtype="i32")
    y = b.add(b.mul(b.mul(b.cast(acc, dtype="f32"), sx), sw), bias)
    region = b.build(y)
    arrays = [_q((M, K), "i8"), _q((N, K), "i8"), RNG.random((M, 1)).astype(np.float32) * 0.01,
              RNG.random(N).astype(np.float32) * 0.01, RNG.standard_normal(N).astype(np.float32)]
    check(GemmKernel(region, "int8_gemm"), region, arrays, rtol=1e-5, atol=1e-5)


def _sparse24(n, k):
    w = RNG.standard_normal((n, k)).astype(np.float32)
    g = w.reshape(n, k // 4, 4)
    drop = np.argsort(np.abs(g), axis=-1)[..., :2]
    np.put_along_axis(g, drop, 0.0, axis=-1)
    return g.reshape(n, k)


def test_compress_24_roundtrip():
    w = torch.from_numpy(_sparse24(6, 16))
    vals, meta = compress_24(w)
    assert vals.shape == (6, 8) and meta.shape == (6, 2) and meta.dtype == torch.uint8
    nib = torch.stack([meta & 15, meta >> 4], -1).reshape(6, 4)  # two groups per byte, low first
    dense = torch.zeros_like(w).reshape(6, 4, 4)
    i0, i1 = (nib & 3).long(), ((nib >> 2) & 3).long()
    v = vals.reshape(6, 4, 2)
    dense.scatter_(-1, i0[..., None], v[..., :1])
    dense.scatter_(-1, i1[..., None], v[..., 1:])
    assert torch.equal(dense.reshape(6, 16), w)
    with pytest.raises(ValueError, match="not 2:4"):
        compress_24(torch.ones(2, 8))


def test_pack_int4_layout():
    q = torch.tensor([[-8, 7, 1, -1, 3]], dtype=torch.int8)
    p = pack_int4(q)
    assert p.tolist() == [[(8 | (7 << 4)), (1 | (15 << 4)), 3]]


@pytest.mark.parametrize("transposed", [True, False])
def test_sparse24_gemm(transposed):
    M, N, K = 5, 18, 32
    b = GraphBuilder()
    x = b.input([M, K])
    w = b.input([N, K] if transposed else [K, N])
    region = b.build(b.dot_general(x, w, contract=((1,), (1 if transposed else 0,))))
    wv = _sparse24(N, K)
    arrays = [RNG.standard_normal((M, K)).astype(np.float32), wv if transposed else wv.T.copy()]
    k = GemmKernel(region, "gemm", formats={0: "sparse24"})
    check(k, region, arrays, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("zero", [False, True])
def test_sparse24_int4_gemm(zero):
    M, N, K, group = 3, 10, 32, 16
    region = dequant_region(M, N, K, "u4" if zero else "i4", group, zero)
    q = _q((N, K), "u4" if zero else "i4").astype(np.int16)
    z = 8 if zero else 0
    g = q.reshape(N, K // 4, 4)
    drop = RNG.permuted(np.tile(np.arange(4), (N, K // 4, 1)), axis=-1)[..., :2]
    np.put_along_axis(g, drop, z, axis=-1)  # pruned elements dequantize to 0
    q = g.reshape(N, K).astype(np.uint8 if zero else np.int8)
    arrays = [RNG.standard_normal((M, K)).astype(np.float32), q, (RNG.random((N, 2)) * 0.1 + 0.01).astype(np.float32)]
    if zero:
        arrays.append(np.full((N, 2), 8, np.float32))
    k = GemmKernel(region, "dequant_gemm", formats={0: "sparse24_int4"})
    check(k, region, arrays, rtol=1e-4, atol=1e-4)
    codes, meta = compress_24_int4(torch.from_numpy(q), torch.from_numpy(arrays[3]) if zero else None, group)
    assert codes.shape == (N, K // 4) and meta.shape == (N, K // 8)
