"""An embedding table tied to a quantized LM head reads the head's quantized weights.

A causal LM with tied embeddings uses one [vocab, hidden] param twice: ``take(E, ids, axis=0)``
(the lookup) and ``x @ E^T`` (the LM head). Quantizing the head alone keeps the float table for
the lookup, so the model holds the table twice (float and quantized). With
``tied_embedding=quantized`` the lookup is rewritten onto the head's codes: the rows of ``q``,
``scale`` (and ``zero``) are gathered and dequantized,

    take(E, ids)  ->  dequantize(take(q, ids), take(scale, ids)[, take(zero, ids)])

(groups along the last axis, as the head's), which gathers only the looked-up rows and lets the
float table go. The lookup then returns the head's dequantized rows: the embedding is quantized
with the head's format, and its error is the head's.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ...ir import Eqn, Param, make_eqn


def quantized_lookups(eqns: Sequence[Eqn], table: str, qparams: Sequence[Param],
                      group_size: Optional[int]) -> tuple[list[Eqn], int]:
    """``eqns`` with every ``take(table, ids, axis=0)`` replaced by a lookup of the quantized rows.

    ``qparams``: the head's ``q``, ``scale`` and (asymmetric) ``zero`` params, q [vocab, hidden].
    Returns (new equations, number of lookups rewritten).
    """
    out: list[Eqn] = []
    n = 0
    for e in eqns:
        src = e.inputs[0] if e.op == "take" and e.inputs else None
        if not (isinstance(src, Param) and src.name == table and e.attrs["axis"] == 0):
            out.append(e)
            continue
        ids = e.inputs[1]
        rows = [make_eqn("take", [p, ids], {"axis": 0}, loc=e.loc) for p in qparams]
        q_rows = rows[0].outputs[0]
        attrs = {"dtype": e.outputs[0].type.dtype, "group_axis": None, "group_size": None}
        if group_size is not None:
            attrs.update(group_axis=q_rows.type.rank - 1, group_size=group_size)
        deq = make_eqn("dequantize", [r.outputs[0] for r in rows], attrs, loc=e.loc)
        out += rows
        out.append(deq.replace(outputs=e.outputs))
        n += 1
    return out, n
