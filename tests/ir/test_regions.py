"""Inlining a region op into the graph around it (pared/ir/regions.py)."""

from __future__ import annotations

import numpy as np

import pared.ir as I
from pared.backends.reference import run_graph
from pared.ir.regions import inline_region, splice_region


def _fused_graph(passthrough: bool = False):
    inner = I.GraphBuilder()
    a, c = inner.input((3, 4)), inner.input((4,))
    h = inner.mul(a, c)
    region = inner.build(inner.relu(h), a if passthrough else inner.neg(h))
    b = I.GraphBuilder()
    x = b.input((3, 4))
    y, z = b.op("fused", b.tanh(x), b.param("c", np.linspace(-1, 1, 4, dtype=np.float32)), regions=[region], kind="k")
    return b.build(b.add(y, z))


def test_inline_region_reads_the_ops_inputs():
    g = _fused_graph(passthrough=True)
    fused = g.eqns[1]
    eqns, outputs = inline_region(fused)
    assert [e.op for e in eqns] == ["mul", "relu"]
    assert eqns[0].inputs == fused.inputs  # the tanh output and the param, no region Vars
    assert outputs[fused.outputs[0]] is eqns[1].out and outputs[fused.outputs[1]] is fused.inputs[0]
    assert I.get_op("fused").decompose is inline_region


def test_splice_region_replaces_the_op_in_its_graph():
    g = _fused_graph()
    body = splice_region(g.eqns[1])
    spliced = I.verify(g.replace(eqns=(g.eqns[0], *body, g.eqns[2])))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_graph(spliced, [x])[0], run_graph(g, [x])[0])


def test_splice_refuses_a_region_that_passes_an_input_through():
    assert splice_region(_fused_graph(passthrough=True).eqns[1]) is None
