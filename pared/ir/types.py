"""Tensor types and compressed-tensor encodings."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Union

from . import dims as D
from .dtypes import DType
from .dtypes import get as get_dtype


@dataclass(frozen=True)
class Quant:
    """Integer/fp8 quantized values: ``real = (q - zero) * scale``.

    ``axis`` is the channel axis of per-channel scales (None: per-tensor); ``group_size`` splits
    the *other* axis named by ``group_axis`` into groups with their own scales (None: no groups).
    """

    bits: int
    signed: bool = True
    scheme: str = "sym"  # "sym" | "asym" | "float"
    axis: Optional[int] = None
    group_size: Optional[int] = None
    group_axis: Optional[int] = None

    kind = "quant"


@dataclass(frozen=True)
class Sparse:
    """Sparse values. ``nm``: at most ``n`` nonzeros in every ``m`` consecutive elements along
    ``axis``; ``block``: zero blocks of shape ``block``; ``bitmask``/``csr``: unstructured."""

    format: str  # "nm" | "bitmask" | "block" | "csr"
    n: Optional[int] = None
    m: Optional[int] = None
    block: Optional[tuple[int, ...]] = None
    axis: int = -1

    kind = "sparse"


@dataclass(frozen=True)
class SparseQuant:
    """Sparse first, then the kept values quantized (e.g. 2:4 + int4, GQSA W4S50%)."""

    sparse: Sparse
    quant: Quant

    kind = "sparse_quant"


Encoding = Union[Quant, Sparse, SparseQuant]
SPARSE_FORMATS = ("nm", "bitmask", "block", "csr")
QUANT_SCHEMES = ("sym", "asym", "float")


@dataclass(frozen=True)
class TensorType:
    shape: tuple[D.Dim, ...]
    dtype: DType
    encoding: Optional[Encoding] = field(default=None)

    def __post_init__(self):
        shape = tuple(d if isinstance(d, D.Sym) else _as_int(d) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", get_dtype(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> D.Dim:
        return D.prod(self.shape)

    @property
    def quant(self) -> Optional[Quant]:
        """The quantization part of the encoding (also inside a SparseQuant), or None."""
        e = self.encoding
        return e.quant if isinstance(e, SparseQuant) else e if isinstance(e, Quant) else None

    @property
    def sparse(self) -> Optional[Sparse]:
        """The sparsity part of the encoding (also inside a SparseQuant), or None."""
        e = self.encoding
        return e.sparse if isinstance(e, SparseQuant) else e if isinstance(e, Sparse) else None

    @property
    def symbols(self) -> frozenset[str]:
        out: set[str] = set()
        for d in self.shape:
            if isinstance(d, D.Sym):
                out |= d.symbols
        return frozenset(out)

    def with_(self, **kw) -> TensorType:
        return replace(self, **kw)

    def concrete_shape(self, env: dict[str, int]) -> tuple[int, ...]:
        return tuple(D.evaluate(d, env) for d in self.shape)

    def __str__(self) -> str:
        from .printer import format_type

        return format_type(self)


def _as_int(d) -> int:
    if isinstance(d, bool) or not isinstance(d, int):
        try:
            import numpy as np

            if isinstance(d, np.integer):
                return int(d)
        except ImportError:  # pragma: no cover
            pass
        if isinstance(d, str):
            raise TypeError(f"dimension {d!r} is a string: use pared.ir.sym({d!r}) for a symbol")
        raise TypeError(f"dimension {d!r} must be an int or a symbolic dim")
    if d < 0:
        raise ValueError(f"negative dimension {d}")
    return d


def tensor(shape, dtype="f32", encoding: Optional[Encoding] = None) -> TensorType:
    """Convenience constructor: strings in ``shape`` are parsed as symbolic dims."""
    return TensorType(
        tuple(D.parse_dim(d) if isinstance(d, str) else d for d in shape), get_dtype(dtype), encoding
    )


def scalar(dtype="f32") -> TensorType:
    return TensorType((), get_dtype(dtype))
