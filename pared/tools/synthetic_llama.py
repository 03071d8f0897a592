"""A random-weight Llama checkpoint of any size, written shard by shard (never whole in memory).

For the out-of-core benchmark and tests (benchmarks/scale.py, tests/compiler/test_out_of_core.py):
the config's parameter shapes come from a model built on the meta device, each tensor is drawn
with numpy (normal, std 0.02; norms 1), stored as bf16 in safetensors shards of about
``shard_bytes`` with a ``model.safetensors.index.json``, next to ``config.json`` and SmolLM2's
tokenizer files (vocab 49152), so ``pared compress FOLDER`` can calibrate on text.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from . import safetensors_io as st


def llama_config(**overrides: Any) -> Any:
    """A LlamaConfig with SmolLM2's vocabulary and tied embeddings, fields from ``overrides``."""
    import transformers

    kw = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=9,
              num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=2048, rms_norm_eps=1e-5,
              bos_token_id=1, eos_token_id=2, architectures=["LlamaForCausalLM"], dtype="bfloat16")
    kw.update(overrides)
    return transformers.LlamaConfig(**kw)


def parameter_count(config: Any) -> int:
    import torch
    import transformers

    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def _bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16, round to nearest even), as ml_dtypes' bfloat16 array."""
    import ml_dtypes

    u = a.astype(np.float32, copy=False).view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16).view(ml_dtypes.bfloat16)


def write_llama(folder: Path, config: Any, *, seed: int = 0, shard_bytes: int = 1 << 30) -> Path:
    """Write ``config``'s model with random bf16 weights into ``folder`` (created); returns it."""
    import torch
    import transformers

    from .models import smollm2_fp32_dir

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]  # tied weights listed once
    del model
    rng = np.random.default_rng(seed)
    pool = _bf16(rng.standard_normal(1 << 24, dtype=np.float32) * 0.02)  # drawn once: writing stays fast
    shards: list[list[tuple[str, tuple]]] = [[]]
    size = 0
    for name, shape in shapes:
        n = 2 * int(np.prod(shape))
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += n
    weight_map = {}
    for k, group in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        with st.StreamWriter(folder / fname, metadata={"format": "pt"}) as w:
            for name, shape in group:
                if name.endswith("norm.weight"):
                    a = _bf16(np.ones(shape, np.float32))
                else:  # a random window of the pool, repeated to the tensor's size
                    a = np.resize(np.roll(pool, -int(rng.integers(pool.size))), shape)
                w.add(name, a)
                del a
                weight_map[name] = fname
    total = sum(2 * int(np.prod(s)) for _, s in shapes)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    config.save_pretrained(folder)
    tok = smollm2_fp32_dir()
    for f in tok.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copy2(f, folder / f.name)
    return folder
