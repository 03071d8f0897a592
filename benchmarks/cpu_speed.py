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


def _cfi_mask(rng, n, k, density):
    """Constant fan-in: every output row keeps round(k * density) weights (SRigL's layout)."""
    keep = int(round(k * density))
    mask = np.zeros((n, k), bool)
    np.put_along_axis(mask, np.argsort(-rng.random((n, k)), axis=1)[:, :keep], True, 1)
    return mask


def _nm_mask(rng, n, k, keep=2, m=4):
    s = rng.random((n, k // m, m))
    mask = np.zeros_like(s, bool)
    np.put_along_axis(mask, np.argsort(-s, axis=-1)[..., :keep], True, -1)
    return mask.reshape(n, k)


# MiniLM's linears (q/k/v/o: 384x384, FFN up 1536x384, FFN down 384x1536)
LAYER_SHAPES = ((384, 384), (1536, 384), (384, 1536))


def layer_rows(reps: int) -> list:
    """One MiniLM linear at a time, M = 1 and 128: dense fp32 F.linear (the baseline) and pared's
    dense int8 (W8A8 ``int_mm``, as the torch backend lowers it) against pared's sparse kernels,
    interleaved. Ratios: vs dense fp32, and the int8 rows also vs pared's dense int8."""
    import torch
    import torch.nn.functional as F

    from pared.backends.cpu.formats import pack_ell, pack_nm8
    from pared.backends.cpu.kernels import SparseLinear
    from pared.backends.torch.quantized import int8_dynamic_linear

    rng = np.random.default_rng(0)
    rows = []
    for n, k in LAYER_SHAPES:
        w = rng.standard_normal((n, k)).astype(np.float32)
        wt = torch.from_numpy(w)
        fns = {"dense fp32 (F.linear)": lambda x, wt=wt: F.linear(x, wt)}
        for name, mask in (("90% constant fan-in fp32", _cfi_mask(rng, n, k, 0.1)),
                           ("80% constant fan-in fp32", _cfi_mask(rng, n, k, 0.2)),
                           ("2:4 fp32", _nm_mask(rng, n, k))):
            fns[name] = SparseLinear(pack_ell(w * mask))
        q = np.clip(np.round(w / np.abs(w).max(1, keepdims=True) * 127), -127, 127).astype(np.int8)
        s = (np.abs(w).max(1, keepdims=True) / 127).astype(np.float32)
        qd = torch.from_numpy(np.ascontiguousarray(q.T))
        sd = torch.from_numpy(s.reshape(1, -1))
        fns["pared dense int8 (w8a8 int_mm)"] = lambda x, qd=qd, sd=sd: int8_dynamic_linear(x, qd, sd)
        for name, mask in (("2:4 + int8 (w8a8)", _nm_mask(rng, n, k)),
                           ("80% fan-in + int8 (w8a8)", _cfi_mask(rng, n, k, 0.2)),
                           ("90% fan-in + int8 (w8a8)", _cfi_mask(rng, n, k, 0.1))):
            qm = (q * mask).astype(np.int8)
            nm8 = pack_nm8(qm, s) if name.startswith("2:4") else None
            fns[name] = SparseLinear(nm8) if nm8 is not None else SparseLinear(
                pack_ell(qm * s, vtype="i8", q=qm, scales=s), act="dynamic")
        for m in (1, 128):
            x = torch.randn(m, k)
            ok = {}
            for key, f in fns.items():
                if "int_mm" in key and m <= 16:  # torch._int_mm needs M > 16 on CPU
                    continue
                ok[key] = (lambda f=f, x=x: f(x))
            t = timeit_rows(ok, lambda: (), reps)
            base, q8 = t["dense fp32 (F.linear)"], t.get("pared dense int8 (w8a8 int_mm)")
            for key, v in t.items():
                vs_q = f"{q8 / v:.2f}x" if q8 is not None and "int8" in key else ""
                rows.append((f"linear {n}x{k} M={m}", key, v * 1e3, base / v, vs_q))
                print(f"linear {n}x{k} M={m:<4d} {key:34s} {v * 1e6:9.1f} us  {base / v:5.2f}x  {vs_q}", flush=True)
    return rows


# sparse rows (magnitude masks: the speed of a pattern does not depend on which weights it keeps)
SPARSE_RECIPES = {
    "pared 2:4": "sparsify{method=magnitude,pattern=2:4}",
    "pared 2:4 + w8a8": "sparsify{method=magnitude,pattern=2:4},w8a8",
    "pared 80% constant fan-in": "sparsify{method=magnitude,sparsity=0.8,granularity=row}",
    "pared 80% constant fan-in + w8a8": "sparsify{method=magnitude,sparsity=0.8,granularity=row},w8a8",
    "pared 90% constant fan-in": "sparsify{method=magnitude,sparsity=0.9,granularity=row}",
    "pared 90% constant fan-in + w8a8": "sparsify{method=magnitude,sparsity=0.9,granularity=row},w8a8",
    "pared 80% unstructured + w8a8": "sparsify{method=magnitude,sparsity=0.8},w8a8",
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", choices=("minilm", "smollm2", "layers", "sparse"), default=None,
                    help="one part: minilm, smollm2, layers (sparse kernels per MiniLM linear), sparse (MiniLM, "
                         "sparse recipes only)")
    ap.add_argument("--no-torchao", action="store_true")
    ap.add_argument("--write", action="store_true",
                    help="replace the measured models' parts of the cpu_speed section of benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from quality import _embedder, _Logits, load_minilm, load_smollm2

    rows = []
    if args.only == "layers":
        rows += layer_rows(args.reps * 5)
    if args.only == "sparse":
        factory = lambda: _embedder(load_minilm()[0])
        sparse = {"pared dense": None, "pared w8a8 dynamic": "w8a8", **SPARSE_RECIPES}
        for b in (1, 32):
            ids = torch.randint(1000, 20000, (b, 128))
            rows += run_case(f"MiniLM b{b}x128", factory, (ids, torch.ones_like(ids)), sparse, args.reps, False)
    if args.only in (None, "minilm"):
        recipes = {
            "pared dense": None,
            "pared w8a8 dynamic": "w8a8",
            "pared w8a8 dynamic + inductor": "w8a8",
            "pared int8 weight-only (bf16 act)": "quantize{weights=int8,act_dtype=bf16}",
            "pared int4 g128 weight-only (bf16 act)": "quantize{weights=int4,group=128,act_dtype=bf16}",
        }
        recipes.update(SPARSE_RECIPES)
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
PARTS = {"MiniLM": "MiniLM ", "SmolLM2 decode step": "SmolLM2 decode step",
         "Sparse kernels per MiniLM linear": "linear "}


def cpu_model() -> str:
    """The CPU's model name and the vector flags the kernels use (Linux /proc/cpuinfo)."""
    name, flags = platform.processor() or "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    want = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512vbmi", "avx512_bf16", "amx_int8")
    return f"{name}; flags: {' '.join(f for f in want if f in flags) or 'none of ' + '/'.join(want)}"


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
        head += f"- cpu: {cpu_model()}\n"
        if part.startswith("Sparse"):
            head += ("- one linear at a time (weights hot in cache), random weights and masks; ratios: dense fp32 "
                     "F.linear time / row time, and (int8 rows) pared's dense W8A8 int_mm time / row time\n\n"
                     "| layer, M | row | ms | vs dense fp32 | vs pared dense int8 |\n|---|---|---|---|---|\n")
            out[part] = head + "".join(f"| {c} | {r} | {ms:.4f} | {x:.2f}x | {k} |\n" for c, r, ms, x, k in mine)
            continue
        if part.startswith("SmolLM2"):
            head += "- one token with no KV cache: every weight is read once per token\n"
        head += ("- kernels: what the torch backend's measured cost model chose per quantized linear\n\n"
                 "| case | row | ms | speedup vs fp32 eager | kernels |\n|---|---|---|---|---|\n")
        out[part] = head + "".join(f"| {c} | {r} | {ms:.2f} | {x:.2f}x | {k} |\n" for c, r, ms, x, k in mine)
    return out


if __name__ == "__main__":
    main()
