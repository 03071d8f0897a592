"""The IR's text form (MLIR-like); :mod:`pared.ir.parser` reads it back.

    graph(%0:f32[B,16]) {
      param @fc1.weight:f32[32,16]
      %1:f32[B,32] = dot_general(%0, @fc1.weight) {batch=((),()), contract=((1,),(1,)), out_dtype=none}
      %2:f32[B,32] = mul(%1, 0.5:f32) loc("fc1")
      return %2
    }

Values are renumbered %0, %1, ... in definition order, so printing is deterministic.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Optional

from . import dims as D
from .core import Attrs, Eqn, Graph, Literal, Param, Var
from .dtypes import DType
from .types import SparseQuant, TensorType

_BARE_PARAM = re.compile(r"[A-Za-z0-9_./\-]+")


def format_param_name(name: str) -> str:
    return "@" + (name if _BARE_PARAM.fullmatch(name) else json.dumps(name))


def format_dims(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _encoding_fields(enc) -> str:
    items = []
    for k in enc.__dataclass_fields__:
        v = getattr(enc, k)
        if v is not None:
            items.append(f"{k}={format_attr(v)}")
    return ",".join(items)


def format_encoding(enc) -> str:
    if isinstance(enc, SparseQuant):
        return format_encoding(enc.sparse) + format_encoding(enc.quant)
    return f"#{enc.kind}({_encoding_fields(enc)})"


def format_type(t: TensorType) -> str:
    return f"{t.dtype.name}{format_dims(t.shape)}" + (format_encoding(t.encoding) if t.encoding else "")


def format_float(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(float(x))


def format_attr(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, DType):
        return v.name
    if isinstance(v, D.Sym):
        return str(v)
    if isinstance(v, tuple):
        inner = ",".join(format_attr(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, Attrs):
        return "{" + ", ".join(f"{k}={format_attr(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"attribute value {v!r} of type {type(v).__name__} has no text form")


class _Namer:
    def __init__(self):
        self.names: dict[Var, str] = {}

    def define(self, v: Var) -> str:
        name = f"%{len(self.names)}"
        self.names[v] = name
        return name

    def ref(self, a) -> str:
        if isinstance(a, Var):
            return self.names.get(a) or f"%<undefined {id(a):x}>"
        if isinstance(a, Param):
            return format_param_name(a.name)
        if isinstance(a, Literal):
            v = a.value
            text = format_attr(v) if not isinstance(v, float) else format_float(v)
            return f"{text}:{format_type(a.type)}"
        return repr(a)


def _eqn_lines(e: Eqn, namer: _Namer, indent: str) -> list[str]:
    # inputs are referenced before outputs are defined, so names follow definition order
    args = ", ".join(namer.ref(a) for a in e.inputs)
    outs = ", ".join(f"{namer.define(v)}:{format_type(v.type)}" for v in e.outputs)
    line = f"{indent}{outs} = {e.op}({args})"
    if e.attrs:
        line += " " + format_attr(e.attrs)
    if e.loc:
        line += f" loc({json.dumps(e.loc)})"
    lines = [line]
    for r in e.regions:
        rin = ", ".join(f"{namer.define(v)}:{format_type(v.type)}" for v in r.inputs)
        lines[-1] += f" region({rin}) {{"
        for re_ in r.eqns:
            lines += _eqn_lines(re_, namer, indent + "  ")
        lines.append(f"{indent}  return " + ", ".join(namer.ref(a) for a in r.outputs))
        lines.append(f"{indent}}}")
    return lines


def format_eqn(e: Eqn, namer: Optional[_Namer] = None) -> str:
    """One equation's text (names are local unless a namer from a graph print is given)."""
    namer = namer or _Namer()
    for a in e.inputs:
        if isinstance(a, Var) and a not in namer.names:
            namer.names[a] = f"%in{len(namer.names)}"
    return "\n".join(_eqn_lines(e, namer, ""))


def print_graph(g: Graph) -> str:
    namer = _Namer()
    ins = ", ".join(f"{namer.define(v)}:{format_type(v.type)}" for v in g.inputs)
    lines = [f"graph({ins}) {{"]
    for p in g.params:
        lines.append(f"  param {format_param_name(p.name)}:{format_type(p.type)}")
    for e in g.eqns:
        lines += _eqn_lines(e, namer, "  ")
    lines.append("  return " + ", ".join(namer.ref(a) for a in g.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


def eqn_lines_with_names(g: Graph) -> tuple[list[str], list[int]]:
    """The graph's text lines and, for each top-level equation, its first line index.

    Used by error messages that show the equations around a bad one.
    """
    namer = _Namer()
    for v in g.inputs:
        namer.define(v)
    lines: list[str] = []
    starts: list[int] = []
    for e in g.eqns:
        starts.append(len(lines))
        try:
            lines += _eqn_lines(e, namer, "  ")
        except Exception as exc:  # a corrupt eqn must still print something
            lines.append(f"  <unprintable {e.op}: {exc}>")
    return lines, starts
