"""Shape-rule helpers shared by op definitions (symbolic-dim aware)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from . import dims as D
from .errors import BindError, TypeInferenceError


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


def bind_symbols(types, arrays, env: Optional[dict[str, int]] = None, what: str = "input") -> dict[str, int]:
    """Solve symbol values from actual shapes (a bare symbol dim binds; any other dim must match)."""
    env = dict(env or {})
    for i, (t, a) in enumerate(zip(types, arrays)):
        shape = np.shape(a)
        if len(shape) != t.rank:
            raise BindError(f"{what} {i}: expected rank {t.rank} ({t}), got shape {shape}")
        # bind plain symbols first so products like B*S can then be checked
        for d, n in zip(t.shape, shape):
            if isinstance(d, D.Sym) and len(d.terms) == 1 and d.terms[0][1] == 1 and len(d.terms[0][0]) == 1:
                s = d.terms[0][0][0]
                if env.setdefault(s, n) != n:
                    raise BindError(
                        f"{what} {i}: symbol {s} is {env[s]} elsewhere but {n} here (shape {shape}, type {t})"
                    )
        for d, n in zip(t.shape, shape):
            try:
                expect = D.evaluate(d, env)
            except KeyError:
                continue  # symbol only inside an expression; cannot solve it here
            if expect != n:
                raise BindError(f"{what} {i}: dim {d} should be {expect}, got shape {shape} (type {t})")
    return env


def resolve_dims(v: Any, env: Mapping[str, int]) -> Any:
    """An attribute value with its symbolic dims evaluated in ``env`` (tuples elementwise)."""
    if isinstance(v, D.Sym):
        return D.evaluate(v, env)
    if isinstance(v, tuple):
        return tuple(resolve_dims(x, env) for x in v)
    return v
