"""Pass instruments (TVM's PassInstrument): cross-cutting work around every pass.

The pass manager calls ``before_pipeline`` once, ``before_pass``/``after_pass`` around each pass
(``after_pass`` hooks in reverse order, so the first instrument wraps the others), and
``after_pipeline`` at the end. An instrument that finds a problem raises; the pass manager says
which pass was running and which ran before it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ..ir import Eqn, Graph, VerifyError, format_eqn, get_op, print_graph, verify
from ..passes.base import Pass
from ..passes.context import PassContext


class PassError(RuntimeError):
    """A pass failed, or its result failed an instrument's check.

    Attributes: ``pass_name``; ``completed`` (names of the passes that ran before it, in order);
    ``index`` (its position in the pipeline); ``eqn`` (the equation involved, when known);
    ``cause`` (the underlying exception, also ``__cause__``).
    """

    def __init__(
        self,
        pass_name: str,
        completed: Optional[Sequence[str]] = None,
        *,
        reason: str = "",
        index: Optional[int] = None,
        eqn: Optional[Eqn] = None,
        cause: Optional[BaseException] = None,
    ):
        self.pass_name = pass_name
        self.completed = None if completed is None else tuple(completed)
        self.index = index
        self.cause = cause
        self.eqn = eqn if eqn is not None else _find_eqn(cause)
        self.reason = reason or (f"{type(cause).__name__}: {cause}" if cause is not None else "failed")
        super().__init__(self._message())

    def set_completed(self, completed: Sequence[str], index: int) -> PassError:
        """Fill in the pipeline position (for errors raised by instruments, which do not know it)."""
        if self.completed is None:
            self.completed = tuple(completed)
        if self.index is None:
            self.index = index
        self.args = (self._message(),)
        return self

    def _message(self) -> str:
        where = f" (pass {self.index + 1} of the pipeline)" if self.index is not None else ""
        lines = [f"pass {self.pass_name!r}{where} failed: {self.reason}"]
        if self.completed is not None:
            lines.append("  passes run before it: " + (", ".join(self.completed) or "none (it ran first)"))
        if self.eqn is not None:
            text = _eqn_text(self.eqn)
            if text not in self.reason:
                lines.append(f"  at equation: {text}")
        return "\n".join(lines)


class NumericsError(PassError):
    """A pass changed the graph's outputs on the sample inputs beyond the tolerance."""

    def __init__(self, pass_name: str, reason: str, output_index: int, max_abs: float, max_rel: float):
        self.output_index = output_index
        self.max_abs = max_abs
        self.max_rel = max_rel
        super().__init__(pass_name, reason=reason)


def _eqn_text(e: Eqn) -> str:
    try:
        return format_eqn(e)
    except Exception:  # never let formatting hide the real error
        return f"{e.op}(...)"


def _find_eqn(exc: Optional[BaseException]) -> Optional[Eqn]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        e = getattr(exc, "eqn", None)
        if isinstance(e, Eqn):
            return e
        exc = exc.__cause__ or exc.__context__
    return None


class Instrument:
    """Base instrument: every hook does nothing. ``index`` is the pass's position (0-based)."""

    def before_pipeline(self, graph: Graph, ctx: PassContext, passes: Sequence[Pass]) -> None:
        pass

    def before_pass(self, index: int, pass_: Pass, graph: Graph, ctx: PassContext) -> None:
        pass

    def after_pass(self, index: int, pass_: Pass, graph: Graph, ctx: PassContext) -> None:
        """``graph`` is the pass's result."""

    def after_pipeline(self, graph: Graph, ctx: PassContext) -> None:
        pass


