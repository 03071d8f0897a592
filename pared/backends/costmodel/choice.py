"""The record of one kernel decision (:class:`KernelChoice`) and of one lowering's decisions.

Every chooser — the torch CPU micro-benchmark, the Triton roofline, the whole-graph re-timing —
returns a :class:`KernelChoice`: which layer, which GEMM shape, the candidate kernels with their
times, the one picked, who decided and why. A lowering keeps them in a :class:`Decisions`
(``Lowerer.decisions``, then ``module.pared_kernel_decisions``); :func:`report_decisions` turns
them into report rows of the ``cost_model`` pass, one per layer, with the timings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

REPORT_PASS = "cost_model"
CHOOSERS = ("measured", "roofline", "whole-graph", "policy")
MODULE_ATTR = "pared_kernel_decisions"


@dataclass(frozen=True)
class KernelChoice:
    """One layer's kernel decision.

    Attributes:
        layer: the layer's weight (param) name, or the equation's location for a Triton GEMM.
        op: the IR op lowered (``qlinear``, ``dot_general``, a fused region kind, ...).
        shape: ``(M, N, K)`` of ``y[M, N] = x[M, K] @ w[N, K]^T``; M is the tuple of row counts
            the candidates were timed or predicted at (the decision holds for each of them).
        candidates: ``(kernel, seconds at each M)`` in preference order, the baseline (what runs
            when nothing else wins, usually dense) last; seconds are empty when nothing was timed.
        chosen: the kernel the layer runs on.
        chooser: who decided: ``measured``, ``roofline``, ``whole-graph`` or ``policy``
            (``use_kernels``, or no compressed kernel applies).
        reason: why, in words (empty when the preferred candidate won on its times).
    """

    layer: str
    op: str
    shape: tuple[tuple[int, ...], int, int]
    candidates: tuple[tuple[str, tuple[float, ...]], ...]
    chosen: str
    chooser: str
    reason: str = ""

    def __post_init__(self):
        if self.chooser not in CHOOSERS:
            raise ValueError(f"KernelChoice.chooser must be one of {CHOOSERS}, got {self.chooser!r}")
        if self.chosen not in self.kernels:
            raise ValueError(f"KernelChoice for {self.layer}: chosen kernel {self.chosen!r} is not one of the "
                             f"candidates {self.kernels}")

    @property
    def rows(self) -> tuple[int, ...]:
        """The row counts M the decision was made for."""
        return self.shape[0]

    @property
    def kernels(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.candidates)

    @property
    def baseline(self) -> str:
        return self.candidates[-1][0]

    @property
    def timed(self) -> bool:
        return all(len(s) == len(self.rows) for _, s in self.candidates) and len(self.candidates) > 1

    def seconds(self, kernel: str) -> tuple[float, ...]:
        """The kernel's seconds at each M of :attr:`rows` (empty when it was not timed)."""
        return dict(self.candidates)[kernel]

    @property
    def ratios(self) -> dict[int, float]:
        """Baseline seconds over the preferred (first) candidate's, per M; empty when untimed."""
        if not self.timed:
            return {}
        first, base = self.candidates[0][1], self.candidates[-1][1]
        return {m: b / c for m, c, b in zip(self.rows, first, base)}

    @property
    def speedup(self) -> Optional[float]:
        """The preferred candidate's worst ratio over the baseline (None when untimed)."""
        r = self.ratios
        return min(r.values()) if r else None

    @property
    def refused(self) -> bool:
        """True when a compressed candidate existed and the baseline runs instead."""
        return len(self.candidates) > 1 and self.chosen == self.baseline

    def row(self) -> dict[str, Any]:
        """The report fields of this decision (see :func:`report_decisions`)."""
        m = self.rows
        out: dict[str, Any] = {"op": self.op, "M": m[0] if len(m) == 1 else ",".join(map(str, m)),
                               "N": self.shape[1], "K": self.shape[2], "kernel": self.chosen, "chooser": self.chooser}
        for kernel, secs in self.candidates:
            out.update({f"{kernel}_M{mm}_s": s for mm, s in zip(m, secs)})
        out.update({f"M{mm}_ratio": r for mm, r in self.ratios.items()})
        out["refused"] = self.refused
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class Decisions:
    """The kernel decisions of one lowering, in the order they were made.

    ``measurements`` holds the timings already taken in this lowering (keyed by the chooser), so
    layers of equal shape are timed once and decided alike.
    """

    choices: list[KernelChoice] = field(default_factory=list)
    measurements: dict = field(default_factory=dict, repr=False)

    def add(self, choice: KernelChoice) -> KernelChoice:
        self.choices.append(choice)
        return choice

    def __iter__(self) -> Iterator[KernelChoice]:
        return iter(self.choices)

    def __len__(self) -> int:
        return len(self.choices)

    def __getitem__(self, i: int) -> KernelChoice:
        return self.choices[i]

    def counts(self) -> dict[str, int]:
        """How many layers run on each kernel."""
        out: dict[str, int] = {}
        for c in self.choices:
            out[c.chosen] = out.get(c.chosen, 0) + 1
        return out

    def layer(self, name: str) -> Optional[KernelChoice]:
        """The (last) decision for a layer, if any."""
        return next((c for c in reversed(self.choices) if c.layer == name), None)

    def summary(self) -> str:
        """One console line: how many layers run on each kernel, and how many a chooser refused
        (the per-layer reasons and timings are the report's ``cost_model`` rows)."""
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts().items(), key=lambda kv: -kv[1]))
        refused = sum(1 for c in self.choices if c.refused)
        choosers = sorted({c.chooser for c in self.choices})
        line = f"{len(self.choices)} quantized layer(s): {counts} (chosen by {'/'.join(choosers)})"
        if refused:
            line += f"; {refused} kept on the baseline, measured faster there (report rows 'cost_model')"
        bf16 = sum(1 for c in self.choices if c.chosen.endswith("_bf16"))
        if bf16:
            line += (f"; {bf16} round their fp32 activations to bf16 for the kernel (the recipe left act_dtype "
                     "unset; act_dtype=f32 keeps fp32)")
        return line


def decisions_of(module) -> Decisions:
    """The decisions a lowered module carries (``module.pared_kernel_decisions``); empty if none."""
    d = getattr(module, MODULE_ATTR, None)
    return d if isinstance(d, Decisions) else Decisions()


def kernel_choices(module) -> dict[str, int]:
    """How many quantized layers of a lowered module run on each kernel, e.g. ``{"int4pack": 5}``."""
    return decisions_of(module).counts()


def report_decisions(report, decisions: Iterable[KernelChoice], **extra: Any) -> None:
    """One ``cost_model`` row per decision, named by its layer, with its timings (``extra`` adds fields)."""
    if report is None:
        return
    for c in decisions:
        report.add(REPORT_PASS, c.layer, **c.row(), **extra)
