"""Property tests: every cleanup pass, and the cleanup pipeline, preserve numerics and validity."""

import numpy as np
import pytest
from hypothesis import given, settings

from pared.backends.reference.interpreter import run_graph
from pared.compiler import run_pipeline
from pared.ir import graph_equal, parse, print_graph, verify
from pared.passes import PassContext, get_pass

from .graph_strategies import graphs


def _check_same_numerics(before, after, xs):
    want = run_graph(before, xs)
    got = run_graph(after, xs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("name", ["canonicalize", "fold", "cse", "dce"])
@settings(deadline=None, max_examples=40)
@given(case=graphs())
def test_cleanup_pass_preserves_numerics(name, case):
    g, xs = case
    verify(g)
    text = print_graph(g)
    out = get_pass(name)().run(g, PassContext())
    verify(out)
    assert print_graph(g) == text, "the pass mutated its input"
    _check_same_numerics(g, out, xs)


@settings(deadline=None, max_examples=40)
@given(case=graphs())
def test_cleanup_pipeline_preserves_numerics_and_is_idempotent(case):
    g, xs = case
    verify(g)
    out = run_pipeline(g, "cleanup", verify=True)
    _check_same_numerics(g, out, xs)
    assert len(out.eqns) <= len(g.eqns)
    again = run_pipeline(out, "cleanup")
    assert graph_equal(again, out), f"cleanup is not idempotent:\n{print_graph(out)}\n{print_graph(again)}"


@settings(deadline=None, max_examples=25)
@given(case=graphs())
def test_cleanup_survives_a_text_round_trip(case):
    """A parsed graph has no weights: fold must skip, the rest must still work."""
    g, xs = case
    verify(g)
    parsed = parse(print_graph(g))
    out = run_pipeline(parsed, "cleanup")
    verify(out)
    _check_same_numerics(g, out.with_weights({k: v for k, v in g.weights.items() if k in out.param_types}), xs)
