"""The text form: print -> parse round trips, and malformed text gives positioned ParseErrors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import pared.ir as I
from tests.ir.graph_strategies import graphs


@given(graphs())
def test_parse_print_roundtrip(g):
    text = I.print_graph(g)
    g2 = I.parse(text)
    I.assert_graph_equal(g2, g.replace(weights={}))
    assert I.print_graph(g2) == text  # printing is deterministic
    I.verify(g2)


def _mlp_text() -> str:
    b = I.GraphBuilder()
    x = b.input(["B", 16])
    w = b.param("fc1.weight", np.zeros((32, 16), np.float32))
    y = b.dot_general(x, w, contract=((1,), (1,)), loc="fc1")
    z = b.mul(y, -0.5)
    r = b.reshape(z, shape=(I.sym("B"), 4, 8))
    return I.print_graph(b.build(r))


def test_roundtrip_features():
    text = """\
graph(%x:f32[B*S+1,4], %q:i4[8,4]#quant(bits=4,signed=true,scheme="sym",axis=0,group_size=2,group_axis=1)) {
  param @"odd:name":f32[4,4]#sparse(format="nm",n=2,m=4,axis=-1)
  param @w:f32[4]
  %0:f32[B*S+1,4] = add(%x, @w) loc("a \\"b\\"")
  %1:f32[B*S+1,4] = mul(%0, -inf:f32[])
  %2:f32[B*S+1,4] = dot_general(%1, @"odd:name") {contract=((1,),(0,))}
  return %2, %q, 3:i32[], true:bool[], nan:f32[]
}
"""
    g = I.parse(text)
    assert g.inputs[0].type.shape[0] == I.dims.add(I.dims.mul(I.sym("B"), I.sym("S")), 1)
    assert g.inputs[1].type.encoding == I.Quant(4, True, "sym", 0, 2, 1)
    assert g.params[0].type.encoding == I.Sparse("nm", 2, 4)
    assert g.eqns[0].loc == 'a "b"'
    assert g.eqns[2].attrs["batch"] == ((), ())  # defaults are filled in
    g2 = I.parse(I.print_graph(g))
    I.assert_graph_equal(g2, g)
    I.verify(g)


def test_symbolic_dims_parse_and_print():
    for text in ["B", "B*S", "S+1", "2*B-1", "B*S*T+S+4"]:
        d = I.dims.parse_dim(text)
        assert I.dims.parse_dim(str(d)) == d


BAD = [
    # (description, transform of valid text, expected message fragment, expected line)
    ("truncated", lambda t: t[: t.index("mul") + 5], "expected", 4),
    ("unknown op", lambda t: t.replace("mul(", "mull("), "unknown op 'mull'; did you mean mul", 4),
    ("type mismatch", lambda t: t.replace("%3:f32[B,4,8]", "%3:f32[B,4,9]"), "type mismatch", 5),
    ("undefined value", lambda t: t.replace("mul(%1", "mul(%7"), "undefined value %7", 4),
    (
        "duplicate name",
        lambda t: t.replace("%2:f32[B,32] = mul", "%1:f32[B,32] = mul"),
        "duplicate definition of %1",
        4,
    ),
    ("undeclared param", lambda t: t.replace("(%0, @fc1.weight)", "(%0, @fc2)"), "undeclared param @fc2", 3),
    ("unknown attribute", lambda t: t.replace("out_dtype=none", "out_dtype=none, foo=1"), "unknown attribute", 3),
    ("bad attribute value", lambda t: t.replace("shape=(B,4,8)", 'shape="x"'), "must be a tuple", 5),
    ("unknown dtype", lambda t: t.replace("%0:f32", "%0:f33"), "unknown dtype 'f33'", 1),
    ("stray character", lambda t: t.replace("return %3", "return %3 $"), "unexpected character", 6),
    ("trailing junk", lambda t: t + "}\n", "after the end", 8),
    ("missing return", lambda t: t.replace("  return %3\n", ""), "expected", 6),
    ("bad dim", lambda t: t.replace("f32[B,16]", "f32[B,-16]"), "dimension", 1),
    ("empty", lambda t: "", "expected 'graph'", 1),
    ("literal type", lambda t: t.replace("-0.5:f32[]", "-0.5:i32[]"), "float literal", 4),
    ("non-scalar literal", lambda t: t.replace("-0.5:f32[]", "-0.5:f32[2]"), "scalar", 4),
    ("bad encoding", lambda t: t.replace("%0:f32[B,16]", "%0:f32[B,16]#foo()"), "unknown encoding", 1),
    ("encoding field", lambda t: t.replace("%0:f32[B,16]", "%0:f32[B,16]#quant(bitz=4)"), "unknown quant field", 1),
]


@pytest.mark.parametrize("desc,transform,fragment,line", BAD, ids=[b[0] for b in BAD])
def test_malformed_text(desc, transform, fragment, line):
    text = transform(_mlp_text())
    with pytest.raises(I.ParseError) as info:
        I.parse(text)
    err = info.value
    assert fragment in err.message, err
    assert err.line == line, err
    assert err.col >= 1
    assert err.__cause__ is None  # no traceback from inside the parser


def test_every_prefix_gives_parse_error():
    """Truncating anywhere yields a ParseError, never another exception."""
    text = _mlp_text()
    for n in range(0, len(text) - 3, 3):
        with pytest.raises(I.ParseError):
            I.parse(text[:n])
