"""Pass contexts filled by the compiler: the calibration executor comes from a backend."""

from __future__ import annotations

from typing import Any

from ..backends.executors import make_executor
from ..passes.context import PassContext


def with_defaults(ctx: PassContext, calibration_backend: str = "auto") -> PassContext:
    """Fill what the compiler owns in ``ctx`` (the calibration executor) where the caller left it unset."""
    if ctx.calibration_executor is None:
        opaque = ctx.opaque

        def executor(graph):
            return make_executor(graph, calibration_backend, opaque)

        ctx.calibration_executor = executor
    return ctx


def make_context(*, calibration_backend: str = "auto", **fields: Any) -> PassContext:
    """A :class:`PassContext` of ``fields`` whose calibration runs on ``calibration_backend``
    (``auto``, ``torch`` or ``reference``)."""
    return with_defaults(PassContext(**fields), calibration_backend)
