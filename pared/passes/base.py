"""The pass base class and the pass registry.

A pass is a frozen dataclass whose fields are its options (xDSL's ``ModulePass``), with a
registered ``name`` and a pure ``run(graph, ctx) -> Graph`` that never mutates its input::

    @register_pass("dce")
    @dataclass(frozen=True)
    class DCE(Pass):
        keep_params: bool = False

        def run(self, graph, ctx):
            ...

Option fields are typed with int, float, bool, str, ``Optional[...]``, ``Literal[...]`` choices
or tuples; :func:`coerce_option` converts pipeline-string and recipe values to those types.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Union

if TYPE_CHECKING:
    from ..ir import Graph
    from .context import PassContext


class PassOptionError(ValueError):
    """A pass option is unknown or its value does not fit the option's type."""


class Pass:
    """Base of every pass. Subclasses are frozen dataclasses registered with :func:`register_pass`."""

    name: ClassVar[str] = ""
    #: True for passes whose purpose is to rewrite weight layers (quantize, sparsify): when such a
    #: pass adds no report row that changed a layer, the offline entry points say nothing matched.
    rewrites_layers: ClassVar[bool] = False

    def needs_calibration(self) -> bool:
        """Whether this pass, with its options, reads calibration data (``ctx.calibration``)."""
        return False

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        """Return the rewritten graph (``graph`` itself when nothing changed); never mutate it."""
        raise NotImplementedError(f"{type(self).__name__}.run")

    def __call__(self, graph: Graph, ctx: Optional[PassContext] = None) -> Graph:
        """Run this pass alone (no instruments); a fresh context when none is given."""
        from .context import PassContext

        return self.run(graph, ctx if ctx is not None else PassContext())

    @classmethod
    def option_types(cls) -> dict[str, Any]:
        """Option name -> its type annotation (resolved), in declaration order."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}

    @classmethod
    def from_options(cls, options: typing.Mapping[str, Any]) -> Pass:
        """Build the pass from raw option values (strings are converted by each option's type)."""
        types_ = cls.option_types()
        unknown = [k for k in options if k not in types_]
        if unknown:
            raise PassOptionError(
                f"pass {cls.name!r} has no option {unknown[0]!r}{did_you_mean(unknown[0], types_)}; "
                f"valid options: {', '.join(types_) or 'none'}"
            )
        kwargs = {k: coerce_option(types_[k], v, f"{cls.name}.{k}") for k, v in options.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:  # a __post_init__ check on the values
            raise PassOptionError(f"pass {cls.name!r}: {e}") from e

    def options_text(self) -> str:
        """``name{a=1,b=x}`` with the options that differ from their defaults."""
        parts = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING
            )
            if v != default:
                parts.append(f"{f.name}={_format_value(v)}")
        return self.name + ("{" + ",".join(parts) + "}" if parts else "")


_PASSES: dict[str, type[Pass]] = {}


def register_pass(name: str):
    """Class decorator: register a frozen-dataclass ``Pass`` subclass under ``name``."""

    def wrap(cls: type[Pass]) -> type[Pass]:
        if not (isinstance(cls, type) and issubclass(cls, Pass)):
            raise TypeError(f"register_pass({name!r}): {cls!r} is not a Pass subclass")
        params = cls.__dict__.get("__dataclass_params__")
        if params is None or not params.frozen:
            raise TypeError(f"register_pass({name!r}): decorate {cls.__name__} with @dataclass(frozen=True) first")
        if name in _PASSES and _PASSES[name] is not cls:
            raise ValueError(f"pass {name!r} is already registered (by {_PASSES[name].__qualname__})")
        cls.name = name
        cls.option_types()  # fail now, not in a pipeline, if an annotation cannot be resolved
        _PASSES[name] = cls
        return cls

    return wrap


def get_pass(name: str) -> type[Pass]:
    """The pass class registered under ``name``; KeyError lists the valid names."""
    _load_builtin_passes()
    try:
        return _PASSES[name]
    except KeyError:
        raise KeyError(
            f"unknown pass {name!r}{did_you_mean(name, _PASSES)}; available: {', '.join(sorted(_PASSES))}"
        ) from None


def available_passes() -> list[str]:
    """Registered pass names, sorted."""
    _load_builtin_passes()
    return sorted(_PASSES)


BUILTIN_PASS_PACKAGES = ("cleanup", "fuse", "sparsify", "quantize", "train")


def _load_builtin_passes() -> None:
    """Import pared's pass packages (importing registers their passes)."""
    import importlib

    for pkg in BUILTIN_PASS_PACKAGES:
        importlib.import_module(f"{__package__}.{pkg}")


def did_you_mean(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the valid names close to ``name`` (or extending it), else ``""``."""
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    close += [v for v in valid if len(name) >= 3 and (v.startswith(name) or name.startswith(v)) and v not in close]
    return f" (did you mean {' or '.join(repr(c) for c in close[:3])}?)" if close else ""


# ---------------------------------------------------------------------------------------------
# option values

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null", "~")


def describe_type(tp: Any) -> str:
    """A short human description of an option type, for error messages."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if _is_union(tp):
        return " or ".join("none" if a is type(None) else describe_type(a) for a in typing.get_args(tp))
    if origin is tuple or tp is tuple:
        args = typing.get_args(tp)
        inner = describe_type(args[0]) if args else "values"
        return f"a tuple of {inner}"
    return getattr(tp, "__name__", str(tp))


def coerce_option(tp: Any, value: Any, where: str = "option") -> Any:
    """Convert ``value`` (a string from a pipeline, or a YAML/python value) to type ``tp``."""
    try:
        return _coerce(tp, value)
    except _Bad as e:
        raise PassOptionError(f"{where}: {e} (expected {describe_type(tp)}, got {value!r})") from None


class _Bad(Exception):
    pass


def _is_union(tp) -> bool:
    return typing.get_origin(tp) is Union or isinstance(tp, getattr(types, "UnionType", ()))


def _coerce(tp: Any, v: Any) -> Any:
    if tp is Any:
        return v
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if v == c and type(v) is type(c):
                return c
            if isinstance(v, str) and not isinstance(c, str):
                try:
                    if _coerce(type(c), v) == c:
                        return c
                except _Bad:
                    pass
        raise _Bad("not a valid choice")
    if _is_union(tp):
        args = typing.get_args(tp)
        if type(None) in args and (v is None or (isinstance(v, str) and v.strip().lower() in _NONE)):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, v)
            except _Bad:
                continue
        raise _Bad("does not match any allowed type")
    if origin is tuple or tp is tuple:
        args = typing.get_args(tp)
        if isinstance(v, str):
            v = _split_sequence(v)
        if not isinstance(v, (list, tuple)):
            raise _Bad("not a sequence")
        if not args:
            return tuple(v)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], x) for x in v)
        if len(args) != len(v):
            raise _Bad(f"needs {len(args)} items")
        return tuple(_coerce(a, x) for a, x in zip(args, v))
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
            return v.strip().lower() in _TRUE
        raise _Bad("not a bool (true/false)")
    if tp is int:
        if isinstance(v, bool):
            raise _Bad("not an int")
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str):
            try:
                return int(v.strip())
            except ValueError:
                raise _Bad("not an int") from None
        raise _Bad("not an int")
    if tp is float:
        if isinstance(v, bool):
            raise _Bad("not a number")
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v.strip())
            except ValueError:
                raise _Bad("not a number") from None
        raise _Bad("not a number")
    if tp is str:
        if isinstance(v, str):
            return _unquote(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)  # YAML reads 2:4-like or numeric-looking strings as numbers
        raise _Bad("not a string")
    if isinstance(tp, type):
        if isinstance(v, tp):
            return v
        raise _Bad(f"not a {tp.__name__}")
    raise _Bad(f"unsupported option type {tp!r}")


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    return s


def _split_sequence(s: str) -> list[str]:
    """``(1,2)``, ``[1, 2]``, ``1:2`` or ``1`` -> the item strings."""
    s = s.strip()
    if s[:1] in "([" and s[-1:] in ")]":
        s = s[1:-1]
    if not s.strip():
        return []
    sep = "," if "," in s else ":" if ":" in s else None
    parts = s.split(sep) if sep else [s]
    return [p.strip() for p in parts if p.strip()]


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, tuple):
        return "(" + ",".join(_format_value(x) for x in v) + ")"
    return str(v)
