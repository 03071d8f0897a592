"""Data-parallel calibration: how one process's share of the batches becomes the global statistics.

Every process is given the SAME calibration batches; process ``rank`` of ``world`` keeps batches
``rank, rank + world, rank + 2 * world, ...`` (:func:`local_share`) and runs the graph over them
only. At each weight site the engine accumulates the statistics of its local batches (float64
sums), and the :class:`Reducer` combines them across processes before the pass's ``rewrite``
sees them, so every process solves on the statistics of ALL batches and picks the same weights:

- ``hessian``, ``cross``, ``sqnorms``, ``mean`` (summed, then divided by the global token count)
  and ``count`` are summed; ``absmax`` takes the maximum.
- A custom :class:`~pared.passes.calibration.sites.Statistic` cannot be combined generically; with
  ``world > 1`` it must define ``reduce(reducer)``, or calibration refuses before any work.
- One process may also drive several devices (a JAX mesh): ``parts`` partial sums per process,
  the local share dealt round-robin over them, each computed through ``executor(part, ex)``
  (which may place the blocks on that part's device), and ``sum``/``max`` combine every part of
  every process.

Collectives must match across processes: the engine reduces each statistic once per site, in
the same order on every process, also when a process has no local batch (its partial sums are
zeros of the site's shape). The implementations live in the compiler
(:mod:`pared.compiler.distributed`), so this package imports no framework.
"""

from __future__ import annotations

from functools import reduce as _fold
from typing import Any, Protocol, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


class Reducer(Protocol):
    """Combines per-process (and per-device) partial statistics into global ones.

    Attributes:
        name: what does the combining, for the log (``gloo``, ``nccl``, ``jax mesh``).
        rank: this process's index among the data-parallel processes.
        world: how many processes share the calibration batches.
        parts: partial sums this process keeps (its devices; 1 for one device per process).
    """

    name: str
    rank: int
    world: int
    parts: int

    def executor(self, part: int, ex: Any) -> Any:
        """The executor whose float ops compute part ``part``'s statistics (``ex`` itself, or a
        wrapper that places each block on that part's device)."""
        ...

    def sum(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """The sum of these local partial arrays (one per part) and every other process's."""
        ...

    def max(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """The elementwise maximum over the local partials and every other process's."""
        ...


class LocalReducer:
    """One process, one device: nothing to combine (the default)."""

    name = "local"
    rank = 0
    world = 1
    parts = 1

    def executor(self, part: int, ex: Any) -> Any:
        return ex

    def sum(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return _fold(np.add, parts)

    def max(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return _fold(np.maximum, parts)


def local_share(batches: Sequence[T], rank: int, world: int) -> list[T]:
    """Process ``rank``'s batches: ``rank, rank + world, ...`` (empty when ``rank >= len(batches)``)."""
    return list(batches[rank::world])


def deal(n: int, parts: int) -> list[list[int]]:
    """Local batch indices dealt round-robin over ``parts`` partial sums (part p: p, p + parts, ...)."""
    return [list(range(p, n, parts)) for p in range(parts)]


def describe(reducer: Reducer, n_batches: int) -> str:
    """One log line: how ``n_batches`` are shared out, e.g. ``2 processes (gloo), batches per rank 3/3``."""
    per_rank = [len(range(r, n_batches, reducer.world)) for r in range(reducer.world)]
    procs = f"{reducer.world} process{'es' if reducer.world > 1 else ''}"
    if reducer.parts > 1:
        per_part = [len(p) for p in deal(per_rank[reducer.rank], reducer.parts)]
        return (f"[pared] data-parallel calibration: {procs} x {reducer.parts} devices ({reducer.name}), "
                f"batches per device {'/'.join(map(str, per_part))} of {n_batches}")
    return (f"[pared] data-parallel calibration: {procs} ({reducer.name}), "
            f"batches per rank {'/'.join(map(str, per_rank))} of {n_batches}")


def is_data_parallel(reducer: Any) -> bool:
    """Whether ``reducer`` splits the batches at all (several processes or several parts)."""
    return reducer is not None and (reducer.world > 1 or reducer.parts > 1)
