"""The whole-graph second opinion on the per-layer measured choices.

The measured chooser times each quantized linear alone, its weights hot in cache; a model whose
weights stream from memory (an LLM decode step) can run faster on the compressed kernels even
where each layer alone measured slower. When some layers were kept dense and one of them was a
close call (its kernel at most 3x slower, :data:`CLOSE_CALL`), the graph is lowered again with
compressed kernels everywhere, both modules are timed on the example inputs (median of 3 after a
warm-up, interleaved) and the faster is kept. The comparison becomes a ``cost_model`` report row
named ``whole graph``; when it overrules the per-layer choice, a warning says so and the layers it
changed carry ``chooser="whole-graph"`` decisions.
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


def close_calls(decisions: Decisions) -> list[float]:
    """The speed-ups (baseline over compressed, worst M) of the measured layers kept dense."""
    return [c.speedup for c in decisions if c.chooser == "measured" and c.refused and c.speedup is not None]


def whole_graph_check(fn, caught: list, example_inputs: Optional[Sequence[Any]], report,
                      lower_again: Callable[[], Any]) -> tuple[Any, list]:
    """Time ``fn`` against ``lower_again()`` under ``use_kernels("compressed")``; keep the faster.

    Args:
        fn: the module lowered with the per-layer choices.
        caught: warnings recorded while lowering ``fn`` (dropped when the alternative wins: they
            were about layers kept dense).
        example_inputs: the inputs to time on; CPU tensors only (nothing is timed otherwise).
        report: gets the ``cost_model`` / ``whole graph`` row.
        lower_again: lowers the same graph again (called within ``use_kernels("compressed")``).

    Returns:
        (module to use, warnings still to show).
    """
    chosen = kernel_choices(fn)
    if not chosen.get("dense") or not example_inputs or any(
            getattr(t, "device", None) is not None and t.device.type != "cpu" for t in example_inputs):
        return fn, caught
    # only where some layer was a close call: a kernel measured many times slower (e.g. int4 with
    # fp32 activations, ~50x) will not win as a whole graph, and timing it would cost minutes
    ratios = close_calls(decisions_of(fn))
    if not ratios or max(ratios) < CLOSE_CALL:
        return fn, caught
    with use_kernels("compressed"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alt = lower_again()
    if kernel_choices(alt) == chosen:
        return fn, caught
    times: dict[int, list[float]] = {id(fn): [], id(alt): []}
    # a step may update its inputs in place (a KV cache and its length): every run starts from the
    # same state, restored outside the timing
    saved = [t.clone() if isinstance(t, torch.Tensor) else t for t in example_inputs]

    def restore() -> None:
        for t, s in zip(example_inputs, saved):
            if isinstance(t, torch.Tensor):
                t.copy_(s)

    try:
        with torch.no_grad():
            for f in (fn, alt):
                restore()
                f(*example_inputs)
            for _ in range(3):
                for f in (fn, alt):
                    restore()
                    t0 = time.perf_counter()
                    f(*example_inputs)
                    times[id(f)].append(time.perf_counter() - t0)
            restore()
    except Exception as e:  # the check is an optimisation: keep the per-layer choice, and say why
        report.add(REPORT_PASS, "whole graph", skipped=f"timing on the example inputs failed ({type(e).__name__}: {e})")
        return fn, caught
    t_layer, t_comp = (sorted(times[id(f)])[1] for f in (fn, alt))
    keep_alt = t_comp < t_layer
    report.add(REPORT_PASS, "whole graph", per_layer_ms=round(t_layer * 1e3, 3),
               all_compressed_ms=round(t_comp * 1e3, 3), per_layer_kernels=str(chosen),
               kept="all compressed" if keep_alt else "per-layer choice")
    if not keep_alt:
        return fn, caught
    why = f"the whole graph ran faster on compressed kernels ({t_comp * 1e3:.2f} ms vs {t_layer * 1e3:.2f} ms)"
    _overrule(fn, alt, why)  # the decisions say so (chooser "whole-graph"), and so does the report row
    return alt, []


def _overrule(fn, alt, why: str) -> None:
    """``alt``'s decisions: the per-layer ones (with their timings) where both agree, and where
    the whole graph changed a layer's kernel, that decision re-signed by ``whole-graph``."""
    before = decisions_of(fn)
    out = Decisions(measurements=decisions_of(alt).measurements)
    for c in decisions_of(alt):
        old = before.layer(c.layer)
        if old is None or c.chosen not in old.kernels:
            out.add(c)
        elif old.chosen == c.chosen:
            out.add(old)
        else:
            out.add(dataclasses.replace(old, chosen=c.chosen, chooser="whole-graph", reason=why))
    setattr(alt, MODULE_ATTR, out)
