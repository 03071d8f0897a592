"""Replay a compressed graph's weight rewrites onto another capture of the same model.

A causal LM is captured twice: as ``ids -> logits`` (the graph the recipe runs on) and as a decode
step over a KV cache (:mod:`pared.tools.decoding`). Running the recipe again on the second capture
would repeat its calibration (minutes for GPTQ or SparseGPT); the weights it chose are already in
the first graph. :func:`replay_weights` carries them over:

- every ``qlinear`` of the compressed graph replaces the linear layer of the other graph that reads
  the same weight (same attributes, same quantized params, renamed with the other capture's prefix);
- an embedding lookup of a quantized layer's weight whose float table the recipe dropped
  (``tied_embedding=quantized``) reads the quantized rows in the other graph too;
- every other weight whose value or type the recipe changed (a sparse-encoded weight, a norm
  SmoothQuant rescaled) is copied over, value and type.

Rewrites of another kind (ops inserted around layers, shapes changed by structured removal) have no
counterpart here: :func:`replay_weights` raises :class:`ReplayError` naming them, and the caller runs
the recipe on the other capture instead. The caller also checks the result against the compressed
graph with the reference interpreter.
"""

from __future__ import annotations

from collections import Counter

from ..ir.build import make_eqn
from ..ir.core import Graph, Param
from .calibration.sites import retype_params
from .cleanup.dce import referenced_params
from .quantize.embedding import quantized_lookups
from .quantize.linears import find_linears

QLINEAR_PARAMS = (".q", ".scale", ".zero", ".act_scale")


class ReplayError(ValueError):
    """A rewrite of the compressed graph has no counterpart in the other capture."""


def _base(name: str) -> str:
    return name[: -len(".q")] if name.endswith(".q") else name


def replay_weights(dense: Graph, compressed: Graph, other: Graph, prefix: str = "") -> Graph:
    """``other`` (a capture of the same model as ``dense``, its param names prefixed by ``prefix``)
    with the weight rewrites that turned ``dense`` into ``compressed``."""
    ops = lambda g: Counter(e.op for e in g.eqns if e.op not in ("qlinear", "dot_general"))  # noqa: E731
    sites = {s.name: s for s in find_linears(other)}
    eqns = list(other.eqns)
    new_types, new_values, replaced = {}, {}, []
    lookup_ops: Counter = Counter()  # ops added by embedding lookups moved onto quantized weights
    for e in compressed.eqns:
        if e.op != "qlinear":
            continue
        base = _base(e.inputs[1].name)
        site = sites.get(prefix + base)
        if site is None:
            raise ReplayError(
                f"the quantized layer {base!r} has no linear layer {prefix + base!r} in the other capture"
            )
        ins = [site.x]
        for a in e.inputs[1:]:
            name = prefix + a.name
            new_types[name] = a.type
            new_values[name] = compressed.weights[a.name]
            ins.append(Param(name, a.type))
        new = make_eqn("qlinear", ins, dict(e.attrs), loc=site.eqn.loc)
        if new.outputs[0].type != site.eqn.outputs[0].type:
            raise ReplayError(f"{base}: the quantized layer gives {new.outputs[0].type}, the other capture's layer "
                              f"{site.eqn.outputs[0].type}")
        eqns[site.index] = new.replace(outputs=site.eqn.outputs)
        replaced.append(prefix + base)
        if base not in compressed.param_types:  # the float weight is gone: its lookups read the codes
            table = [Param(prefix + a.name, a.type) for a in e.inputs[1:] if not a.name.endswith(".act_scale")]
            eqns, k = quantized_lookups(eqns, prefix + base, table, e.attrs["group_size"])
            lookup_ops.update({"take": k * (len(table) - 1), "dequantize": k})
    # ops the recipe added or removed besides the layers it quantized (fusions of the lowering aside)
    added = ops(compressed) - ops(dense) - lookup_ops
    added = {op: n for op, n in added.items() if op not in ("attention", "fused")}
    if added:
        raise ReplayError(f"the recipe changed the graph beyond its weights ({dict(added)} added)")
    dense_types = dense.param_types
    for p in compressed.params:
        if any(p.name.endswith(s) for s in QLINEAR_PARAMS) and p.name not in dense_types:
            continue  # a qlinear's own params, placed above
        if p.name not in dense_types:
            raise ReplayError(f"the recipe added the weight {p.name!r}, which only its own graph knows how to use")
        changed = p.type != dense_types[p.name] or compressed.weights[p.name] is not dense.weights[p.name]
        if changed:
            name = prefix + p.name
            if name not in other.param_types:
                raise ReplayError(f"the rewritten weight {p.name!r} has no counterpart {name!r} in the other capture")
            if other.param_types[name].shape != p.type.shape:
                theirs = other.param_types[name].shape
                raise ReplayError(f"{p.name}: shape {p.type.shape} vs {theirs} in the other capture")
            new_types[name] = p.type
            new_values[name] = compressed.weights[p.name]
    g = other.replace(eqns=tuple(eqns))
    known = set(g.param_types)
    g = retype_params(g, {k: t for k, t in new_types.items() if k in known})
    fresh = {k: t for k, t in new_types.items() if k not in known}
    g = g.with_weights(new_values, fresh)
    used = referenced_params(g)
    drop = {n for n in replaced if n not in used}
    if drop:
        g = g.replace(params=tuple(p for p in g.params if p.name not in drop),
                      weights={k: v for k, v in g.weights.items() if k not in drop})
    return g
