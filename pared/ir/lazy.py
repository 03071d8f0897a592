"""A weight value that is read from disk when it is used, and not kept afterwards.

``Graph.weights`` maps names to arrays; out-of-core compression (docs/out_of_core.md) puts a
:class:`LazyArray` there instead: its shape and dtype are known, its values are read by ``load()``
each time someone asks for them (``np.asarray(w)``), so a pass that walks the weights one by one
holds one weight at a time. Nothing caches the values: the caller frees them by dropping its array.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import numpy as np


class LazyArray:
    """``shape``/``dtype``/``nbytes`` without reading; the values from ``load()`` on ``np.asarray``.

    Anything else an ndarray has (``astype``, ``T``, indexing, arithmetic through numpy) reads the
    values once for that call. ``source`` says where the values live (shown in errors and reprs).
    ``rows(index)``, when given, reads only the rows ``index`` (an int array or a slice of axis 0):
    an embedding lookup then reads the looked-up rows, and a writer copies a weight a block at a time.
    """

    __slots__ = ("shape", "dtype", "_load", "source", "_rows")

    def __init__(self, shape, dtype, load: Callable[[], np.ndarray], source: str = "",
                 rows: Optional[Callable[[Any], np.ndarray]] = None):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._load = load
        self.source = source
        self._rows = rows

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def read(self) -> np.ndarray:
        """The values, freshly read (shape and dtype checked against the declaration)."""
        a = np.asarray(self._load())
        if a.dtype != self.dtype:
            a = a.astype(self.dtype)
        if a.shape != self.shape:
            raise ValueError(f"lazy weight from {self.source}: read shape {list(a.shape)}, declared {list(self.shape)}")
        return a

    def read_rows(self, index) -> np.ndarray:
        """Rows ``index`` of axis 0 (an int array or a slice), reading no more than them when the
        source can (else the whole value, then the rows)."""
        if not self.shape:
            raise ValueError(f"lazy weight from {self.source}: a scalar has no rows")
        if self._rows is None:
            return np.ascontiguousarray(self.read()[index])
        a = np.asarray(self._rows(index))
        return a if a.dtype == self.dtype else a.astype(self.dtype)

    def blocks(self, max_bytes: int = 1 << 24) -> Iterator[np.ndarray]:
        """The value as consecutive row blocks of at most ``max_bytes`` (at least one row each)."""
        if not self.shape:
            yield self.read()
            return
        row = max(1, self.nbytes // max(1, self.shape[0]))
        step = max(1, max_bytes // row)
        for start in range(0, self.shape[0], step):
            yield self.read_rows(slice(start, min(start + step, self.shape[0])))

    def __array__(self, dtype=None, copy=None):
        a = self.read()
        return a if dtype is None else a.astype(dtype, copy=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # protocol probes (copy, pickle) and our own slots: no read
            raise AttributeError(name)
        return getattr(self.read(), name)

    def __getitem__(self, key):
        return self.read()[key]

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyArray({list(self.shape)}, {self.dtype.name}, {self.source})"


def _delegate(op: str):
    def method(self, *args):
        return getattr(self.read(), op)(*args)

    method.__name__ = op
    return method


# arithmetic reads the values (comparison operators are left alone: a LazyArray stays hashable)
for _op in ("add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "matmul", "rmatmul", "pow",
            "neg", "abs"):
    setattr(LazyArray, f"__{_op}__", _delegate(f"__{_op}__"))


def is_lazy(value: Any) -> bool:
    return isinstance(value, LazyArray)
