"""Which weights a sparsity pass touches: weight sites filtered by name, minus embeddings and heads.

By default the LM head and embeddings are skipped: a param read by ``take`` (an embedding table)
is never pruned, which also protects a head tied to the input embedding (SmolLM2, GPT-2), and
names like ``lm_head`` / ``embed`` are skipped too. A param consumed by several equations is
rewritten once, at its first consumer.
"""

from __future__ import annotations

import re
from typing import Optional

from ...ir import Graph, Param
from ..calibrated import WeightSite, find_weight_sites

HEAD_OR_EMBEDDING = re.compile(r"(^|[._/])(lm_head|embed\w*|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings)([._/]|$)")


def select_sites(graph: Graph, include: str = "", exclude: str = "", skip_embeddings: bool = True,
                 min_inputs: int = 1) -> tuple[list[WeightSite], list[tuple[str, str]]]:
    """(sites to rewrite, [(param, why skipped)]). ``include``/``exclude`` are regexes searched in
    the param name ("" = no filter)."""
    inc = _compile(include, "targets")
    exc = _compile(exclude, "exclude")
    tables = _embedding_tables(graph)
    chosen: list[WeightSite] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for s in find_weight_sites(graph):
        name = s.param
        if name in seen:
            continue
        seen.add(name)
        if inc is not None and not inc.search(name):
            continue
        if exc is not None and exc.search(name):
            skipped.append((name, "excluded by pattern"))
        elif skip_embeddings and name in tables:
            skipped.append((name, "embedding table (read by take; a tied LM head)"))
        elif skip_embeddings and HEAD_OR_EMBEDDING.search(name):
            skipped.append((name, "LM head / embedding (skip_embeddings=true)"))
        elif s.shape2d[1] < min_inputs:
            skipped.append((name, f"fewer than {min_inputs} input channels"))
        else:
            chosen.append(s)
    return chosen, skipped


def _embedding_tables(graph: Graph) -> set[str]:
    return {e.inputs[0].name for e in graph.walk() if e.op == "take" and isinstance(e.inputs[0], Param)}


def _compile(rx: str, what: str) -> Optional[re.Pattern]:
    if not rx:
        return None
    try:
        return re.compile(rx)
    except re.error as e:
        raise ValueError(f"{what}={rx!r} is not a valid regular expression: {e}") from None
