"""Fusion passes: Before -> Expected IR text, numerics preserved, kernel launches counted."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pared.backends.reference.interpreter import run_graph
from pared.ir import GraphBuilder, parse, verify
from pared.passes.fuse import Fuse, FuseDequant, FuseElementwise, FuseGemmEpilogue, FuseReductions, count_launches
from tests.passes.golden import check_golden

from .blocks import block_inputs, llama_block


def test_elementwise_chain_golden():
    check_golden(FuseElementwise(), """
graph(%0:f32[B,8], %1:f32[8]) {
  %2:f32[B,8] = add(%0, %1)
  %3:f32[B,8] = relu(%2)
  %4:f32[B,8] = mul(%3, 2.0:f32[])
  %5:f32[B] = reduce_sum(%4) {axes=(1,)}
  return %5, %2
}""", """
graph(%0:f32[B,8], %1:f32[8]) {
  %2:f32[B,8], %3:f32[B,8] = fused(%0, %1) {kind="elementwise"} region(%4:f32[B,8], %5:f32[8]) {
    %6:f32[B,8] = add(%4, %5)
    %7:f32[B,8] = relu(%6)
    %8:f32[B,8] = mul(%7, 2.0:f32[])
    return %6, %8
  }
  %9:f32[B] = reduce_sum(%3) {axes=(1,)}
  return %9, %2
}""")


def test_residual_rms_norm_golden():
    check_golden(FuseReductions(), """
graph(%0:f32[T,16], %1:f32[T,16]) {
  param @w:f32[16]
  %2:f32[T,16] = add(%0, %1)
  %3:f32[T,16] = rms_norm(%2, @w) {axes=(1,)}
  %4:f32[T,16] = mul(%3, 0.5:f32[])
  return %4, %2
}""", """
graph(%0:f32[T,16], %1:f32[T,16]) {
  param @w:f32[16]
  %2:f32[T,16], %3:f32[T,16] = fused(%0, %1, @w) {kind="reduction"} region(%4:f32[T,16], %5:f32[T,16], %6:f32[16]) {
    %7:f32[T,16] = add(%4, %5)
    %8:f32[T,16] = rms_norm(%7, %6) {axes=(1,)}
    %9:f32[T,16] = mul(%8, 0.5:f32[])
    return %7, %9
  }
  return %3, %2
}""")


def test_gemm_bias_gelu_residual_golden():
    check_golden(FuseGemmEpilogue(), """
graph(%0:f32[T,16], %1:f32[T,8]) {
  param @w:f32[8,16]
  param @b:f32[8]
  %2:f32[T,8] = dot_general(%0, @w) {contract=((1,),(1,))}
  %3:f32[T,8] = add(%2, @b)
  %4:f32[T,8] = gelu(%3)
  %5:f32[T,8] = add(%1, %4)
  return %5
}""", """
graph(%0:f32[T,16], %1:f32[T,8]) {
  param @w:f32[8,16]
  param @b:f32[8]
  %2:f32[T,8] = fused(%0, @w, @b, %1) {kind="gemm"} region(%3:f32[T,16], %4:f32[8,16], %5:f32[8], %6:f32[T,8]) {
    %7:f32[T,8] = dot_general(%3, %4) {contract=((1,),(1,))}
    %8:f32[T,8] = add(%7, %5)
    %9:f32[T,8] = gelu(%8)
    %10:f32[T,8] = add(%6, %9)
    return %10
  }
  return %2
}""")


def test_dequant_prologue_then_epilogue_golden():
    p = Fuse(reductions=False, elementwise=False)
    check_golden(p, """
graph(%0:f16[T,32]) {
  param @q:i4[8,32]
  param @s:f16[8,2]
  %1:f16[8,32] = dequantize(@q, @s) {dtype=f16, group_axis=1, group_size=16}
  %2:f16[T,8] = dot_general(%0, %1) {contract=((1,),(1,))}
  %3:f16[T,8] = silu(%2)
  return %3
}""", """
graph(%0:f16[T,32]) {
  param @q:i4[8,32]
  param @s:f16[8,2]
  %1:f16[T,8] = fused(@q, @s, %0) {kind="dequant_gemm"} region(%2:i4[8,32], %3:f16[8,2], %4:f16[T,32]) {
    %5:f16[8,32] = dequantize(%2, %3) {dtype=f16, group_axis=1, group_size=16}
    %6:f16[T,8] = dot_general(%4, %5) {contract=((1,),(1,))}
    %7:f16[T,8] = silu(%6)
    return %7
  }
  return %1
}""")


def test_dequant_not_folded_when_groups_run_along_n():
    g = parse("""
