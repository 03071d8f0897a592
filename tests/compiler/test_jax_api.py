"""``pared.jit`` and ``compress_jax`` on Flax models: numerics, composition, caching, sharding."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax")
flax = pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402
from flax import linen, nnx  # noqa: E402

from pared.backends.reference.interpreter import run_graph  # noqa: E402
from pared.compiler.jax_api import compress_jax, jit  # noqa: E402

RNG = np.random.default_rng(0)


def _arr(*shape):
    return jnp.asarray(RNG.normal(size=shape).astype(np.float32))


# --- tiny models: linen and nnx, MLP / CNN / transformer block ---------------------------------


class LinenMLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.relu(linen.Dense(16)(x))
        return linen.Dense(4)(linen.gelu(linen.Dense(16)(x)))


class LinenCNN(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.relu(linen.Conv(8, (3, 3))(x))
        x = linen.Conv(8, (3, 3), strides=(2, 2), feature_group_count=2)(x)
        return linen.Dense(5)(x.mean(axis=(1, 2)))


class LinenBlock(linen.Module):
    @linen.compact
    def __call__(self, x):
        h = linen.LayerNorm()(x)
        x = x + linen.MultiHeadDotProductAttention(num_heads=2, qkv_features=16)(h)
        h = linen.LayerNorm()(x)
        return x + linen.Dense(16)(linen.gelu(linen.Dense(32)(h)))


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1, self.l2 = nnx.Linear(8, 16, rngs=rngs), nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.silu(self.l1(x)))


class NnxCNN(nnx.Module):
    def __init__(self, rngs):
        self.c1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.c2 = nnx.Conv(8, 8, (3, 3), strides=2, rngs=rngs)
        self.head = nnx.Linear(8, 5, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.c1(x))
        return self.head(nnx.relu(self.c2(x)).mean(axis=(1, 2)))


class NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.n1, self.n2 = nnx.LayerNorm(16, rngs=rngs), nnx.RMSNorm(16, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=16, qkv_features=16, decode=False, rngs=rngs)
        self.f1, self.f2 = nnx.Linear(16, 32, rngs=rngs), nnx.Linear(32, 16, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.f2(jax.nn.gelu(self.f1(self.n2(x))))


def _linen(cls, x):
    m = cls()
    return m.apply, m.init(jax.random.PRNGKey(0), x)


def _nnx(cls, x):
    graphdef, state = nnx.split(cls(nnx.Rngs(0)))
    return (lambda s, x: nnx.merge(graphdef, s)(x)), state


MODELS = {
    "linen_mlp": (lambda: _linen(LinenMLP, _arr(3, 8)), (3, 8)),
    "linen_cnn": (lambda: _linen(LinenCNN, _arr(2, 8, 8, 3)), (2, 8, 8, 3)),
    "linen_block": (lambda: _linen(LinenBlock, _arr(2, 5, 16)), (2, 5, 16)),
    "nnx_mlp": (lambda: _nnx(NnxMLP, None), (3, 8)),
    "nnx_cnn": (lambda: _nnx(NnxCNN, None), (2, 8, 8, 3)),
    "nnx_block": (lambda: _nnx(NnxBlock, None), (2, 5, 16)),
}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    make, shape = MODELS[request.param]
    fn, params = make()
    return fn, params, _arr(*shape)


def test_compress_matches_original_and_reference(model):
    fn, params, x = model
    want = np.asarray(fn(params, x))
    fn_c, params_c = compress_jax(fn, params, x)
    np.testing.assert_allclose(np.asarray(fn_c(params_c, x)), want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(fn_c)(params_c, x)), want, atol=1e-5, rtol=1e-5)
    (ref,) = run_graph(fn_c.graph, [np.asarray(x)])
    np.testing.assert_allclose(ref, want, atol=1e-5, rtol=1e-5)
    assert set(params_c) == {p.name for p in fn_c.graph.params}


def test_pared_jit_matches_original(model):
    fn, params, x = model
    np.testing.assert_allclose(np.asarray(jit(fn)(params, x)), np.asarray(fn(params, x)), atol=1e-5, rtol=1e-5)


def test_compress_accepts_an_nnx_module():
    m = NnxMLP(nnx.Rngs(1))
    x = _arr(3, 8)
    fn_c, params_c = compress_jax(m, None, x)
    np.testing.assert_allclose(np.asarray(fn_c(params_c, x)), np.asarray(m(x)), atol=1e-6)
    assert "l1/kernel" in params_c


# --- composition ----------------------------------------------------------------------------


def _mlp():
    fn, params = _linen(LinenMLP, _arr(3, 8))
    return fn, params, _arr(3, 8)


def _loss(fn):
    return lambda p, x: jnp.sum(fn(p, x) ** 2)


def _close(a, b, tol=1e-5):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=1e-4)


def test_jit_of_pared_jit_and_pared_jit_of_jit():
    fn, params, x = _mlp()
    want = fn(params, x)
    _close(jax.jit(jit(fn))(params, x), want)
    _close(jit(jax.jit(fn))(params, x), want)


def test_grad_equals_grad_of_original():
    fn, params, x = _mlp()
    want = jax.grad(_loss(fn), argnums=(0, 1))(params, x)
    _close(jax.grad(_loss(jit(fn)), argnums=(0, 1))(params, x), want)
    _close(jax.grad(jit(_loss(fn)), argnums=(0, 1))(params, x), want)
    fn_c, params_c = compress_jax(fn, params, x)
    g = jax.grad(_loss(fn_c))(params_c, x)
    _close(g["params/Dense_0/kernel"], want[0]["params"]["Dense_0"]["kernel"])


def test_grad_through_custom_vjp_and_custom_jvp():
    @jax.custom_vjp
    def clip_grad(x):
        return jnp.tanh(x)

    clip_grad.defvjp(lambda x: (jnp.tanh(x), x), lambda x, ct: (ct * (1 - jnp.tanh(x) ** 2),))

    def f(w, x):
        return jnp.sum(clip_grad(x @ w) + jax.nn.relu(x @ w)) + jnp.sum(jax.nn.softplus(x))

    w, x = _arr(8, 4), _arr(3, 8)
    _close(jax.grad(jit(f), argnums=(0, 1))(w, x), jax.grad(f, argnums=(0, 1))(w, x))


def test_vmap_and_jit_vmap_grad():
    fn, params, x = _mlp()
    single = lambda p, v: fn(p, v[None])[0]  # noqa: E731
    xs = _arr(6, 8)
    _close(jax.vmap(jit(single), in_axes=(None, 0))(params, xs), jax.vmap(single, in_axes=(None, 0))(params, xs))
    loss = lambda p, v: jnp.sum(single(p, v) ** 2)  # noqa: E731
    want = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, xs)
    got = jax.jit(jax.vmap(jax.grad(jit(loss)), in_axes=(None, 0)))(params, xs)
    _close(got, want)


def test_retrace_on_new_shapes_and_cache_by_treedef_and_avals():
    fn, params, x = _mlp()
    f = jit(fn)
    f(params, x)
    f(params, x + 1.0)
    assert f.cache_size == 1
    x5 = _arr(5, 8)
    _close(f(params, x5), fn(params, x5))
    assert f.cache_size == 2
    f(params, x5.astype(jnp.bfloat16))
    assert f.cache_size == 3


def test_compressed_fn_retraces_for_new_batch():
    fn, params, x = _mlp()
    fn_c, params_c = compress_jax(fn, params, x)
    x7 = _arr(7, 8)
    _close(fn_c(params_c, x7), fn(params, x7))


def test_decorator_forms_and_static_args():
    @jit
    def f(p, x):
        return x @ p["w"]

    @jit(recipe=None, static_argnums=(2,))
    def g(p, x, n):
        return (x @ p["w"]) * n

    p, x = {"w": _arr(8, 2)}, _arr(3, 8)
    _close(f(p, x), x @ p["w"])
    _close(g(p, x, 3), (x @ p["w"]) * 3)
    assert g.cache_size == 1
    g(p, x, 4)
    assert g.cache_size == 2


def test_cleanup_recipe_keeps_numerics():
    pytest.importorskip("pared.compiler.pass_manager", reason="pared.compiler.pass_manager not there yet")
    fn, params, x = _mlp()
    fn_c, params_c = compress_jax(fn, params, x, recipe="cleanup")
    _close(fn_c(params_c, x), fn(params, x))
    _close(jit(fn, recipe="cleanup")(params, x), fn(params, x))


# --- sharding (a subprocess: the device count must be set before jax initialises) ------------

_SHARDED = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from flax import linen
    from pared.compiler.jax_api import compress_jax, jit

    assert len(jax.devices()) == 8, jax.devices()
    class MLP(linen.Module):
        @linen.compact
        def __call__(self, x):
            return linen.Dense(16)(linen.gelu(linen.Dense(64)(x)))
    m = MLP()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 32)).astype(np.float32))
    params = m.init(jax.random.PRNGKey(0), x)
    fn_c, params_c = compress_jax(m.apply, params, x)
    want = np.asarray(fn_c(params_c, x))
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    def spec(name, v):
        if v.ndim == 2 and v.shape[1] % 4 == 0:
            return NamedSharding(mesh, P(None, "model"))
        return NamedSharding(mesh, P())
    sharded = {k: jax.device_put(v, spec(k, v)) for k, v in params_c.items()}
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    got = jax.jit(fn_c)(sharded, xs)
    assert len(got.sharding.device_set) == 8, got.sharding
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)
    sp = jax.tree_util.tree_map(lambda v: jax.device_put(v, NamedSharding(mesh, P())), params)
    np.testing.assert_allclose(np.asarray(jit(m.apply)(sp, xs)), want, atol=1e-5, rtol=1e-5)
    print("SHARDED_OK")
    """
)


def test_sharded_run_on_8_cpu_devices_equals_unsharded():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=300)
    assert "SHARDED_OK" in r.stdout, r.stdout + r.stderr