class Timing(Instrument):
    """Wall-clock seconds per pass; ``summary()`` is a table."""

    def __init__(self) -> None:
        self.records: list[tuple[str, float]] = []
        self._start = 0.0

    def before_pipeline(self, graph, ctx, passes) -> None:
        self.records = []

    def before_pass(self, index, pass_, graph, ctx) -> None:
        self._start = time.perf_counter()

    def after_pass(self, index, pass_, graph, ctx) -> None:
        self.records.append((pass_.name, time.perf_counter() - self._start))

    @property
    def total(self) -> float:
        return sum(s for _, s in self.records)

    def seconds(self) -> dict[str, float]:
        """Pass name -> seconds (summed when a pass runs several times)."""
        out: dict[str, float] = {}
        for name, s in self.records:
            out[name] = out.get(name, 0.0) + s
        return out

    def summary(self) -> str:
        total = self.total or 1e-12
        width = max([len("pass"), len("total")] + [len(n) for n, _ in self.records])
        lines = [f"{'#':>3}  {'pass'.ljust(width)}  {'seconds':>10}  {'%':>6}"]
        for i, (name, s) in enumerate(self.records):
            lines.append(f"{i + 1:>3}  {name.ljust(width)}  {s:>10.6f}  {100 * s / total:>5.1f}%")
        lines.append(f"{'':>3}  {'total'.ljust(width)}  {self.total:>10.6f}  {100.0:>5.1f}%")
        return "\n".join(lines)


class VerifyInstrument(Instrument):
    """Run :func:`pared.ir.verify` on the input and after every pass."""

    def before_pipeline(self, graph, ctx, passes) -> None:
        try:
            verify(graph)
        except VerifyError as e:
            raise VerifyError(f"the input graph is invalid (before any pass ran): {e.message}", e.context) from e

    def after_pass(self, index, pass_, graph, ctx) -> None:
        verify(graph)


class DumpIR(Instrument):
    """Write the graph's text to ``dir/000_input.ir`` and after each pass ``dir/NNN_<pass>.ir``."""

    def __init__(self, directory: Union[str, os.PathLike]):
        self.directory = Path(directory)
        self.files: list[Path] = []

    def _write(self, name: str, graph: Graph) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / name
        path.write_text(print_graph(graph))
        self.files.append(path)

    def before_pipeline(self, graph, ctx, passes) -> None:
        self.files = []
        self._write("000_input.ir", graph)

    def after_pass(self, index, pass_, graph, ctx) -> None:
        self._write(f"{index + 1:03d}_{pass_.name}.ir", graph)


@dataclass(frozen=True)
class NumericsRecord:
    """One pass's numerics check: the largest errors against the previous graph (``max_abs``,
    ``max_rel``) and against the pipeline's input (``total_abs``); ``skipped`` says why not run."""

    pass_name: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    total_abs: float = 0.0
    skipped: str = ""


