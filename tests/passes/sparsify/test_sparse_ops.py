"""Packed N:M storage: pack_nm + densify_nm round-trip through the reference interpreter."""

import numpy as np
import pytest

from pared.backends.reference.interpreter import run_graph
from pared.ir import GraphBuilder, verify
from pared.passes.sparsify.magnitude import keep_nm


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_pack_densify_roundtrip(n, m):
    from pared.ir.ops.sparse import pack_nm  # registers densify_nm (not in the core op set yet)

    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4 * m)).astype(np.float32)
    w = w * keep_nm(np.abs(w), n, m)
    vals, idx = pack_nm(w, n, m)
    assert vals.shape == (6, 4 * n) and idx.dtype == np.uint8
    b = GraphBuilder()
    v = b.param("w.values", vals)
    i = b.param("w.indices", idx)
    g = b.build(b.densify_nm(v, i, n=n, m=m))
    verify(g)
    np.testing.assert_array_equal(run_graph(g, [])[0], w)


def test_pack_refuses_too_dense():
    from pared.ir.ops.sparse import pack_nm

    with pytest.raises(ValueError, match="more than 2"):
        pack_nm(np.ones((2, 8), np.float32), 2, 4)
