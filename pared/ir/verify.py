"""The verifier: SSA, types equal to the op rules, params declared and valued consistently,
encodings well-formed. Errors show the equations around the bad one."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .core import Eqn, Graph, Literal, Param, Var
from .errors import IRError, VerifyError
from .opdef import OPS
from .printer import eqn_lines_with_names, format_type
from .types import Quant, Sparse, SparseQuant, TensorType


def check_encoding(t: TensorType) -> Optional[str]:
    """Why ``t``'s encoding is inconsistent with its dtype/shape, or None when it is fine."""
    enc = t.encoding
    if enc is None:
        return None
    if isinstance(enc, SparseQuant):
        return check_encoding(t.with_(encoding=enc.sparse)) or check_encoding(t.with_(encoding=enc.quant))
    if isinstance(enc, Quant):
        if enc.scheme in ("sym", "asym"):
            if not t.dtype.is_int:
                return f"#quant scheme {enc.scheme} needs an integer dtype, not {t.dtype}"
            if enc.bits > t.dtype.bits or enc.bits < 1:
                return f"#quant bits={enc.bits} does not fit dtype {t.dtype} ({t.dtype.bits} bits)"
            if enc.signed != (t.dtype.kind == "int"):
                return f"#quant signed={enc.signed} contradicts dtype {t.dtype}"
        elif enc.scheme == "float":
            if not (t.dtype.is_float and t.dtype.bits == enc.bits):
                return f"#quant scheme float bits={enc.bits} needs a float dtype of that width, not {t.dtype}"
        else:
            return f"#quant scheme {enc.scheme!r} unknown (sym, asym, float)"
        for name in ("axis", "group_axis"):
            a = getattr(enc, name)
            if a is not None and not -t.rank <= a < t.rank:
                return f"#quant {name}={a} out of range for rank {t.rank}"
        if (enc.group_size is None) != (enc.group_axis is None):
            return "#quant group_size and group_axis go together"
        if enc.group_size is not None and enc.group_size < 1:
            return f"#quant group_size={enc.group_size} must be positive"
        return None
    if isinstance(enc, Sparse):
        if enc.format == "nm":
            if enc.n is None or enc.m is None or not 0 < enc.n < enc.m:
                return f"#sparse nm needs 0 < n < m, got n={enc.n} m={enc.m}"
            if not -t.rank <= enc.axis < t.rank:
                return f"#sparse axis={enc.axis} out of range for rank {t.rank}"
            d = t.shape[enc.axis]
            if isinstance(d, int) and d % enc.m:
                return f"#sparse {enc.n}:{enc.m} needs dim {enc.axis} ({d}) divisible by {enc.m}"
        elif enc.format == "block":
            if not enc.block or len(enc.block) != t.rank:
                return f"#sparse block needs a block shape of rank {t.rank}, got {enc.block}"
            for d, b in zip(t.shape, enc.block):
                if b < 1 or (isinstance(d, int) and d % b):
                    return f"#sparse block {enc.block} does not tile shape {list(t.shape)}"
        elif enc.format not in ("bitmask", "csr"):
            return f"#sparse format {enc.format!r} unknown (nm, bitmask, block, csr)"
        return None
    return f"unknown encoding {enc!r}"


def _context(g: Graph, index: int, radius: int = 3) -> str:
    lines, starts = eqn_lines_with_names(g)
    if not starts:
        return ""
    index = min(index, len(starts) - 1)
    lo = starts[max(0, index - radius)]
    hi = starts[index + radius + 1] if index + radius + 1 < len(starts) else len(lines)
    first, last = starts[index], (starts[index + 1] if index + 1 < len(starts) else len(lines))
    out = [(">> " if first <= i < last else "   ") + lines[i] for i in range(lo, hi)]
    return "\n".join(out)


def verify(g: Graph) -> Graph:
    """Check every invariant of ``g``; returns ``g`` unchanged or raises VerifyError."""
    declared: dict[str, Param] = {}
    for p in g.params:
        if p.name in declared:
            raise VerifyError(f"param @{p.name} declared twice")
        declared[p.name] = p
        if not p.type.is_static:
            raise VerifyError(f"param @{p.name} has a symbolic shape {format_type(p.type)}; params are static")
        why = check_encoding(p.type)
        if why:
            raise VerifyError(f"param @{p.name}: bad encoding: {why}")
        if p.name in g.weights:
            w = g.weights[p.name]
            shape = tuple(getattr(w, "shape", np.shape(w)))
            if shape != p.type.shape:
                raise VerifyError(
                    f"param @{p.name}: value has shape {list(shape)} but the type says {format_type(p.type)}"
                )
    for name in g.weights:
        if name not in declared:
            raise VerifyError(f"weight {name!r} has a value but no param declaration")
    scope = _Scope()
    for i, v in enumerate(g.inputs):
        scope.define(v, f"input {i}")
    _verify_body(g, g, declared, scope, [])
    return g


