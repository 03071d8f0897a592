"""A linear layer's bias add, absorbed into the torch call of the linear (``F.linear(x, w, b)``).

Shared by the dense (:mod:`.ops`) and quantized (:mod:`.quantized`) lowerings of linears.
"""

from __future__ import annotations

from typing import Optional

from ...ir.core import Eqn, Param, Var


def following_bias(L, eqn: Eqn) -> Optional[tuple[int, Param | Var]]:
    """(index, bias atom) of an ``add`` of a 1-d bias that is the only user of ``eqn``'s output, else None."""
    out = eqn.outputs[0]
    j = L.single_user(out)
    if j is not None:
        nxt = L.graph.eqns[j]
        if nxt.op == "add" and out in nxt.inputs:
            bias = nxt.inputs[1] if nxt.inputs[0] is out else nxt.inputs[0]
            if (
                isinstance(bias, (Param, Var))
                and bias.type.shape == (out.type.shape[-1],)
                and bias.type.dtype == out.type.dtype
            ):
                return j, bias
    return None


def absorb_bias(L, j: int, node):
    """Let ``node`` (which already adds the bias) stand for the skipped ``add`` at index ``j``."""
    L.skip.add(j)
    L.env[L.graph.eqns[j].outputs[0]] = node
    return node
