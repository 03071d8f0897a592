"""The IR's values, equations and graphs (modelled on the jaxpr).

A :class:`Graph` is inputs, a parameter table, equations in topological order, and outputs.
:class:`Var` compares by identity; :class:`Literal` and :class:`Param` by value. Equations and
graphs are immutable: ``replace`` returns a new object, or ``self`` when nothing changed, so
rewrites detect "no change" by identity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Iterator, Optional, Union

from .types import TensorType


class Var:
    """An SSA value defined by a graph input or an equation output. Compared by identity."""

    __slots__ = ("type",)

    def __init__(self, type: TensorType):
        if not isinstance(type, TensorType):
            raise TypeError(f"Var needs a TensorType, got {type!r}")
        self.type = type

    def __repr__(self) -> str:
        return f"Var<{self.type}>@{id(self):x}"


class Literal:
    """A scalar constant (int, float or bool) with a rank-0 type."""

    __slots__ = ("value", "type")

    def __init__(self, value: Union[int, float, bool], type: TensorType):
        if type.shape != ():
            raise ValueError(f"Literal must be a scalar, got type {type}")
        if type.dtype.kind == "bool":
            value = bool(value)
        elif type.dtype.is_int:
            value = int(value)
        else:
            value = float(value)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "type", type)

    def __setattr__(self, *_):
        raise AttributeError("Literal is immutable")

    def _key(self):
        return (self.type, repr(self.value))  # repr makes nan equal to nan

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Literal) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Literal({self.value!r}, {self.type})"

    @property
    def is_finite(self) -> bool:
        return not isinstance(self.value, float) or math.isfinite(self.value)


@dataclass(frozen=True)
class Param:
    """A named weight; its value lives in the graph's weight table under ``name``."""

    name: str
    type: TensorType


Atom = Union[Var, Literal, Param]


class Attrs(Mapping):
    """An immutable, hashable attribute dictionary (keys sorted)."""

    __slots__ = ("_items", "_dict", "_hash")

    def __init__(self, items: Union[Mapping, Iterator, None] = None):
        d = dict(items or {})
        self._items = tuple(sorted((k, _freeze(v)) for k, v in d.items()))
        self._dict = dict(self._items)
        self._hash = None

    def __getitem__(self, k):
        return self._dict[k]

    def __iter__(self):
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple((k, _hashable(v)) for k, v in self._items))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Attrs):
            return _hashable(self._items) == _hashable(other._items)
        if isinstance(other, Mapping):
            return self == Attrs(other)
        return False

    def __repr__(self) -> str:
        return f"Attrs({self._dict!r})"

    def set(self, **kw) -> Attrs:
        return Attrs({**self._dict, **kw})


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return Attrs(v)
    if type(v).__module__ == "numpy":  # numpy scalars
        return v.item()
    return v


def _hashable(v):
    # floats: nan must equal nan for CSE/structural equality; -0.0 differs from 0.0
    if isinstance(v, float):
        return ("f", repr(v))
    if isinstance(v, tuple):
        return tuple(_hashable(x) for x in v)
    return v


@dataclass(frozen=True, eq=False)
class Eqn:
    """``outputs = op(*inputs, **attrs)``, with optional sub-graph ``regions`` and a source ``loc``."""

    op: str
    inputs: tuple[Atom, ...]
    attrs: Attrs
    outputs: tuple[Var, ...]
    regions: tuple[Graph, ...] = ()
    loc: str = ""

    def __post_init__(self):
        if not isinstance(self.attrs, Attrs):
            object.__setattr__(self, "attrs", Attrs(self.attrs))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "regions", tuple(self.regions))

    def replace(self, **kw) -> Eqn:
        """A copy with the given fields changed; ``self`` if every field is unchanged."""
        if "attrs" in kw and not isinstance(kw["attrs"], Attrs):
            kw["attrs"] = Attrs(kw["attrs"])
        for k in ("inputs", "outputs", "regions"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if all(_same(getattr(self, k), v) for k, v in kw.items()):
            return self
        return Eqn(**{f.name: kw.get(f.name, getattr(self, f.name)) for f in fields(self)})

    @property
    def out(self) -> Var:
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} outputs, not 1")
        return self.outputs[0]


def _same(a, b) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping) and not isinstance(a, Attrs):
        # weight tables: same names bound to the very same array objects
        return a.keys() == b.keys() and all(a[k] is b[k] for k in a)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(x is y or (not isinstance(x, Var) and x == y) for x, y in zip(a, b))
    return a is b or a == b


@dataclass(frozen=True, eq=False)
class Graph:
    """inputs, declared params, equations (topologically ordered), outputs, and weight values.

    ``params`` declares every weight the equations may reference (name and type); ``weights``
    maps names to array values and may be partial (a parsed graph has none). Region graphs
    (bodies of fused/control-flow ops) declare no params: they reference the root graph's.
    """

    inputs: tuple[Var, ...]
    eqns: tuple[Eqn, ...]
    outputs: tuple[Atom, ...]
    params: tuple[Param, ...] = ()
    weights: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "eqns", tuple(self.eqns))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "params", tuple(self.params))
        if not isinstance(self.weights, MappingProxyType):
            object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    def replace(self, **kw) -> Graph:
        if all(_same(getattr(self, k), tuple(v) if isinstance(v, list) else v) for k, v in kw.items()):
            return self
        return Graph(**{f.name: kw.get(f.name, getattr(self, f.name)) for f in fields(self)})

    @property
    def param_types(self) -> dict[str, TensorType]:
        return {p.name: p.type for p in self.params}

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"graph has no param {name!r}")

    def weight(self, name: str):
        try:
            return self.weights[name]
        except KeyError:
            raise KeyError(f"graph has no value for param {name!r} (it was parsed from text or never set)") from None

    def with_weights(self, updates: Mapping[str, Any], params: Optional[Mapping[str, TensorType]] = None) -> Graph:
        """Set weight values (and, for new or retyped params, their declared types)."""
        table = {p.name: p for p in self.params}
        for name, t in (params or {}).items():
            table[name] = Param(name, t)
        return self.replace(params=tuple(table.values()), weights={**self.weights, **updates})

    def walk(self) -> Iterator[Eqn]:
        """Every equation, including those inside regions, in order."""
        for e in self.eqns:
            yield e
            for r in e.regions:
                yield from r.walk()

    def free_vars(self) -> set[Var]:
        """Vars this graph reads without defining them: what a region captures from outside."""
        defined, free = set(self.inputs), set()
        for e in self.eqns:
            free |= {a for a in e.inputs if isinstance(a, Var) and a not in defined}
            for r in e.regions:
                free |= r.free_vars() - defined
            defined.update(e.outputs)
        return free | {a for a in self.outputs if isinstance(a, Var) and a not in defined}

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph: {len(self.inputs)} inputs, {len(self.params)} params, {len(self.eqns)} eqns>"
