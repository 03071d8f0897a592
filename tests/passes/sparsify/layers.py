"""Small graphs with known structure for the sparsity tests."""

from __future__ import annotations

import numpy as np

from pared.ir import GraphBuilder, sym


def mlp(d_in=64, d_hidden=128, d_out=32, seed=0, embed_vocab=0):
    """x[B, d_in] -> fc1 -> relu -> fc2 (optionally ids -> embedding table first, tied head last)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    if embed_vocab:
        ids = b.input([sym("B")], "i64")
        table = b.param("embed.weight", rng.standard_normal((embed_vocab, d_in)).astype(np.float32))
        x = b.take(table, ids, axis=0)
    else:
        x = b.input([sym("B"), d_in])
    w1 = b.param("fc1.weight", rng.standard_normal((d_hidden, d_in)).astype(np.float32))
    w2 = b.param("fc2.weight", rng.standard_normal((d_out, d_hidden)).astype(np.float32))
    h = b.relu(b.dot_general(x, w1, contract=((1,), (1,))))
    y = b.dot_general(h, w2, contract=((1,), (1,)))
    if embed_vocab:  # a head tied to the embedding: y[B, d_out] needs d_out == d_in
        y = b.dot_general(y, table, contract=((1,), (1,)))
    return b.build(y)


def correlated(n_batches=4, rows=64, d=64, seed=1, rank=None):
    """Calibration batches whose channels are strongly correlated (x = z @ mix)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((rank or d, d)) + 2.0 * np.eye(rank or d, d)
    scale = np.exp(rng.standard_normal(d))  # uneven channel magnitudes
    return [((rng.standard_normal((rows, rank or d)) @ mix) * scale).astype(np.float32) for _ in range(n_batches)]


def hessian(batches):
    x = np.concatenate(batches).astype(np.float64)
    return x.T @ x
