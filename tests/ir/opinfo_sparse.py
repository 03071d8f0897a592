"""OpInfo samples and reference for ``densify_nm`` (for tests/ir/opinfo.py; plain numpy reference)."""

from types import SimpleNamespace

import numpy as np

from pared.ir import dtypes as DT


def _s(*args, **attrs):
    return SimpleNamespace(args=list(args), attrs=attrs, regions=())


def densify_nm_samples(dt, rng):
    out = []
    for lead, groups, n, m in (((3,), 4, 2, 4), ((2, 3), 2, 4, 8), ((), 5, 1, 4)):
        vals = DT.round_to(dt, rng.standard_normal((*lead, groups * n)).astype(np.float32))
        idx = np.sort(np.stack([rng.permutation(m)[:n] for _ in range(int(np.prod(lead, dtype=int)) * groups)]), -1)
        out.append(_s((dt, vals), (DT.u8, idx.reshape(*lead, groups * n).astype(np.uint8)), n=n, m=m))
    return out


def densify_nm_ref(values, indices, *, n, m):
    lead, k = values.shape[:-1], values.shape[-1]
    v = values.reshape(-1, k // n, n)
    i = indices.reshape(-1, k // n, n).astype(int)
    out = np.zeros((v.shape[0], k // n, m), values.dtype)
    for r in range(v.shape[0]):
        for g in range(k // n):
            out[r, g, i[r, g]] = v[r, g]
    return out.reshape(*lead, k // n * m)
