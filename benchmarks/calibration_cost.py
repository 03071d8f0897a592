"""Calibration cost: SparseGPT over every SmolLM2-135M linear (210 sites) with 32 x 512 tokens.

Measures the wall time of ``pared.compress`` with ``sparsify{method=sparsegpt}`` (export, the
calibration engine, lowering) and the peak resident memory of the process, sampled every 50 ms.

    python benchmarks/calibration_cost.py [--n-cal 32] [--seq 512] [--recipe ...] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class PeakRSS:
    def __init__(self):
        self.peak = rss_mib()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mib())

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-cal", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--recipe", default="sparsify{method=sparsegpt,sparsity=0.5}")
    ap.add_argument(
        "--write", action="store_true", help="replace the calibration_cost section of benchmarks/RESULTS.md"
    )
    args = ap.parse_args(argv)

    from quality import _Logits, load_smollm2, machine, smollm2_data

    import pared
    import pared.passes.sparsify  # noqa: F401

    model, tok = load_smollm2()
    lm = _Logits(model)
    evals, cal, _ = smollm2_data(tok, n_cal=args.n_cal, seq=args.seq)
    base = rss_mib()
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        cm, report = pared.compress(lm, (evals[0],), recipe=args.recipe, calibration=cal)
        wall = time.perf_counter() - t0
    rows = [r for r in report.for_pass("sparsify") if "error" in r.fields]
    text = (
        f"## calibration_cost\n\n`{args.recipe}` on SmolLM2-135M.\n\n"
        f"- date {datetime.date.today().isoformat()}; {machine()}\n"
        f"- {len(rows)} linears rewritten; calibration {args.n_cal} x {args.seq} tokens\n"
        f"- wall {wall:.1f} s (export + calibration engine + lowering; target < 600 s); "
        f"peak RSS {peak.peak:.0f} MiB (model + data before: {base:.0f} MiB)\n"
    )
    print(text)
    if args.write:
        from results import write_section

        write_section("calibration_cost", text)


if __name__ == "__main__":
    main()
