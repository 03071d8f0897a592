"""OpInfo samples and reference for ``qlinear`` (used by tests/ir/opinfo.py and test_ops.py).

The reference is written independently of pared (plain numpy, float64).
"""

from types import SimpleNamespace

import numpy as np

from pared.ir import dtypes as DT
from pared.ir import sym, tensor


def _s(*args, **attrs):
    return SimpleNamespace(args=list(args), attrs=attrs, regions=())


def qlinear_samples(dt, rng):
    f = lambda *s: DT.round_to(dt, rng.standard_normal(s).astype(np.float32))
    pos = lambda *s: rng.uniform(0.01, 0.1, s).astype(np.float32)
    i4 = rng.integers(-8, 8, (6, 10)).astype(np.int8)
    u4 = rng.integers(0, 16, (6, 10)).astype(np.uint8)
    i8 = rng.integers(-127, 128, (6, 10)).astype(np.int8)
    out = [
        _s((dt, f(3, 10)), (DT.i4, i4), (DT.f32, pos(6, 1))),
        _s(
            (dt, f(2, 3, 10)),
            (DT.u4, u4),
            (DT.f32, pos(6, 3)),
            (DT.f32, rng.integers(0, 16, (6, 3)).astype(np.float32)),
            group_size=4,
        ),
    ]
    if dt == DT.f32:
        out += [
            _s((dt, f(4, 10)), (DT.i8, i8), (DT.f32, pos(6, 1)), act="dynamic"),
            _s((dt, f(4, 10)), (DT.i8, i8), (DT.f32, pos(6, 1)), (DT.f32, np.float32(0.02)), act="static"),
            _s((dt, f(4, 10)), (DT.i4, i4), (DT.f32, pos(6, 1)), act_dtype=DT.bf16),
        ]
    return out


def qlinear_ref(x, q, scale, *rest, group_size, act, act_dtype):
    act_scale = rest[-1] if act == "static" else None
    zero = rest[0] if len(rest) - (act == "static") == 1 else None
    k = q.shape[1]
    idx = np.arange(k) // group_size if group_size else np.zeros(k, int)
    s = scale[:, idx]
    w = (q - (zero[:, idx] if zero is not None else 0)) * s
    x2 = x.reshape(-1, k)
    if act == "none":
        if act_dtype is not None:
            x2 = DT.round_to(act_dtype, x2.astype(np.float32)).astype(np.float64)
        return (x2 @ w.T).reshape(*x.shape[:-1], q.shape[0])
    sx = np.abs(x2).max(-1, keepdims=True) / 127 if act_scale is None else np.float64(act_scale)
    sx = np.where(sx > 0, sx, 1.0)
    xq = np.clip(np.rint(x2 / sx), -127, 127)
    return ((xq @ q.T) * sx * scale[:, 0]).reshape(*x.shape[:-1], q.shape[0])


B, S = sym("B"), sym("S")
QLINEAR_SYMBOLIC = [
    (
        "qlinear",
        [tensor((B, S, 64)), tensor((32, 64), "i4"), tensor((32, 2))],
        {"group_size": 32},
        [tensor((B, S, 32))],
    ),
]
