"""Out-of-core calibration: weights read when their layer is reached, rewrites staged to disk.

The engine (:mod:`.engine`) holds a weight only from its first use to its last: the executor
releases it after that equation (``Executor.release``). A rewritten weight is written to the
staging directory as ``.npy`` and the graph keeps a :class:`~pared.ir.lazy.LazyArray` of it, so
the artifact writer reads it back one tensor at a time. The streamed memory plan is the contract:
its peak (live activations + the weights live at that equation + the largest statistic and the
solver's factorizations of it + the rewrite's working copies) is printed before any work, and a
``max_memory`` budget it cannot meet stops the run with the numbers (docs/out_of_core.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ...ir.core import Graph, Param, Var
from ...ir.lazy import LazyArray

# a rewrite holds the weight it was given, its float32 working copy and the value it returns
REWRITE_COPIES = 3
# and a Hessian solver (SparseGPT, GPTQ) two factorizations of the statistic besides the statistic
STATISTIC_COPIES = 3


class Staging:
    """Rewritten weights as ``<dir>/<name>.npy``; ``stage`` returns the LazyArray the graph keeps."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def stage(self, name: str, value: Any) -> LazyArray:
        a = np.ascontiguousarray(np.asarray(value))
        path = self.dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".npy")
        np.save(path, a, allow_pickle=False)
        return LazyArray(a.shape, a.dtype, lambda: np.load(path, allow_pickle=False), str(path),
                         rows=lambda index: np.array(np.load(path, mmap_mode="r", allow_pickle=False)[index]))


def weight_nbytes(value: Any, t=None) -> int:
    """A weight's size without reading it (its ``nbytes``, else its declared type's)."""
    n = getattr(value, "nbytes", None)
    if n is not None:
        return int(n)
    if t is not None:
        return int(np.prod(t.shape, dtype=np.int64)) * max(1, int(np.ceil(t.dtype.bits / 8)))
    return int(np.asarray(value).nbytes)


def param_last_uses(graph: Graph, order: Sequence[int]) -> tuple[dict[str, int], dict[str, int], set[str]]:
    """(first use, last use) equation index of each param read directly by the equations in
    ``order``, and the params read inside region bodies (never released: the region reads them)."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    pinned: set[str] = set()
    for i in order:
        e = graph.eqns[i]
        for a in e.inputs:
            if isinstance(a, Param):
                first.setdefault(a.name, i)
                last[a.name] = i
        for r in e.regions:
            for sub in r.walk():
                pinned |= {a.name for a in sub.inputs if isinstance(a, Param)}
    return first, last, pinned


def streamed_peak(graph: Graph, order: Sequence[int], act_live: dict[int, int], stat: int,
                  largest_site: int) -> tuple[int, int]:
    """(peak bytes of the streamed run, the weights live at that peak): for each equation the
    live activations plus the weights between their first and last use, plus
    :data:`STATISTIC_COPIES` times the largest statistic and :data:`REWRITE_COPIES` copies of the
    largest rewritten weight."""
    first, last, pinned = param_last_uses(graph, order)
    sizes = {p.name: weight_nbytes(graph.weights.get(p.name), p.type) for p in graph.params}
    for name in _looked_up_only(graph, order):  # only its looked-up rows are read: activations
        sizes[name] = 0
    pinned_bytes = sum(sizes.get(n, 0) for n in pinned)
    live_w, peak, peak_w = pinned_bytes, 0, pinned_bytes
    for i in order:
        live_w += sum(sizes.get(n, 0) for n, f in first.items() if f == i)
        total = act_live.get(i, 0) + live_w
        if total > peak:
            peak, peak_w = total, live_w
        live_w -= sum(sizes.get(n, 0) for n, j in last.items() if j == i)
    return peak + STATISTIC_COPIES * stat + REWRITE_COPIES * largest_site, peak_w


def _looked_up_only(graph: Graph, order: Sequence[int]) -> set[str]:
    """Lazy params that the equations in ``order`` read only through row lookups."""
    lookups, other = set(), set()
    for i in order:
        e = graph.eqns[i]
        table = lazy_row_lookup(e, graph.weights)
        for k, a in enumerate(e.inputs):
            if isinstance(a, Param):
                (lookups if table is not None and k == 0 else other).add(a.name)
    return lookups - other


def lazy_row_lookup(eqn, weights) -> Optional[LazyArray]:
    """The lazy table of an embedding lookup (``take`` on axis 0 of a lazy Param), else None: the
    engine then reads only the looked-up rows, not the table (:func:`take_rows`)."""
    if eqn.op != "take" or not isinstance(eqn.inputs[0], Param) or not isinstance(eqn.inputs[1], Var):
        return None
    table = weights.get(eqn.inputs[0].name)
    if not isinstance(table, LazyArray) or eqn.attrs["axis"] % max(1, len(table.shape)) != 0:
        return None
    return table


def take_rows(table: LazyArray, ids: np.ndarray, where: str) -> np.ndarray:
    """``np.take(table, ids, axis=0)`` reading each distinct row of ``table`` once."""
    ids = np.asarray(ids)
    n = table.shape[0]
    flat = ids.reshape(-1).astype(np.int64)
    bad = (flat < -n) | (flat >= n)
    if bad.any():
        raise IndexError(f"{where}: index {int(flat[bad][0])} is out of range for a table of {n} rows")
    flat = np.where(flat < 0, flat + n, flat)
    unique, inverse = np.unique(flat, return_inverse=True)
    rows = table.read_rows(unique)
    return rows[inverse.reshape(-1)].reshape(ids.shape + table.shape[1:])


def current_rss() -> int:
    """This process's resident memory now (bytes; 0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def budget_error(name: str, peak: int, baseline: int, max_memory: int, detail: str) -> Optional[str]:
    """The refusal message when ``baseline + peak`` exceeds ``max_memory`` (None when it fits)."""
    if baseline + peak <= max_memory:
        return None
    return (f"{name}: calibration needs about {_gib(baseline + peak)} (process now {_gib(baseline)} + streamed "
            f"plan {_gib(peak)}: {detail}), over the memory budget {_gib(max_memory)}; raise --max-memory / "
            "max_memory, or use fewer or shorter calibration batches (fewer live activations)")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
