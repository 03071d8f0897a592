"""Small model graphs the fusion and Triton tests share: a Llama-style transformer block."""

from __future__ import annotations

import numpy as np

from pared.ir import GraphBuilder, sym


def llama_block(d: int = 32, heads: int = 2, ffn: int = 48, seq=None, seed: int = 0, dtype: str = "f32"):
    """One pre-norm decoder block: RMSNorm, attention (causal mask input), residual, RMSNorm,
    SwiGLU MLP, residual. Inputs: x [T, d], mask [T, T]. Returns the graph."""
    rng = np.random.default_rng(seed)
    T = seq if seq is not None else sym("T")
    dh = d // heads
    b = GraphBuilder()
    x = b.input([T, d], dtype)
    mask = b.input([T, T], dtype)

    def w(name, *shape, scale=None):
        v = rng.standard_normal(shape) * (scale if scale is not None else shape[-1] ** -0.5)
        return b.param(name, v.astype(np.float32))

    def linear(h, name, n_out, n_in):
        return b.dot_general(h, w(name, n_out, n_in), contract=((1,), (1,)))

    ln1 = b.param("ln1.weight", (1 + 0.1 * rng.standard_normal(d)).astype(np.float32))
    h = b.rms_norm(x, ln1, axes=(1,), eps=1e-6)
    qkv = [linear(h, f"attn.{n}.weight", d, d) for n in "qkv"]
    q, k, v = (b.transpose(b.reshape(t, shape=(T, heads, dh)), perm=(1, 0, 2)) for t in qkv)
    s = b.dot_general(q, k, contract=((2,), (2,)), batch=((0,), (0,)))
    s = b.add(b.mul(s, dh ** -0.5), mask)
    p = b.softmax(s, axis=-1)
    o = b.dot_general(p, v, contract=((2,), (1,)), batch=((0,), (0,)))
    o = b.reshape(b.transpose(o, perm=(1, 0, 2)), shape=(T, d))
    h2 = b.add(x, linear(o, "attn.o.weight", d, d))
    ln2 = b.param("ln2.weight", (1 + 0.1 * rng.standard_normal(d)).astype(np.float32))
    n2 = b.rms_norm(h2, ln2, axes=(1,), eps=1e-6)
    g = linear(n2, "mlp.gate.weight", ffn, d)
    u = linear(n2, "mlp.up.weight", ffn, d)
    a = b.mul(b.silu(g), u)
    out = b.add(h2, linear(a, "mlp.down.weight", d, ffn))
    return b.build(out)


def block_inputs(T: int = 8, d: int = 32, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, d)).astype(np.float32)
    mask = np.triu(np.full((T, T), -1e9, np.float32), 1)
    return [x, mask]
