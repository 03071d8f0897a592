"""OpInfo samples and references for the training ops ``ste_mask`` and ``fake_quant`` (plain numpy)."""

from types import SimpleNamespace

import numpy as np

from pared.ir import dtypes as DT


def _s(*args, **attrs):
    return SimpleNamespace(args=list(args), attrs=attrs, regions=())


def ste_mask_samples(dt, rng):
    out = []
    cases = (((4, 8), {}), ((3, 5), dict(backward="srste", decay=0.1)), ((2, 3, 4), dict(backward="masked")))
    for shape, attrs in cases:
        w = DT.round_to(dt, rng.standard_normal(shape).astype(np.float32))
        m = (rng.random(shape) < 0.5).astype(np.float32)
        out.append(_s((dt, w), (dt, DT.round_to(dt, m)), **attrs))
    return out


def ste_mask_ref(w, mask, **_):
    return w * mask


def fake_quant_samples(dt, rng):
    out = []
    w = DT.round_to(dt, rng.standard_normal((4, 6)).astype(np.float32))
    out.append(_s((dt, w), (DT.f32, np.full((4, 1), 0.3, np.float32)), dtype="i4"))
    w = DT.round_to(dt, rng.standard_normal((3, 8)).astype(np.float32))
    scale = rng.uniform(0.05, 0.2, (3, 2)).astype(np.float32)
    zero = rng.integers(5, 10, (3, 2)).astype(np.float32)
    out.append(_s((dt, w), (DT.f32, scale), (DT.f32, zero), dtype="u4", group_axis=1, group_size=4))
    w = DT.round_to(dt, rng.standard_normal((2, 10)).astype(np.float32))
    scale = rng.uniform(0.01, 0.05, (2, 3)).astype(np.float32)
    out.append(_s((dt, w), (DT.f32, scale), dtype="i8", group_axis=1, group_size=4, backward="clipped"))
    return out


def fake_quant_ref(w, scale, zero=None, *, dtype, group_axis=None, group_size=None, **_):
    if group_axis is not None:
        scale = np.repeat(scale, group_size, axis=group_axis)[:, : w.shape[1]]
        zero = None if zero is None else np.repeat(zero, group_size, axis=group_axis)[:, : w.shape[1]]
    z = 0.0 if zero is None else zero
    lo, hi = DT.int_range(dtype)
    return (np.clip(np.rint(w / scale) + z, lo, hi) - z) * scale
