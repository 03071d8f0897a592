"""Small torch models for the frontend/backend tests: each builder returns (model, example_args).

Tiny random configs keep the whole zoo under a few seconds on two CPU cores.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in=16, hidden=32, d_out=8):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden, bias=False)
        self.fc3 = nn.Linear(hidden, d_out)

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = nn.functional.gelu(self.fc2(x))
        return self.fc3(x)


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class CNN(nn.Module):
    """conv / batchnorm / max-pool / residual / global average pool / linear head."""

    def __init__(self, c=8, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, stride=1, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.pool = nn.MaxPool2d(2)
        self.block = ResBlock(c)
        self.avg = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.stem(x))))
        x = self.avg(self.block(x))
        return self.head(torch.flatten(self.gap(x), 1))


class TransformerBlock(nn.Module):
    """Pre-norm attention (explicit matmul/softmax and SDPA) + MLP."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / (d // self.heads) ** 0.5
        mask = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
        a = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
        a = a + nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, d))
        return x + self.mlp(self.ln2(x))


def mlp():
    torch.manual_seed(0)
    return MLP().eval(), (torch.randn(4, 16),)


def cnn():
    torch.manual_seed(0)
    m = CNN().eval()
    for mod in m.modules():  # non-trivial batchnorm statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
    return m, (torch.randn(2, 3, 16, 16),)


def transformer_block():
    torch.manual_seed(0)
    return TransformerBlock().eval(), (torch.randn(2, 8, 32),)


def _ids(vocab, batch=2, seq=8):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (batch, seq), generator=g)


def hf_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    m = BertModel(cfg).eval()
    ids = _ids(100)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    return m, (ids, mask)


def hf_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    m = LlamaForCausalLM(cfg).eval()
    m.config.use_cache = False
    return m, (_ids(100),)


def hf_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    m = GPT2LMHeadModel(cfg).eval()
    m.config.use_cache = False
    return m, (_ids(100),)


ZOO = {
    "mlp": mlp,
    "cnn": cnn,
    "transformer_block": transformer_block,
    "hf_bert": hf_bert,
    "hf_llama": hf_llama,
    "hf_gpt2": hf_gpt2,
}


# -- causal LMs as a new user builds them: default config (the KV cache on), tiny and seeded -----

_LM = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
CAUSAL_LM_VOCAB = 128

CAUSAL_LMS = {  # name -> (config class, model class, config kwargs); all from transformers
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(_LM, num_key_value_heads=2)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(_LM, num_key_value_heads=2, sliding_window=4)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(_LM, num_key_value_heads=2)),
    "phi": ("PhiConfig", "PhiForCausalLM", dict(_LM, partial_rotary_factor=0.5)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(_LM, num_key_value_heads=1, head_dim=8)),
    "opt": ("OPTConfig", "OPTForCausalLM", dict(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                                                max_position_embeddings=64, word_embed_proj_dim=32)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(_LM, rotary_pct=0.5)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                   bos_token_id=0, eos_token_id=0)),
}


def causal_lm(name: str):
    """A tiny random causal LM from ``CAUSAL_LMS`` and a (2, 8) batch of token ids."""
    import transformers

    config_cls, model_cls, kw = CAUSAL_LMS[name]
    torch.manual_seed(0)
    cfg = getattr(transformers, config_cls)(vocab_size=CAUSAL_LM_VOCAB, **kw)
    return getattr(transformers, model_cls)(cfg).eval(), (_ids(CAUSAL_LM_VOCAB),)
