"""What op rules share: the dtype groups ops declare, and checks that raise TypeInferenceError
naming the op and the shapes."""

from __future__ import annotations

from typing import Sequence

from .. import dims as D
from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..shapes import broadcast_shapes
from ..types import TensorType

FLOATS = (DT.f32, DT.f64, DT.f16, DT.bf16)
NUMERIC = FLOATS + (DT.i32, DT.i64, DT.i8)  # what arithmetic is tested on
ALL_DTYPES = tuple(DT.ALL.values())


def broadcast(op: str, ts: Sequence[TensorType]) -> tuple:
    """The numpy broadcast of the inputs' shapes."""
    try:
        return broadcast_shapes(*(t.shape for t in ts))
    except TypeInferenceError as e:
        raise TypeInferenceError(f"{op}: {e}") from None


def same_dtype(op: str, ts: Sequence[TensorType], kinds: Sequence[str] = ()):
    """The inputs' common dtype; ``kinds`` restricts its kind ("float", "int", "uint", "bool")."""
    d = ts[0].dtype
    if any(t.dtype != d for t in ts):
        raise TypeInferenceError(f"{op}: dtype mismatch {' vs '.join(str(t) for t in ts)}; insert a cast")
    if kinds and d.kind not in kinds:
        raise TypeInferenceError(f"{op}: needs {'/'.join(kinds)} inputs, got {d}")
    return d


def check_axis(op: str, a: int, t: TensorType, what: str = "axis") -> int:
    """``a`` normalised to [0, rank)."""
    if not -t.rank <= a < t.rank:
        raise TypeInferenceError(f"{op}: {what} {a} out of range for {t} (rank {t.rank})")
    return a % t.rank


def check_axes(op: str, a: Sequence[int], t: TensorType) -> tuple[int, ...]:
    """Sorted normalised ``a``; repeats are an error."""
    out = tuple(sorted(check_axis(op, x, t, "axes entry") for x in a))
    if len(set(out)) != len(out):
        raise TypeInferenceError(f"{op}: repeated axes {tuple(a)} for {t}")
    return out


def window_dims(op: str, x: TensorType, window, strides, padding, dilation=None) -> tuple:
    """Output spatial dims of a sliding window over the dims after (N, C) of ``x``.

    out = floor((n + lo + hi - ((k - 1) * d + 1)) / s) + 1; a symbolic extent must divide by s.
    """
    k = len(window)
    dilation = dilation or (1,) * k
    where = f"{op}: input {x}, window {tuple(window)}, strides {tuple(strides)}, padding {tuple(padding)}"
    if k == 0 or x.rank != k + 2:
        raise TypeInferenceError(f"{where}: input must be (N, C, spatial...) with {k} spatial dims")
    if not len(strides) == len(padding) == len(dilation) == k or any(len(p) != 2 for p in padding):
        raise TypeInferenceError(f"{where}: need one stride, dilation and (lo, hi) pad per spatial dim")
    if any(isinstance(v, int) and v < 1 for v in (*window, *strides, *dilation)) or any(
        p < 0 for pair in padding for p in pair
    ):
        raise TypeInferenceError(f"{where}: window, strides and dilation must be >= 1, padding >= 0")
    out = []
    for n, w, s, (lo, hi), d in zip(x.shape[2:], window, strides, padding, dilation):
        span = D.sub(D.add(n, lo + hi), D.add(D.mul(d, D.sub(w, 1)), 1))
        if isinstance(span, int):
            if span < 0:
                raise TypeInferenceError(f"{where}: window larger than the padded input")
            out.append(span // s + 1)
            continue
        q = D.exact_div(span, s)
        if q is None:
            raise TypeInferenceError(f"{where}: symbolic extent {span} is not a multiple of stride {s}")
        out.append(D.add(q, 1))
    return tuple(out)
