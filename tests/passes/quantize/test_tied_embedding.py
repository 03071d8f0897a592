"""A tied embedding reads its quantized LM head's rows (``tied_embedding=quantized``)."""

from __future__ import annotations

import numpy as np
import pytest

import pared.passes.quantize  # noqa: F401  (registers the passes)
from pared.backends.reference import run_graph
from pared.compiler.pass_manager import run_pipeline
from pared.ir import GraphBuilder
from pared.ir.ops.qops import dequantize_weight

V, H = 40, 32


def _tied_lm(rng):
    """ids -> embedding lookup -> relu -> logits with the same table (a tied LM head)."""
    b = GraphBuilder()
    ids = b.input((2, 5), dtype="i64")
    table = b.param("embed.weight", rng.standard_normal((V, H)).astype(np.float32))
    h = b.relu(b.take(table, ids, axis=0))
    return b.build(b.dot_general(h, table, contract=((2,), (1,))))


def _expected(g, ids, w):
    """The model computed in numpy with table ``w`` for both uses."""
    h = np.maximum(w[ids], 0)
    return h @ w.T


@pytest.mark.parametrize("recipe,group", [
    ("quantize{weights=uint4,group=8,tied_embedding=quantized}", 8),
    ("quantize{weights=int8,tied_embedding=quantized}", None),
    ("quantize{weights=int4,group=16,tied_embedding=quantized}", 16),
])
def test_lookup_reads_the_quantized_rows_and_the_float_table_goes(recipe, group):
    rng = np.random.default_rng(0)
    g = _tied_lm(rng)
    ids = rng.integers(0, V, (2, 5)).astype(np.int64)
    out = run_pipeline(g, recipe)
    assert "embed.weight" not in out.weights  # one copy of the table: the quantized one
    assert [e.op for e in out.eqns].count("dequantize") == 1
    ws = out.weights
    w_q = dequantize_weight(ws["embed.weight.q"], ws["embed.weight.scale"], ws.get("embed.weight.zero"), group)
    (y,) = run_graph(out, [ids])
    np.testing.assert_allclose(y, _expected(g, ids, w_q), rtol=1e-5, atol=1e-5)
    # the same graph on the torch backend
    torch = pytest.importorskip("torch")
    from pared.backends.torch import lower

    (yt,) = lower(out)(torch.from_numpy(ids))
    np.testing.assert_allclose(yt.numpy(), y, rtol=1e-4, atol=1e-4 * np.abs(y).max())


def test_default_keeps_the_float_table_for_the_lookup():
    rng = np.random.default_rng(1)
    g = _tied_lm(rng)
    ids = rng.integers(0, V, (2, 5)).astype(np.int64)
    out = run_pipeline(g, "quantize{weights=uint4,group=8}")
    assert "embed.weight" in out.weights and "embed.weight.q" in out.weights
    ws = out.weights
    w_q = dequantize_weight(ws["embed.weight.q"], ws["embed.weight.scale"], ws["embed.weight.zero"], 8)
    h = np.maximum(g.weights["embed.weight"][ids], 0)  # the lookup reads the float table
    np.testing.assert_allclose(run_graph(out, [ids])[0], h @ w_q.T, rtol=1e-5, atol=1e-5)


def test_a_bad_value_is_refused_when_the_recipe_is_read():
    from pared.compiler.pipeline import parse_pipeline

    with pytest.raises(Exception, match="tied_embedding"):
        parse_pipeline("quantize{weights=int8,tied_embedding=int4}")
