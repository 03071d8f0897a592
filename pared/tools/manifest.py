"""The artifact manifest's schema, checked whole before anything in an artifact is trusted.

A schema is a plain value: a type (``str``, ``int``, ...), a tuple of types, a ``dict`` of field ->
schema (every field required, extra fields allowed), ``[schema]`` for a list of items, or
``{str: schema}`` for a mapping of any keys. :func:`check` returns the first problem as
``"files['graph.ir'].bytes: expected int, got str"``, so the message names the field.
"""

from __future__ import annotations

from typing import Any, Optional

DIGEST = str
FILE = {"sha256": DIGEST, "bytes": int}
TENSOR = {"dtype": str, "shape": [int], "codec": str, "stored_bytes": int, "dense_bytes": int, "sha256": {str: DIGEST}}
IO = {"name": str, "type": str}
SCHEMA = {
    "format": str,
    "format_version": int,
    "pared_version": str,
    "created": str,
    "recipe": {"pipeline": str, "source": (str, type(None))},
    "source": dict,
    "inputs": [IO],
    "outputs": [IO],
    "metrics": dict,
    "files": {str: FILE},
    "tensors": {str: TENSOR},
}
"""Every field of a version-1 manifest."""


def _name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_name(x) for x in t)
    return "null" if t is type(None) else t.__name__


def _kind(v: Any) -> str:
    return {dict: "object", list: "list", type(None): "null"}.get(type(v), type(v).__name__)


def check(value: Any, schema: Any = SCHEMA, where: str = "manifest") -> Optional[str]:
    """The first way ``value`` breaks ``schema`` (naming the field), or None."""
    if isinstance(schema, dict) and len(schema) == 1 and next(iter(schema)) is str:
        if not isinstance(value, dict):
            return f"{where}: expected an object, got {_kind(value)}"
        item = schema[str]
        for k, v in value.items():
            err = check(v, item, f"{where}[{k!r}]")
            if err:
                return err
        return None
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return f"{where}: expected an object, got {_kind(value)}"
        for field, sub in schema.items():
            if field not in value:
                return f"{where}: field {field!r} is missing"
            err = check(value[field], sub, f"{where}.{field}")
            if err:
                return err
        return None
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"{where}: expected a list, got {_kind(value)}"
        for i, v in enumerate(value):
            err = check(v, schema[0], f"{where}[{i}]")
            if err:
                return err
        return None
    types = schema if isinstance(schema, tuple) else (schema,)
    # bool is an int in Python, never in a manifest
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        return f"{where}: expected {_name(schema)}, got {_kind(value)} {value!r}"[:200]
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return f"{where}: must not be negative, got {value}"
    return None
