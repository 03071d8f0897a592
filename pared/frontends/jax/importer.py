"""The JAX frontend: a function and its params -> a pared IR :class:`~pared.ir.Graph`.

``jax.make_jaxpr`` traces the function; each jaxpr equation is mapped through the rule table in
:mod:`pared.frontends.jax.rules` (nested jit/pjit, custom_jvp/custom_vjp and composite bodies are
inlined). Leaves of the params argument become graph :class:`~pared.ir.Param` s named by their
pytree paths (``params/Dense_0/kernel``; an nnx ``Variable``'s ``.value`` is dropped), the other
arguments become graph inputs, and closed-over arrays become params named ``const/<n>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ...ir.build import make_eqn
from ...ir.core import Atom, Eqn, Graph, Literal, Param, Var
from ...ir.errors import IRError
from ...ir.types import TensorType, scalar
from .rules import get_rule, literal_value
from .types import JaxFrontendError, ir_dtype, ir_type


def path_name(path: Sequence[Any]) -> str:
    """A pytree key path as a slash-separated name: ``params/Dense_0/kernel``, ``layers/0/w``."""
    parts = []
    for k in path:
        if hasattr(k, "key"):  # DictKey, FlattenedIndexKey
            parts.append(str(k.key))
        elif hasattr(k, "idx"):  # SequenceKey
            parts.append(str(k.idx))
        elif hasattr(k, "name"):  # GetAttrKey
            parts.append(str(k.name))
        else:
            parts.append(str(k))
    if len(parts) > 1 and parts[-1] == "value":  # flax nnx Variable: the array is its .value
        parts.pop()
    return "/".join(parts) or "param"


def source_line(eqn) -> str:
    """``file:line (function)`` of the user code that created a jaxpr equation."""
    try:
        from jax._src import source_info_util

        return source_info_util.summarize(eqn.source_info)
    except Exception:  # a private API: never let it hide the real error
        return "<unknown source>"


class Emitter:
    """Builds the IR graph while walking (possibly nested) jaxprs. Used by the rule table."""

    def __init__(self):
        self.eqns: list[Eqn] = []
        self.params: dict[str, Param] = {}
        self.weights: dict[str, Any] = {}
        self._const_ids: dict[int, Param] = {}
        self._const_refs: list = []  # keeps traced constants alive so their ids stay unique
        self._eqn = None  # the jaxpr equation being mapped (for locations and errors)
        self._stack: list = []  # enclosing call equations (their source lines name inlined code)

    # -- API for rules --------------------------------------------------------------------------
    def op(self, name: str, *inputs: Atom, **attrs):
        loc = ""
        if self._eqn is not None:
            loc = str(self._eqn.source_info.name_stack)
        e = make_eqn(name, inputs, attrs, loc=loc)
        self.eqns.append(e)
        return e.outputs[0] if len(e.outputs) == 1 else e.outputs

    def scalar_type(self, dtype) -> TensorType:
        return scalar(dtype)

    def refuse(self, why: str):
        eqn = self._eqn
        prim = eqn.primitive.name if eqn is not None else "?"
        where = "<unknown source>"
        for e in [eqn, *reversed(self._stack)]:
            if e is not None and source_line(e):
                where = source_line(e)
                break
        raise JaxFrontendError(f"pared cannot compile jaxpr primitive {prim!r} at {where}: {why}")

    def inline(self, jaxpr, consts: Sequence[Any], ins: Sequence[Atom]) -> list[Atom]:
        """Emit the equations of ``jaxpr`` with its invars bound to ``ins``; returns its outputs."""
        env: dict[Any, Atom] = {}
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = self.constant(c)
        for v, a in zip(jaxpr.invars, ins):
            env[v] = a
        outer = self._eqn
        self._stack.append(outer)
        try:
            for eqn in jaxpr.eqns:
                self._eqn = eqn
                args = [self._read(env, x) for x in eqn.invars]
                try:
                    outs = get_rule(eqn.primitive.name)(self, eqn, args)
                except JaxFrontendError:
                    raise
                except IRError as e:
                    self.refuse(f"mapping failed: {e}")
                if len(outs) != len(eqn.outvars):
                    raise JaxFrontendError(
                        f"rule for {eqn.primitive.name!r} returned {len(outs)} values for {len(eqn.outvars)} outputs"
                    )
                for v, a in zip(eqn.outvars, outs):
                    if type(v).__name__ != "DropVar":
                        env[v] = a
        finally:
            self._eqn = outer
            self._stack.pop()
        return [self._read(env, x) for x in jaxpr.outvars]

    # -- helpers --------------------------------------------------------------------------------
    def _read(self, env, x) -> Atom:
        if hasattr(x, "val") and type(x).__name__ == "Literal":
            return self.constant(x.val, aval=x.aval)
        return env[x]

    def constant(self, value, aval=None) -> Atom:
        """A rank-0 constant becomes a Literal; an array a ``const/<n>`` param."""
        arr = np.asarray(value)
        dt = ir_dtype(aval.dtype if aval is not None else arr.dtype)
        if arr.ndim == 0:
            return Literal(literal_value(arr), scalar(dt))
        key = id(value)
        if key in self._const_ids:
            return self._const_ids[key]
        p = self.add_param(f"const/{len(self._const_ids)}", arr, TensorType(arr.shape, dt))
        self._const_ids[key] = p
        self._const_refs.append(value)
        return p

    def add_param(self, name: str, value, type: TensorType) -> Param:
        if name in self.params:
            raise JaxFrontendError(f"two params share the name {name!r}")
        p = Param(name, type)
        self.params[name] = p
        if value is not None:
            self.weights[name] = value
        return p


@dataclass(frozen=True)
class Traced:
    """A traced function: its graph and how to map pytrees to the graph's flat inputs/outputs."""

    graph: Graph
    param_names: tuple[str, ...]  # graph param name of each params leaf, in flatten order
    in_tree: Any  # treedef of the non-params args (a tuple)
    out_tree: Any  # treedef of the outputs


