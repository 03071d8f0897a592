"""Finding the linear layers of a graph and rewriting them into ``qlinear`` (the shared rewrite).

A linear layer is ``dot_general(x, @W)`` with a rank-2 weight param, no batch axes, contracting
x's last axis with W's input axis: ``W`` is [N, K] (torch's [out, in], contract=((r-1,),(1,)))
or [K, N] (a JAX/flax kernel, contract=((r-1,),(0,))); the quantized weight is always stored
[N, K]. Every quantization pass is a weight transform (a ``solve`` function from the float
weight to (q, scale, zero)) plus this graph rewrite, the shape of thunder's quantization transform.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from ...ir import Eqn, Graph, Param, SparseQuant, TensorType, make_eqn
from ...ir import dtypes as DT
from ...ir.packing import packed_nbytes
from ..cleanup.dce import referenced_params
from ..context import PassContext
from .scheme import QuantizationError

FLOAT_ACTS = ("f32", "bf16", "f16")


@dataclass(frozen=True)
class LinearSite:
    """One linear layer: equation index, the equation, its weight param and layout ("nk"/"kn")."""

    index: int
    eqn: Eqn
    param: Param
    layout: str

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def x(self):
        return self.eqn.inputs[0]

    @property
    def n_k(self) -> tuple[int, int]:
        a, b = self.param.type.shape
        return (a, b) if self.layout == "nk" else (b, a)


def as_numpy(w) -> np.ndarray:
    """A weight value as a float32 numpy array (torch tensors included, without importing torch)."""
    if hasattr(w, "detach"):
        w = w.detach().cpu()
        if str(w.dtype) in ("torch.bfloat16", "torch.float16"):
            w = w.float()
        w = w.numpy()
    return np.asarray(w, dtype=np.float32)


def linear_kind(e: Eqn) -> Optional[str]:
    """"nk"/"kn" when ``e`` is a linear layer with a param weight, else None."""
    if e.op != "dot_general" or len(e.inputs) != 2 or not isinstance(e.inputs[1], Param):
        return None
    x, w = e.inputs
    if w.type.rank != 2 or x.type.rank < 1 or e.attrs["batch"] != ((), ()):
        return None
    enc = w.type.encoding
    if x.type.dtype.name not in FLOAT_ACTS or (enc is not None and enc.kind != "sparse") or w.type.dtype != x.type.dtype:
        return None
    if e.attrs["out_dtype"] not in (None, x.type.dtype):
        return None
    (lc, rc) = e.attrs["contract"]
    if tuple(a % x.type.rank for a in lc) != (x.type.rank - 1,):
        return None
    return {(1,): "nk", (0,): "kn"}.get(tuple(rc))


def find_linears(graph: Graph) -> list[LinearSite]:
    return [LinearSite(i, e, e.inputs[1], k) for i, e in enumerate(graph.eqns) if (k := linear_kind(e))]


def select(sites: Sequence[LinearSite], ignore: Iterable[str] = (), targets: Iterable[str] = ()) -> tuple[list, list]:
    """(kept, ignored) sites: ``targets`` regexes (when given) must match, ``ignore`` ones must not."""
    ign = [re.compile(p) for p in ignore]
    tgt = [re.compile(p) for p in targets]
    kept, dropped = [], []
    for s in sites:
        ok = (not tgt or any(p.search(s.name) for p in tgt)) and not any(p.search(s.name) for p in ign)
        (kept if ok else dropped).append(s)
    return kept, dropped


def weight_nk(graph: Graph, site: LinearSite) -> np.ndarray:
    w = as_numpy(graph.weight(site.name))
    return w if site.layout == "nk" else np.ascontiguousarray(w.T)


@dataclass
class QuantizedWeight:
    """A weight transform's result: q [N, K], scale/zero [N, G], the q type, and report fields."""

    q: np.ndarray
    scale: np.ndarray
    zero: Optional[np.ndarray]
    q_type: TensorType
    group_size: Optional[int]
    act: str = "none"
    act_dtype: Optional[str] = None
    act_scale: Optional[float] = None
    fields: Optional[dict] = None


def float_bytes(t: TensorType) -> int:
    return packed_nbytes(t)


