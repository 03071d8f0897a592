"""The lowering table of every backend: one rule per (op, backend), with one signature.

A rule lowers one equation::

    rule(ctx, eqn, *inputs) -> output, a tuple of outputs, or NotImplemented

``ctx`` is the backend's lowering state and ``inputs`` are the values of ``eqn.inputs`` as that
backend holds them:

=========  ===================================================  ======================================
backend    ctx                                                  inputs -> outputs
=========  ===================================================  ======================================
reference  ``reference.interpreter.Evaluation`` (bound symbols,  numpy arrays -> numpy arrays
           sub-graph evaluation)
torch      ``torch.lower.Lowerer`` (the FX graph being built)   FX nodes (Python numbers for
                                                                Literals) -> FX nodes
xla        ``xla.lowering.XlaEnv`` (weights, bound symbols,     jax arrays -> jax arrays
           sub-graph runs)
triton     ``triton.emit.Emitter`` (the kernel being written)   Triton expressions -> one expression
=========  ===================================================  ======================================

A rule may decline an equation it does not cover (a layout, a dtype) by returning
``NotImplemented``, or by being registered with a ``checker(eqn) -> bool``. The caller then
lowers the op's decomposition (:attr:`OpDef.decompose <pared.ir.opdef.OpDef>`, e.g. a ``fused``
region's equations), else runs its numpy reference (slow, never a crash): :func:`lower_eqn`.

A backend's rules are registered when its package is imported (``pared.backends.torch``, ...).
What each backend claims: ``reference`` every op with a reference implementation, ``torch`` and
``xla`` every op (through a rule or the op's decomposition), ``triton`` the ops its generated
kernels compute (the ``elementwise`` and ``row`` traits). ``tests/backends/test_every_op.py``
fails when a claimed op has no lowering.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from ..ir.core import Eqn
from ..ir.opdef import get_op

BACKENDS = ("reference", "torch", "xla", "triton")
Rule = Callable[..., Any]

_TABLE: dict[str, dict[str, Rule]] = {b: {} for b in BACKENDS}


def _backend(backend: str) -> dict[str, Rule]:
    try:
        return _TABLE[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}") from None


def register_lowering(op: Union[str, Iterable[str]], backend: str, rule: Optional[Rule] = None, *,
                      checker: Optional[Callable[[Eqn], bool]] = None):
    """Register ``rule`` as ``backend``'s lowering of ``op`` (a name or several names).

    Use as a decorator (``@register_lowering("add", "torch")``) or a plain call with ``rule``.
    With ``checker``, the rule declines (returns ``NotImplemented``) the equations for which
    ``checker(eqn)`` is false. An op has at most one rule per backend.
    """
    table = _backend(backend)
    names = (op,) if isinstance(op, str) else tuple(op)

    def deco(fn: Rule) -> Rule:
        full = fn if checker is None else _checked(fn, checker)
        for name in names:
            get_op(name)  # an unknown op name is an error here, with suggestions
            if name in table:
                raise ValueError(f"{backend} already has a lowering for {name!r} ({table[name].__qualname__})")
            table[name] = full
        return fn

    return deco if rule is None else deco(rule)


def _checked(fn: Rule, checker: Callable[[Eqn], bool]) -> Rule:
    def rule(ctx, eqn, *inputs):
        return fn(ctx, eqn, *inputs) if checker(eqn) else NotImplemented

    rule.__qualname__ = fn.__qualname__
    return rule


def get_lowering(op: str, backend: str) -> Optional[Rule]:
    """``backend``'s rule for ``op``, or None when it has none (see :func:`lower_eqn`)."""
    return _backend(backend).get(op)


def lowerings(backend: str) -> Mapping[str, Rule]:
    """Every rule of ``backend``, keyed by op name (read-only)."""
    return MappingProxyType(_backend(backend))


def lower_eqn(backend: str, ctx, eqn: Eqn, inputs: Sequence, *, reference: Rule,
              decomposition: Optional[Callable[[Any, Eqn, list, dict], Any]] = None):
    """Lower ``eqn`` on ``backend``: its rule; if it has none or it declines, the op's
    decomposition, lowered equation by equation with ``decomposition(ctx, eqn, eqns, outputs)``
    (``OpDef.decompose``'s result); else ``reference(ctx, eqn, *inputs)``, the backend's way to
    run the op's numpy reference."""
    rule = get_lowering(eqn.op, backend)
    if rule is not None:
        out = rule(ctx, eqn, *inputs)
        if out is not NotImplemented:
            return out
    op = get_op(eqn.op)
    if op.decompose is not None and decomposition is not None:
        return decomposition(ctx, eqn, *op.decompose(eqn))
    return reference(ctx, eqn, *inputs)


__all__ = ["BACKENDS", "Rule", "get_lowering", "lower_eqn", "lowerings", "register_lowering"]
