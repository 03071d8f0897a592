"""Byte accounting: sparse+quantized weights count at their packed size (kept values + metadata)."""

import numpy as np

from pared.compiler.context import make_context
from pared.ir import GraphBuilder, Quant, Sparse, SparseQuant, TensorType, verify
from pared.passes import PassContext
from pared.passes.quantize import GQSA, QuantizeWeights
from pared.passes.quantize.linears import model_bytes, stored_nbytes

from .conftest import calibration, mlp_graph


def test_stored_nbytes_known_answers():
    q4 = Quant(4, signed=True, scheme="sym", axis=0)
    # dense int4 [8, 32]: 8 rows of 16 bytes
    assert stored_nbytes(TensorType((8, 32), "i4", q4)) == 128
    # 2:4 + int4: 128 kept values x 4 bits + a 2-bit position each = 64 + 32 bytes
    assert stored_nbytes(TensorType((8, 32), "i4", SparseQuant(Sparse("nm", 2, 4, axis=1), q4))) == 96
    # 2:4 float: 128 kept f32 + 2-bit positions
    assert stored_nbytes(TensorType((8, 32), "f32", Sparse("nm", 2, 4, axis=1))) == 128 * 4 + 32
    # block [1, 8] + int4, 3 of 4 blocks of every row pruned: 8 kept blocks x 8 values x 4 bits + 32 mask bits
    t = TensorType((8, 32), "i4", SparseQuant(Sparse("block", block=(1, 8)), q4))
    kept = np.zeros((8, 32), bool)
    kept[:, 8:16] = True
    kept[0, 9] = False  # a zero inside a kept block does not make it pruned
    assert stored_nbytes(t, kept) == 8 * 8 * 4 // 8 + 4
    # bitmask: kept values + one bit per element; no mask known: dense size
    t = TensorType((8, 32), "f32", Sparse("bitmask"))
    assert stored_nbytes(t, kept) == (8 * 8 - 1) * 4 + 32
    assert stored_nbytes(t) == 8 * 32 * 4


def test_gqsa_w4s50_counts_kept_values_and_block_mask(rng):
    g = mlp_graph(rng)
    ctx = make_context(calibration=calibration(rng), progress=False)
    out = GQSA(sparsity=0.5, block=16, group=32, weights="uint4")(g, ctx)
    verify(out)
    assert isinstance(out.param_types["q.weight.q"].encoding, SparseQuant)
    # q.weight is [64, 64]: 2048 kept values x 4 bits = 1024 B, 256 blocks -> 32 B of mask,
    # scale and zero [64, 2] f32 -> 512 B each
    row = next(r for r in ctx.report.for_pass("gqsa") if r.name == "q.weight")
    assert row.fields["bytes_after"] == 1024 + 32 + 512 + 512
    assert row.fields["bytes_before"] == 64 * 64 * 4
    dense_int4 = QuantizeWeights(weights="uint4", group=32)(g)
    saved = model_bytes(dense_int4) - model_bytes(out)
    # every layer saves half its int4 bytes minus its block mask
    n_weights = sum(int(np.prod(p.type.shape)) for p in g.params if p.name.endswith("weight") and p.type.rank == 2)
    assert saved == n_weights // 4 - n_weights // 16 // 8


def test_two_four_then_int4_is_counted_sparse():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 32)).astype(np.float32)
    w.reshape(8, 8, 4)[:, :, 2:] = 0  # 2:4 along the input axis
    b = GraphBuilder()
    x = b.input((3, 32))
    wp = b.param("fc.weight", w, type=TensorType((8, 32), "f32", Sparse("nm", 2, 4, axis=1)))
    g = b.build(b.dot_general(x, wp, contract=((1,), (1,))))
    assert model_bytes(g) == 128 * 4 + 32
    ctx = PassContext()
    out = QuantizeWeights(weights="int4")(g, ctx)
    assert isinstance(out.param_types["fc.weight.q"].encoding, SparseQuant)
    # 2:4 int4 values (64 B) + positions (32 B) + per-channel scales (8 x f32)
    assert model_bytes(out) == 64 + 32 + 32
    assert ctx.report.for_pass("quantize")[0].fields["bytes_after"] == 64 + 32 + 32
