"""LLM decode speed on CPU: one new token over a 256-token static KV cache, SmolLM2-135M (fp32 model).

    python benchmarks/decode.py [--threads 2] [--reps 20] [--gen 128] [--ppl-windows 4] [--write]

The step users run when generating: ``model(input_ids=[[tok]], past_key_values=StaticCache)`` with
256 tokens already cached, through ``torch.compile(model, backend=..., dynamic=False)``. Rows, timed
interleaved round-robin in one run (median of ``--reps``), each as a ratio to fp32 eager:

- fp32 eager, Inductor (fp32), pared with no recipe;
- pared int4 g64 (``quantize{weights=uint4,group=64}``), int8 weight-only, W8A8 dynamic, fp8, on
  pared's torch lowering, and (``+ inductor``) handed to Inductor after it (``inductor=True``);
  a ``+ inductor`` row shows its twin's perplexity (the same kernels; not computed twice);
- pared 2:4 + int4 g64 and 2:4 + int8 weight-only (magnitude masks), where pared's sparse CPU
  kernels compete with the dense-quantized ones;
- torchao int4 g64 (model cast to bf16), int8 weight-only and int8 dynamic, each + torch.compile,
  when torchao imports.

Per row also: the first call's wall time (capture + compression + lowering + compile), tokens/s
generating ``--gen`` tokens greedily from a 256-token prompt (the compiled model for the 256-token
prefill, then one decode step per token), and perplexity on the quality benchmark's Wikipedia
windows (``--ppl-windows`` x 512 tokens; the same recipe through the same backend). For int4 the
perplexity is also given with the speed choices off (``use_kernels("dense")``: the recipe's own
numerics, fp32 activations), which is what "within 1% of the same recipe" compares against.
``kernels``: the cost model's per-layer choices in the decode-step graph of each pared row (the
generation and perplexity graphs are compiled separately and may choose differently).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PROMPT = 256
SPARSE_24 = "sparsify{method=magnitude,pattern=2:4}"
PARED_ROWS = {
    "pared, no recipe": (None, False),
    "pared int4 g64": ("quantize{weights=uint4,group=64}", False),
    "pared int4 g64 + inductor": ("quantize{weights=uint4,group=64}", True),
    "pared int8 weight-only": ("quantize{weights=int8}", False),
    "pared int8 weight-only + inductor": ("quantize{weights=int8}", True),
    "pared W8A8 dynamic": ("w8a8", False),
    "pared W8A8 dynamic + inductor": ("w8a8", True),
    "pared fp8": ("fp8", False),
    # sparse + quantized (magnitude 2:4 masks: a speed row, not a quality one); pared's sparse CPU
    # kernels compete with the dense-quantized ones layer by layer and as a whole graph
    "pared 2:4 + int4 g64": (f"{SPARSE_24},quantize{{weights=uint4,group=64}}", False),
    "pared 2:4 + int4 g64 + inductor": (f"{SPARSE_24},quantize{{weights=uint4,group=64}}", True),
    "pared 2:4 + int8 weight-only + inductor": (f"{SPARSE_24},quantize{{weights=int8}}", True),
}
INT4 = "pared int4 g64"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Step:
    """One decode step of ``model`` at position PROMPT over its own static cache (prefilled once).

    The cache counts its own length; every call resets it to PROMPT first (outside the timing), so
    repeated calls run the same step and write the same cache slot.
    """

    def __init__(self, model, fn, ids):
        import torch
        from transformers import StaticCache

        self.fn = fn
        self.cache = StaticCache(config=model.config, max_cache_len=PROMPT + 1)
        with torch.no_grad():
            model(input_ids=ids, past_key_values=self.cache, use_cache=True)  # eager prefill
        self.tok = ids[:, -1:].clone()
        self.pos = torch.tensor([PROMPT])

    def reset(self) -> None:
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(PROMPT)

    def __call__(self):
        return self.fn(input_ids=self.tok, cache_position=self.pos, past_key_values=self.cache, use_cache=True).logits


def generate_tps(model, fn, ids, n: int) -> float:
    """Greedy tokens/s of ``fn`` generating ``n`` tokens after a PROMPT-token prefill (decode part only)."""
    import torch
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=PROMPT + n + 1)
    with torch.no_grad():
        logits = fn(input_ids=ids, past_key_values=cache, use_cache=True).logits
        tok = logits[:, -1:].argmax(-1)
        # the first decode step compiles for this cache's length: not part of the tokens/s
        logits = fn(input_ids=tok, cache_position=torch.tensor([PROMPT]), past_key_values=cache, use_cache=True).logits
        tok = logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for k in range(1, n):
            logits = fn(input_ids=tok, cache_position=torch.tensor([PROMPT + k]), past_key_values=cache,
                        use_cache=True).logits
            tok = logits[:, -1:].argmax(-1)
    return (n - 1) / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--gen", type=int, default=128, help="tokens generated for the tokens/s column (0: skip)")
    ap.add_argument("--ppl-windows", type=int, default=4, help="512-token windows for perplexity (0: skip)")
    ap.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    ap.add_argument("--write", action="store_true", help="replace the decode section of RESULTS.md")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    torch._dynamo.config.cache_size_limit = 64
    warnings.filterwarnings("ignore")
    from quality import load_smollm2, perplexity, smollm2_data
    from results import write_section

    import pared

    base_model, tok = load_smollm2()
    base_model.eval()
    torch.manual_seed(0)
    evals = smollm2_data(tok, n_eval=max(args.ppl_windows, 1), n_cal=1)[0][: args.ppl_windows]
    prompt = evals[0][:, :PROMPT] if evals else torch.randint(0, base_model.config.vocab_size, (1, PROMPT))
    want = set(args.rows.split(",")) if args.rows else None

    rows = {}  # name -> dict(step=Step, first=s, kernels=..., ppl=..., model=...)

    def add(name, model, fn):
        if want is not None and name not in want:
            return
        print(f"{name}: compiling ...", flush=True)
        t0 = time.perf_counter()
        step = Step(model, fn, prompt.clone())
        step.reset()
        with torch.no_grad():
            step()
        rows[name] = dict(step=step, first=time.perf_counter() - t0, model=model, fn=fn, kernels=None)

    add("fp32 eager", base_model, base_model)
    add("Inductor (fp32)", base_model, torch.compile(base_model, dynamic=False))
    backends = {}
    for name, (recipe, inductor) in PARED_ROWS.items():
        be = pared.backend(recipe=recipe, inductor=inductor)
        backends[name] = be
        add(name, base_model, torch.compile(base_model, backend=be, dynamic=False))
        if name in rows:  # the cost model's decisions, from the report of every graph compiled
            counts: dict[str, int] = {}
            for r in be.report.for_pass("cost_model"):
                if "kernel" in r.fields:
                    counts[r.fields["kernel"]] = counts.get(r.fields["kernel"], 0) + 1
            rows[name]["kernels"] = counts or None
            rows[name]["report"] = be.report
    ao = torchao_models(load_smollm2, want)
    for name, (model, fn) in ao.items():
        add(name, model, fn)

    names = list(rows)
    times = {n: [] for n in names}
    with torch.no_grad():
        for _ in range(args.reps):
            for n in names:
                s = rows[n]["step"]
                s.reset()
                t0 = time.perf_counter()
                s()
                times[n].append(time.perf_counter() - t0)
    for n in names:
        rows[n]["ms"] = float(np.median(times[n])) * 1e3
    base_ms = rows["fp32 eager"]["ms"] if "fp32 eager" in rows else None

    for n in names:
        r = rows[n]
        if args.gen:
            r["tps"] = generate_tps(r["model"], r["fn"], prompt.clone(), args.gen)
        twin = rows.get(n[: -len(" + inductor")]) if n.endswith(" + inductor") else None
        if args.ppl_windows and twin is not None and "ppl" in twin:
            r["ppl"] = twin["ppl"]  # the same recipe: Inductor only fuses around the same kernels
        elif args.ppl_windows:
            r["ppl"] = perplexity(lambda w, f=r["fn"]: f(input_ids=w, use_cache=False).logits, evals)
        print(f"{n:40s} {r['ms']:8.2f} ms  first {r['first']:6.1f} s  "
              f"{r.get('tps', float('nan')):6.1f} tok/s  ppl {r.get('ppl', float('nan')):.3f}", flush=True)
    int4 = INT4
    if args.ppl_windows and int4 in rows:
        from pared.backends.costmodel.policy import use_kernels

        with use_kernels("dense"):
            f = torch.compile(base_model, backend=pared.backend(recipe=PARED_ROWS[int4][0]), dynamic=False)
            rows[int4]["ppl_exact"] = perplexity(lambda w: f(input_ids=w, use_cache=False).logits, evals)

    text = markdown(rows, base_ms, args)
    print(text)
    if args.write:
        write_section("decode", text)


def torchao_models(load, want) -> dict:
    """name -> (model, torch.compile'd model) for torchao's CPU recipes, when torchao imports."""
    try:
        import torch
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            IntxWeightOnlyConfig,
            PerGroup,
            quantize_,
        )
    except Exception as e:  # not installed, or built for another torch
        print(f"torchao unavailable: {type(e).__name__}: {e}")
        return {}
    cases = [
        ("torchao int4 g64 (bf16) + compile", IntxWeightOnlyConfig,
         dict(weight_dtype=torch.int4, granularity=PerGroup(64)), torch.bfloat16),
        ("torchao int8 weight-only + compile", Int8WeightOnlyConfig, {}, None),
        ("torchao int8 dynamic + compile", Int8DynamicActivationInt8WeightConfig, {}, None),
    ]
    out = {}
    for name, cls, kw, dtype in cases:
        if want is not None and name not in want:
            continue
        try:
            m = load()[0].eval()
            if dtype is not None:
                m = m.to(dtype)
            quantize_(m, cls(**kw))
            out[name] = (m, torch.compile(m, dynamic=False))
        except Exception as e:
            print(f"{name}: failed ({type(e).__name__}: {e})")
    return out


def markdown(rows, base_ms, args) -> str:
    import torch

    flags = []
    try:
        info = Path("/proc/cpuinfo").read_text()
        flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
                 if f" {f}" in info]
    except OSError:
        pass
    lines = [
        "## decode",
        "",
        "`python benchmarks/decode.py` (rows: `--rows`; `--write` replaces this section). Ratios are to fp32",
        "eager in the same run; the first call includes capture, compression, lowering and compilation.",
        "",
        f"- date {datetime.date.today()}; {cpu_model()} ({', '.join(flags)}), {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}; median of {args.reps} interleaved steps",
        f"- step: 1 new token over a {PROMPT}-token StaticCache, SmolLM2-135M fp32, "
        "`torch.compile(model, backend=..., dynamic=False)`",
        f"- tok/s: greedy generation of {args.gen} tokens after a {PROMPT}-token prompt; ppl: "
        f"{args.ppl_windows} x 512-token Wikipedia windows (the quality benchmark's)",
        "",
        "| row | step ms | vs fp32 eager | first call s | tok/s | ppl | kernels |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, r in rows.items():
        ratio = f"{base_ms / r['ms']:.2f}x" if base_ms else "-"
        ppl = f"{r['ppl']:.3f}" if "ppl" in r else "-"
        if "ppl_exact" in r:
            ppl += f" (exact kernels: {r['ppl_exact']:.3f})"
        tps = f"{r['tps']:.1f}" if "tps" in r else "-"
        kern = ", ".join(f"{k} {v}" for k, v in sorted((r.get("kernels") or {}).items())) or "-"
        lines.append(f"| {n} | {r['ms']:.2f} | **{ratio}** | {r['first']:.1f} | {tps} | {ppl} | {kern} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
