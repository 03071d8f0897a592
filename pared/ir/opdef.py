"""The op registry: every op is defined once, with its attribute schema, shape/dtype rule,
numpy reference implementation, cost and traits. Frontends map into this set; backends map out of it.

Traits name the classes of ops that passes and backends treat alike (:data:`TRAITS`); ask
``get_op(name).has("row")`` or ``ops_with("elementwise")`` instead of listing op names.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from . import dims as D
from .core import Attrs
from .dtypes import ALL as ALL_DTYPES
from .dtypes import DType
from .errors import AttrError, TypeInferenceError, UnknownOpError
from .types import TensorType

_REQUIRED = object()
ATTR_KINDS = (
    "int",
    "float",
    "bool",
    "str",
    "dtype",
    "ints",
    "dims",
    "nested_ints",
    "optional_int",
    "optional_float",
    "any",
)


@dataclass(frozen=True)
class AttrSpec:
    """One attribute: its kind, default (absent: required) and allowed values."""

    kind: str
    default: Any = _REQUIRED
    choices: tuple = ()

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def attr(kind: str, default: Any = _REQUIRED, choices: tuple = ()) -> AttrSpec:
    if kind not in ATTR_KINDS:
        raise ValueError(f"unknown attribute kind {kind!r}; valid: {ATTR_KINDS}")
    return AttrSpec(kind, default, tuple(choices))


@dataclass(frozen=True)
class Cost:
    """Work of one op execution: floating/integer operations and bytes moved to/from memory."""

    flops: int
    bytes: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes)


@dataclass(frozen=True)
class ConcreteType:
    """A tensor type with every symbol resolved; what cost functions see."""

    shape: tuple[int, ...]
    dtype: DType

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return int(np.ceil(self.numel * self.dtype.bits / 8))


InferFn = Callable[[Sequence[TensorType], Attrs], Sequence[TensorType]]
ImplFn = Callable[..., Any]
CostFn = Callable[[Sequence[ConcreteType], Sequence[ConcreteType], Attrs], Cost]


def memory_cost(ins: Sequence[ConcreteType], outs: Sequence[ConcreteType], flops_per_out: int = 1) -> Cost:
    return Cost(flops_per_out * sum(o.numel for o in outs), sum(t.nbytes for t in (*ins, *outs)))


def elementwise_cost(flops_per_elem: int = 1) -> CostFn:
    return lambda ins, outs, attrs: memory_cost(ins, outs, flops_per_elem)


TRAITS: Mapping[str, str] = {
    "elementwise": "each output element depends only on the same-position elements of the (numpy-"
    "broadcast) inputs; a generated kernel computes it per element (quantize/dequantize count: "
    "their scales broadcast, or repeat over groups)",
    "reduction": "reduces its `axes` attribute (with `keepdims`): reduce_sum/max/min/mean/prod",
    "row": "computed one row at a time along the last axis by a fused reduction kernel: the "
    "last-axis sum/max/min/mean reductions, softmax, log_softmax and the trailing-axis norms",
    "free": "a view of its input's memory: backends launch no kernel for it",
    "quant": "reads or writes quantized values (quantize, dequantize, qlinear)",
}


@dataclass(frozen=True)
class OpDef:
    """The single definition of an op.

    ``infer(in_types, attrs)`` returns the output types (raise TypeInferenceError on bad input);
    ``impl(*arrays, **attrs)`` is the numpy reference returning an array or a tuple of arrays
    (``None`` for ops that have none, e.g. opaque framework calls); ``cost`` estimates work.
    Region ops (``regions > 0``) get ``infer(in_types, attrs, regions)`` and
    ``impl(*arrays, regions=..., evaluate=..., **attrs)`` where ``evaluate(graph, args)`` runs a
    sub-graph with the interpreter that is running the op.
    ``arity`` is the number of inputs (``None``: variadic; a tuple: min/max).
    ``dtypes`` lists the input dtypes the op supports (tests sample them).
    ``traits`` are names from :data:`TRAITS` (query with :meth:`has` or :func:`ops_with`).
    ``decompose(eqn) -> (eqns, outputs)``, where an op has one, gives equations of other ops
    computing it (reading the equation's inputs) and maps each of its outputs to the atom that
    holds it; a backend with no rule for the op lowers these instead.
    """

    name: str
    infer: InferFn
    impl: Optional[ImplFn]
    attrs: Mapping[str, AttrSpec] = field(default_factory=dict)
    arity: Any = None
    cost: CostFn = field(default=elementwise_cost(1))
    pure: bool = True
    commutative: bool = False
    regions: int = 0
    dtypes: tuple[DType, ...] = ()
    doc: str = ""
    traits: frozenset[str] = frozenset()
    decompose: Optional[Callable[[Any], tuple[list, Mapping]]] = None

    def __post_init__(self):
        object.__setattr__(self, "traits", frozenset(self.traits))
        unknown = self.traits - set(TRAITS)
        if unknown:
            raise ValueError(f"op {self.name!r}: unknown trait(s) {sorted(unknown)}; valid: {sorted(TRAITS)}")

    def has(self, trait: str) -> bool:
        """Whether the op has ``trait`` (one of :data:`TRAITS`)."""
        if trait not in TRAITS:
            raise ValueError(f"unknown trait {trait!r}; valid: {sorted(TRAITS)}")
        return trait in self.traits

    def check_arity(self, n: int) -> None:
        a = self.arity
        if a is None:
            return
        lo, hi = (a, a) if isinstance(a, int) else a
        if not (lo <= n <= (hi if hi is not None else n)):
            want = str(lo) if lo == hi else f"{lo}..{hi if hi is not None else 'any'}"
            raise TypeInferenceError(f"{self.name} takes {want} inputs, got {n}")

    def normalize_attrs(self, attrs: Mapping[str, Any]) -> Attrs:
        """Check ``attrs`` against the schema and fill in defaults."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise AttrError(
                f"{self.name}: unknown attribute(s) {sorted(unknown)}; valid: {sorted(self.attrs) or 'none'}"
            )
        out = {}
        for k, spec in self.attrs.items():
            if k in attrs:
                out[k] = _check_attr(self.name, k, spec, attrs[k])
            elif spec.required:
                raise AttrError(f"{self.name}: missing required attribute {k!r} ({spec.kind})")
            else:
                out[k] = spec.default
        return Attrs(out)

    def infer_types(
        self, in_types: Sequence[TensorType], attrs: Attrs, regions: Sequence = ()
    ) -> tuple[TensorType, ...]:
        """Output types for these inputs; region ops' rules also receive their sub-graphs."""
        self.check_arity(len(in_types))
        if len(regions) != self.regions:
            raise TypeInferenceError(f"{self.name} takes {self.regions} region(s), got {len(regions)}")
        try:
            out = (
                self.infer(list(in_types), attrs, list(regions)) if self.regions else self.infer(list(in_types), attrs)
            )
        except (TypeInferenceError, AttrError):
            raise
        except Exception as e:  # a rule that crashed on odd input is still a type error
            raise TypeInferenceError(f"{self.name}: shape rule failed on {[str(t) for t in in_types]}: {e}") from e
        return tuple([out] if isinstance(out, TensorType) else out)