def qlinear_eqn(site: LinearSite, qw: QuantizedWeight, prefix: str, x=None) -> tuple[Eqn, dict, dict]:
    """The ``qlinear`` replacing ``site`` (same output Var) plus its new params' types and values."""
    n, _ = site.n_k
    base = prefix + site.name
    scale_t = TensorType(qw.scale.shape, DT.f32)
    params = {base + ".q": qw.q_type, base + ".scale": scale_t}
    values = {base + ".q": qw.q, base + ".scale": qw.scale.astype(np.float32)}
    ins = [x if x is not None else site.x, Param(base + ".q", qw.q_type), Param(base + ".scale", scale_t)]
    if qw.zero is not None:
        params[base + ".zero"] = scale_t
        values[base + ".zero"] = qw.zero.astype(np.float32)
        ins.append(Param(base + ".zero", scale_t))
    if qw.act == "static":
        st = TensorType((), DT.f32)
        params[base + ".act_scale"] = st
        values[base + ".act_scale"] = np.asarray(qw.act_scale, np.float32)
        ins.append(Param(base + ".act_scale", st))
    new = make_eqn("qlinear", ins, {"group_size": qw.group_size, "act": qw.act, "act_dtype": qw.act_dtype}, loc=site.eqn.loc)
    old = site.eqn.outputs[0]
    if new.outputs[0].type != old.type:
        raise QuantizationError(f"{site.name}: qlinear gives {new.outputs[0].type}, the layer gave {old.type}")
    return new.replace(outputs=(old,)), params, values


def report_bytes(graph: Graph, names: Iterable[str]) -> int:
    types = graph.param_types
    return sum(packed_nbytes(types[n]) for n in names)


def apply_quantized(graph: Graph, ctx: PassContext, pass_name: str, sites: Sequence[LinearSite],
                    solve: Callable[[LinearSite, np.ndarray], QuantizedWeight], prefix: str = "") -> Graph:
    """Replace each site with a qlinear from ``solve(site, W[N, K])``; report one row per layer.

    ``solve`` may raise QuantizationError (the pass fails, naming the layer) or return None
    to skip the layer (it must then have added a skip row itself).
    """
    eqns = list(graph.eqns)
    new_params: dict = {}
    new_values: dict = {}
    touched = []
    for site in sites:
        w = weight_nk(graph, site)
        qw = solve(site, w)
        if qw is None:
            continue
        qenc = qw.q_type.encoding
        enc = site.param.type.encoding
        if enc is not None and enc.kind == "sparse":
            if site.layout == "nk":  # sparse then quantized: keep what the sparsity pass declared
                qw.q_type = qw.q_type.with_(encoding=SparseQuant(enc, qw.q_type.encoding))
            else:
                ctx.report.add(pass_name, site.name, note="sparse encoding dropped: the [K, N] weight was transposed")
        e, ptypes, pvals = qlinear_eqn(site, qw, prefix)
        eqns[site.index] = e
        new_params.update(ptypes)
        new_values.update(pvals)
        touched.append(site.name)
        before = packed_nbytes(site.param.type)
        after = sum(packed_nbytes(t) for t in ptypes.values())
        deq = qw.fields.pop("_deq", None) if qw.fields else None
        row = {"bits": qenc.bits if qenc else qw.q_type.dtype.bits, "scheme": qenc.scheme if qenc else ""}
        row["group"] = qw.group_size or "channel"
        row["act"] = qw.act if qw.act != "none" else (qw.act_dtype or "float")
        row["scale_min"] = float(qw.scale.min())
        row["scale_max"] = float(qw.scale.max())
        if deq is not None:
            row["rel_err"] = float(np.linalg.norm(deq - w) / max(np.linalg.norm(w), 1e-30))
        row.update(qw.fields or {})
        row["bytes_before"] = before
        row["bytes_after"] = after
        ctx.report.add(pass_name, site.name, **row)
    if not touched:
        return graph
    g = graph.replace(eqns=tuple(eqns)).with_weights(new_values, new_params)
    used = referenced_params(g)
    drop = {n for n in touched if n not in used}
    for n in touched:
        if n in used:
            ctx.report.add(pass_name, n, note="float weight kept: it has other uses (e.g. a tied embedding)")
    if drop:
        g = g.replace(params=tuple(p for p in g.params if p.name not in drop),
                      weights={k: v for k, v in g.weights.items() if k not in drop})
    return g


def model_bytes(graph: Graph) -> int:
    """Bytes of every param, packed (quantized params at their encoding's bits)."""
    return sum(packed_nbytes(p.type) for p in graph.params)
