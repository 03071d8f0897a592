"""The fixed-point rewrite engine: composition, regions, identity, errors, linear time."""

import time

import numpy as np
import pytest

from pared.backends.reference.interpreter import run_graph
from pared.ir import GraphBuilder, Literal, make_eqn, parse, scalar, verify
from pared.passes import Replacement, RewriteError, RuleTable, rewrite


def add_to_mul(e, view):
    """x + x -> x * 2"""
    if e.inputs[0] is e.inputs[1]:
        return make_eqn("mul", [e.inputs[0], Literal(2.0, scalar(e.out.type.dtype))])
    return None


def mul2_twice(e, view):
    """(x * 2) * 2 -> x * 4, looking through the producer."""
    p = view.producer(e.inputs[0])
    two = Literal(2.0, scalar("f32"))
    if p is not None and p.op == "mul" and p.inputs[1] == two and e.inputs[1] == two:
        return make_eqn("mul", [p.inputs[0], Literal(4.0, scalar("f32"))])
    return None


RULES = RuleTable([("add", add_to_mul), ("mul", mul2_twice)])


def test_new_eqns_are_reexamined_and_dead_ones_pruned():
    g = parse("""graph(%0:f32[3]) {
      %1:f32[3] = add(%0, %0)
      %2:f32[3] = add(%1, %1)
      return %2
    }""")
    out = rewrite(g, RULES)
    verify(out)
    assert [(e.op, e.inputs[1].value) for e in out.eqns] == [("mul", 4.0)]
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(run_graph(out, [x])[0], 4 * x)


def test_no_match_returns_the_same_graph():
    g = parse("""graph(%0:f32[3]) {
      %1:f32[3] = sub(%0, %0)
      return %1
    }""")
    assert rewrite(g, RULES) is g


def test_forwarding_an_atom_and_use_counts():
    seen = {}

    def forward(e, view):
        seen["uses"] = view.uses(e.inputs[0])
        return e.inputs[0]

    g = parse("""graph(%0:f32[3]) {
      %1:f32[3] = exp(%0)
      %2:f32[3] = neg(%1)
      %3:f32[3] = add(%1, %2)
      return %3
    }""")
    out = rewrite(g, RuleTable([("neg", forward)]))
    assert seen["uses"] == 2
    assert [e.op for e in out.eqns] == ["exp", "add"]
    assert out.eqns[1].inputs == (out.eqns[0].out, out.eqns[0].out)


def test_replacement_with_several_eqns_and_multiple_outputs():
    def expand(e, view):  # x - y -> x + (-y)
        n = make_eqn("neg", [e.inputs[1]])
        a = make_eqn("add", [e.inputs[0], n.out])
        return Replacement([n, a], a.outputs)

    g = parse("""graph(%0:f32[3], %1:f32[3]) {
      %2:f32[3] = sub(%0, %1)
      return %2
    }""")
    out = rewrite(g, RuleTable([("sub", expand)]))
    assert [e.op for e in out.eqns] == ["neg", "add"]


def test_regions_and_free_variables_are_substituted():
    g = parse("""graph(%0:f32[3]) {
      %1:f32[3] = add(%0, %0)
      %2:f32[3] = fused(%0) {kind="k"} region(%3:f32[3]) {
        %4:f32[3] = add(%3, %3)
        %5:f32[3] = sub(%4, %1)
        return %5
      }
      return %2
    }""")
    out = rewrite(g, RULES)
    verify(out)
    body = out.eqns[1].regions[0]
    assert [e.op for e in body.eqns] == ["mul", "sub"]
    assert body.eqns[1].inputs[1] is out.eqns[0].out
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(run_graph(out, [x])[0], run_graph(g, [x])[0])


def test_a_rule_that_never_settles_is_reported():
    def churn(e, view):  # rebuilds an equal equation every time: never a fixed point
        return make_eqn(e.op, e.inputs, e.attrs)

    g = parse("""graph(%0:f32[3]) {
      %1:f32[3] = neg(%0)
      return %1
    }""")
    with pytest.raises(RewriteError, match="churn"):
        rewrite(g, RuleTable([("neg", churn)]))


def test_a_rule_that_changes_a_type_is_reported_with_the_eqn():
    def bad(e, view):
        return Literal(0.0, scalar("f32"))

    g = parse("""graph(%0:f32[3]) {
      %1:f32[3] = neg(%0)
      return %1
    }""")
    with pytest.raises(RewriteError, match="changed a type") as info:
        rewrite(g, RuleTable([("neg", bad)]))
    assert info.value.eqn is not None and info.value.eqn.op == "neg"
    assert "neg(" in str(info.value)


def test_a_crashing_rule_is_wrapped_with_the_eqn():
    def crash(e, view):
        raise ZeroDivisionError("boom")

    g = parse("""graph(%0:f32[3]) {
      %1:f32[3] = neg(%0)
      return %1
    }""")
    with pytest.raises(RewriteError, match="boom") as info:
        rewrite(g, RuleTable([("neg", crash)]))
    assert info.value.eqn.op == "neg"


def test_default_rules_apply_to_every_op():
    ops = []

    def record(e, view):
        ops.append(e.op)
        return None

    g = parse("""graph(%0:f32[3]) {
      %1:f32[3] = neg(%0)
      %2:f32[3] = exp(%1)
      return %2
    }""")
    assert rewrite(g, RuleTable(default=(record,))) is g
    assert ops == ["neg", "exp"]


@pytest.mark.parametrize("n", [20_000])
def test_linear_time_on_a_large_graph(n):
    b = GraphBuilder()
    x = b.input([4])
    v = x
    for _ in range(n // 2):
        v = b.add(v, v)  # every add becomes a mul, then pairs of mul*2 collapse
        v = b.neg(v)
    g = b.build(v)
    t0 = time.perf_counter()
    out = rewrite(g, RULES)
    elapsed = time.perf_counter() - t0
    assert len(out.eqns) == n
    assert all(e.op in ("mul", "neg") for e in out.eqns)
    assert elapsed < 5.0, f"rewrite of {n} eqns took {elapsed:.2f}s"
