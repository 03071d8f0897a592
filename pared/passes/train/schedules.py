"""Mask schedules: when a training mask changes and to what (numpy; both frameworks' loops call these).

Every schedule works on the (out, in) view of one weight (:class:`pared.passes.train.patterns.MatrixView`)
and is read from the attributes of its ``ste_mask`` equation (:meth:`MaskSchedule.from_attrs`):

- ``fixed``: the initial (one-shot) mask is kept.
- ``dynamic``: every ``every`` steps the mask is re-selected from |w| at the target sparsity (SR-STE
  re-selects its N:M mask from the dense weights at every step).
- ``gradual``: Zhu & Gupta (2017) cubic schedule, s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3,
  pruning the smallest |w| every ``every`` steps from ``start`` to ``end``.
- ``rigl``: RigL (Evci et al. 2020): every ``every`` steps until ``end`` drop the fraction
  f_t = alpha / 2 (1 + cos(pi (t - t0) / (t1 - t0))) of the active weights with the smallest |w| and
  grow as many inactive ones with the largest dense gradient |g|; with ``fanin`` the drop and grow
  happen inside every output row, so each neuron keeps its fan-in (SRigL, Lasby et al. 2023).
  Grown weights start at zero.

Updates are deterministic (stable sorts), so the torch and the XLA loops pick the same masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from .patterns import TrainPattern, parse_train_pattern, select_mask


@dataclass(frozen=True)
class MaskSchedule:
    pattern: TrainPattern
    sparsity: float
    schedule: str = "fixed"
    start: int = 0
    end: int = 0
    every: int = 1
    initial: float = 0.0
    alpha: float = 0.3

    @classmethod
    def from_attrs(cls, attrs: Mapping, total_steps: int = 0) -> MaskSchedule:
        """The schedule of an ``ste_mask`` equation; ``end=0`` means the last training step."""
        return cls(
            parse_train_pattern(attrs["pattern"]),
            float(attrs["sparsity"]),
            attrs["schedule"],
            int(attrs["start"]),
            int(attrs["end"]) or int(total_steps),
            max(int(attrs["every"]), 1),
            float(attrs["initial"]),
            float(attrs["alpha"]),
        )

    @property
    def final_density(self) -> float:
        fixed = self.pattern.fixed_density
        return fixed if fixed is not None else 1.0 - self.sparsity

    def density(self, step: int) -> float:
        """The density the mask has after the update at ``step`` (the cubic ramp for ``gradual``)."""
        if self.schedule != "gradual":
            return self.final_density
        span = max(self.end - self.start, 1)
        frac = min(max((step - self.start) / span, 0.0), 1.0)
        s = self.sparsity + (self.initial - self.sparsity) * (1.0 - frac) ** 3
        return 1.0 - s

    def due(self, step: int) -> bool:
        """Whether the mask is updated after training step ``step`` (0-based)."""
        if self.schedule == "fixed" or step < self.start:
            return False
        on_grid = (step - self.start) % self.every == 0
        if self.schedule == "gradual":
            return step <= self.end and (on_grid or step == self.end)
        if self.schedule == "rigl":
            return step > self.start and step < self.end and on_grid
        return step < max(self.end, self.start + 1) and on_grid  # dynamic

    def drop_fraction(self, step: int) -> float:
        span = max(self.end - self.start, 1)
        return self.alpha / 2 * (1 + math.cos(math.pi * min(max(step - self.start, 0), span) / span))

    def update(self, w2: np.ndarray, mask2: np.ndarray, grad2: Optional[np.ndarray], step: int):
        """(new 0/1 mask, grown positions or None) of the (out, in) weight after ``step``."""
        if self.schedule in ("dynamic", "gradual"):
            return select_mask(np.abs(w2), self.pattern, self.density(step)).astype(mask2.dtype), None
        if self.schedule == "rigl":
            if grad2 is None:
                raise ValueError("rigl needs the dense gradient of the weight (the mask's cotangent)")
            per_row = self.pattern.kind == "fanin"
            new, grown = rigl_update(w2, mask2 != 0, grad2, self.drop_fraction(step), per_row=per_row)
            return new.astype(mask2.dtype), grown
        return mask2, None


def rigl_update(w2: np.ndarray, active: np.ndarray, grad2: np.ndarray, fraction: float, per_row: bool):
    """RigL drop/grow on an (out, in) mask (per row with ``per_row``): (new bool mask, grown bool)."""
    shape = active.shape
    w, m, g = np.abs(w2), active, np.abs(grad2)
    if not per_row:
        w, m, g = w.reshape(1, -1), m.reshape(1, -1), g.reshape(1, -1)
    k = int(fraction * int(m[0].sum()))
    if k <= 0:
        return active.copy(), np.zeros(shape, bool)
    drop = np.argsort(np.where(m, w, np.inf), axis=1, kind="stable")[:, :k]
    after = m.copy()
    np.put_along_axis(after, drop, False, axis=1)
    grow = np.argsort(-np.where(after, -np.inf, g), axis=1, kind="stable")[:, :k]
    new = after.copy()
    np.put_along_axis(new, grow, True, axis=1)
    return new.reshape(shape), (new & ~m).reshape(shape)
