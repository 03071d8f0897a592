"""The JAX entry points: the ``@pared.jit`` decorator and ``pared.compress(fn, params, ...)``.

Both trace the function with the jaxpr frontend, run the recipe's passes over the IR, and lower
the result with the XLA backend to jax ops under ``jax.jit``. Because the lowering is ordinary
jax code, the result composes with ``jax.jit``, ``jax.grad`` and ``jax.vmap`` in any order: JAX
transforms the lowering itself (custom_jvp/custom_vjp rules of the original function are replaced
by autodiff of their inlined bodies, so a rewritten body is what gets differentiated).

Weights a pass rewrote (quantized, pruned) are frozen constants of the compiled function, computed
once from the concrete params at trace time (like Inductor's freezing); weights no pass touched
stay live arguments, so gradients with respect to them flow.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..backends.xla import graph_params, lower
from ..frontends.jax.importer import Traced, trace
from ..frontends.jax.rules import IR_OP_PREFIX
from ..ir.core import Graph
from ..passes.context import Report


def ir_op(op: str, **attrs) -> Callable[[Callable], Callable]:
    """Mark a jax function as one pared IR op (``softmax``, ``layer_norm``, ``gelu``, ...).

    The function still runs (and differentiates, vmaps) as itself: it is a nested ``jax.jit``
    whose name carries the op and its attrs, which the jaxpr frontend maps to a single IR
    equation instead of inlining the body. ``impl(*arrays, **attrs)`` must compute the op.
    """
    import jax

    def deco(impl: Callable) -> Callable:
        def marked(*args):
            return impl(*args, **attrs)

        marked.__name__ = marked.__qualname__ = IR_OP_PREFIX + op + json.dumps(attrs, sort_keys=True)
        return jax.jit(marked)

    return deco


def apply_recipe(graph: Graph, recipe, calibration=None, report=None, mesh=None, **opts) -> Graph:
    """Run ``recipe`` (a pipeline string or a parsed pipeline) over ``graph``; empty -> unchanged.

    ``calibration``: batches of the traced function's (non-param) inputs, for data-aware passes.
    ``report``: a :class:`pared.passes.context.Report` the passes add their rows to.
    ``mesh``: a ``jax.sharding.Mesh``: calibrate data-parallel over its devices (batch ``b`` on
    device ``b % n``, statistics combined with a ``psum``; :class:`~.distributed.JaxMeshReducer`).
    """
    if recipe is None or (isinstance(recipe, str) and not recipe.strip()):
        return graph
    from ..passes.context import PassContext
    from .pass_manager import run_pipeline

    ctx = PassContext(calibration=calibration, report=report if report is not None else Report())
    if mesh is not None:
        from .distributed import JaxMeshReducer

        ctx.calibration_reducer = JaxMeshReducer(mesh)
    return run_pipeline(graph, recipe, ctx, **opts)


def _leaf_key(x) -> tuple:
    return (tuple(np.shape(x)), str(getattr(x, "dtype", type(x).__name__)), bool(getattr(x, "weak_type", False)))


@dataclass
class _Compiled:
    """One specialisation: the lowered graph and where each of its weights comes from."""

    traced: Traced
    graph: Graph
    live: dict  # graph param name -> index of the params leaf that supplies it
    frozen: dict  # graph param name -> jax array (rewritten by a pass)
    run: Callable
    report: Report = field(default_factory=Report)


def check_params(params: Any) -> None:
    """Every params leaf must be an array or a number (a string leaf fails with its path)."""
    import jax

    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if isinstance(leaf, jax.core.Tracer):
            continue
        if isinstance(leaf, (str, bytes)) or np.asarray(leaf).dtype.kind in "OUS":
            raise TypeError(
                f"params leaf {jax.tree_util.keystr(path) or 'params'} is {type(leaf).__name__} "
                f"{leaf!r:.40}; params hold arrays only: keep names and settings out of the params "
                "pytree (close over them, or make them static arguments)"
            )


def _traced_params_error(params: Any) -> Optional[str]:
    """Why compressing failed when the params are tracers (pared.jit inside jit/grad/vmap), or None."""
    import jax

    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if isinstance(leaf, jax.core.Tracer):
            return (
                f"params leaf {jax.tree_util.keystr(path) or 'params'} is a tracer: the recipe needs the concrete "
                "weights to compress them, but this call is being traced (pared.jit inside jax.jit, grad or vmap "
                "over the params). Compress once outside: fn_c, params_c = pared.compress(fn, params, "
                "*example_args, recipe=...), then jax.jit(fn_c)(params_c, ...)"
            )
    return None


def _compile(fn, params, args, kwargs, recipe, opts) -> _Compiled:
    import jax

    check_params(params)
    traced = trace(fn, params, args, kwargs=kwargs)
    report = Report()
    try:
        graph = apply_recipe(traced.graph, recipe, report=report, **opts)
    except Exception as e:
        why = _traced_params_error(params)
        if why is None:
            raise
        raise TypeError(why) from e
    live, frozen_names = {}, []
    leaf_index = {name: i for i, name in enumerate(traced.param_names)}
    for p in graph.params:
        i = leaf_index.get(p.name)
        untouched = (
            i is not None
            and traced.graph.param(p.name).type == p.type
            and graph.weights.get(p.name) is traced.graph.weights.get(p.name)
        )
        if untouched:
            live[p.name] = i
        else:
            frozen_names.append(p.name)
    frozen = graph_params(graph.replace(params=tuple(graph.param(n) for n in frozen_names)))
    f = lower(graph)

    def run(live_leaves, frozen_weights, inputs):
        weights = {name: live_leaves[i] for name, i in live.items()}
        weights.update(frozen_weights)
        return f(weights, *inputs)

    return _Compiled(traced, graph, live, frozen, jax.jit(run), report)


class JitFunction:
    """The function ``pared.jit`` returns: compiles per (treedef, avals), then runs under jax.jit."""

    def __init__(
        self, fn: Callable, recipe=None, params_argnum: Optional[int] = 0, static_argnums: Sequence[int] = (), **opts
    ):
        if not callable(fn):
            raise TypeError(f"pared.jit: expected a function to compile, got {type(fn).__name__} {fn!r:.40}")
        self.fn = fn
        self.recipe = recipe
        self.params_argnum = params_argnum
        self.static_argnums = tuple(static_argnums)
        self.opts = opts
        self._cache: dict = {}
        functools.update_wrapper(self, fn)

    def _split(self, args):
        static = tuple((i, args[i]) for i in self.static_argnums)
        dyn = [a for i, a in enumerate(args) if i not in self.static_argnums]
        pi = self.params_argnum
        if pi is None:
            return static, None, dyn
        pi -= sum(1 for s in self.static_argnums if s < pi)
        return static, dyn[pi], dyn[:pi] + dyn[pi + 1 :]

    def _wrapped_fn(self, static):
        pi, fn = self.params_argnum, self.fn

        def call(*xs, **kw):
            if pi is not None:
                params, rest = xs[0], list(xs[1:])
                rest.insert(pi - sum(1 for s, _ in static if s < pi), params)
            else:
                rest = list(xs)
            for i, v in static:
                rest.insert(i, v)
            return fn(*rest, **kw)

        if pi is None:
            return lambda *xs, **kw: call(*xs, **kw)
        return lambda params, *xs, **kw: call(params, *xs, **kw)

    def _key(self, static, params, others, kwargs):
        import jax

        leaves, tree = jax.tree_util.tree_flatten((params, others, kwargs))
        return (tree, tuple(_leaf_key(x) for x in leaves), static)

    def lower_graph(self, *args, **kwargs) -> Graph:
        """The (recipe-rewritten) IR graph for these arguments."""
        return self._get(args, kwargs)[0].graph

    def _get(self, args, kwargs):
        static, params, others = self._split(args)
        key = self._key(static, params, others, kwargs)
        entry = self._cache.get(key)
        if entry is None:
            entry = _compile(self._wrapped_fn(static), params, others, kwargs, self.recipe, self.opts)
            self._cache[key] = entry
        return entry, params, others

    def __call__(self, *args, **kwargs):
        import jax

        entry, params, others = self._get(args, kwargs)
        p_leaves = jax.tree_util.tree_leaves(params)
        inputs = jax.tree_util.tree_leaves((tuple(others), kwargs))
        outs = entry.run(p_leaves, entry.frozen, inputs)
        return jax.tree_util.tree_unflatten(entry.traced.out_tree, outs)

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def jit(
    fn: Optional[Callable] = None,
    *,
    recipe=None,
    params_argnum: Optional[int] = 0,
    static_argnums: Sequence[int] = (),
    **opts,
):
    """Compile ``fn`` through pared: trace to IR, apply ``recipe``, lower to XLA.

    ``fn(params, *args)``: the pytree at ``params_argnum`` (None: no params) holds the weights
    passes may rewrite; its leaves are named by their pytree paths. Use as ``@pared.jit`` or
    ``@pared.jit(recipe="...")``. Retraces on new shapes, cached by (treedef, avals).
    """
    if fn is None:
        return lambda f: JitFunction(f, recipe, params_argnum, static_argnums, **opts)
    return JitFunction(fn, recipe, params_argnum, static_argnums, **opts)


@dataclass(eq=False)
class CompressedFunction:
    """``fn_c(params_c, *args)``: a compressed function taking its params as a flat dict pytree.

    Called with argument shapes other than the example's, it retraces the original function and
    reruns the recipe for the new structure, but always computes with the ``params_c`` it is given.
    """

    fn: Callable
    params: Any
    recipe: Any
    opts: dict
    _cache: dict = field(default_factory=dict)

    def compile(self, args) -> _Compiled:
        import jax

        leaves, tree = jax.tree_util.tree_flatten(tuple(args))
        key = (tree, tuple(_leaf_key(x) for x in leaves))
        entry = self._cache.get(key)
        if entry is None:
            entry = _compile(self.fn, self.params, args, {}, self.recipe, self.opts)
            entry = _Compiled(entry.traced, entry.graph, {}, {}, _flat_runner(entry.graph), entry.report)
            self._cache[key] = entry
        return entry

    @property
    def graph(self) -> Graph:
        """The graph of the first (example) specialisation."""
        return next(iter(self._cache.values())).graph

    def __call__(self, params_c, *args):
        import jax

        entry = self.compile(args)
        missing = [p.name for p in entry.graph.params if p.name not in params_c]
        if missing:
            raise KeyError(f"params_c lacks {missing[:5]}: pass the params returned by pared.compress")
        outs = entry.run({p.name: params_c[p.name] for p in entry.graph.params}, jax.tree_util.tree_leaves(tuple(args)))
        return jax.tree_util.tree_unflatten(entry.traced.out_tree, outs)


def _flat_runner(graph: Graph):
    import jax

    f = lower(graph)
    return jax.jit(lambda weights, inputs: f(weights, *inputs))


def _split_nnx(module):
    from flax import nnx

    graphdef, state = nnx.split(module)

    def apply(state, *args):
        return nnx.merge(graphdef, state)(*args)

    return apply, state


def compress_jax(fn: Callable, params: Any, *example_args: Any, recipe=None, **opts):
    """Compress ``fn(params, *args)``; returns ``(fn_c, params_c)``.

    ``params_c`` is a flat ``{name: array}`` dict (names are pytree paths such as
    ``params/Dense_0/kernel``; compressed weights add entries such as int8 data and scales), so it
    can be saved, and sharded with ``jax.device_put``. ``fn_c(params_c, *args)`` runs the rewritten
    graph as jax ops and composes with jit/grad/vmap. A flax ``nnx.Module`` may be passed as ``fn``
    with ``params=None``: it is split into its graph and state. ``calibration=[batches]`` feeds
    data-aware passes; with ``mesh=jax.sharding.Mesh(...)`` too, the batches are split over the
    mesh's devices and their statistics combined by a collective (docs/distributed.md).
    """
    if params is None and _is_nnx_module(fn):
        fn, params = _split_nnx(fn)
    fc = CompressedFunction(fn, params, recipe, opts)
    entry = fc.compile(example_args)
    if recipe is not None:
        from .pipeline import parse_pipeline, unmatched_rewrites

        for msg in unmatched_rewrites(parse_pipeline(recipe), entry.report, len(entry.graph.params)):
            warnings.warn(msg, UserWarning, stacklevel=2)
    return fc, graph_params(entry.graph)


def _is_nnx_module(obj) -> bool:
    try:
        from flax import nnx
    except ImportError:
        return False
    return isinstance(obj, nnx.Module)


__all__ = ["CompressedFunction", "JitFunction", "apply_recipe", "compress_jax", "ir_op", "jit"]