def _concrete(x) -> Optional[np.ndarray]:
    """A numpy copy of ``x`` if it is a concrete array (not a tracer), else None."""
    import jax

    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except Exception:
        return None


def trace(fn, params: Any, args: Sequence[Any], *, kwargs: Optional[dict] = None) -> Traced:
    """Trace ``fn(params, *args, **kwargs)`` into an IR graph.

    ``params`` leaves become named graph params (with their values when concrete); ``args``
    leaves become graph inputs. ``params=None`` traces ``fn(*args)`` with no params.
    """
    import jax

    kwargs = kwargs or {}
    p_leaves_paths, p_tree = jax.tree_util.tree_flatten_with_path(params)
    p_leaves = [leaf for _, leaf in p_leaves_paths]
    a_leaves, a_tree = jax.tree_util.tree_flatten(tuple(args))
    n_p = len(p_leaves)
    has_params = params is not None

    def flat_fn(*leaves):
        ps = jax.tree_util.tree_unflatten(p_tree, leaves[:n_p])
        xs = jax.tree_util.tree_unflatten(a_tree, leaves[n_p:])
        return fn(ps, *xs, **kwargs) if has_params else fn(*xs, **kwargs)

    specs = [jax.ShapeDtypeStruct(np.shape(x), _dtype_of(x)) for x in (*p_leaves, *a_leaves)]
    closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*specs)
    out_tree = jax.tree_util.tree_structure(out_shape)

    em = Emitter()
    jaxpr = closed.jaxpr
    names = []
    p_atoms = []
    for (path, leaf), v in zip(p_leaves_paths, jaxpr.invars[:n_p]):
        name = path_name(path)
        names.append(name)
        p_atoms.append(em.add_param(name, _concrete(leaf), ir_type(v.aval)))
    inputs = [Var(ir_type(v.aval)) for v in jaxpr.invars[n_p:]]
    outs = em.inline(jaxpr, closed.consts, [*p_atoms, *inputs])
    eqns = elide_broadcasts(em.eqns, outs)
    graph = Graph(tuple(inputs), tuple(eqns), tuple(outs), tuple(em.params.values()), em.weights)
    return Traced(graph, tuple(names), a_tree, out_tree)


_BROADCASTING = frozenset(
    "add sub mul div pow maximum minimum eq ne lt le gt ge logical_and logical_or where".split()
)


def elide_broadcasts(eqns: Sequence[Eqn], outputs: Sequence[Atom]) -> list[Eqn]:
    """Drop rank-expanding broadcasts/reshapes that numpy broadcasting in the consumer makes
    redundant (``jnp`` inserts them explicitly, torch does not), so both frontends agree.

    A ``broadcast_in_dim`` mapping its operand onto the trailing output dims, or a ``reshape``
    that only prepends unit dims, feeding a broadcasting elementwise op whose output shape is
    unchanged by using the operand directly, is bypassed; unused ones are then removed.
    """
    from ...ir.shapes import broadcast_shapes

    src: dict[Var, Atom] = {}
    for e in eqns:
        x = e.inputs[0] if e.inputs else None
        if x is None:
            continue
        out = e.outputs[0].type.shape
        k = len(out) - x.type.rank
        if e.op == "broadcast_in_dim" and tuple(e.attrs["dims"]) == tuple(range(k, len(out))):
            src[e.outputs[0]] = x
        elif e.op == "reshape" and k >= 0 and tuple(out) == (1,) * k + tuple(x.type.shape):
            src[e.outputs[0]] = x
    if not src:
        return list(eqns)
    new = []
    for e in eqns:
        if e.op in _BROADCASTING and any(a in src for a in e.inputs if isinstance(a, Var)):
            ins = list(e.inputs)
            for i, a in enumerate(ins):
                if isinstance(a, Var) and a in src:
                    trial = ins[:i] + [src[a]] + ins[i + 1 :]
                    try:
                        shape = broadcast_shapes(*(t.type.shape for t in trial))
                    except IRError:
                        continue
                    if shape == e.outputs[0].type.shape:
                        ins = trial
            e = e.replace(inputs=ins)
        new.append(e)
    used = {a for a in outputs if isinstance(a, Var)}
    kept = []
    for e in reversed(new):
        if e.op in ("broadcast_in_dim", "reshape") and not any(v in used for v in e.outputs):
            continue
        used.update(a for a in e.inputs if isinstance(a, Var))
        kept.append(e)
    return kept[::-1]


def _dtype_of(x):
    import jax.numpy as jnp

    dt = getattr(x, "dtype", None)
    if dt is None:
        return jnp.asarray(x).dtype
    return dt

