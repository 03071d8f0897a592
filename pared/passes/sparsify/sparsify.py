"""The ``sparsify`` pass: magnitude, random, Wanda or SparseGPT masks, optional DSnoT refinement.

    sparsify{method=sparsegpt,sparsity=0.5}
    sparsify{method=wanda,pattern=2:4,dsnot=true}
    sparsify{method=magnitude,sparsity=0.7,granularity=global,targets=mlp}

The result keeps dense-valued weights whose param type carries a ``Sparse`` encoding promising
the zero pattern (``nm`` with the input axis, ``block``, or ``bitmask``); ``sparsify_pack`` turns
them into packed values + metadata for backends with sparse kernels. Data-aware methods (wanda,
sparsegpt, dsnot) run through the calibration engine, sequentially: each layer is pruned on the
activations of the already-pruned layers before it. With calibration data every method reports
the layer's relative reconstruction error ||WX - W'X|| / ||WX||.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

import numpy as np

from ...ir import Graph
from ..base import Pass, register_pass
from ..calibration import (
    CalibrationError,
    CalibrationRequest,
    ErrorMeter,
    Rewrite,
    calibrate,
    check_finite_weights,
    dense_target,
    relative_error,
    retype_params,
)
from ..calibration.engine import duration
from ..context import PassContext
from ..layer_patterns import as_patterns
from .dsnot import dsnot as dsnot_refine
from .magnitude import global_thresholds, select
from .pattern import parse_pattern
from .random import erk_densities, random_scores
from .refit import refit_kept, refit_preconditioner
from .selection import select_sites, unmatched_ignore
from .sparsegpt import inverse_hessian_factor, sparsegpt
from .wanda import wanda_scores

METHODS = ("magnitude", "random", "wanda", "sparsegpt")
DATA_AWARE = ("wanda", "sparsegpt")


@register_pass("sparsify")
@dataclass(frozen=True)
class Sparsify(Pass):
    """Prune weights of dot_general/conv layers.

    Options:
        method: magnitude | random | wanda | sparsegpt.
        sparsity: fraction of weights zeroed, in [0, 1) (default 0.5; fixed by N:M patterns).
        pattern: ``unstructured``, ``N:M`` (N kept per M along the input axis) or ``block:RxC``.
        granularity: where unstructured scores compete: ``layer``, ``row`` (per output), or
            ``global`` (magnitude/random only). Default: row for wanda, layer otherwise.
        distribution: random only: ``uniform`` ratio per layer or ``erk``.
        targets / ignore: tuples of regexes searched in param names, as in the quantization
            passes (empty targets: every dot/conv weight). A target matching no layer is an error.
        exclude: the older name of ``ignore`` (both are honoured).
        skip_embeddings: leave embeddings and the LM head (also when tied) dense.
        dsnot: refine the mask with DSnoT prune-and-grow (needs calibration).
        dsnot_cycles: maximum swaps per row.
        refit: re-solve each row's kept weights by least squares for its mask (:func:`refit_kept`;
            the sweep leaves them short of that optimum): after sparsegpt, or with dsnot between
            its two rounds (the second round starts from the refit weights). Masks that keep their
            weights (magnitude, random, wanda without dsnot) are not refit.
        refit_iters: at most this many conjugate-gradient iterations per refit (rows stop when converged);
            the refit between the two DSnoT rounds stops earlier still (``REFIT_STEPS``).
        damp: SparseGPT dampening, as a fraction of the mean Hessian diagonal.
        blocksize: SparseGPT lazy-update block (columns).
        sequential: calibrate each layer on the already-pruned model (else on the dense one).
        reconstruct: what sparsegpt and dsnot rebuild: ``layer``, the layer's own output on the
            pruned model's input (the papers); ``dense``, the DENSE model's output of the layer,
            which the engine gets from a dense shadow stream (:func:`dense_target`), so each layer
            also makes up for the error of the layers before it (sequential only).
        seed: random method seed.
    """

    def needs_calibration(self) -> bool:
        return self.method in DATA_AWARE or self.dsnot

    rewrites_layers: ClassVar[bool] = True
    REFIT_STEPS: ClassVar[int] = 6  # CG steps of the refit between the two DSnoT rounds
    FINAL_STEPS: ClassVar[int] = 2  # and of the one after the second

    method: Literal["magnitude", "random", "wanda", "sparsegpt"] = "magnitude"
    sparsity: Optional[float] = None
    pattern: str = "unstructured"
    granularity: Optional[Literal["layer", "row", "global"]] = None
    distribution: Literal["uniform", "erk"] = "uniform"
    targets: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    skip_embeddings: bool = True
    dsnot: bool = False
    dsnot_cycles: int = 50
    refit: bool = True
    refit_iters: int = 15
    damp: float = 0.01
    blocksize: int = 128
    sequential: bool = True
    reconstruct: Literal["layer", "dense"] = "layer"
    seed: int = 0

    def __post_init__(self):
        for opt in ("targets", "ignore", "exclude"):  # a bare string (python callers) is one pattern
            object.__setattr__(self, opt, as_patterns(getattr(self, opt)))
        pat = parse_pattern(self.pattern)  # raises on N >= M, bad syntax
        s = self.sparsity
        if s is not None and not (isinstance(s, (int, float)) and 0.0 <= s < 1.0):
            raise ValueError(f"sparsity={s!r} must be in [0, 1)")
        if pat.kind == "nm" and s is not None and abs(s - (1 - pat.density)) > 1e-9:
            raise ValueError(
                f"sparsity={s} contradicts pattern {pat} (which prunes {1 - pat.density:g}); give one of them"
            )
        if self.granularity == "global" and self.method not in ("magnitude", "random"):
            raise ValueError(f"granularity=global is for magnitude/random, not {self.method}")
        if self.granularity is not None and pat.kind != "unstructured":
            raise ValueError(f"granularity applies to unstructured sparsity, not pattern {pat}")
        if self.method == "sparsegpt" and pat.kind == "block":
            raise ValueError("sparsegpt supports unstructured and N:M patterns, not blocks")
        if self.dsnot and pat.kind == "block":
            raise ValueError("dsnot refines unstructured and N:M masks, not blocks")
        if self.reconstruct not in ("layer", "dense"):
            raise ValueError(f"reconstruct={self.reconstruct!r}: valid values are layer and dense")
        if self.reconstruct == "dense" and not (self.method == "sparsegpt" or self.dsnot):
            raise ValueError(
                "reconstruct=dense applies to sparsegpt and dsnot (which rebuild weights), not to a bare "
                f"{self.method} mask"
            )
        if self.blocksize < 1 or self.dsnot_cycles < 0 or self.damp < 0 or self.refit_iters < 1:
            raise ValueError("blocksize and refit_iters must be >= 1, dsnot_cycles >= 0 and damp >= 0")

    @property
    def target_sparsity(self) -> float:
        pat = parse_pattern(self.pattern)
        if pat.kind == "nm":
            return 1.0 - pat.density
        return 0.5 if self.sparsity is None else float(self.sparsity)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        pat = parse_pattern(self.pattern)
        sparsity = self.target_sparsity
        granularity = self.granularity or ("row" if self.method == "wanda" else "layer")
        sites, skipped = select_sites(
            graph, self.targets, self.ignore + self.exclude, self.skip_embeddings, where=f"{self.name}: "
        )
        # every check before any work: shapes against the pattern, finite weights, data present
        for s in sites:
            pat.check_shape(*s.shape2d, where=f"{self.name}: layer {s.param!r}")
        check_finite_weights(graph, [s.param for s in sites], self.name)
        needs_data = self.method in DATA_AWARE or self.dsnot
        has_data = ctx.calibration is not None
        if needs_data and not has_data:
            what = self.method if self.method in DATA_AWARE else "dsnot"
            raise CalibrationError(
                f"{self.name}: {what} needs calibration data (calibration=[batches...]); none was given"
            )
        for name, why in skipped:
            ctx.report.add(self.name, name, skipped=why)
        for rx in unmatched_ignore(graph, self.ignore + self.exclude):
            ctx.report.add(self.name, rx, note="this ignore pattern matches no layer")
        if not sites or sparsity == 0.0:
            return graph

        pre = (
            self._data_free_masks(graph, sites, pat, sparsity, granularity)
            if self.method in ("magnitude", "random")
            else {}
        )
        rows: dict[str, dict] = {}
        factors: dict[int, tuple] = {}  # H by id -> (H, its inverse factors): q/k/v and gate/up share H

        def shared_factors(h):
            """(SparseGPT's factor of H^-1, the refit's preconditioner H^-1), computed once per Hessian."""
            if id(h) not in factors or factors[id(h)][0] is not h:
                factors.clear()  # one Hessian at a time: the engine hands over the next layer's after this
                factors[id(h)] = (h, *self._factors(h))
            return factors[id(h)][1:]

        def rewrite(site, w, stats):
            w2 = site.weight_matrix(w).astype(np.float32)
            h = stats.get("hessian")
            ref = dense_target(w2, h, stats["cross"], self.damp) if "cross" in stats else w2
            info = {}
            meter = ErrorMeter(ref, h) if h is not None else None  # the report's errors
            if self.method in ("magnitude", "random"):
                keep = pre[site.param]
                new = w2 * keep
            elif self.method == "wanda":
                keep = select(wanda_scores(w2, stats["norms"]), pat, sparsity, granularity)
                new = w2 * keep
            else:
                new, keep, info = self._solve(ref, h, pat, sparsity, *shared_factors(h), meter=meter)
            if self.method != "sparsegpt" and self.dsnot:
                new, keep, info = self._refine(ref, h, new, keep, pat, shared_factors(h)[1], meter=meter)
            row = dict(
                method=self.method + ("+dsnot" if self.dsnot else ""),
                pattern=str(pat),
                sparsity=float(1.0 - keep.mean()),
                shape=f"{w2.shape[0]}x{w2.shape[1]}",
            )
            if h is not None:
                row["error"] = meter(new)
            if ref is not w2:
                row["reconstruct"] = "dense"
                row["error_vs_own_weight"] = relative_error(w2, new, h)
            row.update(info)
            rows[site.param] = row
            enc = pat.encoding(site.in_axis, site.type.rank)
            return Rewrite(site.from_matrix(new).astype(w.dtype), site.type.with_(encoding=enc))

        if has_data and (self.method == "sparsegpt" or self.dsnot):
            print(self._estimate(sites, pat, sparsity), file=sys.stderr, flush=True)
        if has_data:
            stats = ("hessian", "norms") if self.method == "wanda" else ("hessian",)
            if self.reconstruct == "dense":
                stats += ("cross",)
            req = CalibrationRequest(self.name, sites, lambda s: stats, rewrite, sequential=self.sequential)
            out = calibrate(graph, ctx, req).graph
        else:
            updates, types = {}, {}
            for s in sites:
                w = np.asarray(graph.weight(s.param))
                rw = rewrite(s, w, {})
                updates[s.param], types[s.param] = rw.value, rw.type
            out = retype_params(graph.with_weights(updates), types)
        for s in sites:
            if s.param in rows:
                ctx.report.add(self.name, s.param, **rows[s.param])
        return out

    def _factors(self, h):
        """(SparseGPT's upper factor U of H^-1 and dead channels, or None; H^-1 = U^T U for the refit, or None)."""
        factor = inverse_hessian_factor(h, self.damp) if self.method == "sparsegpt" else None
        if not self.refit or not (self.method == "sparsegpt" or self.dsnot):
            return factor, None
        if factor is None:
            return None, refit_preconditioner(h, self.damp)
        u = factor[0]
        return factor, u.T @ u  # the same damped inverse (dead channels set to 1: fine for a preconditioner)

    def _solve(self, ref, h, pat, sparsity, factor, hinv, meter=None):
        """SparseGPT, then the optional refit and DSnoT rounds: (weight, keep-mask, report fields)."""
        new, keep = sparsegpt(ref, h, sparsity, pat.n, pat.m, self.blocksize, self.damp, factor=factor)
        if not self.dsnot:
            if self.refit:
                new = refit_kept(ref, new, keep, h, damp=self.damp, iters=self.refit_iters, hinv=hinv)
            return new, keep, {}
        return self._refine(ref, h, new, keep, pat, hinv, meter=meter)

    def _refine(self, ref, h, new, keep, pat, hinv, meter=None):
        """DSnoT; with refit: refit the swapped mask, let DSnoT swap once more from there, refit.

        No refit between SparseGPT and the first DSnoT: on 8 of SmolLM2's 2:4 layers, DSnoT from
        the sweep's own weights (every cycle) ended with 0.35% less summed layer error than
        refitting first. The two refits stop after ``REFIT_STEPS`` and ``FINAL_STEPS`` conjugate-
        gradient steps (or ``refit_iters`` if smaller): on the 34 linears of SmolLM2's first five
        layers the summed relative error was 4.8421 against 4.8335 with 15 steps each (+0.18%) in
        67% of the time. Without the last refit it was 4.8462, but the perplexity of the whole
        model went from 79.1 to 84.8 (one run each): the final least-squares values matter more than that
        error suggests.
        """
        err0 = (meter or ErrorMeter(ref, h))(new)
        kw = dict(n=pat.n, m=pat.m, cycles=self.dsnot_cycles)
        new, keep, swaps = dsnot_refine(ref, new, keep, h, **kw)
        if self.refit:
            steps = min(self.refit_iters, self.REFIT_STEPS)
            new = refit_kept(ref, new, keep, h, damp=self.damp, iters=steps, hinv=hinv)
            new, keep, more = dsnot_refine(ref, new, keep, h, **kw)
            steps = min(self.refit_iters, self.FINAL_STEPS)
            new = refit_kept(ref, new, keep, h, damp=self.damp, iters=steps, hinv=hinv)
            swaps += more
        return new, keep, dict(dsnot_swaps=swaps, error_before_dsnot=err0)

    def _estimate(self, sites, pat, sparsity) -> str:
        """One line: the solver time of every layer, extrapolated from one timed probe.

        The probe solves a random problem with the first layer's input width and up to 512 rows
        (Hessian of 4x as many random tokens as columns), twice: the second, warm, run is timed.
        The solvers' products are (rows, in) x (in, in), so the probe's time is scaled by
        rows x in^2; the calibration forward passes are estimated by the engine's plan.
        """
        cols0 = sites[0].shape2d[1]
        rows0 = min(sites[0].shape2d[0], 512)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4 * cols0, cols0)).astype(np.float32) * np.exp(rng.normal(0, 1, cols0))
        h = (x.T @ x).astype(np.float64)
        w = rng.standard_normal((rows0, cols0)).astype(np.float32)
        probe = 0.0
        for _ in range(2):
            t0 = time.perf_counter()
            factor, hinv = self._factors(h)
            if self.method == "sparsegpt":
                self._solve(w, h, pat, sparsity, factor, hinv)
            else:  # dsnot on a data-free or wanda mask: a magnitude mask stands in for it
                keep = select(np.abs(w), pat, sparsity, "layer")
                self._refine(w, h, w * keep, keep, pat, hinv)
            probe = time.perf_counter() - t0
        total = probe * sum(r * c * c for r, c in (s.shape2d for s in sites)) / (rows0 * cols0 * cols0)
        what = self.method + ("+dsnot" if self.dsnot else "") + ("+refit" if self.refit else "")
        return (
            f"[pared sparsify] estimated {duration(total)} for {len(sites)} layers ({what} solver, without the "
            f"calibration forward passes; probe {rows0}x{cols0} in {probe:.2f} s)"
        )

    def _data_free_masks(self, graph, sites, pat, sparsity, granularity) -> dict[str, np.ndarray]:
        mats = {s.param: np.abs(site_matrix(graph, s)) for s in sites}
        if self.method == "random":
            mats = {k: random_scores(v.shape, self.seed, k) for k, v in mats.items()}
        if pat.kind == "unstructured" and granularity == "global":
            t = global_thresholds(list(mats.values()), sparsity)
            return {k: v > t for k, v in mats.items()}
        ratios = {k: sparsity for k in mats}
        if self.method == "random" and self.distribution == "erk" and pat.kind == "unstructured":
            ratios = {k: 1.0 - d for k, d in erk_densities({k: v.shape for k, v in mats.items()}, sparsity).items()}
        return {k: select(v, pat, ratios[k], granularity) for k, v in mats.items()}


def site_matrix(graph: Graph, site) -> np.ndarray:
    return site.weight_matrix(graph.weight(site.param)).astype(np.float32)
