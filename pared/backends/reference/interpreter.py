"""Evaluate a Graph with each op's numpy reference implementation (the ``reference`` backend).

An environment loop in the style of ``jax.core.eval_jaxpr``: values live in a dict keyed by
Var and are dropped after their last use, so peak memory is the live set, not the whole graph.
Symbolic dims are bound from the actual input shapes and checked for consistency. Each equation
runs its ``reference`` rule of the lowering table (:mod:`pared.backends.lowering`): for every op
with one, its numpy definition ``OpDef.impl``; for ``opaque``, the caller's callable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ...ir import shapes
from ...ir.core import Eqn, Graph, Literal, Param, Var
from ...ir.dtypes import round_to
from ...ir.errors import BindError, IRError
from ...ir.opdef import OPS, get_op
from ...ir.shapes import resolve_dims
from ..lowering import lower_eqn, register_lowering


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
    opaque: Optional[Mapping[str, Callable]] = None,
    _outer: Optional[dict] = None,
    _symbols: Optional[dict[str, int]] = None,
) -> list[np.ndarray]:
    """Run ``graph`` on numpy-convertible ``inputs``; returns the outputs as numpy arrays.

    ``weights`` overrides/extends ``graph.weights`` (e.g. for a graph parsed from text).
    ``opaque`` maps an ``opaque`` equation's ``target`` to a callable on numpy arrays (the
    frontend's framework call, converted at its boundary) run in its place.
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
            outs = _eval_eqn(eqn, [read(a) for a in eqn.inputs], syms, table, env, opaque or {})
        except InterpreterError:
            raise
        except Exception as e:
            raise InterpreterError(f"equation {i} failed: {_describe(eqn)}\n  {type(e).__name__}: {e}") from e
        for v, val in zip(eqn.outputs, outs):
            env[v] = val
        for v in frees.get(i, ()):
            env.pop(v, None)
    return [read(a) for a in graph.outputs]


@dataclass(frozen=True)
class Evaluation:
    """The reference backend's lowering state (its rules' ``ctx``): the symbols bound so far, the
    callables for ``opaque`` targets, and ``evaluate(graph, args)`` for sub-graphs (same weights)."""

    symbols: dict[str, int]
    opaque: Mapping[str, Callable]
    evaluate: Callable[[Graph, Sequence], list]


def evaluate_impl(ctx: Evaluation, eqn: Eqn, *arrays):
    """The reference rule of every op: its numpy definition ``OpDef.impl``, symbolic dims in its
    attributes resolved (region ops also get ``regions`` and ``evaluate``)."""
    op = get_op(eqn.op)
    attrs = {k: resolve_dims(v, ctx.symbols) for k, v in eqn.attrs.items()}
    if op.regions:
        attrs["regions"] = eqn.regions
        attrs["evaluate"] = ctx.evaluate
    return op.impl(*arrays, **attrs)


def _opaque(ctx: Evaluation, eqn: Eqn, *arrays):
    """A framework call, through the callable ``run_graph(opaque=...)`` has for its target."""
    call = ctx.opaque.get(eqn.attrs["target"])
    return NotImplemented if call is None else call(*arrays)


def _no_rule(ctx: Evaluation, eqn: Eqn, *arrays):
    if get_op(eqn.op).impl is not None:  # an op registered after this module was imported
        return evaluate_impl(ctx, eqn, *arrays)
    hint = "pass run_graph(opaque={target: callable})" if eqn.op == "opaque" else "it runs only on its own backend"
    raise InterpreterError(f"op {eqn.op} has no reference implementation ({hint}): {_describe(eqn)}")


for _name, _op in OPS.items():
    if _op.impl is not None:
        register_lowering(_name, "reference", evaluate_impl)
register_lowering("opaque", "reference", _opaque)


def _eval_eqn(
    eqn: Eqn, args: list, syms: dict[str, int], table, env, opaque: Mapping[str, Callable]
) -> list[np.ndarray]:
    ctx = Evaluation(syms, opaque, lambda g, xs: run_graph(g, xs, table, opaque=opaque, _outer=env, _symbols=syms))
    res = lower_eqn("reference", ctx, eqn, args, reference=_no_rule)
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
