"""Finding the linear layers of a graph, choosing those a pass rewrites, and rewriting them into
``qlinear`` (the shared rewrite).

A linear layer is ``dot_general(x, @W)`` with a rank-2 weight param, no batch axes, contracting
x's last axis with W's input axis: ``W`` is [N, K] (torch's [out, in], contract=((r-1,),(1,)))
or [K, N] (a JAX/flax kernel, contract=((r-1,),(0,))); the quantized weight is always stored
[N, K]. Every quantization pass is a weight transform (a ``solve`` function from the float
weight to (q, scale, zero)) plus this graph rewrite, the shape of thunder's quantization transform.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from ...ir import Eqn, Graph, Param, Sparse, SparseQuant, TensorType, Var, make_eqn
from ...ir import dtypes as DT
from ...ir.ops.qops import dequantize_weight, split_inputs
from ...ir.packing import packed_nbytes, storage_bits
from ..calibration.streaming import Staging
from ..cleanup.dce import referenced_params
from ..context import PassContext
from ..layer_patterns import check_targets, compile_patterns, selected
from .embedding import quantized_lookups
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
    if (
        x.type.dtype.name not in FLOAT_ACTS
        or (enc is not None and enc.kind != "sparse")
        or w.type.dtype != x.type.dtype
    ):
        return None
    if e.attrs["out_dtype"] not in (None, x.type.dtype):
        return None
    (lc, rc) = e.attrs["contract"]
    if tuple(a % x.type.rank for a in lc) != (x.type.rank - 1,):
        return None
    return {(1,): "nk", (0,): "kn"}.get(tuple(rc))


def find_linears(graph: Graph) -> list[LinearSite]:
    return [LinearSite(i, e, e.inputs[1], k) for i, e in enumerate(graph.eqns) if (k := linear_kind(e))]


# ops through which a weight param may reach a dot/conv and still be "the layer's weight"
_WEIGHT_VIEWS = ("transpose", "reshape", "cast", "broadcast_in_dim", "convert")


def _why_not_linear(e: Eqn, x, w) -> str:
    """Why a dot_general reading param ``w`` is not a quantizable linear layer."""
    if e.attrs["batch"] != ((), ()):
        return "dot_general with batch axes is not a linear layer"
    if w.type.rank != 2:
        return f"weight has rank {w.type.rank}; quantized linears need a rank-2 [out, in] or [in, out] weight"
    if w is not e.inputs[1]:
        return "the weight is the left operand (x must come first)"
    enc = w.type.encoding
    if enc is not None and enc.kind != "sparse":
        return f"weight is already encoded ({type(enc).__name__})"
    if x.type.dtype.name not in FLOAT_ACTS or w.type.dtype != x.type.dtype:
        return f"activation/weight dtypes {x.type.dtype}/{w.type.dtype} are not a float pair ({', '.join(FLOAT_ACTS)})"
    if e.attrs["out_dtype"] not in (None, x.type.dtype):
        return f"out_dtype {e.attrs['out_dtype']} differs from the activation dtype"
    return "it does not contract the activation's last axis with one weight axis"


def unquantizable_layers(graph: Graph) -> list[tuple[str, str]]:
    """(weight name, why) for every dot_general/conv that reads a weight param (directly or
    through a transpose/reshape/cast of it) but is not a linear layer the passes can rewrite."""
    derived: dict = {}  # Var -> (param name, chain of ops) for views of params
    out = []
    for e in graph.eqns:
        if e.op in _WEIGHT_VIEWS and e.inputs and len(e.outputs) == 1:
            a = e.inputs[0]
            if isinstance(a, Param):
                derived[e.outputs[0]] = (a.name, e.op)
            elif a in derived:
                derived[e.outputs[0]] = (derived[a][0], derived[a][1] + "+" + e.op)
            continue
        if e.op not in ("dot_general", "conv") or (e.op == "dot_general" and linear_kind(e)):
            continue
        ins = e.inputs[:2]
        params = [a for a in ins if isinstance(a, Param)]
        if e.op == "conv" and params:
            out.append((params[0].name, "conv layers are not quantized (qlinear covers linear layers)"))
        elif params:
            w = params[0]
            x = next((a for a in ins if a is not w), w)
            out.append((w.name, _why_not_linear(e, x, w)))
        else:
            views = [derived[a] for a in ins if isinstance(a, Var) and a in derived]
            if views:
                name, chain = views[0]
                out.append(
                    (
                        name,
                        f"the {e.op} weight is not a Param but {chain}(@{name}); "
                        "run canonicalize first to fold the view into the layer",
                    )
                )
    return out


def report_unquantizable(graph: Graph, ctx: PassContext, pass_name: str, ignore: Iterable[str] = ()) -> None:
    """Add a skip row for each layer :func:`unquantizable_layers` finds (never a silent float layer)."""
    ign = compile_patterns(tuple(ignore), "ignore")
    seen = set()
    for name, why in unquantizable_layers(graph):
        if name not in seen and not any(p.search(name) for p in ign):
            seen.add(name)
            ctx.report.add(pass_name, name, skipped=f"cannot quantize: {why}; kept in float")


def select(sites: Sequence[LinearSite], ignore: Iterable[str] = (), targets: Iterable[str] = ()) -> tuple[list, list]:
    """(kept, ignored) sites, selected as every suite does (:mod:`pared.passes.layer_patterns`):
    ``targets`` regexes (when given) must match, ``ignore`` ones must not, and a ``targets``
    pattern that matches no layer is an error listing the real layer names."""
    tgt, ign = compile_patterns(tuple(targets), "targets"), compile_patterns(tuple(ignore), "ignore")
    check_targets(tuple(targets), [s.name for s in sites])
    kept, dropped = [], []
    for s in sites:
        (kept if selected(s.name, tgt, ign) else dropped).append(s)
    return kept, dropped


def select_layers(
    graph: Graph, ctx: PassContext, pass_name: str, ignore: Iterable[str] = (), targets: Iterable[str] = ()
) -> list[LinearSite]:
    """The linear layers a quantization pass rewrites (:func:`select`), with a report row for every
    other weight layer: ignored ones, and those no ``qlinear`` can replace."""
    report_unquantizable(graph, ctx, pass_name, ignore)
    sites, ignored = select(find_linears(graph), ignore, targets)
    for s in ignored:
        ctx.report.add(pass_name, s.name, skipped="matched ignore=; kept in float")
    return sites


def weight_nk(graph: Graph, site: LinearSite) -> np.ndarray:
    w = as_numpy(graph.weight(site.name))
    return w if site.layout == "nk" else np.ascontiguousarray(w.T)


@dataclass(frozen=True)
class QuantizedWeight:
    """A weight transform's result for one layer: what its ``qlinear`` reads, and its report.

    Attributes:
        q, scale, zero: codes [N, K] and scale/zero point [N, G] (zero None when symmetric).
        q_type: the type of q, with its encoding.
        group_size: input channels per group (None: per output channel).
        act, act_dtype, act_scale: the ``qlinear``'s activation mode, weight-only activation
            precision, and static per-tensor activation scale.
        dequantized: the dequantized weight [N, K]; when given, the report row gets ``rel_err``,
            its relative distance to the float weight.
        fields: further report fields of the layer (observer, errors, ...).
    """

    q: np.ndarray
    scale: np.ndarray
    zero: Optional[np.ndarray]
    q_type: TensorType
    group_size: Optional[int]
    act: str = "none"
    act_dtype: Optional[str] = None
    act_scale: Optional[float] = None
    dequantized: Optional[np.ndarray] = None
    fields: Mapping[str, Any] = field(default_factory=dict)


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
    new = make_eqn(
        "qlinear", ins, {"group_size": qw.group_size, "act": qw.act, "act_dtype": qw.act_dtype}, loc=site.eqn.loc
    )
    old = site.eqn.outputs[0]
    if new.outputs[0].type != old.type:
        raise QuantizationError(f"{site.name}: qlinear gives {new.outputs[0].type}, the layer gave {old.type}")
    return new.replace(outputs=(old,)), params, values


def apply_quantized(
    graph: Graph,
    ctx: PassContext,
    pass_name: str,
    sites: Sequence[LinearSite],
    solve: Callable[[LinearSite, np.ndarray], QuantizedWeight],
    prefix: str = "",
    tied_embedding: str = "float",
) -> Graph:
    """Replace each site with a qlinear from ``solve(site, W[N, K])``; report one row per layer.

    ``solve`` may raise QuantizationError (the pass fails, naming the layer) or return None
    to skip the layer (it must then have added a skip row itself). ``tied_embedding``: what an
    embedding lookup of a quantized [N, K] weight reads, ``float`` (the float table is kept) or
    ``quantized`` (the quantized rows: :mod:`.embedding`).
    """
    if tied_embedding not in ("float", "quantized"):
        raise QuantizationError(f"{pass_name}: tied_embedding={tied_embedding!r}: use float or quantized")
    eqns = list(graph.eqns)
    staging_dir = getattr(ctx, "staging_dir", None)
    staging = Staging(os.path.join(staging_dir, f"{pass_name}-rewritten")) if staging_dir else None
    new_params: dict = {}
    new_values: dict = {}
    touched = []
    lookups: dict[str, tuple[list[Param], Optional[int]]] = {}  # weight -> its qlinear's params, group size
    for site in sites:
        w = weight_nk(graph, site)
        qw = solve(site, w)
        if qw is None:
            continue
        qenc = qw.q_type.encoding
        if isinstance(qenc, SparseQuant):
            qenc = qenc.quant
        enc = site.param.type.encoding
        if enc is not None and enc.kind == "sparse":
            if site.layout == "nk":  # sparse then quantized: keep what the sparsity pass declared
                qw = replace(qw, q_type=qw.q_type.with_(encoding=SparseQuant(enc, qw.q_type.encoding)))
            else:
                ctx.report.add(pass_name, site.name, note="sparse encoding dropped: the [K, N] weight was transposed")
        e, ptypes, pvals = qlinear_eqn(site, qw, prefix)
        if staging is not None:  # out of core: the new values wait on disk for the artifact writer
            pvals = {k: staging.stage(k, v) for k, v in pvals.items()}
        eqns[site.index] = e
        if site.layout == "nk":
            lookups[site.name] = ([Param(n, t) for n, t in ptypes.items() if not n.endswith(".act_scale")],
                                  qw.group_size)
        new_params.update(ptypes)
        new_values.update(pvals)
        touched.append(site.name)
        before = packed_nbytes(site.param.type)
        kept = None
        if isinstance(qw.q_type.encoding, SparseQuant):
            kept = dequantize_weight(qw.q, qw.scale, qw.zero, qw.group_size) != 0
        after = sum(stored_nbytes(t, kept if name.endswith(".q") else None) for name, t in ptypes.items())
        row = {"bits": qenc.bits if qenc else qw.q_type.dtype.bits, "scheme": qenc.scheme if qenc else ""}
        row["group"] = qw.group_size or "channel"
        row["act"] = qw.act if qw.act != "none" else (qw.act_dtype or "float")
        row["scale_min"] = float(qw.scale.min())
        row["scale_max"] = float(qw.scale.max())
        if qw.dequantized is not None:
            row["rel_err"] = float(np.linalg.norm(qw.dequantized - w) / max(np.linalg.norm(w), 1e-30))
        row.update(qw.fields)
        row["bytes_before"] = before
        row["bytes_after"] = after
        ctx.report.add(pass_name, site.name, **row)
    if not touched:
        return graph
    g = graph.replace(eqns=tuple(eqns)).with_weights(new_values, new_params)
    used = referenced_params(g)
    if tied_embedding == "quantized":
        for n in touched:
            if n in used and n in lookups:
                new_eqns, k = quantized_lookups(g.eqns, n, *lookups[n])
                if k:
                    g = g.replace(eqns=tuple(new_eqns))
                    ctx.report.add(pass_name, n, note=f"{k} embedding lookup(s) read the quantized weight")
        used = referenced_params(g)
    drop = {n for n in touched if n not in used}
    for n in touched:
        if n in used:
            ctx.report.add(pass_name, n, note="float weight kept: it has other uses (e.g. a tied embedding)")
    if drop:
        g = g.replace(
            params=tuple(p for p in g.params if p.name not in drop),
            weights={k: v for k, v in g.weights.items() if k not in drop},
        )
    return g


def stored_nbytes(t: TensorType, kept: Optional[np.ndarray] = None) -> int:
    """Bytes of one weight as a compressed kernel stores it.

    Dense and quantized weights: packed at their bits (:func:`pared.ir.packing.packed_nbytes`).
    Sparse and sparse+quantized weights (2:4 + int4, GQSA W4S50%): the kept values at the value
    bits plus the pattern's metadata:

    * ``nm``: n of every m values kept, each with a ceil(log2 m)-bit position (2:4: 2 bits, as
      cuSPARSELt/CUTLASS store it);
    * ``block``: the kept blocks' values plus one mask bit per block;
    * ``bitmask``: the kept values plus one mask bit per element;
    * ``csr``: the kept values, a 32-bit column index each and 32-bit row pointers.

    ``kept`` (a boolean array of ``t``'s shape: True where the weight is nonzero) is needed for
    every format but ``nm``; without it the dense packed size is returned.
    """
    enc = t.encoding
    sp = enc.sparse if isinstance(enc, SparseQuant) else enc if isinstance(enc, Sparse) else None
    if sp is None:
        return packed_nbytes(t)
    bits = storage_bits(t)
    numel = int(np.prod(t.shape, dtype=np.int64))
    if sp.format == "nm":
        nkept = numel // sp.m * sp.n
        return math.ceil(nkept * bits / 8) + math.ceil(nkept * math.ceil(math.log2(sp.m)) / 8)
    if kept is None:
        return packed_nbytes(t)
    kept = np.asarray(kept, bool).reshape(tuple(t.shape))
    if sp.format == "block":
        blk = tuple(sp.block)
        split = [d for n, b in zip(t.shape, blk) for d in (n // b, b)]
        blocks = kept.reshape(split).any(axis=tuple(range(1, 2 * t.rank, 2)))
        return math.ceil(int(blocks.sum()) * int(np.prod(blk)) * bits / 8) + math.ceil(blocks.size / 8)
    nkept = int(kept.sum())
    if sp.format == "bitmask":
        return math.ceil(nkept * bits / 8) + math.ceil(numel / 8)
    rows = int(np.prod(t.shape[:-1], dtype=np.int64)) if t.rank > 1 else 1
    return math.ceil(nkept * bits / 8) + 4 * nkept + 4 * (rows + 1)  # csr


def model_bytes(graph: Graph) -> int:
    """Bytes of every param as stored (quantized at their bits, sparse ones as kept values plus
    metadata: :func:`stored_nbytes`). Pruned quantized weights are found by dequantizing them with
    the scale/zero of the ``qlinear`` that reads them."""
    qparams = {}
    for e in graph.eqns:
        if e.op == "qlinear" and isinstance(e.inputs[1], Param):
            _, q, s, z, _ = split_inputs(e.inputs, e.attrs["act"])
            qparams[q.name] = (s, z, e.attrs["group_size"])
    total = 0
    for p in graph.params:
        kept = None
        enc = p.type.encoding
        if enc is not None and enc.kind in ("sparse", "sparse_quant") and p.name in graph.weights:
            v = graph.weights[p.name]
            if enc.kind == "sparse":
                kept = as_numpy(v) != 0
            elif p.name in qparams:
                s, z, gs = qparams[p.name]
                get = lambda a: (
                    np.asarray(graph.weights[a.name]) if isinstance(a, Param) and a.name in graph.weights else None
                )
                if get(s) is not None and (z is None or get(z) is not None):
                    kept = dequantize_weight(np.asarray(v), get(s), get(z) if z is not None else None, gs) != 0
        total += stored_nbytes(p.type, kept)
    return total
