"""The jaxpr frontend: primitive mapping, param naming, inlining, control flow, refusals.

Every mapped function is checked numerically: the IR run by the reference interpreter must equal
the original jax function.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from pared.backends.reference.interpreter import run_graph  # noqa: E402
from pared.frontends.jax.importer import JaxFrontendError, path_name, trace  # noqa: E402


def _graph(fn, *args, params=None):
    return trace(fn, params, args).graph


def _check(fn, *args, params=None, atol=1e-5):
    """The IR of ``fn`` run by the reference interpreter equals ``fn``; returns the graph."""
    g = _graph(fn, *args, params=params)
    want = fn(params, *args) if params is not None else fn(*args)
    got = run_graph(g, [np.asarray(a) for a in jax.tree_util.tree_leaves(args)])
    for w, o in zip(jax.tree_util.tree_leaves(want), got):
        np.testing.assert_allclose(o, np.asarray(w), atol=atol, rtol=1e-5)
    return g


def _ops(g):
    return Counter(e.op for e in g.walk())


X = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32))
POS = jnp.abs(X) + 0.5


@pytest.mark.parametrize(
    "name,fn,arg,expect",
    [
        ("integer_pow", lambda x: x**3, X, {"mul": 2}),
        ("integer_pow_neg", lambda x: lax.integer_pow(x, -2), POS, {"reciprocal": 1}),
        ("exp2", jnp.exp2, X, {"exp": 1}),
        ("logistic", jax.nn.sigmoid, X, {"sigmoid": 1}),
        ("rsqrt", lax.rsqrt, POS, {"rsqrt": 1}),
        ("erfc", lax.erfc, X, {"erf": 1}),
        ("log1p", jnp.log1p, POS, {"log": 1}),
        ("tanh", jnp.tanh, X, {"tanh": 1}),
        ("square", lax.square, X, {"mul": 1}),
        ("max", lambda x: jnp.maximum(x, 0.1), X, {"maximum": 1}),
        ("convert", lambda x: x.astype(jnp.int32), X * 3, {"cast": 1}),
        ("squeeze", lambda x: x[:, :1].squeeze(1), X, {"reshape": 1, "slice": 1}),
        ("expand_dims", lambda x: jnp.expand_dims(x, 0) * 2.0, X, {"reshape": 0}),
        ("select_n", lambda x: jnp.where(x > 0, x, -x), X, {"where": 1, "gt": 1}),
        ("argmax", lambda x: jnp.argmax(x, axis=1), X, {"argmax": 1}),
        ("argmin", lambda x: jnp.argmin(x, axis=0), X, {"argmax": 1, "neg": 1}),
        ("iota", lambda x: x + jnp.arange(4, dtype=jnp.float32), X, {"iota": 1}),
        ("reduce", lambda x: x.sum(1) + x.max(1) - x.min(1), X, {"reduce_sum": 1, "reduce_max": 1}),
        ("transpose", lambda x: x.T @ x, X, {"transpose": 1, "dot_general": 1}),
        ("concat_pad", lambda x: jnp.pad(jnp.concatenate([x, x], 1), ((1, 0), (0, 2))), X, {"concat": 1, "pad": 1}),
        ("stop_gradient", lambda x: lax.stop_gradient(x) + 1.0, X, {"add": 1}),
        ("reduce_precision", lambda x: lax.reduce_precision(x, 8, 7), X, {"cast": 2}),
        ("clamp", lambda x: jnp.clip(x, -0.5, 0.5), X, {}),
        ("cumsum", lambda x: jnp.cumsum(x, axis=1), X, {"cumsum": 1}),
        ("split", lambda x: jnp.split(x, 2, axis=1)[1] * 2, X, {"slice": 1}),
    ],
)
def test_primitive_mapping(name, fn, arg, expect):
    g = _check(fn, arg)
    ops = _ops(g)
    for op, n in expect.items():
        assert ops[op] == n if n == 0 else ops[op] >= n, (name, ops)


def test_dot_general_keeps_batch_dims():
    q = jnp.ones((2, 3, 5, 8))
    k = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 7, 8)).astype(np.float32))
    g = _check(lambda q, k: jnp.einsum("bhqd,bhkd->bhqk", q, k), q, k)
    (dot,) = [e for e in g.eqns if e.op == "dot_general"]
    assert dot.attrs["batch"] == ((0, 1), (0, 1))
    assert dot.attrs["contract"] == ((3,), (3,))


def test_conv_nhwc_becomes_channels_first():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype(np.float32))
    w = jnp.asarray(np.random.default_rng(3).normal(size=(3, 3, 3, 4)).astype(np.float32))

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    g = _check(conv, x, w, atol=1e-4)
    (c,) = [e for e in g.eqns if e.op == "conv"]
    assert c.inputs[0].type.shape == (2, 3, 6, 6) and c.inputs[1].type.shape == (4, 3, 3, 3)


def test_take_from_gather():
    table = jnp.asarray(np.random.default_rng(4).normal(size=(10, 4)).astype(np.float32))
    ids = jnp.asarray([[1, 2, 9], [0, 0, 3]])
    g = _check(lambda t, i: t[i], table, ids)
    assert _ops(g)["take"] == 1
    g = _check(lambda t, i: jnp.take(t, i, axis=1), table.T, ids)
    assert _ops(g)["take"] == 1


def test_params_named_by_pytree_path():
    params = {"params": {"Dense_0": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros((2,))}}, "layers": [jnp.ones((2,))]}

    def f(p, x):
        d = p["params"]["Dense_0"]
        return (x @ d["kernel"] + d["bias"]) * p["layers"][0]

    g = _check(f, X, params=params)
    names = {p.name for p in g.params}
    assert names == {"params/Dense_0/kernel", "params/Dense_0/bias", "layers/0"}
    assert all(g.weights[n] is not None for n in names)


def test_nnx_state_paths_drop_value():
    nnx = pytest.importorskip("flax.nnx")
    m = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(m)
    g = _check(lambda s, x: nnx.merge(graphdef, s)(x), X, params=state)
    assert {p.name for p in g.params} == {"kernel", "bias"}
    leaf_paths = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert sorted(leaf_paths) == ["bias", "kernel"]


def test_closed_over_constants_become_params():
    c = jnp.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    g = _check(lambda x: x * c + 2.0, X)
    assert [p.name for p in g.params] == ["const/0"]


def test_nested_jit_and_custom_rules_are_inlined():
    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    f.defjvp(lambda primals, tangents: (f(primals[0]), jnp.cos(primals[0]) * tangents[0]))

    @jax.custom_vjp
    def g(x):
        return x * 3.0

    g.defvjp(lambda x: (g(x), None), lambda _, ct: (ct * 3.0,))

    inner = jax.jit(lambda x: jax.nn.relu(x) + 1.0)
    graph = _check(lambda x: inner(f(g(x))), X)
    ops = _ops(graph)
    assert set(ops) <= {"mul", "sin", "maximum", "add"}, ops


def test_scan_is_unrolled_with_equal_numerics():
    def f(xs):
        def step(c, x):
            c = jnp.tanh(c * 0.5 + x)
            return c, c * 2.0

        return lax.scan(step, jnp.zeros(4), xs)

    xs = jnp.asarray(np.random.default_rng(5).normal(size=(5, 4)).astype(np.float32))
    g = _check(f, xs)
    assert _ops(g)["tanh"] == 5
    _check(lambda xs: lax.scan(lambda c, x: (c + x, c), jnp.zeros(4), xs, reverse=True), xs)


@pytest.mark.parametrize(
    "prim,fn",
    [
        ("while", lambda x: lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2.0), (0, x))[1]),
        ("cond", lambda x: lax.cond(x.sum() > 0, lambda y: y * 2.0, lambda y: y - 1.0, x)),
        ("sort", lambda x: jnp.sort(x, axis=1)),
    ],
)
def test_unsupported_primitives_are_refused_with_source_line(prim, fn):
    with pytest.raises(JaxFrontendError) as err:
        _graph(fn, X)
    msg = str(err.value)
    assert repr(prim) in msg
    assert "test_jaxpr_frontend.py" in msg  # the user's source line


def test_ir_locations_carry_flax_module_names():
    linen = pytest.importorskip("flax.linen")
    m = linen.Dense(3)
    params = m.init(jax.random.PRNGKey(0), X)
    g = _check(m.apply, X, params=params)
    dot = next(e for e in g.eqns if e.op == "dot_general")
    assert "Dense" in dot.loc
