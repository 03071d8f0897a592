"""One training step through pared (the training passes, lowered by the torch / XLA backend) equals
the same step written by hand in plain torch / JAX on a tiny MLP, to 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from pared.compiler.pass_manager import run_pipeline  # noqa: E402
from pared.passes import train  # noqa: E402,F401
from pared.training.jax_engine import JaxEngine  # noqa: E402
from pared.training.torch_engine import TorchEngine  # noqa: E402

from .tiny import batches, mlp_graph, teacher_fn, weights  # noqa: E402

LR, DECAY = 0.05, 0.1
RECIPES = {
    "srste": f"train_sparse{{pattern=2:4,backward=srste,decay={DECAY}}}",
    "masked": "train_sparse{pattern=2:4,backward=masked}",
    "ste": "train_sparse{sparsity=0.75,backward=ste}",
    "qat": "train_quant{weights=int4,group=4}",
}
WS = ("fc1.weight", "fc2.weight")


def _prepared(kind):
    w = weights()
    g = run_pipeline(mlp_graph(w), RECIPES[kind])
    w = {k: np.asarray(g.weight(k)) for k in w}  # a masked method stores w * mask
    x, = batches(1)[0]
    target = teacher_fn(weights(seed=5))(x)  # another net's outputs: a non-trivial loss
    return g, w, x, target


def _grid(g, name):
    return np.asarray(g.weight(name + ".scale")).repeat(4, axis=1)


def _by_hand_torch(kind, g, w, x, target):
    W = {k: torch.tensor(w[k], requires_grad=k in WS) for k in w}
    eff = {}
    for k in WS:
        if kind == "qat":
            s = torch.tensor(_grid(g, k))
            q = (torch.round(W[k] / s).clamp(-8, 7) * s)
            eff[k] = W[k] + (q - W[k]).detach()  # straight-through
        else:
            m = torch.tensor(np.asarray(g.weight(k + ".mask")))
            eff[k] = W[k] * m if kind == "masked" else W[k] + (W[k] * m - W[k]).detach()
    h = torch.relu(torch.tensor(x) @ eff["fc1.weight"].T + W["fc1.bias"])
    out = h @ eff["fc2.weight"].T + W["fc2.bias"]
    ((out - torch.tensor(target)) ** 2).mean().backward()
    new = {}
    with torch.no_grad():
        for k in WS:
            grad = W[k].grad
            if kind == "srste":  # SR-STE: the decay of the pruned weights joins the gradient
                grad = grad + DECAY * (1 - torch.tensor(np.asarray(g.weight(k + ".mask")))) * W[k]
            new[k] = (W[k] - LR * grad).numpy()
    return new


def _by_hand_jax(kind, g, w, x, target):
    def loss(p):
        eff = {}
        for k in WS:
            if kind == "qat":
                s = jnp.asarray(_grid(g, k))
                q = jnp.clip(jnp.round(p[k] / s), -8, 7) * s
                eff[k] = p[k] + jax.lax.stop_gradient(q - p[k])
            else:
                m = jnp.asarray(np.asarray(g.weight(k + ".mask")))
                eff[k] = p[k] * m if kind == "masked" else p[k] + jax.lax.stop_gradient(p[k] * m - p[k])
        h = jax.nn.relu(x @ eff["fc1.weight"].T + w["fc1.bias"])
        return (((h @ eff["fc2.weight"].T + w["fc2.bias"]) - target) ** 2).mean()

    p = {k: jnp.asarray(w[k]) for k in WS}
    grads = jax.grad(loss)(p)
    new = {}
    for k in WS:
        grad = grads[k]
        if kind == "srste":
            grad = grad + DECAY * (1 - np.asarray(g.weight(k + ".mask"))) * p[k]
        new[k] = np.asarray(p[k] - LR * grad)
    return new


@pytest.mark.parametrize("kind", list(RECIPES))
@pytest.mark.parametrize("framework", ["torch", "xla"])
def test_one_step_equals_the_hand_written_step(kind, framework):
    g, w, x, target = _prepared(kind)
    masks = [p.name for p in g.params if p.name.endswith(".mask")]
    engine_cls = TorchEngine if framework == "torch" else JaxEngine
    engine = engine_cls(g, list(WS), masks, loss="mse", optimizer="sgd", lr=LR)
    engine.step((x,), target, LR)
    want = (_by_hand_torch if framework == "torch" else _by_hand_jax)(kind, g, w, x, target)
    for k in WS:
        np.testing.assert_allclose(engine.get(k), want[k], rtol=1e-5, atol=1e-5, err_msg=f"{framework} {kind} {k}")
    assert not np.allclose(engine.get("fc1.weight"), w["fc1.weight"])  # the step did move the weights