class _Scope:
    """Values visible at a point (``visible``) and every value defined so far (``ever``, for SSA).

    A region's values are visible only inside it: they are removed when its body is done, so no
    set is copied per equation and verification stays linear in the graph size.
    """

    def __init__(self):
        self.visible: set[Var] = set()
        self.ever: set[Var] = set()
        self.log: list[Var] = []  # definition order, to drop a region's values when it closes

    def __contains__(self, v) -> bool:
        return v in self.visible

    def define(self, v, where: str) -> None:
        if not isinstance(v, Var):
            raise VerifyError(f"{where}: defines {v!r}, not a Var")
        if v in self.ever:
            raise VerifyError(f"{where}: value {format_type(v.type)} is defined twice (SSA)")
        why = check_encoding(v.type)
        if why:
            raise VerifyError(f"{where}: bad encoding: {why}")
        self.ever.add(v)
        self.visible.add(v)
        self.log.append(v)

    def close_region(self, mark: int) -> None:
        """Hide every value defined since ``mark`` (``len(self.log)`` when the region opened)."""
        for v in self.log[mark:]:
            self.visible.discard(v)
        del self.log[mark:]


def _verify_body(root: Graph, g: Graph, declared, defined: _Scope, path: list[int]) -> None:
    for i, e in enumerate(g.eqns):
        top = path[0] if path else i
        where = f"equation {'/'.join(map(str, path + [i]))} ({e.op})"
        try:
            _verify_eqn(root, e, declared, defined, path + [i])
        except VerifyError as err:
            if err.context:
                raise
            raise VerifyError(f"{where}: {err.message}", _context(root, top)) from None
        except IRError as err:
            raise VerifyError(f"{where}: {err}", _context(root, top)) from None
    for j, a in enumerate(g.outputs):
        _check_use(a, declared, defined, f"output {j}" + (f" of region in equation {path}" if path else ""))


def _check_use(a, declared, defined, where: str) -> None:
    if isinstance(a, Var):
        if a not in defined:
            raise VerifyError(f"{where} uses a value ({format_type(a.type)}) that is not defined before it")
    elif isinstance(a, Param):
        p = declared.get(a.name)
        if p is None:
            raise VerifyError(f"{where} uses @{a.name}, which is not a declared param")
        if p.type != a.type:
            raise VerifyError(f"{where}: @{a.name} used as {format_type(a.type)} but declared {format_type(p.type)}")
    elif isinstance(a, Literal):
        if a.type.shape != ():
            raise VerifyError(f"{where}: literal {a.value!r} is not a scalar")
    else:
        raise VerifyError(f"{where}: {a!r} is not a Var, Param or Literal")


def _verify_eqn(root: Graph, e: Eqn, declared, defined: _Scope, path: list[int]) -> None:
    if e.op not in OPS:
        raise VerifyError(f"unknown op {e.op!r}")
    op = OPS[e.op]
    for j, a in enumerate(e.inputs):
        _check_use(a, declared, defined, f"input {j}")
    attrs = op.normalize_attrs(e.attrs)
    if attrs != e.attrs:
        missing = sorted(set(attrs) - set(e.attrs))
        raise VerifyError(
            f"attributes not normalized (missing defaults {missing})" if missing else "attributes not normalized"
        )
    if len(e.regions) != op.regions:
        raise VerifyError(f"takes {op.regions} region(s), has {len(e.regions)}")
    for k, r in enumerate(e.regions):
        if r.params:
            raise VerifyError(f"region {k} declares params; regions use the root graph's params")
        mark = len(defined.log)
        for n, v in enumerate(r.inputs):
            defined.define(v, f"region {k} input {n}")
        _verify_body(root, r, declared, defined, path)
        defined.close_region(mark)  # the region's values are not visible after it
    want = op.infer_types([a.type for a in e.inputs], e.attrs, e.regions)
    if len(want) != len(e.outputs):
        raise VerifyError(f"op gives {len(want)} result(s), equation has {len(e.outputs)}")
    for j, (v, t) in enumerate(zip(e.outputs, want)):
        if v.type != t:
            raise VerifyError(f"output {j} has type {format_type(v.type)} but {e.op} gives {format_type(t)}")
    for j, v in enumerate(e.outputs):
        defined.define(v, f"output {j}")
