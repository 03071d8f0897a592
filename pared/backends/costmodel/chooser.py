"""The one cost-model interface: ``Chooser.choose(layer, candidates) -> KernelChoice``.

A chooser gives each candidate kernel a time at each row count of the layer (measured, or
predicted from a roofline) and :func:`decide` applies the one rule every chooser shares: the
candidates come in preference order with the baseline last, and the first candidate no slower
than the baseline at every row count wins; otherwise the baseline runs and the decision says
so. A user never gets a compressed kernel that was judged slower than what it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Optional, Protocol, Sequence

from .choice import KernelChoice


@dataclass(frozen=True)
class Gemm:
    """The layer a kernel is chosen for: ``y[M, N] = x[M, K] @ w[N, K]^T`` at each M in ``rows``.

    ``dtype`` is the activation dtype name (``f32``, ``bf16``, ``f16``): the roofline reads its
    element size.
    """

    layer: str
    op: str
    n: int
    k: int
    rows: tuple[int, ...]
    dtype: str = "f32"


@dataclass(frozen=True)
class Candidate:
    """One kernel a layer could run on.

    Attributes:
        kernel: its name (``int4pack``, ``dense``, a roofline format such as ``int4``, ``sparse24``).
        fn: ``fn(x[M, K]) -> y`` for choosers that time it (the measured chooser); for the
            baseline, None means dense fp32 ``F.linear`` of a random weight of the layer's shape.
        key: equal keys share one timing within a lowering (the weight's shape and layout).
        group_size, has_zero: weight-format details the roofline counts bytes with.
        weight_bytes: bytes the kernel reads per call (packed weights, scales); the measured
            chooser's floor when weights stream from memory (None: dense fp32, 4 bytes a weight).
    """

    kernel: str
    fn: Optional[Callable] = None
    key: Hashable = None
    group_size: Optional[int] = None
    has_zero: bool = False
    weight_bytes: Optional[int] = None


class Chooser(Protocol):
    """Picks a layer's kernel among candidates (preference order, baseline last)."""

    def choose(self, layer: Gemm, candidates: Sequence[Candidate]) -> KernelChoice: ...


def decide(layer: Gemm, candidates: Sequence[Candidate], seconds: Sequence[Sequence[float]], chooser: str,
           slower_than: str = "") -> KernelChoice:
    """The shared rule: the first candidate no slower than the baseline (the last) at every M.

    ``seconds[i][j]`` is candidate i's time at ``layer.rows[j]``. ``slower_than`` names the
    baseline in the reason of a refusal (default: its kernel name).
    """
    base = seconds[-1]
    chosen, reason = candidates[-1].kernel, ""
    for c, s in zip(candidates[:-1], seconds[:-1]):
        if all(t <= b for t, b in zip(s, base)):
            chosen = c.kernel
            break
    else:
        if len(candidates) > 1:
            verb = "measured" if chooser == "measured" else "predicted"
            names = "/".join(c.kernel for c in candidates[:-1])
            reason = f"{names} {verb} slower than {slower_than or candidates[-1].kernel}"
    return KernelChoice(layer.layer, layer.op, (tuple(layer.rows), layer.n, layer.k),
                        tuple((c.kernel, tuple(s)) for c, s in zip(candidates, seconds)), chosen, chooser, reason)


def by_policy(layer: Gemm, candidates: Sequence[Candidate], chosen: str, reason: str) -> KernelChoice:
    """A decision made without timing anything (``use_kernels``, or no compressed kernel applies)."""
    return KernelChoice(layer.layer, layer.op, (tuple(layer.rows), layer.n, layer.k),
                        tuple((c.kernel, ()) for c in candidates), chosen, "policy", reason)
