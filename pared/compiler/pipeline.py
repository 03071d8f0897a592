"""Pipelines: parse pass lists from strings, python lists/dicts and YAML recipes.

String form (xDSL's pipeline syntax)::

    canonicalize,sparsify{method=wanda,sparsity=0.5,pattern=2:4},quantize{weights=int4,group=128},dce

Values are converted by the option's type (``2:4`` stays a string for a str option; quote a
value containing ``,`` or ``}``, or wrap a tuple in parentheses: ``perm=(1,0)``). Lists hold
names, pipeline strings or ``{name: {option: value}}`` entries; a mapping holds ``passes``.
Every name, option and value is checked before any pass runs; errors list the valid names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from ..passes.base import Pass, PassOptionError, available_passes, did_you_mean, get_pass
from .presets import PRESETS  # noqa: F401  (named pipelines live in presets.py; they take no options)

RECIPE_KEYS = ("passes", "name", "description")

PipelineSpec = Union[str, os.PathLike, Pass, Sequence[Any], Mapping[str, Any]]


class PipelineError(ValueError):
    """A pipeline names an unknown pass or option, has a bad value, or is malformed."""


def parse_pipeline(spec: PipelineSpec) -> list[Pass]:
    """Turn a pipeline spec into pass instances, validating everything first.

    Args:
        spec: a pipeline string (``"a{x=1},b"``), a path to a ``.yaml``/``.yml`` recipe, YAML
            text (multi-line or starting with ``passes:``), a Pass, a list of entries, a
            mapping ``{"passes": [...]}``, or a one-pass mapping ``{"fold": {"allow_growth": True}}``.
    """
    if isinstance(spec, Pass):
        return [spec]
    if isinstance(spec, type) and issubclass(spec, Pass):
        return [spec()]
    if isinstance(spec, os.PathLike):
        return load_pipeline_file(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if text.endswith((".yaml", ".yml")) and "{" not in text and "\n" not in text:
            return load_pipeline_file(text)
        if "\n" in text or text.startswith(("passes:", "- ", "---")):
            return parse_yaml(text)
        return parse_pipeline_string(text)
    if isinstance(spec, Mapping):
        if "passes" not in spec and len(spec) == 1:
            ((key, value),) = spec.items()
            if key not in RECIPE_KEYS and (value is None or isinstance(value, Mapping)):
                return _from_list([spec])  # one pass: {"sparsify": {"sparsity": 0.5}}
        return _from_recipe(spec)
    if isinstance(spec, Sequence):
        return _from_list(spec)
    raise PipelineError(
        f"cannot read a pipeline from {type(spec).__name__}: give a string, a list, a mapping or a path"
    )


def format_pipeline(passes: Sequence[Pass]) -> str:
    """The pipeline string that parses back to ``passes`` (options at their defaults omitted)."""
    return ",".join(p.options_text() for p in passes)


def unmatched_rewrites(passes: Sequence[Pass], report: Any, n_layers: int) -> list[str]:
    """One message per layer-rewriting pass (``Pass.rewrites_layers``) that changed no layer.

    A row counts as a change unless it only says why a layer was skipped (``skipped``) or notes
    something (``note``). ``n_layers`` is how many weight params the graph had, for the message.
    """
    out = []
    for k, p in enumerate(passes):
        if not getattr(p, "rewrites_layers", False):
            continue
        rows = report.for_pass(p.name)
        if any(not ({"skipped", "note"} & set(r.fields)) for r in rows):
            continue
        skipped = sum(1 for r in rows if "skipped" in r.fields)
        why = (
            f"all {skipped} candidate layer(s) were skipped (see the report)"
            if skipped
            else f"the model has no layer it can rewrite ({n_layers} weight param(s), none of them a "
            "linear/conv weight the pass selects)"
        )
        out.append(f"pass {k} ({p.name}) matched nothing: {why}; check the recipe's targets/ignore or the model")
    return out


# --- strings ------------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def parse_pipeline_string(text: str) -> list[Pass]:
    """Parse ``name{opt=value,...},name2,...`` (whitespace between tokens is ignored)."""
    return [p for name, opts, pos in _split_string(text) for p in _make(name, opts, f"{_where(text, pos)}")]


def _where(text: str, pos: int) -> str:
    return f"at column {pos + 1} of {text!r}"


def _split_string(text: str) -> list[tuple[str, dict[str, str], int]]:
    items: list[tuple[str, dict[str, str], int]] = []
    i, n = 0, len(text)

    def fail(msg: str, at: int):
        raise PipelineError(f"malformed pipeline {text!r}: {msg} at column {at + 1}\n  {text}\n  {' ' * at}^")

    def skip_ws(j: int) -> int:
        while j < n and text[j].isspace():
            j += 1
        return j

    i = skip_ws(i)
    if i == n:
        return items
    while True:
        i = skip_ws(i)
        m = _match_preset(text, i) or _NAME.match(text, i)
        if not m:
            fail("expected a pass name", i)
        name, start = m.group(), i
        i = skip_ws(m.end())
        opts: dict[str, str] = {}
        if i < n and text[i] == "{":
            i = skip_ws(i + 1)
            if i < n and text[i] == "}":
                i += 1
            else:
                while True:
                    i = skip_ws(i)
                    km = _NAME.match(text, i)
                    if not km:
                        fail("expected an option name", i)
                    key = km.group()
                    i = skip_ws(km.end())
                    if i >= n or text[i] != "=":
                        fail(f"expected '=' after option {key!r}", i)
                    value, i = _read_value(text, i + 1, fail)
                    if key in opts:
                        fail(f"option {key!r} given twice", km.start())
                    opts[key] = value
                    i = skip_ws(i)
                    if i < n and text[i] == ",":
                        i += 1
                        continue
                    if i < n and text[i] == "}":
                        i += 1
                        break
                    fail("expected ',' or '}'", i)
        items.append((name, opts, start))
        i = skip_ws(i)
        if i == n:
            return items
        if text[i] != ",":
            fail("expected ',' between passes", i)
        i += 1


def _match_preset(text: str, i: int):
    """A preset name at ``i`` (names like ``2:4+w4`` are not pass-name tokens), longest first."""
    for name in sorted(PRESETS, key=len, reverse=True):
        end = i + len(name)
        if text.startswith(name, i) and (end == len(text) or text[end] in ", \t\n{"):
            return re.compile(re.escape(name)).match(text, i)
    return None


def _read_value(text: str, i: int, fail) -> tuple[str, int]:
    """A raw option value: up to ',' or '}' outside quotes and brackets."""
    n, start, depth = len(text), i, 0
    while i < n:
        c = text[i]
        if c in "\"'":
            end = text.find(c, i + 1)
            if end < 0:
                fail("unterminated quote", i)
            i = end + 1
            continue
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
            if depth < 0:
                fail(f"unbalanced {c!r}", i)
        elif depth == 0 and c in ",}":
            break
        elif depth == 0 and c in "{=":
            fail(f"unexpected {c!r} in a value (quote it)", i)
        i += 1
    if depth:
        fail("unclosed bracket", start)
    value = text[start:i].strip()
    if not value:
        fail("empty value", start)
    return value, i


# --- lists, mappings, YAML ----------------------------------------------------------------------


def _from_list(entries: Sequence[Any]) -> list[Pass]:
    out: list[Pass] = []
    for k, entry in enumerate(entries):
        where = f"in pipeline entry {k}"
        if isinstance(entry, Pass):
            out.append(entry)
        elif isinstance(entry, type) and issubclass(entry, Pass):
            out.append(entry())
        elif isinstance(entry, str):
            for name, opts, _ in _split_string(entry):
                out += _make(name, opts, where)
        elif isinstance(entry, Mapping):
            if len(entry) != 1:
                raise PipelineError(
                    f"{where}: a mapping entry names exactly one pass, like {{'sparsify': {{'sparsity': 0.5}}}}; "
                    f"got keys {list(entry)}"
                )
            ((name, opts),) = entry.items()
            if opts is None:
                opts = {}
            if not isinstance(name, str) or not isinstance(opts, Mapping):
                raise PipelineError(f"{where}: expected {{pass name: {{option: value}}}}, got {dict(entry)!r}")
            out += _make(name, dict(opts), where)
        else:
            raise PipelineError(f"{where}: expected a pass name, a pipeline string or a mapping, got {entry!r}")
    return out


def _from_recipe(recipe: Mapping[str, Any]) -> list[Pass]:
    unknown = [k for k in recipe if k not in RECIPE_KEYS]
    if unknown:
        raise PipelineError(
            f"unknown recipe key {unknown[0]!r}{did_you_mean(str(unknown[0]), RECIPE_KEYS)}; "
            f"valid keys: {', '.join(RECIPE_KEYS)}"
        )
    if "passes" not in recipe:
        raise PipelineError("a recipe mapping needs a 'passes' list")
    passes = recipe["passes"]
    if isinstance(passes, str):
        return parse_pipeline_string(passes)
    if not isinstance(passes, Sequence):
        raise PipelineError(f"recipe 'passes' must be a list or a pipeline string, got {type(passes).__name__}")
    return _from_list(passes)


def _yaml():
    try:
        import yaml
    except ImportError:
        raise PipelineError("reading YAML recipes needs pyyaml: pip install pyyaml (or pared[dev])") from None
    return yaml


def _yaml_loader():
    """A SafeLoader that reads ``2:4`` as a string, not YAML 1.1's base-60 integer 124, and
    ``1e-3`` as a float, as YAML 1.2 does."""
    yaml = _yaml()
    int_tag, float_tag = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag not in (int_tag, float_tag)]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        int_tag, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"), list("-+0123456789")
    )
    Loader.add_implicit_resolver(
        float_tag,
        re.compile(
            r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    )
    return Loader


def parse_yaml(text: str) -> list[Pass]:
    """Parse a YAML recipe: a list of entries, or a mapping with ``passes``."""
    yaml = _yaml()
    try:
        data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise PipelineError(f"malformed YAML recipe: {e}") from None
    if isinstance(data, str):
        return parse_pipeline_string(data)
    if isinstance(data, Mapping):
        return _from_recipe(data)
    if isinstance(data, list):
        return _from_list(data)
    raise PipelineError(f"a YAML recipe is a list of passes or a mapping with 'passes', got {type(data).__name__}")


def load_pipeline_file(path: Union[str, os.PathLike]) -> list[Pass]:
    """Read a YAML recipe file (or a file holding a pipeline string)."""
    p = Path(path)
    if not p.is_file():
        raise PipelineError(f"recipe file {str(p)!r} not found")
    return parse_yaml(p.read_text())


# --- building passes -----------------------------------------------------------------------------


def _make(name: str, options: Mapping[str, Any], where: str, _seen: tuple[str, ...] = ()) -> list[Pass]:
    if name in PRESETS:
        if options:
            raise PipelineError(f"preset {name!r} ({PRESETS[name]}) takes no options {where}; list its passes instead")
        if name in _seen:
            raise PipelineError(f"preset {name!r} refers to itself")
        return [
            p for n, o, _ in _split_string(PRESETS[name]) for p in _make(n, o, f"in preset {name!r}", (*_seen, name))
        ]
    names = available_passes()
    if name not in names:
        raise PipelineError(
            f"unknown pass {name!r} {where}{did_you_mean(name, [*names, *PRESETS])}; "
            f"available passes: {', '.join(names)}; presets: {', '.join(sorted(PRESETS))}"
        )
    try:
        return [get_pass(name).from_options(options)]
    except PassOptionError as e:
        raise PipelineError(f"{e} {where}") from None
