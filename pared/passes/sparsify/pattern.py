"""Sparsity patterns: ``unstructured``, ``N:M`` (N kept in every M along the input axis) and
``block:RxC`` (whole R x C blocks of the (out, in) weight), parsed and checked once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ...ir import Sparse


@dataclass(frozen=True)
class Pattern:
    kind: str  # "unstructured" | "nm" | "block"
    n: Optional[int] = None
    m: Optional[int] = None
    block: Optional[tuple[int, int]] = None

    @property
    def density(self) -> Optional[float]:
        """The kept fraction the pattern itself fixes (N:M), else None."""
        return self.n / self.m if self.kind == "nm" else None

    def check_shape(self, out_dim: int, in_dim: int, where: str) -> None:
        """Raise ValueError when the pattern cannot tile a (out, in) weight."""
        if self.kind == "nm" and in_dim % self.m:
            raise ValueError(f"{where}: pattern {self} needs the input dim ({in_dim}) to be a multiple of {self.m}")
        if self.kind == "block" and (out_dim % self.block[0] or in_dim % self.block[1]):
            raise ValueError(
                f"{where}: block {self.block[0]}x{self.block[1]} does not tile the weight ({out_dim} x {in_dim})"
            )

    def encoding(self, in_axis: Optional[int], rank: int) -> Sparse:
        """The IR encoding promising this pattern on a param whose input axis is ``in_axis``."""
        if self.kind == "nm" and in_axis is not None:
            return Sparse("nm", n=self.n, m=self.m, axis=in_axis)
        if self.kind == "block" and rank == 2 and in_axis == 1:
            return Sparse("block", block=self.block)
        if self.kind == "block" and rank == 2 and in_axis == 0:
            return Sparse("block", block=self.block[::-1])
        return Sparse("bitmask")

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "block":
            return f"block:{self.block[0]}x{self.block[1]}"
        return "unstructured"


def parse_pattern(text: str) -> Pattern:
    """``unstructured`` | ``N:M`` (0 < N < M) | ``block:RxC``; ValueError says what is wrong."""
    t = text.strip().lower()
    if t in ("", "unstructured", "none"):
        return Pattern("unstructured")
    m = re.fullmatch(r"(\d+)\s*:\s*(\d+)", t)
    if m:
        n, mm = int(m.group(1)), int(m.group(2))
        if not 0 < n < mm:
            raise ValueError(f"pattern {text!r}: N:M needs 0 < N < M (N kept of every M), got N={n}, M={mm}")
        return Pattern("nm", n=n, m=mm)
    b = re.fullmatch(r"block:(\d+)x(\d+)", t)
    if b:
        r, c = int(b.group(1)), int(b.group(2))
        if r < 1 or c < 1:
            raise ValueError(f"pattern {text!r}: block sides must be positive")
        return Pattern("block", block=(r, c))
    raise ValueError(f"pattern {text!r} unknown: use 'unstructured', 'N:M' (e.g. 2:4) or 'block:RxC' (e.g. block:1x8)")
