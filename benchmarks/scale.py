"""Out-of-core compression at scale: peak RSS and wall time of ``pared compress --max-memory``.

Writes a random-weight Llama (bf16 safetensors shards + config.json + SmolLM2's tokenizer) shard
by shard, never whole in memory (:mod:`pared.tools.synthetic_llama`), then runs ``pared compress``
on it in a subprocess for each recipe under the budget, and prints a markdown table: model size,
recipe, peak RSS of the child (``os.wait4``'s ``ru_maxrss``), wall time, the plan's streamed peak.

    python benchmarks/scale.py --size 1.7b --workdir /tmp/pared-scale --budget 4G
    python benchmarks/scale.py --size 0.5b          # smaller, for a quick run

No quality is measured (out-of-core results are not run; docs/out_of_core.md).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

# SmolLM2-1.7B's architecture (1.71e9 parameters, tied embeddings) and a ~0.5B one
SIZES = {
    "1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                 num_key_value_heads=32),
    "0.5b": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=16),
    "0.1b": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
                 num_key_value_heads=4),
}
# the papers' solvers (no MSE clipping search, no refit rounds: those multiply the solve time on
# 2 cores); the tied LM head (the embedding's Param) stays float
RECIPES = {
    "SparseGPT 2:4": "sparsify{method=sparsegpt,pattern=2:4,refit=false}",
    "GPTQ int4 g128": "gptq{weights=int4,group=128,observer=minmax,refit=none,ignore=(embed_tokens)}",
}


def run(args: list[str], log: Path) -> tuple[int, float, int, str]:
    """(exit code, wall seconds, peak RSS bytes of the child, its stderr) of ``pared ARGS``."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, "-m", "pared.tools.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _, status, usage = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t0, usage.ru_maxrss * 1024, log.read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="1.7b")
    ap.add_argument("--workdir", default="/tmp/pared-scale")
    ap.add_argument("--budget", default="4G", help="--max-memory of each run")
    ap.add_argument("--n-calib", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--calib", default="wikipedia")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names of RECIPES")
    a = ap.parse_args()

    from pared.tools.synthetic_llama import llama_config, parameter_count, write_llama

    work = Path(a.workdir)
    folder = work / f"llama-{a.size}"
    cfg = llama_config(**SIZES[a.size])
    n_params = parameter_count(cfg)
    if not (folder / "config.json").is_file():
        t0 = time.perf_counter()
        write_llama(folder, cfg)
        print(f"wrote {folder} ({n_params / 1e9:.2f}e9 parameters) in {time.perf_counter() - t0:.0f} s", flush=True)
    disk = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    rows = []
    for name in a.recipes.split(","):
        out = work / f"out-{a.size}-{re.sub(r'[^a-z0-9]+', '-', name.lower())}"
        args = ["compress", str(folder), "--recipe", RECIPES[name], "--calib", a.calib, "--n-calib", str(a.n_calib),
                "--seq-len", str(a.seq_len), "--out", str(out), "--overwrite", "--max-memory", a.budget, "--no-eval"]
        rc, secs, rss, text = run(args, work / f"{out.name}.log")
        m = re.search(r"streamed \(weights read at their layer, released after it\): peak ([0-9.]+ MiB)", text)
        e = re.search(r"an expected peak RSS of ([0-9.]+ MiB)", text)
        rows.append((name, rc, secs, rss, m.group(1) if m else "?", e.group(1) if e else "?"))
        print(f"{name}: rc={rc} {secs:.0f} s, peak RSS {rss / 2**30:.2f} GiB (log {work / (out.name + '.log')})",
              flush=True)
    print(f"\n{n_params / 1e9:.2f}e9-parameter Llama ({disk / 2**30:.2f} GiB bf16 on disk, "
          f"{4 * n_params / 2**30:.2f} GiB as f32), {a.n_calib} x {a.seq_len} tokens of {a.calib!r}, "
          f"--max-memory {a.budget}, {os.cpu_count()} CPU cores\n")
    print("| recipe | exit | wall time | peak RSS | plan's streamed peak | plan's expected peak RSS |")
    print("|---|---|---|---|---|---|")
    for name, rc, secs, rss, plan, expect in rows:
        print(f"| {name} | {rc} | {secs / 60:.1f} min | {rss / 2**30:.2f} GiB | {plan} | {expect} |")


if __name__ == "__main__":
    main()
