"""Evaluate a Graph with each op's numpy reference implementation.

An environment loop in the style of ``jax.core.eval_jaxpr``: values live in a dict keyed by
Var and are dropped after their last use, so peak memory is the live set, not the whole graph.
Symbolic dims are bound from the actual input shapes and checked for consistency.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ...ir import shapes
from ...ir.core import Eqn, Graph, Literal, Param, Var
from ...ir.dtypes import round_to
from ...ir.errors import BindError, IRError
from ...ir.opdef import get_op
from ...ir.shapes import resolve_dims


class InterpreterError(IRError):
    """An equation failed to evaluate; the message names the equation."""


def bind_symbols(types, arrays, env: Optional[dict[str, int]] = None, what: str = "input") -> dict[str, int]:
    """:func:`pared.ir.shapes.bind_symbols`, raising :class:`InterpreterError`."""
    try:
        return shapes.bind_symbols(types, arrays, env, what)
    except BindError as err:
        raise InterpreterError(str(err)) from None


def _last_uses(graph: Graph) -> dict[int, list[Var]]:
    """eqn index -> the Vars whose last use is that equation (outputs are never freed)."""
    last: dict[Var, int] = {}
    for i, e in enumerate(graph.eqns):
        for a in e.inputs:
            if isinstance(a, Var):
                last[a] = i
        for r in e.regions:
            for v in r.free_vars():
                last[v] = i
    keep = {a for a in graph.outputs if isinstance(a, Var)}
    out: dict[int, list[Var]] = {}
    for v, i in last.items():
        if v not in keep:
            out.setdefault(i, []).append(v)
    return out


def run_graph(
    graph: Graph,
    inputs: Sequence[Any],
    weights: Optional[Mapping[str, Any]] = None,
    *,
    _outer: Optional[dict] = None,
    _symbols: Optional[dict[str, int]] = None,
) -> list[np.ndarray]:
    """Run ``graph`` on numpy-convertible ``inputs``; returns the outputs as numpy arrays.

    ``weights`` overrides/extends ``graph.weights`` (e.g. for a graph parsed from text).
    """
    if len(inputs) != len(graph.inputs):
        raise InterpreterError(f"graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    table = graph.weights if weights is None else {**graph.weights, **weights}
    arrays = [round_to(v.type.dtype, np.asarray(x)) for v, x in zip(graph.inputs, inputs)]
    syms = bind_symbols([v.type for v in graph.inputs], arrays, _symbols)
    env: dict[Var, np.ndarray] = dict(_outer or {})
    env.update(zip(graph.inputs, arrays))

    def read(a):
        if isinstance(a, Var):
            return env[a]
        if isinstance(a, Literal):
            return round_to(a.type.dtype, np.asarray(a.value))
        if isinstance(a, Param):
            if a.name not in table:
                raise InterpreterError(f"no value for param @{a.name}: pass weights= or load them into the graph")
            return round_to(a.type.dtype, np.asarray(table[a.name]))
        raise InterpreterError(f"bad atom {a!r}")

    frees = _last_uses(graph)
    for i, eqn in enumerate(graph.eqns):
        try:
            outs = _eval_eqn(eqn, [read(a) for a in eqn.inputs], syms, table, env)
        except InterpreterError:
            raise
        except Exception as e:
            raise InterpreterError(f"equation {i} failed: {_describe(eqn)}\n  {type(e).__name__}: {e}") from e
        for v, val in zip(eqn.outputs, outs):
            env[v] = val
        for v in frees.get(i, ()):
            env.pop(v, None)
    return [read(a) for a in graph.outputs]


def _eval_eqn(eqn: Eqn, args: list, syms: dict[str, int], table, env) -> list[np.ndarray]:
    op = get_op(eqn.op)
    if op.impl is None:
        raise InterpreterError(f"op {eqn.op} has no reference implementation (it runs only on its own backend): {_describe(eqn)}")
    attrs = {k: resolve_dims(v, syms) for k, v in eqn.attrs.items()}
    if op.regions:
        attrs["regions"] = eqn.regions
        attrs["evaluate"] = lambda g, xs: run_graph(g, xs, table, _outer=env, _symbols=syms)
    res = op.impl(*args, **attrs)
    res = list(res) if isinstance(res, (tuple, list)) else [res]
    if len(res) != len(eqn.outputs):
        raise InterpreterError(f"{eqn.op} returned {len(res)} values for {len(eqn.outputs)} outputs")
    out = []
    for v, r in zip(eqn.outputs, res):
        r = round_to(v.type.dtype, np.asarray(r))
        syms.update(bind_symbols([v.type], [r], syms, what=f"output of {eqn.op}"))  # checks the shape
        out.append(r)
    return out


def _describe(eqn: Eqn) -> str:
    from ...ir.printer import format_eqn

    try:
        return format_eqn(eqn)
    except Exception:  # never let error formatting hide the real error
        return f"{eqn.op}(...)"
