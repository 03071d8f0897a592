"""Symbolic dimension algebra."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pared.ir import dims as D

B, S = D.Sym.name("B"), D.Sym.name("S")


def test_algebra():
    assert D.mul(B, S) == D.mul(S, B)
    assert D.add(D.mul(B, S), 0) == D.mul(B, S)
    assert D.sub(D.add(S, 1), 1) == S
    assert D.exact_div(D.mul(D.mul(B, S), 4), S) == D.mul(B, 4)
    assert D.exact_div(D.mul(B, 6), 4) is None
    assert D.exact_div(D.add(S, 1), S) is None
    assert D.exact_div(S, S) == 1
    assert D.prod([B, S, 2]) == D.mul(D.mul(B, S), 2)
    assert D.add(S, D.mul(S, -1)) == 0  # collapses to a plain int
    assert isinstance(D.sub(S, S), int)


def test_evaluate_and_errors():
    assert D.evaluate(D.add(D.mul(B, S), 3), {"B": 2, "S": 5}) == 13
    with pytest.raises(KeyError):
        D.evaluate(B, {})
    with pytest.raises(ValueError):
        D.parse_dim("B*")
    with pytest.raises(ValueError):
        D.parse_dim("B/2")
    with pytest.raises(ValueError):
        D.Sym.name("1x")


@given(st.integers(-5, 5), st.integers(-5, 5), st.integers(0, 3), st.integers(1, 7), st.integers(1, 7))
def test_polynomial_evaluation_matches_ints(a, c, k, b, s):
    """(a*B*S + c*S^k) evaluates like the same integer arithmetic, and prints/parses back."""
    expr = D.add(D.mul(a, D.mul(B, S)), D.mul(c, D.prod([S] * k)))
    assert D.evaluate(expr, {"B": b, "S": s}) == a * b * s + c * s**k
    assert D.parse_dim(str(expr)) == expr


def test_operators():
    assert B * S == D.mul(B, S) and 2 * B == D.mul(B, 2)
    assert S + 1 == D.add(S, 1) and 1 + S == S + 1
    assert (S + 1) - S == 1 and isinstance((S + 1) - S, int)
    assert 3 - S == D.sub(3, S)
