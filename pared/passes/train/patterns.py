"""Mask patterns for training: ``unstructured``, ``N:M``, ``block:RxC`` and ``fanin`` (constant fan-in).

Masks are selected on the (out, in) view of a weight (:class:`MatrixView`); ``fanin`` keeps the
same number of inputs in every output row (SRigL's constraint), the others are those of the
``sparsify`` pass (:mod:`pared.passes.sparsify.pattern`) and use its selection helpers, so a
trained mask and a one-shot one obey the same rule. :func:`holds` is the check the fine-tuner
runs after every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..sparsify.magnitude import keep_blocks, keep_nm, keep_top, keep_top_rows
from ..sparsify.pattern import Pattern, parse_pattern


@dataclass(frozen=True)
class TrainPattern:
    """A sparsify :class:`Pattern` or ``fanin`` (every output row keeps the same count)."""

    base: Optional[Pattern]  # None: fanin

    @property
    def kind(self) -> str:
        return "fanin" if self.base is None else self.base.kind

    @property
    def fixed_density(self) -> Optional[float]:
        return None if self.base is None else self.base.density

    def check_shape(self, out_dim: int, in_dim: int, where: str) -> None:
        if self.base is not None:
            self.base.check_shape(out_dim, in_dim, where)

    def __str__(self) -> str:
        return "fanin" if self.base is None else str(self.base)


def parse_train_pattern(text: str) -> TrainPattern:
    """``unstructured`` | ``N:M`` | ``block:RxC`` | ``fanin``; ValueError says what is wrong."""
    if text.strip().lower() in ("fanin", "fan-in", "constant-fanin"):
        return TrainPattern(None)
    try:
        return TrainPattern(parse_pattern(text))
    except ValueError as e:
        raise ValueError(f"{e}; or 'fanin' (constant fan-in per output row)") from None


def kept_count(pattern: TrainPattern, shape2d: tuple[int, int], density: float) -> int:
    """How many entries a mask of ``pattern`` at ``density`` keeps on an (out, in) matrix."""
    rows, cols = shape2d
    if pattern.kind == "nm":
        return rows * cols // pattern.base.m * pattern.base.n
    if pattern.kind == "fanin":
        return rows * int(round(cols * density))
    if pattern.kind == "block":
        r, c = pattern.base.block
        return int(round((rows // r) * (cols // c) * density)) * r * c
    return int(round(rows * cols * density))


def select_mask(scores: np.ndarray, pattern: TrainPattern, density: float) -> np.ndarray:
    """Boolean keep-mask of an (out, in) score matrix: the highest scores the pattern allows."""
    if pattern.kind == "nm":
        return keep_nm(scores, pattern.base.n, pattern.base.m)
    if pattern.kind == "block":
        return keep_blocks(scores, pattern.base.block, density)
    if pattern.kind == "fanin":
        return keep_top_rows(scores, int(round(scores.shape[1] * density)))
    return keep_top(scores, int(round(scores.size * density)))


def holds(mask: np.ndarray, pattern: TrainPattern, density: float) -> Optional[str]:
    """None when the (out, in) 0/1 ``mask`` obeys ``pattern`` at ``density``, else what is wrong."""
    m = np.asarray(mask) != 0
    rows, cols = m.shape
    if pattern.kind == "nm":
        n, mm = pattern.base.n, pattern.base.m
        counts = m.reshape(rows, cols // mm, mm).sum(-1)
        if (counts != n).any():
            return f"{int((counts != n).sum())} group(s) of {mm} do not keep exactly {n}"
        return None
    if pattern.kind == "fanin":
        per_row = m.sum(1)
        if (per_row != per_row[0]).any():
            return f"fan-in differs between rows ({int(per_row.min())}..{int(per_row.max())})"
    if pattern.kind == "block":
        r, c = pattern.base.block
        tiles = m.reshape(rows // r, r, cols // c, c).sum(axis=(1, 3))
        if ((tiles != 0) & (tiles != r * c)).any():
            return f"some {r}x{c} block is partly kept"
    want = kept_count(pattern, (rows, cols), density)
    if int(m.sum()) != want:
        return f"keeps {int(m.sum())} entries, the pattern at density {density:g} keeps {want}"
    return None


@dataclass(frozen=True)
class MatrixView:
    """A param's (out, in) view: ``perm`` orders its axes (out..., in...), the first ``outs`` are out."""

    perm: tuple[int, ...]
    outs: int

    def to2d(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        perm = self.perm or tuple(range(a.ndim))
        t = np.transpose(a, perm)
        rows = int(np.prod(t.shape[: self.outs], dtype=np.int64))
        return t.reshape(rows, -1)

    def from2d(self, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        perm = self.perm or tuple(range(len(shape)))
        return np.transpose(np.asarray(m).reshape([shape[a] for a in perm]), np.argsort(perm))

    def shape2d(self, shape: tuple[int, ...]) -> tuple[int, int]:
        perm = self.perm or tuple(range(len(shape)))
        dims = [int(shape[a]) for a in perm]
        return int(np.prod(dims[: self.outs], dtype=np.int64)), int(np.prod(dims[self.outs :], dtype=np.int64))
