"""The whole-graph second opinion on the per-layer measured choices.

The measured chooser times each layer alone. Two cases where that can mislead, and the
alternative lowering the check times against the per-layer one:

- **Layers kept dense on a close call** (a compressed kernel at most 3x slower, :data:`CLOSE_CALL`):
  a model whose weights stream from memory (an LLM decode step) can run faster on the compressed
  kernels even where each layer alone measured slower. Alternative: compressed kernels everywhere
  (``use_kernels("compressed")``).
- **Layers on sparse kernels**: a sparse kernel that wins alone can lose inside the model (it
  converts its activations, its threads start cold after the previous op, ...), so the model must
  never end up slower than its dense-layout lowering. Alternative: the same graph with sparse
  kernels withheld (``use_kernels("dense-layout")``: dense-quantized kernels still compete).

Each alternative is lowered again (reusing the per-layer timings already taken), every module is
timed on the example inputs (median of 3 after a warm-up, interleaved) and the fastest is kept
(an alternative must be more than :data:`MARGIN` faster than the per-layer choice).
The comparison becomes a ``cost_model`` report row named ``whole graph``; when it overrules the
per-layer choice, the layers it changed carry ``chooser="whole-graph"`` decisions saying why.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable, Optional, Sequence

import torch

from .choice import MODULE_ATTR, REPORT_PASS, Decisions, decisions_of, kernel_choices
from .policy import use_kernels

CLOSE_CALL = 1 / 3  # a kept-dense layer whose compressed kernel measured at most 3x slower
MARGIN = 0.03  # an alternative lowering replaces the per-layer choice only when this much faster
SPARSE_PREFIX = "sparse_"  # kernel names of pared's CPU sparse kernels (backends/torch/sparse.py)


def close_calls(decisions: Decisions) -> list[float]:
    """The speed-ups (baseline over compressed, worst M) of the measured layers kept dense."""
    return [c.speedup for c in decisions if c.chooser == "measured" and c.refused and c.speedup is not None]


def alternatives(decisions: Decisions) -> list[tuple[str, str]]:
    """(label, kernel policy) of the lowerings worth timing against the per-layer choice."""
    chosen = decisions.counts()
    out = []
    # only where some layer was a close call: a kernel measured many times slower (e.g. int4 with
    # fp32 activations, ~50x) will not win as a whole graph, and timing it would cost minutes
    ratios = close_calls(decisions)
    if chosen.get("dense") and ratios and max(ratios) >= CLOSE_CALL:
        out.append(("all compressed", "compressed"))
    if any(k.startswith(SPARSE_PREFIX) for k in chosen):
        out.append(("no sparse kernels", "dense-layout"))
    return out


def whole_graph_check(fn, caught: list, example_inputs: Optional[Sequence[Any]], report,
                      lower_again: Callable[[], Any]) -> tuple[Any, list]:
    """Time ``fn`` against each of its :func:`alternatives` (``lower_again()`` called under that
    kernel policy); keep the fastest.

    Args:
        fn: the module lowered with the per-layer choices.
        caught: warnings recorded while lowering ``fn`` (dropped when an alternative wins: they
            were about the per-layer choices).
        example_inputs: the inputs to time on; CPU tensors only (nothing is timed otherwise).
        report: gets the ``cost_model`` / ``whole graph`` row.
        lower_again: lowers the same graph again.

    Returns:
        (module to use, warnings still to show).
    """
    if not example_inputs or any(
            getattr(t, "device", None) is not None and t.device.type != "cpu" for t in example_inputs):
        return fn, caught
    decisions = decisions_of(fn)
    chosen = kernel_choices(fn)
    modules: list[tuple[str, Any]] = [("per-layer choice", fn)]
    for label, policy in alternatives(decisions):
        with use_kernels(policy, measurements=decisions.measurements), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alt = lower_again()
        if kernel_choices(alt) != chosen:
            modules.append((label, alt))
    if len(modules) == 1:
        return fn, caught
    try:
        times = _time_interleaved([m for _, m in modules], example_inputs)
    except Exception as e:  # the check is an optimisation: keep the per-layer choice, and say why
        report.add(REPORT_PASS, "whole graph", skipped=f"timing on the example inputs failed ({type(e).__name__}: {e})")
        return fn, caught
    # an alternative must beat the per-layer choice by more than the timing noise (3 runs of a whole
    # model on a shared CPU move by a few percent); within it, the per-layer choice stands
    best = min(range(len(modules)), key=lambda j: (times[j] * (1.0 if j == 0 else 1.0 + MARGIN), j))
    fields = {("per_layer" if j == 0 else label.replace(" ", "_")) + "_ms": round(t * 1e3, 3)
              for j, ((label, _), t) in enumerate(zip(modules, times))}
    report.add(REPORT_PASS, "whole graph", **fields, per_layer_kernels=str(chosen), kept=modules[best][0])
    if best == 0:
        return fn, caught
    label, alt = modules[best]
    why = f"the whole graph ran faster with {label} ({times[best] * 1e3:.2f} ms vs {times[0] * 1e3:.2f} ms)"
    _overrule(fn, alt, why)  # the decisions say so (chooser "whole-graph"), and so does the report row
    return alt, []


def _time_interleaved(fns: Sequence[Callable], example_inputs: Sequence[Any], reps: int = 3) -> list[float]:
    """Median seconds of each of ``fns`` on ``example_inputs`` (a warm-up each, then ``reps`` rounds)."""
    # a step may update its inputs in place (a KV cache and its length): every run starts from the
    # same state, restored outside the timing
    saved = [t.clone() if isinstance(t, torch.Tensor) else t for t in example_inputs]

    def restore() -> None:
        for t, s in zip(example_inputs, saved):
            if isinstance(t, torch.Tensor):
                t.copy_(s)

    times: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for f in fns:
            restore()
            f(*example_inputs)
        for _ in range(reps):
            for j, f in enumerate(fns):
                restore()
                t0 = time.perf_counter()
                f(*example_inputs)
                times[j].append(time.perf_counter() - t0)
        restore()
    return [sorted(ts)[len(ts) // 2] for ts in times]


def _overrule(fn, alt, why: str) -> None:
    """``alt``'s decisions: the per-layer ones (with their timings) where both agree, and where
    the whole graph changed a layer's kernel, that decision re-signed by ``whole-graph``."""
    before = decisions_of(fn)
    out = Decisions(measurements=decisions_of(alt).measurements)
    for c in decisions_of(alt):
        old = before.layer(c.layer)
        if old is None or c.chosen not in old.kernels:
            out.add(dataclasses.replace(c, chooser="whole-graph", reason=why) if old is not None else c)
        elif old.chosen == c.chosen:
            out.add(old)
        else:
            out.add(dataclasses.replace(old, chosen=c.chosen, chooser="whole-graph", reason=why))
    setattr(alt, MODULE_ATTR, out)
