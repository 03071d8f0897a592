"""The kernel policy: let the cost model choose (default), force compressed or dense kernels, or
choose among the kernels that read dense layouts only (``dense-layout``: no sparse kernels)."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional

POLICIES = ("fastest", "compressed", "dense", "dense-layout")
_POLICY: contextvars.ContextVar[str] = contextvars.ContextVar("pared_qlinear_kernels", default="fastest")
_MEASURED: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("pared_measurements", default=None)


@contextlib.contextmanager
def use_kernels(policy: str, measurements: Optional[dict] = None) -> Iterator[None]:
    """Within the block, lower qlinear with the measured-fastest kernel (default), always a
    compressed kernel where one applies, always dense, or the fastest kernel that reads a dense
    layout (sparse weights run on their dense-quantized or dense kernels).

    ``measurements``: kernel timings of an earlier lowering of the same graph
    (``Decisions.measurements``) for the lowering to reuse instead of timing again.
    """
    if policy not in POLICIES:
        raise ValueError(f"kernel policy must be one of {POLICIES}, got {policy!r}")
    token = _POLICY.set(policy)
    mtoken = _MEASURED.set(measurements)
    try:
        yield
    finally:
        _MEASURED.reset(mtoken)
        _POLICY.reset(token)


def kernel_policy() -> str:
    """The policy in force here (``fastest`` outside any :func:`use_kernels` block)."""
    return _POLICY.get()


def reused_measurements() -> dict:
    """Timings a lowering starts from: those handed to :func:`use_kernels`, else a new dict."""
    m = _MEASURED.get()
    return m if m is not None else {}
