"""replay_weights: a compressed graph's weight rewrites carried onto another capture of the model."""

import numpy as np
import pytest

from pared import ir
from pared.backends.reference.interpreter import run_graph
from pared.compiler.pass_manager import run_pipeline
from pared.passes.context import PassContext
from pared.passes.replay import ReplayError, replay_weights
from tests.compiler.mlp import build_mlp


def _renamed(graph: ir.Graph, prefix: str) -> ir.Graph:
    """The same MLP captured with every param name prefixed (as a wrapper module's export names them)."""
    text = ir.print_graph(graph).replace("@fc", f"@{prefix}fc")
    g = ir.parse(text)
    return g.replace(weights={prefix + k: v for k, v in graph.weights.items()})


@pytest.mark.parametrize("recipe", [
    "quantize{weights=int8}",
    "quantize{weights=uint4,group=32}",
    "sparsify{sparsity=0.5,pattern=2:4}",
    "sparsify{sparsity=0.5,pattern=2:4},quantize{weights=int4,group=32}",
    "w8a8",
])
def test_the_replayed_capture_computes_what_the_compressed_graph_does(recipe):
    dense = build_mlp()
    compressed = run_pipeline(dense, recipe, PassContext(progress=False))
    other = _renamed(dense, "model.")
    got_graph = replay_weights(dense, compressed, other, prefix="model.")
    ir.verify(got_graph)
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    (want,) = run_graph(compressed, [x])
    (got,) = run_graph(got_graph, [x])
    np.testing.assert_array_equal(got, want)
    assert "model.fc1.weight" not in got_graph.param_types or "quantize" not in recipe  # replaced, not kept


def test_a_rewrite_beyond_the_weights_is_refused():
    dense = build_mlp()
    compressed = run_pipeline(dense, "activation_sparsity{sparsity=0.5}", PassContext(progress=False))
    with pytest.raises(ReplayError, match="beyond its weights"):
        replay_weights(dense, compressed, _renamed(dense, "m."), prefix="m.")


def test_a_layer_missing_from_the_other_capture_is_named():
    dense = build_mlp()
    compressed = run_pipeline(dense, "quantize{weights=int8}", PassContext(progress=False))
    with pytest.raises(ReplayError, match="fc1.weight"):
        replay_weights(dense, compressed, _renamed(dense, "other."), prefix="model.")
