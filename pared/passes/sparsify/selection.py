"""Which weights a sparsity pass touches: weight sites filtered by name, minus embeddings and heads.

Selection follows the quantization passes (:mod:`pared.passes.layer_patterns`): ``targets`` and
``ignore`` are tuples of regexes searched in param names; a ``targets`` pattern that matches no
weight site is an error listing the real layer names. By default the LM head and embeddings are
skipped: a param read by ``take`` (an embedding table) is never pruned, which also protects a head
tied to the input embedding (SmolLM2, GPT-2), and names like ``lm_head`` / ``embed`` are skipped
too. A param consumed by several equations is rewritten once, at its first consumer.
"""

from __future__ import annotations

import re

from ...ir import Graph, Param
from ..calibration import WeightSite, find_weight_sites
from ..layer_patterns import Patterns, as_patterns, check_targets, compile_patterns, unmatched

HEAD_OR_EMBEDDING = re.compile(
    r"(^|[._/])(lm_head|embed\w*|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings)([._/]|$)"
)


def select_sites(
    graph: Graph,
    targets: Patterns = (),
    ignore: Patterns = (),
    skip_embeddings: bool = True,
    min_inputs: int = 1,
    where: str = "",
) -> tuple[list[WeightSite], list[tuple[str, str]]]:
    """(sites to rewrite, [(param, why skipped)]). ``targets``/``ignore``: a regex or a tuple of
    them, searched in the param name (empty: no filter). ``where`` prefixes error messages."""
    inc = compile_patterns(targets, "targets", where)
    exc = compile_patterns(ignore, "ignore", where)
    all_sites = find_weight_sites(graph)
    names = list(dict.fromkeys(s.param for s in all_sites))
    check_targets(targets, names, "targets", where, what="weight of a dot/conv layer")
    tables = _embedding_tables(graph)
    chosen: list[WeightSite] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for s in all_sites:
        name = s.param
        if name in seen:
            continue
        seen.add(name)
        if inc and not any(p.search(name) for p in inc):
            continue
        if any(p.search(name) for p in exc):
            skipped.append((name, "matched ignore="))
        elif skip_embeddings and name in tables:
            skipped.append((name, "embedding table (read by take; a tied LM head)"))
        elif skip_embeddings and HEAD_OR_EMBEDDING.search(name):
            skipped.append((name, "LM head / embedding (skip_embeddings=true)"))
        elif s.shape2d[1] < min_inputs:
            skipped.append((name, f"fewer than {min_inputs} input channels"))
        else:
            chosen.append(s)
    return chosen, skipped


def unmatched_ignore(graph: Graph, ignore: Patterns) -> list[str]:
    """``ignore`` patterns that match no weight site (worth a report note, not an error)."""
    return unmatched(as_patterns(ignore), [s.param for s in find_weight_sites(graph)], "ignore")


def _embedding_tables(graph: Graph) -> set[str]:
    return {e.inputs[0].name for e in graph.walk() if e.op == "take" and isinstance(e.inputs[0], Param)}