class NumericsCheck(Instrument):
    """Run the reference interpreter on sample inputs after each pass and compare outputs.

    Each pass is compared with the graph before it (so the error names the pass that drifted),
    within ``|got - want| <= atol + rtol * |want|``. Inputs come from ``inputs`` or
    ``ctx.sample_inputs``; ``tolerances`` maps a pass name to its own ``(rtol, atol)`` budget
    (lossy passes). Graphs the interpreter cannot run (ops without a reference implementation,
    params without values) are skipped and recorded with the reason.
    """

    def __init__(
        self,
        rtol: float = 1e-5,
        atol: float = 1e-6,
        inputs: Optional[Sequence[Any]] = None,
        tolerances: Optional[Mapping[str, tuple[float, float]]] = None,
    ):
        self.rtol = rtol
        self.atol = atol
        self.inputs = inputs
        self.tolerances = dict(tolerances or {})
        self.records: list[NumericsRecord] = []
        self._inputs: Optional[Sequence[Any]] = None
        self._prev: Optional[list[np.ndarray]] = None
        self._first: Optional[list[np.ndarray]] = None

    def _run(self, graph: Graph):
        from ..backends.reference.interpreter import run_graph

        return [np.asarray(x) for x in run_graph(graph, list(self._inputs))]

    def before_pipeline(self, graph, ctx, passes) -> None:
        self.records = []
        self._inputs = self.inputs if self.inputs is not None else ctx.sample_inputs
        self._prev = self._first = None
        if self._inputs is not None and _unrunnable(graph) is None:
            self._prev = self._first = self._run(graph)

    def after_pass(self, index, pass_, graph, ctx) -> None:
        if self._inputs is None:
            self.records.append(NumericsRecord(pass_.name, skipped="no sample inputs (set ctx.sample_inputs)"))
            return
        why = _unrunnable(graph)
        if why is not None:
            self._prev = None
            self.records.append(NumericsRecord(pass_.name, skipped=why))
            return
        outs = self._run(graph)
        if self._prev is None:  # nothing to compare with yet: this graph becomes the reference
            self._prev = outs
            self._first = self._first or outs
            self.records.append(NumericsRecord(pass_.name, skipped="no runnable graph before this pass"))
            return
        rtol, atol = self.tolerances.get(pass_.name, (self.rtol, self.atol))
        if len(outs) != len(self._prev):
            msg = f"the graph now has {len(outs)} outputs, it had {len(self._prev)}"
            raise NumericsError(pass_.name, msg, -1, np.inf, np.inf)
        max_abs = max_rel = 0.0
        for k, (got, want) in enumerate(zip(outs, self._prev)):
            if got.shape != want.shape:
                raise NumericsError(
                    pass_.name, f"output {k} changed shape from {want.shape} to {got.shape}", k, np.inf, np.inf
                )
            abs_err, rel_err, bad = _errors(got, want, rtol, atol)
            max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel_err)
            if bad is not None:
                reason = (
                    f"output {k} drifted beyond rtol={rtol:g}, atol={atol:g}: max abs error {abs_err:.3g}, "
                    f"max rel error {rel_err:.3g}; at index {bad} got {got[bad]!r}, expected {want[bad]!r}"
                )
                raise NumericsError(pass_.name, reason, k, abs_err, rel_err)
        total = max((_errors(g, w, rtol, atol)[0] for g, w in zip(outs, self._first or outs)), default=0.0)
        self.records.append(NumericsRecord(pass_.name, max_abs, max_rel, total))
        self._prev = outs

    def table(self) -> str:
        lines = [f"{'pass':<20} {'max abs':>10} {'max rel':>10} {'vs input':>10}"]
        for r in self.records:
            if r.skipped:
                lines.append(f"{r.pass_name:<20} skipped: {r.skipped}")
            else:
                lines.append(f"{r.pass_name:<20} {r.max_abs:>10.3g} {r.max_rel:>10.3g} {r.total_abs:>10.3g}")
        return "\n".join(lines)


def _errors(got: np.ndarray, want: np.ndarray, rtol: float, atol: float):
    """(max abs error, max rel error, index of the worst violating element or None)."""
    g = got.astype(np.float64) if got.dtype != np.bool_ else got.astype(np.float64)
    w = want.astype(np.float64) if want.dtype != np.bool_ else want.astype(np.float64)
    if g.size == 0:
        return 0.0, 0.0, None
    both_nan = np.isnan(g) & np.isnan(w)
    same_inf = np.isinf(g) & (g == w)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(both_nan | same_inf, 0.0, np.abs(g - w))
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = np.abs(np.where(np.isfinite(w), w, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.maximum(scale, np.finfo(np.float64).tiny))
    viol = diff > atol + rtol * scale
    bad = None
    if viol.any():
        flat = int(np.argmax(np.where(viol, diff, -1.0)))
        bad = np.unravel_index(flat, g.shape) if g.ndim else ()
    return float(diff.max()), float(rel.max()), bad


def _unrunnable(graph: Graph) -> Optional[str]:
    """Why the reference interpreter cannot run ``graph``, or None."""
    for e in graph.walk():
        try:
            if get_op(e.op).impl is None:
                return f"op {e.op} has no reference implementation"
        except Exception:
            return f"op {e.op} is not registered"
    for p in graph.params:
        if p.name not in graph.weights:
            return f"param @{p.name} has no value"
    return None
