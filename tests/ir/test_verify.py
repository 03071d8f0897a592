"""The verifier accepts valid graphs and rejects corrupted ones with precise messages."""

from __future__ import annotations

import numpy as np
import pytest

import pared.ir as I
from pared.ir.core import Eqn, Param, Var


def _graph():
    b = I.GraphBuilder()
    x = b.input(["B", 16])
    w = b.param("fc.weight", np.ones((8, 16), np.float32))
    y = b.dot_general(x, w, contract=((1,), (1,)))
    z = b.mul(y, 2.0)
    o = b.add(z, y)
    return b.build(o)


def _expect(g, fragment):
    with pytest.raises(I.VerifyError) as info:
        I.verify(g)
    assert fragment in str(info.value), str(info.value)
    return info.value


def test_valid_graph_passes():
    g = _graph()
    assert I.verify(g) is g


def test_use_before_def_shows_context():
    g = _graph()
    e = g.eqns
    err = _expect(g.replace(eqns=(e[1], e[0], e[2])), "not defined before it")
    assert "equation 0 (mul)" in err.message
    assert ">>" in err.context and "mul(" in err.context.splitlines()[0]


def test_wrong_shape():
    g = _graph()
    e = g.eqns[1]
    bad = e.replace(outputs=(Var(I.tensor(["B", 9])),))
    g2 = g.replace(eqns=(g.eqns[0], bad, g.eqns[2]))
    _expect(g2, "output 0 has type f32[B,9] but mul gives f32[B,8]")


def test_wrong_dtype():
    g = _graph()
    e = g.eqns[1]
    bad = e.replace(outputs=(Var(I.tensor(["B", 8], "f16")),))
    _expect(g.replace(eqns=(g.eqns[0], bad, g.eqns[2])), "but mul gives f32[B,8]")


def test_missing_param():
    g = _graph()
    _expect(g.replace(params=(), weights={}), "@fc.weight, which is not a declared param")


def test_param_type_disagrees():
    g = _graph()
    p = Param("fc.weight", I.tensor([8, 17]))
    e = g.eqns[0]
    _expect(g.replace(params=(p,), weights={}), "used as f32[8,16] but declared f32[8,17]")
    del e


def test_weight_value_shape():
    g = _graph()
    _expect(g.replace(weights={"fc.weight": np.ones((8, 15), np.float32)}), "value has shape [8, 15]")


def test_weight_without_param():
    g = _graph()
    _expect(g.replace(weights={**g.weights, "stray": np.ones(3)}), "no param declaration")


def test_ssa_double_definition():
    g = _graph()
    e0 = g.eqns[0]
    e1 = g.eqns[1].replace(outputs=e0.outputs)
    _expect(g.replace(eqns=(e0, e1)), "defined twice")


def test_undefined_output():
    g = _graph()
    _expect(g.replace(outputs=(Var(I.tensor([3])),)), "output 0 uses a value")


def test_unknown_op():
    g = _graph()
    e = g.eqns[1]
    _expect(
        g.replace(eqns=(g.eqns[0], Eqn("frobnicate", e.inputs, {}, e.outputs), g.eqns[2])), "unknown op 'frobnicate'"
    )


def test_unnormalized_attrs():
    g = _graph()
    e = g.eqns[0]
    bad = Eqn(e.op, e.inputs, {"contract": ((1,), (1,))}, e.outputs)
    _expect(g.replace(eqns=(bad, *g.eqns[1:])), "missing defaults")


@pytest.mark.parametrize(
    "t,fragment",
    [
        (I.TensorType((8, 6), "f32", I.Sparse("nm", 2, 4)), "divisible by 4"),
        (I.TensorType((8, 8), "f32", I.Sparse("nm", 4, 4)), "0 < n < m"),
        (I.TensorType((8, 8), "f32", I.Sparse("block", block=(3, 8))), "does not tile"),
        (I.TensorType((8, 8), "f32", I.Quant(4)), "needs an integer dtype"),
        (I.TensorType((8, 8), "i4", I.Quant(8)), "does not fit dtype i4"),
        (I.TensorType((8, 8), "u8", I.Quant(8, signed=True)), "contradicts dtype u8"),
        (I.TensorType((8, 8), "i8", I.Quant(8, axis=2)), "out of range"),
        (I.TensorType((8, 8), "i8", I.Quant(8, group_size=32)), "go together"),
        (I.TensorType((8, 8), "f8e4m3", I.Quant(8, scheme="float", group_size=0, group_axis=1)), "must be positive"),
    ],
)
def test_bad_encoding(t, fragment):
    b = I.GraphBuilder()
    x = b.input(t)
    g = b.build(x)
    _expect(g, fragment)


def test_good_encodings():
    for t in [
        I.TensorType((8, 8), "f32", I.Sparse("nm", 2, 4)),
        I.TensorType((8, 8), "i4", I.Quant(4, group_size=4, group_axis=1, axis=0)),
        I.TensorType((8, 8), "f8e4m3", I.Quant(8, scheme="float")),
        I.TensorType((8, 8), "i4", I.SparseQuant(I.Sparse("nm", 2, 4), I.Quant(4))),
    ]:
        b = I.GraphBuilder()
        b.input(t)
        I.verify(b.build(b._inputs[0]))


def test_symbolic_param_rejected():
    g = _graph()
    p = Param("fc.weight", I.tensor(["N", 16]))
    g2 = g.replace(params=(p,), weights={})
    _expect(g2, "symbolic shape")


def _fused_graph():
    b = I.GraphBuilder()
    x = b.input([4])
    r = I.GraphBuilder()
    a = r.input([4])
    body = r.build(r.add(a, a))
    y = b.fused(x, kind="elementwise", regions=[body])
    return b, x, y, body


def test_region_values_not_visible_outside():
    b, x, y, body = _fused_graph()
    inner = body.eqns[0].out
    g = b.build(inner)  # returns a value defined inside the region
    _expect(g, "not defined before it")


def test_shared_region_body_rejected():
    b, x, y, body = _fused_graph()
    z = b.fused(y, kind="elementwise", regions=[body])  # the same region object twice
    _expect(b.build(z), "defined twice")


def test_region_reads_outer_values():
    b = I.GraphBuilder()
    x = b.input([4])
    r = I.GraphBuilder()
    a = r.input([4])
    body = r.build(r.add(a, x))  # closure capture of x
    I.verify(b.build(b.fused(x, kind="elementwise", regions=[body])))


def test_encoding_parts():
    sq = I.SparseQuant(I.Sparse("nm", 2, 4), I.Quant(4))
    t = I.TensorType((8, 8), "i4", sq)
    assert t.quant == I.Quant(4) and t.sparse == I.Sparse("nm", 2, 4)
    assert I.TensorType((8, 8), "i4", I.Quant(4)).sparse is None
    assert I.TensorType((8, 8), "f32").quant is None
