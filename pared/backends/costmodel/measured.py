"""The measured chooser: a torch micro-benchmark of each candidate kernel per weight shape.

Each candidate and its baseline (dense fp32 ``F.linear`` unless the candidate list names another)
are timed on random data, best of 7 after a warm-up, at the layer's row counts
(:func:`probe_rows`: the graph's own M when it is static, else M = 1 and 128). Timings are kept
per lowering (:attr:`Decisions.measurements`), so layers of equal shape are timed once.

Caveat (DESIGN.md, "Measure the workload users run"): a layer timed alone has its weights hot in
cache; a model whose weights stream from memory can favour compressed kernels more than these
timings say, which is what the whole-graph second opinion (:mod:`.whole_graph`) checks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .choice import KernelChoice
from .chooser import Candidate, Gemm, decide

PROBE_M = (1, 128)


def _time(fn: Callable, reps: int = 7) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)  # the minimum is robust to preemption on a shared machine


def probe_rows(x_type) -> tuple[int, ...]:
    """The row counts M to measure a linear at: the graph's own M when its input shape is static
    (a decode step is timed at M=1 only, not at a prefill size it never runs; sizes above
    PROBE_M's largest are timed there, where the kernels are compute-bound), else PROBE_M."""
    lead = x_type.shape[:-1]
    if all(isinstance(d, int) for d in lead):
        return (min(max(1, int(np.prod(lead, dtype=np.int64))), max(PROBE_M)),)
    return PROBE_M


def measure(candidate: Callable[[torch.Tensor], torch.Tensor], k: int, n: int, dtype=torch.float32,
            baseline: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, rows=PROBE_M) -> dict:
    """{M: (candidate seconds, baseline seconds)} for M in ``rows`` (the cost model's data).

    The baseline is what would run instead: dense fp32 for weight-only layers, and for W8A8 the
    int8 emulation in fp32 (the layer's numerics need quantized activations either way).
    """
    if baseline is None:
        w = torch.randn(n, k, dtype=dtype)
        baseline = lambda x: F.linear(x, w)  # noqa: E731
    out = {}
    with torch.no_grad():
        for m in rows:
            x = torch.randn(m, k, dtype=dtype)
            out[m] = (_time(lambda x=x: candidate(x)), _time(lambda x=x: baseline(x)))
    return out


Timer = Callable[..., dict]


@dataclass(frozen=True)
class MeasuredChooser:
    """Times each candidate against the baseline (the last candidate) and applies :func:`decide`.

    Attributes:
        measurements: timings already taken, shared by the layers of one lowering
            (``Decisions.measurements``); keyed by (kernel, candidate key, rows).
        timer: ``timer(fn, k, n, baseline=..., rows=...) -> {M: (candidate s, baseline s)}``;
            default :func:`measure` (tests inject fake timings here).
        slower_than: how a refusal names the baseline (``dense fp32``).
    """

    measurements: dict = field(default_factory=dict)
    timer: Optional[Timer] = None
    slower_than: str = ""

    def choose(self, layer: Gemm, candidates: Sequence[Candidate]) -> KernelChoice:
        *compressed, base = candidates
        timer = self.timer or measure
        rows = tuple(layer.rows)
        seconds, base_s = [], None
        for c in compressed:
            key = (c.kernel, c.key, rows)
            if key not in self.measurements:
                self.measurements[key] = timer(c.fn, layer.k, layer.n, baseline=base.fn, rows=rows)
            timing = self.measurements[key]
            seconds.append(tuple(timing[m][0] for m in rows))
            if base_s is None:  # the baseline is timed next to each candidate; report the first's
                base_s = tuple(timing[m][1] for m in rows)
        if base_s is None:
            raise ValueError(f"MeasuredChooser for {layer.layer}: no candidate to time against the baseline "
                             f"{base.kernel!r}; pass [candidate, ..., baseline]")
        return decide(layer, candidates, [*seconds, base_s], "measured", self.slower_than)
