"""Random masks with uniform or ERK (Erdos-Renyi-Kernel, Evci et al. 2020) layer-wise densities."""

from __future__ import annotations

from typing import Mapping

import numpy as np


def erk_densities(shapes: Mapping[str, tuple[int, ...]], sparsity: float) -> dict[str, float]:
    """Per-layer densities proportional to sum(dims)/prod(dims), scaled so the kept total equals
    ``(1 - sparsity)`` of all weights; layers that would exceed density 1 are kept dense and the
    rest rescaled (the RigL procedure)."""
    numel = {k: float(np.prod(s)) for k, s in shapes.items()}
    raw = {k: float(np.sum(s)) / numel[k] for k, s in shapes.items()}
    total_keep = (1.0 - sparsity) * sum(numel.values())
    dense: set[str] = set()
    while True:
        budget = total_keep - sum(numel[k] for k in dense)
        free = [k for k in shapes if k not in dense]
        denom = sum(raw[k] * numel[k] for k in free)
        eps = budget / denom if denom > 0 else 0.0
        over = [k for k in free if eps * raw[k] > 1.0]
        if not over:
            break
        dense |= set(over)
    return {k: 1.0 if k in dense else eps * raw[k] for k in shapes}


def random_scores(shape: tuple[int, ...], seed: int, name: str) -> np.ndarray:
    """Reproducible uniform scores for one layer (seeded by the pass seed and the layer name)."""
    h = np.frombuffer(name.encode(), np.uint8).astype(np.uint64).sum() if name else 0
    return np.random.default_rng([seed, int(h), len(name)]).random(shape)
