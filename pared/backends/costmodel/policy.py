"""The kernel policy: let the cost model choose (default), or force compressed or dense kernels."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

POLICIES = ("fastest", "compressed", "dense")
_POLICY: contextvars.ContextVar[str] = contextvars.ContextVar("pared_qlinear_kernels", default="fastest")


@contextlib.contextmanager
def use_kernels(policy: str) -> Iterator[None]:
    """Within the block, lower qlinear with the measured-fastest kernel (default), always a
    compressed kernel where one applies, or always dense."""
    if policy not in POLICIES:
        raise ValueError(f"kernel policy must be one of {POLICIES}, got {policy!r}")
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def kernel_policy() -> str:
    """The policy in force here (``fastest`` outside any :func:`use_kernels` block)."""
    return _POLICY.get()
