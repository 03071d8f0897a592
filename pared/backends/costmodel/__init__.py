"""The cost model: one interface that picks a kernel per layer and records why.

- :mod:`.choice`: :class:`KernelChoice` (one decision: layer, op, (M, N, K), candidates with their
  seconds, the kernel picked, the chooser, the reason) and :class:`Decisions` (one lowering's
  decisions: ``Lowerer.decisions``, then ``module.pared_kernel_decisions``); report rows.
- :mod:`.chooser`: ``Chooser.choose(layer, candidates) -> KernelChoice`` and the rule every
  chooser shares (a compressed kernel judged slower than its baseline is refused).
- :mod:`.measured`: the torch CPU micro-benchmark chooser (needs torch).
- :mod:`.roofline`: the GPU roofline chooser (flops/bytes from the IR's ``eqn_cost``; peaks table).
- :mod:`.whole_graph`: the whole-graph second opinion on measured choices (needs torch).
- :mod:`.policy`: ``use_kernels("fastest" | "compressed" | "dense")``.

This package imports no torch; import :mod:`.measured` and :mod:`.whole_graph` by name.
"""

from .choice import REPORT_PASS, Decisions, KernelChoice, decisions_of, kernel_choices, report_decisions
from .chooser import Candidate, Chooser, Gemm, decide
from .policy import POLICIES, kernel_policy, use_kernels
from .roofline import DEVICES, DevicePeaks, RooflineChooser, choose, device_peaks, gemm_time

__all__ = [
    "DEVICES", "POLICIES", "REPORT_PASS", "Candidate", "Chooser", "Decisions", "DevicePeaks", "Gemm", "KernelChoice",
    "RooflineChooser", "choose", "decide", "decisions_of", "device_peaks", "gemm_time", "kernel_choices",
    "kernel_policy", "report_decisions", "use_kernels",
]
