"""Rules for pooling calls (max/avg/adaptive pooling over the spatial dims of N,C,... inputs)."""

from __future__ import annotations

from .rules import Unsupported, rule


def _tuple(v, n):
    if isinstance(v, (tuple, list)):
        return tuple(v) * (n // len(v)) if len(v) in (1, n) else tuple(v)
    return (v,) * n


def _spatial(x, n):
    if x.type.rank != n + 2:
        raise Unsupported(f"{n}-d pooling needs an (N, C, ...) input, got {x.type}")
    return x.type.shape[2:]


def _max_pool(n):
    def fn(cx, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        _spatial(x, n)
        if ceil_mode or return_indices or any(d != 1 for d in _tuple(dilation, n)):
            raise Unsupported("max pooling with ceil_mode, dilation or indices")
        k = _tuple(kernel_size, n)
        s = _tuple(stride, n) if stride not in (None, (), []) else k
        pads = tuple((p, p) for p in _tuple(padding, n))
        return cx.emit("max_pool", x, window=k, strides=s, padding=pads)

    return fn


def _avg_pool(n):
    def fn(cx, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
        _spatial(x, n)
        if ceil_mode or divisor_override:
            raise Unsupported("avg pooling with ceil_mode or divisor_override")
        k = _tuple(kernel_size, n)
        s = _tuple(stride, n) if stride not in (None, (), []) else k
        pads = tuple((p, p) for p in _tuple(padding, n))
        return cx.emit("avg_pool", x, window=k, strides=s, padding=pads, count_include_pad=bool(count_include_pad))

    return fn


def _adaptive(n, op, reduce):
    def fn(cx, x, output_size, return_indices=False):
        spatial = _spatial(x, n)
        out = tuple(o if o is not None else d for o, d in zip(_tuple(output_size, n), spatial))
        if return_indices:
            raise Unsupported("adaptive pooling with indices")
        if all(o == 1 for o in out):
            return cx.emit(reduce, x, axes=tuple(range(2, 2 + n)), keepdims=True)
        if not all(isinstance(d, int) and d % o == 0 for d, o in zip(spatial, out)):
            raise Unsupported("adaptive pooling with uneven windows")
        k = tuple(d // o for d, o in zip(spatial, out))
        return cx.emit(op, x, window=k, strides=k, padding=((0, 0),) * n)

    return fn


for _n in (1, 2, 3):
    rule(f"max_pool{_n}d", f"aten.max_pool{_n}d")(_max_pool(_n))
    rule(f"avg_pool{_n}d", f"aten.avg_pool{_n}d")(_avg_pool(_n))
    rule(f"adaptive_avg_pool{_n}d", f"aten.adaptive_avg_pool{_n}d")(_adaptive(_n, "avg_pool", "reduce_mean"))
    rule(f"adaptive_max_pool{_n}d")(_adaptive(_n, "max_pool", "reduce_max"))
