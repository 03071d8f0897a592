"""The measured chooser: a torch micro-benchmark of each candidate kernel per weight shape.

Each candidate and its baseline (dense fp32 ``F.linear`` unless the candidate list names another)
are timed on random data, best of 7 after a warm-up, at the layer's row counts
(:func:`probe_rows`: the graph's own M when it is static, else M = 1 and 128). Timings are kept
per lowering (:attr:`Decisions.measurements`), so layers of equal shape are timed once.

Weights hot or cold: a layer timed alone has its weights hot in cache, but in a model whose
weights do not fit in the last-level cache (an LLM decode step: every weight is read once per
token) they stream from memory, where a 4-bit kernel reads 8x fewer bytes than fp32. When the
graph's weights exceed the LLC (:func:`streams_weights`), each candidate's time becomes its hot
time plus its weight bytes over the measured read bandwidth (:func:`read_bandwidth`, a timed sum
over a buffer four times the LLC's size), for the candidates and the baseline alike. The sum, not
the max: at M = 1 a kernel call is ~0.1 ms of dispatch and quantization overhead that does not
overlap the weight stream, and the overhead alone made int8 and fp32 layers time the same.
(Evicting the cache before each timed call was tried too: it also evicts the kernel's code and
page-table entries and charged every kernel ~0.2 ms at M = 1.) The whole-graph second opinion
(:mod:`.whole_graph`) still times the real step.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .choice import KernelChoice
from .chooser import Candidate, Gemm, decide

PROBE_M = (1, 128)
DEFAULT_LLC = 32 << 20  # bytes, when the OS does not say


@functools.lru_cache(maxsize=1)
def llc_bytes() -> int:
    """The last-level cache's size in bytes (Linux sysfs; 32 MiB when unknown)."""
    best = 0
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            text = (d / "size").read_text().strip().upper()
            level = int((d / "level").read_text())
        except (OSError, ValueError):
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            size = int(text.rstrip("KMG")) * mult
        except ValueError:
            continue
        if level >= 2:
            best = max(best, size)
    return best or DEFAULT_LLC


def streams_weights(weight_bytes: int) -> bool:
    """Whether a graph with ``weight_bytes`` of weights reads them from memory on each run."""
    return weight_bytes > llc_bytes()


@functools.lru_cache(maxsize=1)
def read_bandwidth() -> float:
    """Bytes per second this process reads from memory with torch's threads (best of 3 sums over a
    buffer four times the LLC's size, so it cannot be served from cache)."""
    buf = torch.ones(max(4 * llc_bytes(), 64 << 20) // 4, dtype=torch.float32)
    buf.sum()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        buf.sum()
        best = min(best, time.perf_counter() - t0)
    return buf.numel() * 4 / best


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
        cold: the weights stream from memory (:func:`streams_weights` of the graph being lowered):
            each time gains the candidate's ``weight_bytes`` over :func:`read_bandwidth`.
    """

    measurements: dict = field(default_factory=dict)
    timer: Optional[Timer] = None
    slower_than: str = ""
    cold: bool = False

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
            seconds.append(tuple(self._floor(timing[m][0], c, layer) for m in rows))
            if base_s is None:  # the baseline is timed next to each candidate; report the first's
                base_s = tuple(self._floor(timing[m][1], base, layer) for m in rows)
        if base_s is None:
            raise ValueError(f"MeasuredChooser for {layer.layer}: no candidate to time against the baseline "
                             f"{base.kernel!r}; pass [candidate, ..., baseline]")
        return decide(layer, candidates, [*seconds, base_s], "measured", self.slower_than)

    def _floor(self, seconds: float, c: Candidate, layer: Gemm) -> float:
        """``seconds`` plus, when weights stream (cold), the time to read the candidate's weights
        from memory: at decode sizes a kernel's call overhead does not overlap its weight stream."""
        if not self.cold:
            return seconds
        nbytes = c.weight_bytes if c.weight_bytes is not None else layer.n * layer.k * 4  # dense fp32
        return seconds + nbytes / read_bandwidth()
