"""The same sparsify pass from torch (pared.compress on an nn.Module) and from JAX (pared.compress
on the equivalent flax linen MLP, kernels transposed) gives the same masks on the same data."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jnp = pytest.importorskip("jax.numpy")
nn = pytest.importorskip("flax.linen")

import pared  # noqa: E402


class FlaxMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(8, name="fc2")(nn.relu(nn.Dense(32, name="fc1")(x)))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()
    params = {
        "params": {
            name: {
                "kernel": jnp.asarray(layer.weight.detach().numpy().T),
                "bias": jnp.asarray(layer.bias.detach().numpy()),
            }
            for name, layer in (("fc1", tm[0]), ("fc2", tm[2]))
        }
    }
    rng = np.random.default_rng(0)
    scale = np.exp(rng.standard_normal(16)).astype(np.float32)  # uneven channels: Wanda != magnitude
    x = rng.standard_normal((4, 16)).astype(np.float32) * scale
    cal = [rng.standard_normal((4, 16)).astype(np.float32) * scale for _ in range(3)]
    return tm, params, x, cal


@pytest.mark.parametrize(
    "recipe",
    [
        "sparsify{method=magnitude}",
        "sparsify{method=wanda}",
        "sparsify{method=wanda,pattern=2:4}",
        "sparsify{method=sparsegpt,pattern=2:4}",
    ],
)
def test_same_masks_from_torch_and_jax(models, recipe):
    tm, params, x, cal = models
    cm, report = pared.compress(
        tm, (torch.from_numpy(x),), recipe=recipe, calibration=[(torch.from_numpy(c),) for c in cal]
    )
    fn_c, params_c = pared.compress(FlaxMLP().apply, params, jnp.asarray(x), recipe=recipe, calibration=cal)
    for t_name, j_name in (("0.weight", "params/fc1/kernel"), ("2.weight", "params/fc2/kernel")):
        t_mask = np.asarray(cm.graph.weight(t_name)) != 0
        j_mask = np.asarray(params_c[j_name]).T != 0
        assert t_mask.mean() == pytest.approx(0.5)
        assert np.array_equal(t_mask, j_mask), f"{recipe}: {t_name} and {j_name} masks differ"
    with torch.no_grad():
        y_t = cm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(fn_c(params_c, jnp.asarray(x))), y_t, rtol=1e-4, atol=1e-4)
