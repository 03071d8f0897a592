"""The XLA backend: weights as an argument, symbolic dims, fallbacks, regions, and jit/grad/vmap of
lowerings (every op against the reference: tests/backends/test_every_op.py)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from pared.backends.reference.interpreter import run_graph  # noqa: E402
from pared.backends.xla import graph_params, lower  # noqa: E402
from pared.ir import GraphBuilder, sym  # noqa: E402

RNG = np.random.default_rng(0)


def _f(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _run_both(graph, inputs, atol=1e-5):
    want = run_graph(graph, inputs)
    f = jax.jit(lambda w, *xs: lower(graph)(w, *xs))
    got = f(graph_params(graph), *[jnp.asarray(x) for x in inputs])
    for g, w in zip(got, want):
        assert np.asarray(g).shape == w.shape
        np.testing.assert_allclose(np.asarray(g).astype(np.float64), w.astype(np.float64), atol=atol, rtol=1e-5)


def test_params_and_literals_broadcast():
    b = GraphBuilder()
    x = b.input((2, 3, 4))
    w = b.param("w", _f(4))
    y = b.op("maximum", b.op("mul", b.op("add", x, 0.5), w), b.op("sub", w, 1.0))
    _run_both(b.build(y), [_f(2, 3, 4)])


def test_symbolic_dims_resolve_per_call():
    b = GraphBuilder()
    x = b.input(("B", 4))
    y = b.op("reshape", b.op("tanh", x), shape=(sym("B"), 2, 2))
    g = b.build(y)
    for n in (1, 3):
        _run_both(g, [_f(n, 4)])


def test_declined_or_missing_rule_falls_back_to_reference(monkeypatch):
    from pared.backends import lowering

    monkeypatch.delitem(lowering._TABLE["xla"], "erf")
    monkeypatch.setitem(lowering._TABLE["xla"], "tanh", lambda env, eqn, *xs: NotImplemented)
    b = GraphBuilder()
    x = b.input((3,))
    _run_both(b.build(b.op("tanh", b.op("erf", x))), [_f(3)])


def test_fused_region_runs_its_body():
    inner = GraphBuilder()
    a, c = inner.input((3, 4)), inner.input((4,))
    region = inner.build(inner.op("relu", inner.op("mul", a, c)), a)  # one output passes an input through
    b = GraphBuilder()
    x = b.input((3, 4))
    y = b.op("fused", x, b.param("c", _f(4)), regions=[region], kind="elementwise")
    _run_both(b.build(*y), [_f(3, 4)])


def test_lowering_composes_with_grad_and_vmap():
    b = GraphBuilder()
    x = b.input((5, 4))
    w = b.param("w", _f(3, 4))
    y = b.op("tanh", b.op("dot_general", x, w, contract=((1,), (1,))))
    g = b.build(y)
    f = lower(g)
    params = graph_params(g)
    xs = jnp.asarray(_f(5, 4))

    def loss(p, x):
        return jnp.sum(f(p, x)[0] ** 2)

    def ref(p, x):
        return jnp.sum(jnp.tanh(x @ p["w"].T) ** 2)

    np.testing.assert_allclose(jax.grad(loss)(params, xs)["w"], jax.grad(ref)(params, xs)["w"], rtol=1e-5, atol=1e-6)
    per_row = jax.vmap(lambda r: f(params, jnp.broadcast_to(r, (5, 4)))[0][0])(xs)
    np.testing.assert_allclose(per_row, jnp.tanh(xs @ params["w"].T), rtol=1e-5, atol=1e-6)
