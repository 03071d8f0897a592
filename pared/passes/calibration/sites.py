"""The pass side of the calibration engine: weight sites, statistics, and the request a pass makes.

Data-aware passes (Wanda, SparseGPT, DSnoT, GPTQ, SmoothQuant, static ranges, ...) describe what
they need and what they do; the engine (:mod:`pared.passes.calibration.engine`) runs the graph over the
calibration batches and calls them back. The whole API a pass uses::

    from pared.passes.calibration import CalibrationRequest, find_weight_sites, calibrate

    sites = [s for s in find_weight_sites(graph) if wanted(s.param)]
    request = CalibrationRequest(
        name="sparsegpt",
        sites=sites,
        statistics=lambda site: ("hessian",),          # names from STATISTICS, or Statistic objects
        rewrite=lambda site, w, stats: new_w,            # w, new_w: the param in its own layout
    )
    result = calibrate(graph, ctx, request)              # -> CalibrationResult
    result.graph                                         # the graph with every rewritten weight

- A :class:`WeightSite` is one weight consumer: a ``dot_general`` or ``conv`` equation with a
  ``Param`` operand. It knows how to view the weight as a 2-D ``(out, in)`` matrix and the
  activation reaching it as ``(tokens, in)`` (so ``W @ x.T`` is the layer), whatever the layout.
- Statistics are accumulated over every calibration token: ``hessian`` (X^T X, float64),
  ``sqnorms`` (per-input-channel sum of squares), ``norms`` (their square root, Wanda's ||X_j||),
  ``mean``, ``absmax``, and ``count`` (tokens) is always there. ``cross`` is X^T X_dense (float64),
  X_dense being the same activation in the dense model: asking for it makes the engine run a dense
  shadow stream, so a pass can rebuild the dense model's output ``W X_dense`` from ``X``. A :class:`Statistic` object
  computes anything else (histograms, percentiles) from numpy ``(tokens, in)`` blocks.
- ``rewrite(site, weight, stats)`` returns None (keep), a new array of the same shape, or a
  :class:`Rewrite` (new value + new param type, e.g. with a ``Sparse`` encoding, + free info).
  The engine continues downstream WITH the new weight (sequential calibration), so later layers
  see the compressed model's activations.
- Statistics of sites reading the same activation (q/k/v, gate/up) are computed once.
- ``calibrate`` checks the batches (non-empty, right count and shapes, finite) before any work.

The engine runs the graph through ``ctx.calibration_executor(graph)``, which the compiler fills
from a backend (:mod:`pared.backends.executors`), so passes import nothing from the backends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from ...ir import Eqn, Graph, Param, TensorType
from ...ir import dims as D

STATISTICS = ("hessian", "cross", "sqnorms", "norms", "mean", "absmax", "count")


class CalibrationError(ValueError):
    """Bad calibration data or request, found before any work is done."""


@dataclass(frozen=True)
class WeightSite:
    """A weight consumer: equation ``index`` reads param ``param`` as input ``operand``.

    ``w_perm``/``w_out``: the param axes ordered (out axes..., in axes...) and how many are out;
    ``x_perm``/``x_in``: the activation axes ordered (token axes..., in axes...) and how many are in.
    For conv (groups=1) the activation is unfolded into patches (im2col).
    """

    index: int
    eqn: Eqn
    param: str
    operand: int
    kind: str  # "dot" | "conv"
    w_perm: tuple[int, ...]
    w_out: int
    x_perm: tuple[int, ...] = ()
    x_in: int = 0

    @property
    def type(self) -> TensorType:
        return self.eqn.inputs[self.operand].type

    @property
    def activation(self):
        """The Var (or atom) carrying the activation into the weight."""
        return self.eqn.inputs[1 - self.operand]

    @property
    def shape2d(self) -> tuple[int, int]:
        shape = [self.type.shape[a] for a in self.w_perm]
        return int(np.prod(shape[: self.w_out], dtype=np.int64)), int(np.prod(shape[self.w_out :], dtype=np.int64))

    @property
    def in_axis(self) -> Optional[int]:
        """The param axis that is the (single) input-channel axis, or None when several are."""
        ins = self.w_perm[self.w_out :]
        return ins[0] if len(ins) == 1 else None

    def weight_matrix(self, w) -> np.ndarray:
        """The param value as a 2-D ``(out, in)`` matrix."""
        w = np.asarray(w)
        return np.transpose(w, self.w_perm).reshape(self.shape2d)

    def from_matrix(self, w2: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`weight_matrix`: a ``(out, in)`` matrix back in the param's layout."""
        shape = [self.type.shape[a] for a in self.w_perm]
        return np.transpose(np.asarray(w2).reshape(shape), np.argsort(self.w_perm))

    def activation_matrix(self, x):
        """The activation as ``(tokens, in)``; works on numpy arrays and torch tensors."""
        if self.kind == "conv":
            return _im2col(x, self.eqn, self.type)
        x = x.permute(*self.x_perm) if hasattr(x, "permute") else np.transpose(x, self.x_perm)
        n_in = int(np.prod(x.shape[len(x.shape) - self.x_in :], dtype=np.int64))
        return x.reshape(-1, n_in)


