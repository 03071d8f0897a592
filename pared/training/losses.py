"""Distillation losses, written once per framework with the same arithmetic.

- ``kl`` (causal LMs): T^2 * KL(softmax(t / T) || softmax(s / T)), averaged over every position
  (Hinton et al. 2015), on the last axis of the logits.
- ``mse`` (encoders): mean((s - t)^2) over every element of the hidden states.
"""

from __future__ import annotations

LOSSES = ("kl", "mse")


def torch_loss(kind: str, temperature: float = 1.0):
    import torch.nn.functional as F

    def kl(s, t):
        T = temperature
        ls = F.log_softmax(s.float() / T, dim=-1)
        lt = F.log_softmax(t.float() / T, dim=-1)
        return (lt.exp() * (lt - ls)).sum(-1).mean() * T * T

    def mse(s, t):
        return ((s.float() - t.float()) ** 2).mean()

    return {"kl": kl, "mse": mse}[kind]


def jax_loss(kind: str, temperature: float = 1.0):
    import jax
    import jax.numpy as jnp

    def kl(s, t):
        T = temperature
        ls = jax.nn.log_softmax(s.astype(jnp.float32) / T, axis=-1)
        lt = jax.nn.log_softmax(t.astype(jnp.float32) / T, axis=-1)
        return (jnp.exp(lt) * (lt - ls)).sum(-1).mean() * T * T

    def mse(s, t):
        return ((s.astype(jnp.float32) - t.astype(jnp.float32)) ** 2).mean()

    return {"kl": kl, "mse": mse}[kind]
