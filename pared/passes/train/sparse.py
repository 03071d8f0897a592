"""The ``train_sparse`` pass: each selected weight becomes ``ste_mask(@w, @w.mask)`` for training.

    train_sparse{pattern=2:4,backward=srste,schedule=dynamic}          SR-STE (N:M)
    train_sparse{sparsity=0.8,schedule=gradual,start=0,end=2000,every=100}   Zhu & Gupta
    train_sparse{pattern=fanin,sparsity=0.8,schedule=rigl,every=100}    SRigL (constant fan-in)

The initial mask keeps the largest |w| the pattern allows (for ``gradual``, at ``initial``
sparsity). A weight that is already sparse (a one-shot artifact: a ``Sparse`` encoding) keeps its
kept set: its zeros are never chosen ahead of its nonzeros, and an unstructured one keeps its own
per-layer sparsity (e.g. after global magnitude pruning; ``sparsity`` applies to dense weights).
The mask is a float 0/1 param of the weight's shape; the weight's ``Sparse`` encoding is dropped
while training (its latent values may be dense under STE) and restored by ``train_export``.
Layer selection is the ``sparsify`` pass's (:func:`pared.passes.sparsify.select_sites`):
embeddings and the LM head stay dense by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

import numpy as np

from ...ir import Graph, Param, Sparse, TensorType, make_eqn
from ..base import Pass, register_pass
from ..context import PassContext
from ..layer_patterns import as_patterns
from ..sparsify.selection import select_sites
from .patterns import MatrixView, parse_train_pattern, select_mask
from .schedules import MaskSchedule
from .sites import insert_transforms


@register_pass("train_sparse")
@dataclass(frozen=True)
class TrainSparse(Pass):
    """Make the selected weights trainable under a mask (see the module docstring).

    Options:
        pattern: ``unstructured``, ``N:M``, ``block:RxC`` or ``fanin`` (constant fan-in per output).
        sparsity: the final fraction of zeros (fixed by N:M; default 0.5).
        backward: ``masked`` (gradients of pruned weights are zero), ``ste`` (straight-through:
            pruned weights keep learning and may come back) or ``srste`` (STE plus ``decay`` times
            the pruned weights). Default: srste for ``dynamic``, masked otherwise.
        decay: SR-STE's lambda_W.
        schedule: ``fixed`` (one-shot mask), ``dynamic`` (re-selected from |w| every ``every``
            steps), ``gradual`` (cubic, from ``initial`` to ``sparsity`` between ``start`` and
            ``end``) or ``rigl`` (drop/grow by gradient magnitude; with ``fanin``: SRigL).
        start / end / every: the steps the mask may change at (``end=0``: the last step).
        initial: gradual's starting sparsity.
        alpha: RigL's initial drop fraction.
        targets / ignore / skip_embeddings: layer selection, as in ``sparsify``.
    """

    rewrites_layers: ClassVar[bool] = True

    pattern: str = "unstructured"
    sparsity: Optional[float] = None
    backward: Optional[Literal["masked", "ste", "srste"]] = None
    decay: float = 2e-4
    schedule: Literal["fixed", "dynamic", "gradual", "rigl"] = "fixed"
    start: int = 0
    end: int = 0
    every: int = 1
    initial: float = 0.0
    alpha: float = 0.3
    targets: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    skip_embeddings: bool = True

    def __post_init__(self):
        for opt in ("targets", "ignore"):
            object.__setattr__(self, opt, as_patterns(getattr(self, opt)))
        pat = parse_train_pattern(self.pattern)
        s = self.sparsity
        if s is not None and not 0.0 <= s < 1.0:
            raise ValueError(f"sparsity={s!r} must be in [0, 1)")
        if pat.kind == "nm" and s is not None and abs(s - (1 - pat.fixed_density)) > 1e-9:
            raise ValueError(f"sparsity={s} contradicts pattern {pat}; give one of them")
        if pat.kind == "nm" and self.schedule in ("gradual", "rigl"):
            raise ValueError(f"schedule={self.schedule} changes the kept count; N:M keeps n of every m: "
                             "use schedule=fixed or dynamic")
        if pat.kind == "block" and self.schedule == "rigl":
            raise ValueError("rigl grows single weights, not blocks: use pattern=unstructured or fanin")
        if not 0.0 <= self.initial < 1.0 or not 0.0 <= self.alpha <= 1.0 or self.decay < 0 or self.every < 1:
            raise ValueError("need 0 <= initial < 1, 0 <= alpha <= 1, decay >= 0 and every >= 1")
        if self.end and self.end <= self.start:
            raise ValueError(f"end={self.end} must be after start={self.start} (or 0: the last step)")

    @property
    def final_sparsity(self) -> float:
        pat = parse_train_pattern(self.pattern)
        if pat.kind == "nm":
            return 1.0 - pat.fixed_density
        return 0.5 if self.sparsity is None else float(self.sparsity)

    def attrs(self) -> dict:
        backward = self.backward or ("srste" if self.schedule == "dynamic" else "masked")
        return dict(backward=backward, decay=self.decay, pattern=str(parse_train_pattern(self.pattern)),
                    sparsity=self.final_sparsity, schedule=self.schedule, start=self.start, end=self.end,
                    every=self.every, initial=self.initial, alpha=self.alpha)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        pat = parse_train_pattern(self.pattern)
        sites, skipped = select_sites(graph, self.targets, self.ignore, self.skip_embeddings, where=f"{self.name}: ")
        for name, why in skipped:
            ctx.report.add(self.name, name, skipped=why)
        attrs = self.attrs()
        sched = MaskSchedule.from_attrs(attrs)
        density0 = 1.0 - self.initial if self.schedule == "gradual" else sched.final_density
        new, updates, types = {}, {}, {}
        for s in sites:
            view = MatrixView(tuple(s.w_perm), s.w_out)
            pat.check_shape(*s.shape2d, where=f"{self.name}: layer {s.param!r}")
            w = np.asarray(graph.weight(s.param))
            if not np.isfinite(w).all():
                raise ValueError(f"{self.name}: layer {s.param!r} has NaN/Inf weights")
            scores = np.abs(view.to2d(w)).astype(np.float32)
            dens = density0
            if isinstance(s.type.encoding, Sparse) and self.schedule != "gradual":  # a one-shot mask: keep it
                nonzero = scores != 0
                scores = np.where(nonzero, 1.0 + scores / max(float(scores.max()), 1e-30), 0.0)
                dens = float(nonzero.mean()) if pat.kind == "unstructured" else density0
            keep = select_mask(scores, pat, dens)
            mask = view.from2d(keep, w.shape).astype(w.dtype)
            wtype = s.type.with_(encoding=None)
            mtype = TensorType(wtype.shape, wtype.dtype)
            mname = s.param + ".mask"
            a = dict(attrs, perm=tuple(s.w_perm), outs=s.w_out)
            if dens != density0 and pat.kind == "unstructured":
                a["sparsity"] = 1.0 - dens  # this layer's own one-shot sparsity
            new[s.param] = make_eqn("ste_mask", [Param(s.param, wtype), Param(mname, mtype)], a, loc=s.eqn.loc)
            updates[s.param] = (w * mask).astype(w.dtype) if attrs["backward"] == "masked" else w
            updates[mname], types[s.param], types[mname] = mask, wtype, mtype
            ctx.report.add(self.name, s.param, pattern=str(pat), sparsity=float(1 - keep.mean()),
                           target_sparsity=self.final_sparsity, schedule=self.schedule, backward=attrs["backward"])
        if not new:
            return graph
        return insert_transforms(graph.with_weights(updates, types), new)
