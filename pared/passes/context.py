"""What a pass receives besides the graph: :class:`PassContext` and its :class:`Report`.

The context is created per pipeline run (no global state): it carries calibration data, the
backend and device the graph is lowered for, sample inputs for numerics checks, the calibration
executor the compiler picked, and a report to which passes add one row per layer they touch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence


@dataclass(frozen=True)
class ReportRow:
    """One line of a report: which pass, which layer/param, and free-form fields."""

    pass_name: str
    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"pass": self.pass_name, "name": self.name, **self.fields}


class Report:
    """Per-layer rows added by passes (method, sparsity, bits, error, bytes, ...)."""

    def __init__(self) -> None:
        self._rows: list[ReportRow] = []

    def add(self, pass_name: str, name: str, **fields: Any) -> ReportRow:
        """Record a row, e.g. ``report.add("sparsify", "fc1.weight", method="wanda", sparsity=0.5)``."""
        row = ReportRow(pass_name, name, dict(fields))
        self._rows.append(row)
        return row

    @property
    def rows(self) -> tuple[ReportRow, ...]:
        return tuple(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[ReportRow]:
        return iter(self.rows)

    def for_pass(self, pass_name: str) -> list[ReportRow]:
        return [r for r in self._rows if r.pass_name == pass_name]

    def to_dicts(self) -> list[dict[str, Any]]:
        """Rows as plain dicts with keys ``pass``, ``name`` and each field."""
        return [r.to_dict() for r in self._rows]

    def columns(self) -> list[str]:
        cols = ["pass", "name"]
        for r in self._rows:
            cols += [k for k in r.fields if k not in cols]
        return cols

    def table(self) -> str:
        """An aligned text table of every row (blank where a row lacks a column)."""
        if not self._rows:
            return "(empty report)"
        cols = self.columns()
        cells = [[_fmt(d.get(c, "")) for c in cols] for d in self.to_dicts()]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in cells]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Report: {len(self._rows)} rows>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@dataclass
class PassContext:
    """Everything a pass may read besides the graph.

    The compiler fills the fields a user does not set (:func:`pared.compiler.context.make_context`).

    Attributes:
        calibration: calibration data (batches of model inputs), any form the passes accept.
        backend: the backend the graph will be lowered to ("reference", "torch", "xla", "triton").
        device: the device string ("cpu", "cuda", "tpu").
        report: per-layer rows the passes add.
        sample_inputs: graph inputs the numerics instrument runs through the reference interpreter.
        calibration_executor: ``graph -> executor`` for the calibration engine (an object with the
            :class:`~pared.passes.calibration.engine.Executor` methods); passes that calibrate
            fail with a clear error when it is missing.
        calibration_reducer: data-parallel calibration (a
            :class:`~pared.passes.calibration.reduce.Reducer`): each process calibrates on its share
            of the batches and the statistics are combined across processes; None: one process.
            The compiler fills it when a torch.distributed process group is active.
        opaque: callables of the graph's ``opaque`` equations, keyed by their ``target`` attribute
            (the torch frontend's table), so calibration can run them.
        progress: show progress bars on long work (calibration).
        max_memory: out-of-core calibration's budget in bytes: a streamed memory plan whose peak
            exceeds it stops the run before any work (docs/out_of_core.md); None: no budget.
        staging_dir: a directory where calibration writes each rewritten weight, the graph keeping
            a lazy handle on it (out-of-core); None keeps rewritten weights in memory.
    """

    calibration: Any = None
    backend: Optional[str] = None
    device: Optional[str] = None
    report: Report = field(default_factory=Report)
    sample_inputs: Optional[Sequence[Any]] = None
    calibration_executor: Optional[Callable[[Any], Any]] = None
    calibration_reducer: Any = None
    opaque: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = True
    max_memory: Optional[int] = None
    staging_dir: Optional[str] = None