def _im2col(x, eqn: Eqn, wtype: TensorType):
    """Conv patches ``(N * out positions, C * prod(kernel))`` in the weight's (C, k...) order."""
    k = tuple(wtype.shape[2:])
    a = eqn.attrs
    if hasattr(x, "permute"):  # torch: unfold supports 2-D; promote 1-D
        import torch.nn.functional as F

        if len(k) == 1:
            x = x.unsqueeze(-2)
            k, st, dl, pd = (1, k[0]), (1, a["strides"][0]), (1, a["dilation"][0]), ((0, 0), a["padding"][0])
        elif len(k) == 2:
            st, dl, pd = a["strides"], a["dilation"], a["padding"]
        else:
            return _im2col(x.detach().cpu().numpy(), eqn, wtype)
        x = F.pad(x, [p for lo_hi in reversed(pd) for p in lo_hi])
        cols = F.unfold(x, k, dilation=dl, stride=st)  # (N, C*prod(k), L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    from ...ir.ops.pool import windows

    extent = [(n - 1) * d + 1 for n, d in zip(k, a["dilation"])]
    v = windows(np.asarray(x), extent, a["strides"], a["padding"], 0)
    v = v[(Ellipsis, *(slice(None, None, d) for d in a["dilation"]))]  # (N, C, out..., k...)
    nsp = len(k)
    perm = (0, *range(2, 2 + nsp), 1, *range(2 + nsp, 2 + 2 * nsp))
    v = np.transpose(v, perm)
    return v.reshape(-1, int(np.prod(v.shape[1 + nsp :], dtype=np.int64)))


def find_weight_sites(graph: Graph) -> list[WeightSite]:
    """Every ``dot_general``/``conv`` equation that reads a Param as its weight, in graph order.

    A dot_general qualifies when exactly one operand is a Param and that operand has no batch
    axes; a conv when its weight is a Param and ``groups == 1``.
    """
    sites = []
    for i, e in enumerate(graph.eqns):
        if e.op == "dot_general":
            params = [k for k, a in enumerate(e.inputs) if isinstance(a, Param)]
            if len(params) != 1:
                continue
            k = params[0]
            (lc, rc), (lb, rb) = e.attrs["contract"], e.attrs["batch"]
            wr, xr = e.inputs[k].type.rank, e.inputs[1 - k].type.rank
            wc, wb, xc = (rc, rb, lc) if k == 1 else (lc, lb, rc)
            if wb or not wc:
                continue
            wc = tuple(a % wr for a in wc)
            xc = tuple(a % xr for a in xc)
            w_free = tuple(a for a in range(wr) if a not in wc)
            x_free = tuple(a for a in range(xr) if a not in xc)
            sites.append(WeightSite(i, e, e.inputs[k].name, k, "dot", w_free + wc, len(w_free), x_free + xc, len(xc)))
        elif e.op == "conv" and isinstance(e.inputs[1], Param) and e.attrs["groups"] == 1:
            w = e.inputs[1].type
            sites.append(WeightSite(i, e, e.inputs[1].name, 1, "conv", tuple(range(w.rank)), 1))
    return sites


