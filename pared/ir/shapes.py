"""Shape-rule helpers shared by op definitions (symbolic-dim aware)."""

from __future__ import annotations

from typing import Sequence

from . import dims as D
from .errors import TypeInferenceError


def broadcast_shapes(*shapes: Sequence[D.Dim]) -> tuple[D.Dim, ...]:
    """Numpy broadcasting over possibly-symbolic dims (a symbol only broadcasts with 1 or itself)."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[D.Dim] = []
    for i in range(rank):
        d: D.Dim = 1
        for s in shapes:
            j = i - (rank - len(s))
            if j < 0:
                continue
            x = s[j]
            if x == 1:
                continue
            if d == 1:
                d = x
            elif d != x:
                raise TypeInferenceError(
                    f"shapes {' and '.join(format_shape(s) for s in shapes)} do not broadcast (dim {i}: {d} vs {x})"
                )
        out.append(d)
    return tuple(out)


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        raise TypeInferenceError(f"{what} {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def norm_axes(axes: Sequence[int], rank: int) -> tuple[int, ...]:
    out = tuple(sorted(norm_axis(a, rank) for a in axes))
    if len(set(out)) != len(out):
        raise TypeInferenceError(f"repeated axes {tuple(axes)}")
    return out


def format_shape(shape: Sequence[D.Dim]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def same_numel(a: Sequence[D.Dim], b: Sequence[D.Dim]) -> bool:
    return D.prod(a) == D.prod(b)
