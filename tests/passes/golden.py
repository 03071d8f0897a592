"""Before -> Expected golden checks for passes (text in, text out, compared structurally)."""

from __future__ import annotations

from typing import Mapping, Optional

from pared.ir import Graph, assert_graph_equal, parse, verify
from pared.passes import Pass, PassContext


def check_golden(p: Pass, before: str, expected: str, weights: Optional[Mapping] = None) -> Graph:
    g = parse(before)
    if weights:
        g = g.with_weights(weights)
    text_before = str(g)
    out = p.run(g, PassContext())
    verify(out)
    assert_graph_equal(out, parse(expected))
    assert str(g) == text_before, "the pass mutated its input"
    return out
