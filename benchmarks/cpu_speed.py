"""CPU latency of quantized models: pared (torch backend, real int8/int4 kernels) vs fp32 eager.

    python benchmarks/cpu_speed.py [--threads 2] [--reps 20] [--write] [--only minilm|smollm2]

Cases: all-MiniLM-L6-v2 at batch 1 x 128 and 32 x 128 tokens; SmolLM2-135M at a decode-sized
step (1 token, no KV cache: every weight is read once per token, the memory-bound part of
decoding; the 256-token attention of a cached step is not included). Rows: fp32 eager (the
baseline, ratio 1.0), pared with no recipe (dense lowering), pared W8A8 dynamic, weight-only int8
and int4 (bf16 activations), and torchao's equivalents (+ torch.compile) when torchao imports.
Every ratio is baseline time / row time measured in the same run (median of ``reps``, rows
interleaved round-robin to share the machine's noise). The kernel counts show what the torch
backend's cost model picked for each quantized linear (``dense`` = kept dense, measured faster).
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


def timeit_rows(fns: dict, args_fn, reps: int) -> dict:
    import torch

    times = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():  # warm up (and compile)
            for _ in range(2):
                f(*args_fn())
        for _ in range(reps):
            for k, f in fns.items():
                a = args_fn()
                t0 = time.perf_counter()
                f(*a)
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def pared_rows(model, example, recipes: dict) -> tuple[dict, dict]:
    import pared
    import pared.backends.torch.quantized as Q
    import pared.passes.quantize  # noqa: F401  (registers the quantization passes)

    fns, kernels = {}, {}
    for name, recipe in recipes.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # "+ inductor" rows hand pared's lowered graph to Inductor (the counterpart of torchao + compile)
            try:
                cm, _ = pared.compress(model, example, recipe=recipe, inductor=name.endswith("+ inductor"))
            except Exception as e:  # a row that fails is reported, not fatal
                print(f"{name}: failed ({type(e).__name__}: {str(e)[:300]})")
                continue
        fns[name] = cm
        kernels[name] = Q.kernel_choices(cm.compiled.fn) if hasattr(cm.compiled.fn, "named_buffers") else {}
    return fns, kernels


def torchao_rows(model_factory, example, int4: bool = False) -> dict:
    try:
        import torch
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            IntxWeightOnlyConfig,
            PerGroup,
            quantize_,
        )
    except Exception as e:  # torchao not installed or incompatible
        print(f"torchao unavailable: {type(e).__name__}: {e}")
        return {}
    out = {}
    cases = [("torchao w8a8 dyn + compile", Int8DynamicActivationInt8WeightConfig, {}, None),
             ("torchao int8 weight-only + compile", Int8WeightOnlyConfig, {}, None)]
    if int4:  # int4 groups of 64 on a bf16 model (Inductor fuses the dequantization into the matmul)
        cases.append(("torchao int4 g64 weight-only (bf16) + compile", IntxWeightOnlyConfig,
                      dict(weight_dtype=torch.int4, granularity=PerGroup(64)), torch.bfloat16))
    for name, cls, kw, dtype in cases:
        try:
            cfg = cls(**kw)
            m = model_factory()
            if dtype is not None:
                m = m.to(dtype)
            quantize_(m, cfg)
            out[name] = torch.compile(m)
        except Exception as e:
            print(f"{name}: failed ({type(e).__name__}: {e})")
    return out


def run_case(title, factory, example, recipes, reps, ao=True, ao_int4=False):
    import torch

    base = factory()
    fns = {"fp32 eager": base}
    pfns, kernels = pared_rows(base, example, recipes)
    fns.update(pfns)
    if ao:
        fns.update(torchao_rows(factory, example, int4=ao_int4))
    ok = {}
    for k, f in fns.items():  # a row that fails is reported, not fatal
        try:
            with torch.no_grad():
                f(*example)
            ok[k] = f
        except Exception as e:
            print(f"{title} {k}: failed ({type(e).__name__}: {str(e)[:200]})")
    t = timeit_rows(ok, lambda: example, reps)
    rows = []
    for k, v in t.items():
        rows.append((title, k, v * 1e3, t["fp32 eager"] / v, kernels.get(k, "")))
        print(f"{title:22s} {k:36s} {v * 1e3:9.2f} ms  {t['fp32 eager'] / v:5.2f}x  {kernels.get(k, '')}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", choices=("minilm", "smollm2"), default=None)
    ap.add_argument("--no-torchao", action="store_true")
    ap.add_argument("--write", action="store_true",
                    help="replace the measured models' parts of the cpu_speed section of benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from quality import _embedder, _Logits, load_minilm, load_smollm2

    rows = []
    if args.only in (None, "minilm"):
        recipes = {
            "pared dense": None,
            "pared w8a8 dynamic": "w8a8",
            "pared w8a8 dynamic + inductor": "w8a8",
            "pared int8 weight-only (bf16 act)": "quantize{weights=int8,act_dtype=bf16}",
            "pared int4 g128 weight-only (bf16 act)": "quantize{weights=int4,group=128,act_dtype=bf16}",
        }
        factory = lambda: _embedder(load_minilm()[0])
        for b in (1, 32):
            ids = torch.randint(1000, 20000, (b, 128))
            ex = (ids, torch.ones_like(ids))
            rows += run_case(f"MiniLM b{b}x128", factory, ex, recipes, args.reps, not args.no_torchao)
    if args.only in (None, "smollm2"):
        recipes = {
            "pared dense": None,
            "pared int8 weight-only (bf16 act)": "quantize{weights=int8,act_dtype=bf16}",
            "pared int4 g64 weight-only (bf16 act)": "quantize{weights=uint4,group=64,act_dtype=bf16}",
            "pared int4 g64 weight-only (bf16 act) + inductor": "quantize{weights=uint4,group=64,act_dtype=bf16}",
            "pared w8a8 dynamic": "w8a8",
        }
        factory = lambda: _Logits(load_smollm2()[0])
        ex = (torch.randint(1000, 20000, (1, 1)),)
        rows += run_case("SmolLM2 decode step", factory, ex, recipes, args.reps, not args.no_torchao, ao_int4=True)
    parts = markdown(rows, args)
    for text in parts.values():
        print(text)
    if args.write:
        from results import write_section

        for part, text in parts.items():  # only the models this run measured are replaced
            write_section("cpu_speed", text, part=part)


# RESULTS.md's cpu_speed section has one part per model: its heading, and how to recognize its rows
PARTS = {"MiniLM": "MiniLM ", "SmolLM2 decode step": "SmolLM2 decode step"}


def markdown(rows, args) -> dict[str, str]:
    """One ``### <part>`` text per model measured, for RESULTS.md's cpu_speed section."""
    import torch

    out = {}
    for part, prefix in PARTS.items():
        mine = [r for r in rows if r[0].startswith(prefix)]
        if not mine:
            continue
        head = (f"### {part}\n\n- date {datetime.date.today().isoformat()}; "
                f"{platform.machine()} cpu ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores, "
                f"{args.threads} threads, torch {torch.__version__}; median of {args.reps} interleaved runs\n")
        if part.startswith("SmolLM2"):
            head += "- one token with no KV cache: every weight is read once per token\n"
        head += ("- kernels: what the torch backend's measured cost model chose per quantized linear\n\n"
                 "| case | row | ms | speedup vs fp32 eager | kernels |\n|---|---|---|---|---|\n")
        out[part] = head + "".join(f"| {c} | {r} | {ms:.2f} | {x:.2f}x | {k} |\n" for c, r, ms, x, k in mine)
    return out


if __name__ == "__main__":
    main()
