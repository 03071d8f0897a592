"""fold_qdq: Before -> Expected golden tests and a numerics property test against the interpreter."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pared.backends.reference.interpreter import run_graph
from pared.ir import GraphBuilder, parse, verify
from pared.passes.base import _PASSES
from pared.passes.quantize.fold_qdq import FoldQDQ

from ..golden import check_golden

F = FoldQDQ()


def unchanged(p, text):
    g = parse(text)
    assert p.run(g, None) is g


def test_registered_under_its_name():
    assert _PASSES["fold_qdq"] is FoldQDQ and FoldQDQ.from_options({"fake_quant": "true"}).fake_quant


def test_dequantize_quantize_with_the_same_params_is_the_identity():
    check_golden(
        F,
        """graph(%0:f32[4,8], %1:f32[4,1], %2:f32[4,1]) {
          %3:u8[4,8] = quantize(%0, %1, %2) {dtype=u8}
          %4:f32[4,8] = dequantize(%3, %1, %2) {dtype=f32}
          %5:u8[4,8] = quantize(%4, %1, %2) {dtype=u8}
          return %5, %4
        }""",
        """graph(%0:f32[4,8], %1:f32[4,1], %2:f32[4,1]) {
          %3:u8[4,8] = quantize(%0, %1, %2) {dtype=u8}
          %4:f32[4,8] = dequantize(%3, %1, %2) {dtype=f32}
          return %3, %4
        }""",
    )


def test_grouped_params_fold_and_narrow_ints_fold_through_bf16():
    check_golden(
        F,
        """graph(%0:i4[4,40]) {
          param @s:f32[4,3]
          %1:bf16[4,40] = dequantize(%0, @s) {dtype=bf16, group_axis=1, group_size=16}
          %2:i4[4,40] = quantize(%1, @s) {dtype=i4, group_axis=1, group_size=16}
          return %2
        }""",
        """graph(%0:i4[4,40]) {
          param @s:f32[4,3]
          return %0
        }""",
    )


def test_pairs_that_are_not_identical_stay():
    # different scales
    unchanged(F, """graph(%0:i8[4,8], %1:f32[], %2:f32[]) {
      %3:f32[4,8] = dequantize(%0, %1) {dtype=f32}
      %4:i8[4,8] = quantize(%3, %2) {dtype=i8}
      return %4
    }""")
    # a zero point on one side only
    unchanged(F, """graph(%0:u8[4,8], %1:f32[], %2:f32[]) {
      %3:f32[4,8] = dequantize(%0, %1, %2) {dtype=f32}
      %4:u8[4,8] = quantize(%3, %1) {dtype=u8}
      return %4
    }""")
    # another dtype
    unchanged(F, """graph(%0:i8[4,8], %1:f32[]) {
      %3:f32[4,8] = dequantize(%0, %1) {dtype=f32}
      %4:i4[4,8] = quantize(%3, %1) {dtype=i4}
      return %4
    }""")
    # int8 through bf16 (8 significant bits) does not always round back
    unchanged(F, """graph(%0:i8[4,8], %1:f32[]) {
      %3:bf16[4,8] = dequantize(%0, %1) {dtype=bf16}
      %4:i8[4,8] = quantize(%3, %1) {dtype=i8}
      return %4
    }""")


def test_zero_scale_values_block_the_fold():
    g = parse("""graph(%0:i8[2,2]) {
      param @s:f32[]
      %1:f32[2,2] = dequantize(%0, @s) {dtype=f32}
      %2:i8[2,2] = quantize(%1, @s) {dtype=i8}
      return %2
    }""")
    g0 = g.with_weights({"@s"[1:]: np.float32(0.0)})
    assert F.run(g0, None) is g0
    g1 = g.with_weights({"s": np.float32(0.5)})
    assert len(F.run(g1, None).eqns) == 0


def test_quantize_dequantize_becomes_fake_quant_only_when_asked():
    text = """graph(%0:f32[4,8], %1:f32[]) {
      %2:i8[4,8] = quantize(%0, %1) {dtype=i8}
      %3:f32[4,8] = dequantize(%2, %1) {dtype=f32}
      return %3
    }"""
    unchanged(F, text)
    check_golden(
        FoldQDQ(fake_quant=True),
        text,
        """graph(%0:f32[4,8], %1:f32[]) {
          %3:f32[4,8] = fused(%0, %1) {kind="fake_quant"} region(%10:f32[4,8], %11:f32[]) {
            %12:i8[4,8] = quantize(%10, %11) {dtype=i8}
            %13:f32[4,8] = dequantize(%12, %11) {dtype=f32}
            return %13
          }
          return %3
        }""",
    )
    # the integer tensor has another reader: no fake quant
    unchanged(FoldQDQ(fake_quant=True), """graph(%0:f32[4,8], %1:f32[]) {
      %2:i8[4,8] = quantize(%0, %1) {dtype=i8}
      %3:f32[4,8] = dequantize(%2, %1) {dtype=f32}
      return %3, %2
    }""")


def test_transpose_moves_above_dequantize_per_channel_and_grouped():
    check_golden(
        F,
        """graph(%0:u4[4,40]) {
          param @s:f32[4,3]
          param @z:f32[4,3]
          %1:f32[4,40] = dequantize(%0, @s, @z) {dtype=f32, group_axis=1, group_size=16}
          %2:f32[40,4] = transpose(%1) {perm=(1,0)}
          return %2
        }""",
        """graph(%0:u4[4,40]) {
          param @s:f32[4,3]
          param @z:f32[4,3]
          %1:f32[3,4] = transpose(@s) {perm=(1,0)}
          %2:f32[3,4] = transpose(@z) {perm=(1,0)}
          %3:u4[40,4] = transpose(%0) {perm=(1,0)}
          %4:f32[40,4] = dequantize(%3, %1, %2) {dtype=f32, group_axis=0, group_size=16}
          return %4
        }""",
    )
    check_golden(  # a lower-rank per-channel scale is first brought to full rank
        F,
        """graph(%0:i8[2,3,5], %1:f32[3,1]) {
          %2:f32[2,3,5] = dequantize(%0, %1) {dtype=f32}
          %3:f32[3,5,2] = transpose(%2) {perm=(1,2,0)}
          return %3
        }""",
        """graph(%0:i8[2,3,5], %1:f32[3,1]) {
          %2:f32[1,3,1] = reshape(%1) {shape=(1,3,1)}
          %3:f32[3,1,1] = transpose(%2) {perm=(1,2,0)}
          %4:i8[3,5,2] = transpose(%0) {perm=(1,2,0)}
          %5:f32[3,5,2] = dequantize(%4, %3) {dtype=f32}
          return %5
        }""",
    )


def test_per_tensor_scale_moves_through_any_reshape():
    check_golden(
        F,
        """graph(%0:i8[4,6], %1:f32[1,1]) {
          %2:f32[4,6] = dequantize(%0, %1) {dtype=f32}
          %3:f32[24] = reshape(%2) {shape=(24,)}
          return %3
        }""",
        """graph(%0:i8[4,6], %1:f32[1,1]) {
          %2:f32[] = reshape(%1) {shape=()}
          %3:i8[24] = reshape(%0) {shape=(24,)}
          %4:f32[24] = dequantize(%3, %2) {dtype=f32}
          return %4
        }""",
    )


def test_reshape_keeping_the_channel_axis_moves_with_a_reshaped_scale():
    check_golden(  # per-token scales: [2,3,1] -> [6,1] when tokens merge
        F,
        """graph(%0:i8[2,3,8], %1:f32[2,3,1]) {
          %2:f32[2,3,8] = dequantize(%0, %1) {dtype=f32}
          %3:f32[6,8] = reshape(%2) {shape=(6,8)}
          return %3
        }""",
        """graph(%0:i8[2,3,8], %1:f32[2,3,1]) {
          %2:f32[6,1] = reshape(%1) {shape=(6,1)}
          %3:i8[6,8] = reshape(%0) {shape=(6,8)}
          %4:f32[6,8] = dequantize(%3, %2) {dtype=f32}
          return %4
        }""",
    )
    check_golden(  # the group axis survives whole: heads split off the channel axis
        F,
        """graph(%0:i4[4,64]) {
          param @s:f32[4,4]
          %1:f32[4,64] = dequantize(%0, @s) {dtype=f32, group_axis=1, group_size=16}
          %2:f32[2,2,64] = reshape(%1) {shape=(2,2,64)}
          return %2
        }""",
        """graph(%0:i4[4,64]) {
          param @s:f32[4,4]
          %1:f32[2,2,4] = reshape(@s) {shape=(2,2,4)}
          %2:i4[2,2,64] = reshape(%0) {shape=(2,2,64)}
          %3:f32[2,2,64] = dequantize(%2, %1) {dtype=f32, group_axis=2, group_size=16}
          return %3
        }""",
    )


def test_layouts_that_do_not_survive_stay():
    # per-channel axis merged with an unscaled axis
    unchanged(F, """graph(%0:i8[4,6], %1:f32[4,1]) {
      %2:f32[4,6] = dequantize(%0, %1) {dtype=f32}
      %3:f32[24] = reshape(%2) {shape=(24,)}
      return %3
    }""")
    # the grouped axis is split
    unchanged(F, """graph(%0:i4[4,64]) {
      param @s:f32[4,4]
      %1:f32[4,64] = dequantize(%0, @s) {dtype=f32, group_axis=1, group_size=16}
      %2:f32[4,4,16] = reshape(%1) {shape=(4,4,16)}
      return %2
    }""")
    # the dequantized value has another reader (moving would dequantize twice)
    unchanged(F, """graph(%0:i8[4,6], %1:f32[]) {
      %2:f32[4,6] = dequantize(%0, %1) {dtype=f32}
      %3:f32[6,4] = transpose(%2) {perm=(1,0)}
      return %3, %2
    }""")


# --- numerics: the rewritten graph computes exactly what the original did -----------------------


@st.composite
def qdq_graphs(draw):
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.sampled_from([1, 2, 3, 4, 6]), min_size=rank, max_size=rank)))
    layout = draw(st.sampled_from(["tensor", "channel", "group"]))
    axis = draw(st.integers(0, rank - 1))
    asym = draw(st.booleans())
    gs = draw(st.sampled_from([1, 2, 4])) if layout == "group" else None
    if layout == "tensor":
        sshape = (1,) * draw(st.integers(0, rank))
    elif layout == "channel":  # numpy broadcasting: leading 1s may be left out
        sshape = tuple(n if i == axis else 1 for i, n in enumerate(shape))[draw(st.integers(0, axis)):]
    else:
        sshape = tuple(-(-n // gs) if i == axis else 1 for i, n in enumerate(shape))
    ops = []
    cur = shape
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            perm = tuple(draw(st.permutations(range(len(cur)))))
            ops.append(("transpose", perm))
            cur = tuple(cur[p] for p in perm)
        else:
            n = int(np.prod(cur))
            dims = [d for d in range(1, n + 1) if n % d == 0]
            first = draw(st.sampled_from(dims))
            new = (first, n // first) if draw(st.booleans()) else (n,)
            new = tuple(draw(st.permutations(new))) if draw(st.booleans()) else new
            if draw(st.booleans()):
                new = cur  # a reshape that keeps every axis
            ops.append(("reshape", new))
            cur = new
    requant = draw(st.booleans())
    return shape, sshape, layout, axis, gs, asym, ops, requant


def build(shape, sshape, layout, axis, gs, asym, ops, requant):
    b = GraphBuilder()
    q = b.input(shape, dtype="u8" if asym else "i8")
    s = b.input(sshape)
    z = b.input(sshape) if asym else None
    ga = {"group_axis": axis, "group_size": gs} if layout == "group" else {}
    x = b.dequantize(q, s, *([z] if z is not None else []), dtype="f32", **ga)
    for op, arg in ops:
        x = b.transpose(x, perm=arg) if op == "transpose" else b.reshape(x, shape=arg)
    outs = [x]
    if requant:  # quantize straight back with the same params when the shape allows it
        outs.append(b.quantize(b.dequantize(q, s, *([z] if z is not None else []), dtype="f32", **ga), s,
                               *([z] if z is not None else []), dtype="u8" if asym else "i8", **ga))
    return b.build(*outs)


@settings(max_examples=60, deadline=None)
@given(qdq_graphs(), st.integers(0, 2**16))
def test_fold_qdq_preserves_numerics_exactly(case, seed):
    g = build(*case)
    out = F.run(g, None)
    verify(out)
    rng = np.random.default_rng(seed)
    shape, sshape, _, _, _, asym, _, requant = case
    q = rng.integers(0, 256, shape).astype(np.uint8) if asym else rng.integers(-128, 128, shape).astype(np.int8)
    s = rng.uniform(0.01, 2.0, sshape).astype(np.float32)
    args = [q, s] + ([rng.integers(0, 256, sshape).astype(np.float32)] if asym else [])
    for a, b in zip(run_graph(g, args), run_graph(out, args)):
        np.testing.assert_array_equal(a, b)
    if requant:
        assert out.outputs[1] is out.inputs[0]  # the requantized value is q itself
    # every dequantize that could move did: none is left above a reshape/transpose of its value
    producers = {v: e for e in out.eqns for v in e.outputs}
    for e in out.eqns:
        if e.op in ("transpose", "reshape") and e.inputs[0] in producers and producers[e.inputs[0]].op == "dequantize":
            assert case[2] != "tensor", "a per-tensor dequantize was left above a shape op"
