"""Where the training transforms sit in a graph: inserting them, and finding them again.

A training pass replaces every use of a weight param ``@w`` by the output of one new equation
(``ste_mask(@w, @w.mask)`` or ``fake_quant(@w, @w.scale)``) placed just before the first use.
:func:`training_sites` lists those equations for the fine-tuner and the export pass: which params
are trained, which are masks, and each mask's schedule attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from ...ir import Eqn, Graph, Param, Var


def insert_transforms(graph: Graph, new: Mapping[str, Eqn]) -> Graph:
    """Each top-level use of param ``name`` in ``new`` reads ``new[name]``'s output instead; the
    equation is placed before the first use (an equation reading the transformed value of another
    one, e.g. fake_quant after ste_mask, is chained in the same way)."""
    out: list[Eqn] = []
    placed: dict[str, Var] = {}
    mine = {id(e) for e in new.values()}

    def place(name: str) -> Var:
        if name not in placed:
            e = new[name]
            placed[name] = e.out  # before the recursion: the equation reads the param itself
            out.append(e)
        return placed[name]

    for e in graph.eqns:
        ins = [place(a.name) if isinstance(a, Param) and a.name in new and id(e) not in mine else a for a in e.inputs]
        out.append(e.replace(inputs=ins))
    outputs = [place(a.name) if isinstance(a, Param) and a.name in new else a for a in graph.outputs]
    return graph.replace(eqns=tuple(out), outputs=tuple(outputs))


@dataclass(frozen=True)
class TrainSite:
    """One training transform: equation ``index`` (``ste_mask`` or ``fake_quant``) on weight ``param``."""

    index: int
    eqn: Eqn
    param: str
    mask: Optional[str] = None  # ste_mask: the mask param


def training_sites(graph: Graph) -> list[TrainSite]:
    """Every ``ste_mask``/``fake_quant`` equation whose weight is a param (directly, or through a
    ``ste_mask`` for a ``fake_quant`` after it)."""
    produced: dict[Var, str] = {}
    sites = []
    for i, e in enumerate(graph.eqns):
        if e.op not in ("ste_mask", "fake_quant"):
            continue
        w = e.inputs[0]
        name = w.name if isinstance(w, Param) else produced.get(w)
        if name is None:
            continue
        produced[e.out] = name
        mask = e.inputs[1].name if e.op == "ste_mask" and isinstance(e.inputs[1], Param) else None
        sites.append(TrainSite(i, e, name, mask))
    return sites


def trained_params(graph: Graph) -> list[str]:
    """The params a fine-tuner trains: the weights under a training transform, in graph order."""
    return list(dict.fromkeys(s.param for s in training_sites(graph)))
