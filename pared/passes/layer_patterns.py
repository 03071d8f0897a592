"""Layer selection by name pattern, shared by every compression suite and the CLI.

Passes take ``targets`` (regexes; a layer is selected when one of them is found in its name,
none given: every layer) and ``ignore`` (regexes; a matching layer is left alone), each a tuple
of patterns as in ``quantize{ignore=(lm_head,embed)}``. A ``targets`` pattern that matches no
layer is an error listing real layer names (a typo, or a recipe written for another model); an
``ignore`` pattern that matches nothing is only worth a warning.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence, Union

Patterns = Union[str, Sequence[str], None]


class LayerPatternError(ValueError):
    """A layer pattern is not a valid regex, or a ``targets`` pattern matches no layer."""


def as_patterns(value: Patterns) -> tuple[str, ...]:
    """``"a"``/``("a", "b")``/``""``/None -> a tuple of non-empty pattern strings."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    return tuple(p for p in value if p)


def compile_patterns(patterns: Patterns, option: str = "targets", where: str = "") -> list[re.Pattern]:
    out = []
    for p in as_patterns(patterns):
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise LayerPatternError(f"{where}{option}={p!r} is not a valid regular expression: {e}") from None
    return out


def describe_names(names: Sequence[str], limit: int = 300) -> str:
    """``"12 layers, e.g. a.weight, b.weight ..."`` (weights first) for error messages."""
    shown = [n for n in names if n.endswith("weight") or n.endswith("kernel")] or list(names)
    text = ", ".join(shown)
    return f"{len(names)} layers, e.g. {text[:limit]}{' ...' if len(text) > limit else ''}"


def unmatched(patterns: Patterns, names: Iterable[str], option: str = "targets", where: str = "") -> list[str]:
    """The patterns (as given) found in none of ``names``; raises on an invalid regex."""
    names = list(names)
    return [c.pattern for c in compile_patterns(patterns, option, where) if not any(c.search(n) for n in names)]


def no_match_message(pattern: str, names: Sequence[str], option: str = "targets", where: str = "",
                     what: str = "layer of this model") -> str:
    return f"{where}{option}={pattern!r} matches no {what} ({describe_names(names)})"


def check_targets(targets: Patterns, names: Sequence[str], option: str = "targets", where: str = "",
                  what: str = "layer of this model") -> None:
    """Raise :class:`LayerPatternError` naming the first ``targets`` pattern that matches no name."""
    bad = unmatched(targets, names, option, where)
    if bad:
        raise LayerPatternError(no_match_message(bad[0], names, option, where, what))


def selected(name: str, targets: Sequence[re.Pattern], ignore: Sequence[re.Pattern]) -> bool:
    """True when ``name`` is wanted: some target pattern (or none given) and no ignore pattern."""
    return (not targets or any(p.search(name) for p in targets)) and not any(p.search(name) for p in ignore)