class Statistic:
    """A custom statistic: the engine calls ``update`` with numpy ``(tokens, in)`` float32 blocks
    and hands ``result()`` to the rewrite under ``key``. Subclass it (e.g. a histogram); define
    ``reduce`` too for data-parallel calibration."""

    key: str = "custom"

    def update(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError

    def reduce(self, reducer: Any) -> None:
        """Combine this process's state with the other processes' in data-parallel calibration
        (:mod:`pared.passes.calibration.reduce`): e.g. ``self.counts = reducer.sum([self.counts])``.
        The base class cannot know what its state is, so it refuses."""
        raise CalibrationError(
            f"statistic {type(self).__name__} (key {self.key!r}) cannot be combined across {reducer.world} "
            f"processes: define {type(self).__name__}.reduce(reducer) (combine its state with reducer.sum / "
            "reducer.max, the same calls in the same order on every process), or calibrate in one process")

    @classmethod
    def reducible(cls) -> bool:
        """Whether the subclass defines :meth:`reduce`."""
        return cls.reduce is not Statistic.reduce


class Stats(Mapping):
    """The statistics gathered for one site; ``stats.hessian``, ``stats["norms"]``, ``stats.count``."""

    def __init__(self, values: Mapping[str, Any]):
        self._v = dict(values)

    def __getitem__(self, k):
        return self._v[k]

    def __iter__(self):
        return iter(self._v)

    def __len__(self) -> int:
        return len(self._v)

    def __getattr__(self, k):
        if k.startswith("_"):
            raise AttributeError(k)
        try:
            return self._v[k]
        except KeyError:
            raise AttributeError(f"statistic {k!r} was not requested (have: {', '.join(self._v)})") from None


@dataclass(frozen=True)
class Rewrite:
    """A rewritten weight: its new value, optionally a new param type (e.g. with an encoding), and
    free-form info the pass wants back (e.g. for its report)."""

    value: Any
    type: Optional[TensorType] = None
    info: Mapping[str, Any] = field(default_factory=dict)


StatSpec = Union[str, Statistic]
RewriteFn = Callable[[WeightSite, np.ndarray, Stats], Union[None, np.ndarray, Rewrite]]


@dataclass(frozen=True)
class CalibrationRequest:
    """What a pass asks of the engine (see the module docstring).

    Attributes:
        name: shown in the plan and the progress bar.
        sites: the weight sites to calibrate (each param at most once).
        statistics: site -> the statistics it needs (names from STATISTICS or Statistic objects).
        rewrite: called when a site is reached, with its current weight and statistics.
        sequential: continue downstream with rewritten weights (True) or with the originals.
    """

    name: str
    sites: Sequence[WeightSite]
    statistics: Callable[[WeightSite], Sequence[StatSpec]]
    rewrite: RewriteFn
    sequential: bool = True


@dataclass
class CalibrationResult:
    """The graph with rewritten weights, each site's Rewrite, and the engine's plan and timings."""

    graph: Graph
    rewrites: dict[str, Rewrite]
    plan: str = ""
    seconds: float = 0.0
    backend: str = ""


def normalize_batches(graph: Graph, calibration: Any) -> list[tuple]:
    """Calibration data -> a list of batches, each a tuple with one array per graph input.

    Accepts a sequence of batches, where a batch is a tuple/list with one value per graph input,
    a mapping ``{input index: value}``, or (for one-input graphs) a bare array/tensor. Raises
    :class:`CalibrationError` for empty data, a wrong input count, a wrong rank or shape, or
    non-finite values, naming the batch and input.
    """
    if calibration is None:
        raise CalibrationError("this pass needs calibration data (ctx.calibration / calibration=...): none was given")
    if _is_array(calibration):
        raise CalibrationError("calibration must be a sequence of batches (e.g. a list of arrays), not one array")
    if isinstance(calibration, (str, bytes)):
        raise CalibrationError("calibration is a string; it must be a sequence of batches of model inputs "
                               "(tokenize text first, or use the CLI's --calib TEXT)")
    batches = list(calibration)
    if not batches:
        raise CalibrationError("the calibration set is empty: give at least one batch")
    n = len(graph.inputs)
    out = []
    for b, batch in enumerate(batches):
        if isinstance(batch, (str, bytes)):
            raise CalibrationError(f"calibration batch {b} is a string ({batch[:40]!r}); batches must be model inputs "
                                   "(arrays or tensors): tokenize the text first (e.g. tokenizer(texts, "
                                   "return_tensors='pt')), or use the CLI's --calib TEXT")
        if _is_array(batch):
            batch = (batch,)
        elif isinstance(batch, Mapping):
            batch = tuple(batch[k] for k in range(n)) if all(k in batch for k in range(n)) else tuple(batch.values())
        else:
            batch = tuple(batch)
        if len(batch) != n:
            raise CalibrationError(f"calibration batch {b} has {len(batch)} value(s) but the graph takes {n} input(s)")
        for k, (v, x) in enumerate(zip(graph.inputs, batch)):
            shape = tuple(getattr(x, "shape", np.shape(x)))
            if len(shape) != v.type.rank:
                raise CalibrationError(
                    f"calibration batch {b}, input {k}: expected rank {v.type.rank} ({v.type}), "
                    f"got shape {list(shape)}"
                )
            if 0 in shape:
                raise CalibrationError(f"calibration batch {b}, input {k} is empty (shape {list(shape)})")
            if v.type.dtype.is_float and not _all_finite(x):
                raise CalibrationError(f"calibration batch {b}, input {k} holds NaN or Inf")
        _check_shapes(graph, batch, b)
        out.append(batch)
    return out


def _check_shapes(graph: Graph, batch: tuple, b: int) -> None:
    """Bind the inputs' symbolic dims from this batch and check every dim agrees."""
    env: dict[str, int] = {}
    for k, (v, x) in enumerate(zip(graph.inputs, batch)):
        for d, n in zip(v.type.shape, tuple(getattr(x, "shape", np.shape(x)))):
            if isinstance(d, D.Sym) and len(d.symbols) == 1 and d == D.Sym.name(next(iter(d.symbols))):
                s = next(iter(d.symbols))
                if env.setdefault(s, int(n)) != int(n):
                    raise CalibrationError(
                        f"calibration batch {b}, input {k}: dim {s} is {env[s]} elsewhere but {n} here"
                    )
    for k, (v, x) in enumerate(zip(graph.inputs, batch)):
        shape = tuple(int(n) for n in getattr(x, "shape", np.shape(x)))
        try:
            want = v.type.concrete_shape(env)
        except KeyError:
            continue
        if want != shape:
            raise CalibrationError(
                f"calibration batch {b}, input {k}: expected shape {list(want)} ({v.type}), got {list(shape)}"
            )


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _all_finite(x) -> bool:
    if hasattr(x, "isfinite") and hasattr(x, "detach"):  # torch
        return bool(x.isfinite().all())
    return bool(np.isfinite(np.asarray(x)).all())


def check_finite_weights(graph: Graph, names: Sequence[str], where: str) -> None:
    """Raise ValueError naming the first param among ``names`` whose value has NaN or Inf."""
    for n in names:
        w = np.asarray(graph.weight(n))
        if w.dtype.kind == "f" and not np.isfinite(w).all():
            bad = int((~np.isfinite(w)).sum())
            raise ValueError(f"{where}: weight {n!r} holds {bad} NaN/Inf value(s); fix the model before compressing it")


def retype_params(graph: Graph, types: Mapping[str, TensorType]) -> Graph:
    """Declare new types for some params AND update every equation's reference to them (regions
    included), so the graph still verifies after a weight gained an encoding."""
    if not types:
        return graph

    def fix(g: Graph) -> Graph:
        eqns = []
        for e in g.eqns:
            ins = [Param(a.name, types[a.name]) if isinstance(a, Param) and a.name in types else a for a in e.inputs]
            eqns.append(e.replace(inputs=ins, regions=[fix(r) for r in e.regions]))
        outs = [Param(a.name, types[a.name]) if isinstance(a, Param) and a.name in types else a for a in g.outputs]
        return g.replace(eqns=eqns, outputs=outs)

    g = fix(graph)
    return g.replace(params=[Param(p.name, types[p.name]) if p.name in types else p for p in g.params])


def hessian_norm2(d: np.ndarray, hessian: np.ndarray) -> float:
    """tr(D H D^T) = ||D X^T||_F^2 for H = X^T X, in float64.

    Written as a matmul (BLAS): a three-operand einsum without a contraction path runs as an
    unblocked triple loop, which dominated calibration time (15.6 of 17 s on MiniLM).
    """
    d = np.asarray(d, np.float64)
    return float(np.sum((d @ np.asarray(hessian, np.float64)) * d))


def relative_error(w: np.ndarray, w_new: np.ndarray, hessian: np.ndarray) -> float:
    """||W X^T - W' X^T||_F / ||W X^T||_F from H = X^T X (both (out, in))."""
    d = np.asarray(w, np.float64) - np.asarray(w_new, np.float64)
    num, den = hessian_norm2(d, hessian), hessian_norm2(w, hessian)
    return math.sqrt(max(num, 0.0) / den) if den > 0 else 0.0


class ErrorMeter:
    """:func:`relative_error` of candidate weights against one reference ``w``, for reports: the
    reference's norm computed once, the products in float32 (the sums in float64; agrees with
    :func:`relative_error` to about 1e-6 relative), at a third of the float64 path's cost."""

    def __init__(self, w: np.ndarray, hessian: np.ndarray):
        self.w = np.asarray(w, np.float32)
        self.h = np.asarray(hessian, np.float32)
        self.den = self._norm2(self.w)

    def _norm2(self, d: np.ndarray) -> float:
        return float(np.einsum("ij,ij->", d @ self.h, d, dtype=np.float64))

    def __call__(self, w_new: np.ndarray) -> float:
        num = self._norm2(self.w - np.asarray(w_new, np.float32))
        return math.sqrt(max(num, 0.0) / self.den) if self.den > 0 else 0.0


def dense_target(w: np.ndarray, hessian: np.ndarray, cross: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """The weight that best rebuilds the dense model's output from the compressed model's input.

    With X the layer's input in the compressed model and X_d the same input in the dense model,
    ``W~ = argmin ||W X_d^T - W~ X^T||^2 + lambda ||W~ - W||^2`` is
    ``W~ = W + W (C^T - H) (H + lambda I)^-1`` with ``H = X^T X``, ``C = X^T X_d`` and
    ``lambda = damp * mean(diag H)``. It is ``W`` itself when X = X_d. Since
    ``||W X_d^T - W' X^T||^2 = ||(W~ - W') X^T||^2 + const`` for any W', pruning or quantizing W~
    against H with SparseGPT/GPTQ minimises the error to the DENSE model's output, not just the
    layer's own (which lets a layer undo some of the error made before it).
    """
    w = np.asarray(w, np.float64)
    h = np.array(hessian, np.float64)
    c = np.asarray(cross, np.float64)
    lam = damp * float(np.mean(np.diag(h))) if h.size else 0.0
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += max(lam, 1e-12)
    corr = np.linalg.solve(h, (c - np.asarray(hessian, np.float64)) @ w.T).T
    return (w + corr).astype(np.float32)
