"""Inlining a region op (a ``fused`` equation) into the graph around it.

A region's inputs receive the op's inputs and its outputs are the op's outputs, so inlining is a
renaming: the body's equations read the op's inputs directly. Fusion passes inline a region to
grow it, backends to run a region they have no kernel for as its separate equations.
"""

from __future__ import annotations

from typing import Optional

from .core import Atom, Eqn, Var


def inline_region(eqn: Eqn) -> tuple[list[Eqn], dict[Var, Atom]]:
    """The body of a one-region equation, reading the equation's inputs.

    Returns the body's equations (region inputs replaced by the equation's inputs) and, for each
    output of the equation, the atom that holds its value: a body value, an input of the
    equation (a region that passes one through) or a Literal.
    """
    (region,) = eqn.regions
    m: dict[Var, Atom] = dict(zip(region.inputs, eqn.inputs))

    def atom(a):
        return m.get(a, a) if isinstance(a, Var) else a

    eqns = [e.replace(inputs=tuple(atom(a) for a in e.inputs)) for e in region.eqns]
    return eqns, {o: atom(r) for o, r in zip(eqn.outputs, region.outputs)}


def splice_region(eqn: Eqn) -> Optional[list[Eqn]]:
    """The body of a one-region equation as a drop-in replacement for it in its graph: the
    equations read the equation's inputs and define its outputs (the body values that held them
    are renamed). None when that cannot be: an output is not computed by the body (an input
    passed through, a Literal) or is the same value as another output.
    """
    eqns, outputs = inline_region(eqn)
    defined = {v for e in eqns for v in e.outputs}
    inner = list(outputs.values())
    if any(not isinstance(a, Var) or a not in defined or inner.count(a) > 1 for a in inner):
        return None
    rename = {a: o for o, a in outputs.items()}

    def atom(a):
        return rename.get(a, a) if isinstance(a, Var) else a

    return [e.replace(inputs=tuple(atom(a) for a in e.inputs), outputs=tuple(atom(v) for v in e.outputs)) for e in eqns]