graph(%0:f32[T,32]) {
  param @q:i8[8,32]
  param @s:f32[1,32]
  %1:f32[8,32] = dequantize(@q, @s) {dtype=f32, group_axis=0, group_size=8}
  %2:f32[T,8] = dot_general(%0, %1) {contract=((1,),(1,))}
  return %2
}""")
    assert FuseDequant()(g) is g


def test_multi_use_gemm_output_is_not_fused():
    g = parse("""
graph(%0:f32[T,16]) {
  param @w:f32[8,16]
  %1:f32[T,8] = dot_general(%0, @w) {contract=((1,),(1,))}
  %2:f32[T,8] = relu(%1)
  return %2, %1
}""")
    assert FuseGemmEpilogue()(g) is g


def test_no_cycle_through_an_outside_op():
    """mul(add(x), dot(add(x))): fusing mul into add's cluster would put dot in between."""
    b = GraphBuilder()
    x = b.input([4, 8])
    w = b.param("w", np.eye(8, dtype=np.float32))
    a = b.exp(x)
    y = b.mul(b.add(a, 1.0), b.dot_general(a, w, contract=((1,), (1,))))
    g = b.build(y)
    f = FuseElementwise()(g)
    verify(f)
    ins = [np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)]
    np.testing.assert_allclose(run_graph(f, ins)[0], run_graph(g, ins)[0], rtol=1e-6)


def test_transformer_block_launches_and_numerics():
    g = llama_block()
    f = Fuse()(g)
    verify(f)
    assert parse(str(f)) is not None
    kinds = sorted(e.attrs["kind"] for e in f.eqns if e.op == "fused")
    assert kinds == ["gemm", "gemm", "gemm", "reduction"]  # o+residual, SwiGLU, down+residual, softmax
    assert count_launches(g) == 18 and count_launches(f) == 11
    ins = block_inputs(T=6)
    np.testing.assert_allclose(run_graph(f, ins)[0], run_graph(g, ins)[0], rtol=1e-6, atol=1e-6)


def test_w8a8_block_per_token_quantize_feeds_int8_gemm():
    b = GraphBuilder()
    x = b.input(["T", 16])
    w1, b1 = b.param("w1", np.ones((24, 16), np.float32)), b.param("b1", np.zeros(24, np.float32))
    qw2, sw2 = b.param("qw2", np.ones((8, 24), np.int8)), b.param("sw2", np.full(8, 0.01, np.float32))
    h = b.silu(b.add(b.dot_general(x, w1, contract=((1,), (1,))), b1))
    s = b.div(b.reduce_max(b.abs(h), axes=(1,), keepdims=True), 127.0)
    q = b.quantize(h, s, dtype="i8")
    acc = b.dot_general(q, qw2, contract=((1,), (1,)), out_dtype="i32")
    y = b.mul(b.mul(b.cast(acc, dtype="f32"), s), sw2)
    g = b.build(y)
    f = Fuse()(g)
    verify(f)
    assert [e.attrs.get("kind") for e in f.eqns] == ["gemm", "int8_gemm"]
    assert count_launches(g) == 11 and count_launches(f) == 2
    ins = [np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)]
    np.testing.assert_allclose(run_graph(f, ins)[0], run_graph(g, ins)[0], rtol=1e-6)


@given(st.lists(st.sampled_from(["exp", "tanh", "relu", "neg", "add_bias", "mul_x", "softmax", "rms"]), min_size=1,
                max_size=7), st.integers(1, 5))
def test_fusion_preserves_numerics(ops, rows):
    b = GraphBuilder()
    x, bias = b.input(["R", 6]), b.param("bias", np.linspace(-1, 1, 6, dtype=np.float32))
    v = x
    for op in ops:
        if op == "add_bias":
            v = b.add(v, bias)
        elif op == "mul_x":
            v = b.mul(v, x)
        elif op == "softmax":
            v = b.softmax(v)
        elif op == "rms":
            v = b.rms_norm(v, axes=(1,))
        else:
            v = b.op(op, v)
    g = b.build(v)
    f = Fuse()(g)
    verify(f)
    ins = [np.random.default_rng(rows).standard_normal((rows, 6)).astype(np.float32)]
    np.testing.assert_allclose(run_graph(f, ins)[0], run_graph(g, ins)[0], rtol=1e-6, atol=1e-6)
    assert count_launches(f) <= count_launches(g)


@pytest.mark.parametrize("name", ["fuse", "fuse_elementwise", "fuse_reductions", "fuse_gemm_epilogue", "fuse_dequant"])
def test_passes_are_registered(name):
    import pared.passes.fuse  # noqa: F401  (registers the passes)
    from pared.passes import get_pass

    assert get_pass(name).name == name
