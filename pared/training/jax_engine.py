"""The JAX side of the fine-tuner: the training graph lowered by the XLA backend, trained with optax.

The lowering (:func:`pared.backends.xla.lower`) is a jax function of a weights dict, so the
train step is ``jax.value_and_grad`` over the trained weights and the masks (a mask's cotangent is
the dense gradient RigL regrows by; see :mod:`pared.ir.ops.train`), then an optax update, all
under one ``jax.jit``. The other weights are an argument too, not constants baked into the program.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..ir import Graph
from .losses import jax_loss


class JaxEngine:
    """Forward, backward and optimizer step of a training graph on the XLA backend."""

    framework = "jax"

    def __init__(self, graph: Graph, trained: Sequence[str], masks: Sequence[str], *, loss: str = "mse",
                 temperature: float = 1.0, optimizer: str = "adamw", lr: float = 1e-4, weight_decay: float = 0.0,
                 mask_grads: Sequence[str] = (), device=None):
        import jax
        import jax.numpy as jnp
        import optax

        from ..backends.xla import graph_params, lower

        self.jax, self.jnp = jax, jnp
        self.trained, self.masks = list(trained), list(masks)
        everything = graph_params(graph)
        self.params = {n: everything.pop(n) for n in self.trained}
        self.mask_vals = {n: everything.pop(n) for n in self.masks}
        self.frozen = everything
        if optimizer == "sgd":
            self.tx = optax.inject_hyperparams(optax.sgd)(learning_rate=lr)
            if weight_decay:
                self.tx = optax.chain(optax.add_decayed_weights(weight_decay), self.tx)
        else:
            self.tx = optax.inject_hyperparams(optax.adamw)(learning_rate=lr, weight_decay=weight_decay)
        self.opt_state = self.tx.init(self.params)
        f = lower(graph)
        loss_fn = jax_loss(loss, temperature)
        want = tuple(mask_grads)

        def objective(params, masks, frozen, inputs, target):
            out = f({**frozen, **params, **masks}, *inputs)[0]
            return loss_fn(out, target)

        def train_step(params, masks, frozen, opt_state, lr, inputs, target):
            opt_state = _set_lr(opt_state, lr)
            loss, (gp, gm) = jax.value_and_grad(objective, argnums=(0, 1))(params, masks, frozen, inputs, target)
            updates, opt_state = self.tx.update(gp, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss, {n: gm[n] for n in want}

        self._step = jax.jit(train_step)
        self._forward = jax.jit(lambda w, inputs: f(w, *inputs))
        self._loss = jax.jit(objective)
        self._mask_grads: dict[str, np.ndarray] = {}

    def as_inputs(self, inputs: Sequence) -> tuple:
        return tuple(self.jnp.asarray(np.asarray(x)) for x in inputs)

    def step(self, inputs: Sequence, target, lr: float) -> float:
        self.params, self.opt_state, loss, mg = self._step(
            self.params, self.mask_vals, self.frozen, self.opt_state, np.float32(lr), self.as_inputs(inputs),
            self.jnp.asarray(np.asarray(target)))
        self._mask_grads = {n: np.asarray(v) for n, v in mg.items()}
        return float(loss)

    def forward(self, inputs: Sequence) -> list:
        return list(self._forward({**self.frozen, **self.params, **self.mask_vals}, self.as_inputs(inputs)))

    def loss(self, inputs: Sequence, target) -> float:
        return float(self._loss(self.params, self.mask_vals, self.frozen, self.as_inputs(inputs),
                                self.jnp.asarray(np.asarray(target))))

    def mask_grads(self) -> Mapping[str, np.ndarray]:
        return self._mask_grads

    def get(self, name: str) -> np.ndarray:
        return np.array(self.params[name] if name in self.params else self.mask_vals[name])

    def set(self, values: Mapping[str, np.ndarray]) -> None:
        for n, v in values.items():
            table = self.params if n in self.params else self.mask_vals
            table[n] = self.jnp.asarray(np.asarray(v), dtype=table[n].dtype)

    def apply_masks(self, pairs: Sequence[tuple[str, str]]) -> None:
        for w, m in pairs:
            self.params[w] = self.params[w] * self.mask_vals[m]

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"w/{n}": self.get(n) for n in self.trained}
        out.update({f"m/{n}": self.get(n) for n in self.masks})
        for i, leaf in enumerate(self.jax.tree_util.tree_leaves(self.opt_state)):
            out[f"opt/{i}"] = np.asarray(leaf)
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.set({n: state[f"w/{n}"] for n in self.trained})
        self.set({n: state[f"m/{n}"] for n in self.masks})
        leaves, tree = self.jax.tree_util.tree_flatten(self.opt_state)
        new = [self.jnp.asarray(state[f"opt/{i}"], dtype=np.asarray(leaf).dtype) for i, leaf in enumerate(leaves)]
        self.opt_state = self.jax.tree_util.tree_unflatten(tree, new)


def _set_lr(opt_state, lr):
    """The learning rate of this step in an ``inject_hyperparams`` state (plain or chained)."""
    if hasattr(opt_state, "hyperparams"):
        opt_state.hyperparams["learning_rate"] = lr
        return opt_state
    if isinstance(opt_state, tuple):
        return type(opt_state)(*(_set_lr(s, lr) for s in opt_state)) if hasattr(opt_state, "_fields") \
            else tuple(_set_lr(s, lr) for s in opt_state)
    return opt_state


def jax_teacher(fn):
    """``fn(*inputs)``'s first output as a numpy-convertible array."""

    def run(inputs):
        out = fn(*inputs)
        return out[0] if isinstance(out, (tuple, list)) else out

    return run
