"""Pass contexts filled by the compiler: the calibration executor comes from a backend, and the
calibration reducer from an active torch.distributed process group (data-parallel calibration)."""

from __future__ import annotations

from typing import Any

from ..backends.executors import make_executor
from ..passes.context import PassContext
from .distributed import active_reducer


def with_defaults(ctx: PassContext, calibration_backend: str = "auto") -> PassContext:
    """Fill what the compiler owns in ``ctx`` where the caller left it unset: the calibration
    executor, and the calibration reducer when a torch.distributed group of several processes is
    initialised (``torchrun``; see docs/distributed.md)."""
    if ctx.calibration_executor is None:
        opaque = ctx.opaque

        def executor(graph):
            return make_executor(graph, calibration_backend, opaque)

        ctx.calibration_executor = executor
    if ctx.calibration_reducer is None:
        ctx.calibration_reducer = active_reducer()
    return ctx


def make_context(*, calibration_backend: str = "auto", **fields: Any) -> PassContext:
    """A :class:`PassContext` of ``fields`` whose calibration runs on ``calibration_backend``
    (``auto``, ``torch`` or ``reference``)."""
    return with_defaults(PassContext(**fields), calibration_backend)
