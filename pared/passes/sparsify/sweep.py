"""Essential sparsity (Jaiswal et al. 2023): the one-shot magnitude quality-vs-sparsity curve.

Pruning a pre-trained model by magnitude, in one shot and without retraining, costs almost
nothing up to some sparsity and then quality falls off sharply. :func:`essential_sparsity`
measures that curve on the caller's metric and reports where it bends::

    result = essential_sparsity(graph, eval_fn=lambda g: accuracy(g), sparsities=np.arange(0.1, 1.0, 0.1))
    print(result.table())
    result.essential   # the highest sparsity within `tolerance` of dense quality
    result.knee        # where the curve bends the most (Kneedle: farthest from the chord)

Each point is ``sparsify{method=magnitude}`` applied to the dense graph (never cumulatively).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ...ir import Graph
from ..context import PassContext
from .sparsify import Sparsify


@dataclass(frozen=True)
class SweepResult:
    """The curve: ``sparsities[i]`` gave ``quality[i]``; ``dense`` is quality at sparsity 0.

    Attributes:
        essential: the largest sparsity whose quality stays within ``tolerance`` (relative) of
            dense, with every smaller sparsity also within it (None when even the first is not).
        knee: the sparsity of maximum bend (Kneedle on the normalized curve).
    """

    sparsities: tuple[float, ...]
    quality: tuple[float, ...]
    dense: float
    higher_is_better: bool
    tolerance: float
    essential: Optional[float]
    knee: Optional[float]

    def table(self) -> str:
        rows = ["sparsity  quality   vs dense"]
        rows.append(f"{0.0:8.2f}  {self.dense:8.4g}  {1.0:8.3f}")
        for s, q in zip(self.sparsities, self.quality):
            rel = q / self.dense if self.dense else float("nan")
            mark = "  <- essential" if s == self.essential else ("  <- knee" if s == self.knee else "")
            rows.append(f"{s:8.2f}  {q:8.4g}  {rel:8.3f}{mark}")
        return "\n".join(rows)


def essential_sparsity(graph: Graph, eval_fn: Callable[[Graph], float],
                       sparsities: Sequence[float] = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2)), *,
                       higher_is_better: bool = True, tolerance: float = 0.01, granularity: str = "layer",
                       targets: Sequence[str] = (), ignore: Sequence[str] = (),
                       ctx: Optional[PassContext] = None) -> SweepResult:
    """Prune ``graph`` by magnitude at each sparsity, score it with ``eval_fn`` (a float; set
    ``higher_is_better=False`` for a loss or perplexity) and find the essential sparsity and knee.
    """
    ss = sorted(float(s) for s in sparsities)
    if not ss or any(not 0.0 < s < 1.0 for s in ss):
        raise ValueError(f"sparsities must be non-empty and inside (0, 1), got {list(sparsities)}")
    if tolerance < 0:
        raise ValueError(f"tolerance={tolerance} must be >= 0")
    dense = float(eval_fn(graph))
    quality = []
    for s in ss:
        p = Sparsify(
            method="magnitude", sparsity=s, granularity=granularity, targets=tuple(targets), ignore=tuple(ignore)
        )
        quality.append(float(eval_fn(p(graph, ctx if ctx is not None else PassContext()))))
    sign = 1.0 if higher_is_better else -1.0
    essential = None
    for s, q in zip(ss, quality):
        if sign * (q - dense) < -tolerance * abs(dense):
            break
        essential = s
    return SweepResult(
        tuple(ss), tuple(quality), dense, higher_is_better, tolerance, essential, knee(ss, quality, dense, sign)
    )


def knee(sparsities: Sequence[float], quality: Sequence[float], dense: float, sign: float = 1.0) -> Optional[float]:
    """Kneedle (Satopaa et al. 2011) for a decreasing curve: normalize the loss of quality and the
    sparsity to [0, 1] (dense at 0) and return the point farthest below the chord from 0 to the end."""
    x = np.array([0.0, *sparsities])
    loss = sign * (dense - np.array([dense, *quality]))  # grows with sparsity
    if len(x) < 3 or np.ptp(loss) == 0:
        return None
    xn = (x - x[0]) / (x[-1] - x[0])
    yn = (loss - loss.min()) / np.ptp(loss)
    d = xn - yn  # how far the curve lies below the chord y = x
    i = int(np.argmax(d[1:-1])) + 1
    return float(x[i]) if d[i] > 0 else None
