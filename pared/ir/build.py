"""Creating equations and graphs: ``make_eqn`` (type-inferred) and :class:`GraphBuilder`."""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from . import dtypes as DT
from .core import Atom, Eqn, Graph, Literal, Param, Var
from .opdef import OPS, get_op
from .types import TensorType, scalar, tensor


def make_eqn(
    op: str,
    inputs: Sequence[Atom],
    attrs: Optional[Mapping[str, Any]] = None,
    regions: Sequence[Graph] = (),
    loc: str = "",
) -> Eqn:
    """An equation with normalized attrs and fresh output Vars typed by the op's rule."""
    opdef = get_op(op)
    a = opdef.normalize_attrs(attrs or {})
    outs = opdef.infer_types([x.type for x in inputs], a, regions)
    return Eqn(op, tuple(inputs), a, tuple(Var(t) for t in outs), tuple(regions), loc)


def literal(value: Union[int, float, bool], dtype="f32") -> Literal:
    return Literal(value, scalar(dtype))


class GraphBuilder:
    """Builds a Graph op by op: ``b.op("add", x, y)`` or ``b.add(x, y)``.

    Python numbers among an op's inputs become Literals of the dtype of its first non-bool tensor
    input (so ``where(cond, x, 0.5)`` gets x's dtype).
    """

    def __init__(self):
        self._inputs: list[Var] = []
        self._eqns: list[Eqn] = []
        self._params: dict[str, Param] = {}
        self._weights: dict[str, Any] = {}

    def input(self, shape_or_type: Union[TensorType, Sequence], dtype="f32") -> Var:
        t = shape_or_type if isinstance(shape_or_type, TensorType) else tensor(shape_or_type, dtype)
        v = Var(t)
        self._inputs.append(v)
        return v

    def param(self, name: str, value: Any = None, type: Optional[TensorType] = None) -> Param:
        """Declare a weight named ``name``; its type comes from ``value`` unless given."""
        if name in self._params:
            raise ValueError(f"param {name!r} declared twice")
        if type is None:
            if value is None:
                raise ValueError(f"param {name!r} needs a value or a type")
            arr = np.asarray(value)
            type = TensorType(arr.shape, DT.from_numpy(arr.dtype))
        p = Param(name, type)
        self._params[name] = p
        if value is not None:
            self._weights[name] = value
        return p

    def op(self, name: str, *inputs, regions: Sequence[Graph] = (), loc: str = "", **attrs):
        """Append ``name(*inputs, **attrs)``; returns its output Var (a tuple if several)."""
        tensors = [x for x in inputs if isinstance(x, (Var, Param, Literal))]
        ref = next((x for x in tensors if x.type.dtype != DT.boolean), tensors[0] if tensors else None)
        dt = ref.type.dtype if ref is not None else DT.f32
        atoms = [x if isinstance(x, (Var, Param, Literal)) else literal(x, dt) for x in inputs]
        eqn = make_eqn(name, atoms, attrs, regions, loc)
        self._eqns.append(eqn)
        return eqn.outputs[0] if len(eqn.outputs) == 1 else eqn.outputs

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in OPS:
            raise AttributeError(name)
        return partial(self.op, name)

    def build(self, *outputs: Atom) -> Graph:
        return Graph(
            tuple(self._inputs), tuple(self._eqns), tuple(outputs), tuple(self._params.values()), dict(self._weights)
        )
