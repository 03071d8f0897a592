"""Whole graphs on the Triton target (interpreter): a fused transformer block, kernel choices."""

import numpy as np
import torch

from pared.backends.costmodel.roofline import DEVICES, choose
from pared.backends.reference.interpreter import run_graph
from pared.backends.triton import lower
from pared.ir import GraphBuilder, Sparse, TensorType
from pared.passes import Report
from pared.passes.fuse import Fuse, count_launches
from tests.passes.fuse.blocks import block_inputs, llama_block


def test_fused_transformer_block_matches_reference():
    g = llama_block()
    fused = Fuse()(g)
    assert (count_launches(g), count_launches(fused)) == (18, 11)
    report = Report()
    module = lower(fused, device="cpu", report=report)
    for T in (3, 8):  # one module, several sequence lengths (T is symbolic)
        ins = block_inputs(T=T)
        out = module(*[torch.from_numpy(a) for a in ins])[0]
        np.testing.assert_allclose(out.numpy(), run_graph(g, ins)[0], rtol=1e-4, atol=1e-4)
    kinds = [r.fields["kind"] for r in report]
    assert kinds.count("gemm") == 6 and kinds.count("reduction") == 1


def test_unfused_graph_gemms_still_use_triton():
    b = GraphBuilder()
    x = b.input([4, 16])
    y = b.relu(b.dot_general(x, b.param("w", np.ones((8, 16), np.float32)), contract=((1,), (1,))))
    report = Report()
    out = lower(b.build(y), device="cpu", report=report)(torch.ones(4, 16))[0]
    assert torch.allclose(out, torch.full((4, 8), 16.0))
    assert [r.fields["kernel"] for r in report] == ["dense"]


def _sparse_weight(n, k, rng):
    w = rng.standard_normal((n, k)).astype(np.float32)
    g = w.reshape(n, k // 4, 4)
    np.put_along_axis(g, np.argsort(np.abs(g), -1)[..., :2], 0.0, -1)
    return g.reshape(n, k)


def test_sparse_weight_dispatch_follows_cost_model():
    rng = np.random.default_rng(0)
    N, K = 32, 64
    b = GraphBuilder()
    x = b.input(["M", K])
    w = b.param("w", _sparse_weight(N, K, rng), type=TensorType((N, K), "f32", Sparse("nm", 2, 4, axis=1)))
    g = b.build(b.dot_general(x, w, contract=((1,), (1,))))
    report = Report()
    module = lower(g, device="cpu", report=report)
    rows = {r.fields["M"]: r.fields for r in report}
    assert rows[1]["kernel"] == "sparse24" and not rows[1]["refused"]
    assert rows[2048]["kernel"] == "dense" and rows[2048]["refused"]  # compute-bound: refused, reported
    xs = rng.standard_normal((5, K)).astype(np.float32)
    np.testing.assert_allclose(module(torch.from_numpy(xs))[0].numpy(), run_graph(g, [xs])[0], rtol=1e-4, atol=1e-4)


def test_cost_model_orders_the_design_cases():
    h100 = DEVICES["H100"]
    decode = choose("int4", 1, 28672, 4096, h100, group_size=128)
    assert (
        decode.chosen == "int4" and decode.chooser == "roofline" and decode.speedup > 2.5
    )  # memory-bound: ~4x fewer bytes
    assert choose("int4", 2048, 4096, 14336, h100, group_size=128).refused
    assert choose("sparse24", 2048, 4096, 4096, h100).refused
    assert choose("sparse24_int4", 1, 28672, 4096, h100, group_size=128).speedup > decode.speedup