def _check_attr(op: str, name: str, spec: AttrSpec, v: Any) -> Any:
    def bad(why: str):
        return AttrError(f"{op}: attribute {name!r} {why} (got {v!r})")

    k = spec.kind
    if v is None and (k.startswith("optional") or spec.default is None):
        return None
    v = _plain(v)
    if k == "int" or k == "optional_int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad("must be an int")
    elif k == "float" or k == "optional_float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad("must be a number")
        v = float(v)
    elif k == "bool":
        if not isinstance(v, bool):
            raise bad("must be a bool")
    elif k == "str":
        if not isinstance(v, str):
            raise bad("must be a string")
    elif k == "dtype":
        if isinstance(v, str):
            if v not in ALL_DTYPES:
                raise bad(f"must be a dtype ({', '.join(ALL_DTYPES)})")
            v = ALL_DTYPES[v]
        if not isinstance(v, DType):
            raise bad("must be a dtype")
    elif k == "ints":
        if not isinstance(v, (tuple, list)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise bad("must be a tuple of ints")
        v = tuple(v)
    elif k == "dims":
        if not isinstance(v, (tuple, list)):
            raise bad("must be a tuple of dims")
        out = []
        for x in v:
            if isinstance(x, str):
                x = D.parse_dim(x)
            if not (isinstance(x, D.Sym) or (isinstance(x, int) and not isinstance(x, bool))):
                raise bad("must be a tuple of ints or symbolic dims")
            out.append(x)
        v = tuple(out)
    elif k == "nested_ints":
        if not isinstance(v, (tuple, list)) or not all(
            isinstance(x, (tuple, list)) and all(isinstance(y, int) and not isinstance(y, bool) for y in x) for x in v
        ):
            raise bad("must be a tuple of tuples of ints")
        v = tuple(tuple(x) for x in v)
    if spec.choices and v not in spec.choices:
        raise bad(f"must be one of {spec.choices}")
    return v


def _plain(v: Any) -> Any:
    """numpy scalars -> Python scalars and lists -> tuples, recursively (frontends pass both)."""
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    return v


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} is already registered")
    OPS[op.name] = op
    return op


def ops_with(*traits: str) -> frozenset[str]:
    """Names of the registered ops that have every one of ``traits``."""
    unknown = set(traits) - set(TRAITS)
    if unknown:
        raise ValueError(f"unknown trait(s) {sorted(unknown)}; valid: {sorted(TRAITS)}")
    return frozenset(name for name, op in OPS.items() if op.traits.issuperset(traits))


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        close = difflib.get_close_matches(name, OPS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownOpError(f"unknown op {name!r}{hint}") from None


def concrete(t: TensorType, env: Mapping[str, int], default_symbol: int = 1) -> ConcreteType:
    """Resolve symbols with ``env`` (unknown symbols take ``default_symbol``)."""
    env2 = {s: env.get(s, default_symbol) for s in t.symbols}
    return ConcreteType(t.concrete_shape(env2), t.dtype)


def eqn_cost(eqn, env: Mapping[str, int] = {}) -> Cost:  # noqa: B006 - read-only default
    """Work of one equation; a region op adds the work of the equations inside its regions."""
    op = get_op(eqn.op)
    ins = [concrete(a.type, env) for a in eqn.inputs]
    outs = [concrete(v.type, env) for v in eqn.outputs]
    cost = op.cost(ins, outs, eqn.attrs)
    for region in eqn.regions:
        for inner in region.eqns:
            c = eqn_cost(inner, env)
            cost = Cost(cost.flops + c.flops, cost.bytes)  # inner values stay on chip: flops only
    return cost
