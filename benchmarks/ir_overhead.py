"""IR overhead: build, verify, print, parse and cleanup cost on synthetic graphs.

A transformer-shaped graph (per block: 4 linears on named params, residual adds, a reshape
pair, a duplicated subexpression for CSE and a dead branch for DCE) is scaled to ~2,000 and
~20,000 and ~60,000 equations (a SmolLM2-sized graph has ~2,100). Prints per-equation cost and the
20k/2k ratio of per-equation cost (1.0 = linear), once as a user sees it and once with Python's
cyclic GC paused (its full collections rescan every live object, which adds a size-dependent
term that is not the IR's own), and replaces the ir_overhead section of RESULTS.md (the old one
goes to benchmarks/history/).

    python benchmarks/ir_overhead.py [--sizes 2000 20000] [--repeat 3] [--no-write]
"""

from __future__ import annotations

import argparse
import gc
import platform
import time
from datetime import date

import numpy as np

import pared.ir as I
from pared.compiler.pass_manager import PassManager
from pared.compiler.pipeline import parse_pipeline
from pared.passes.context import PassContext

EQNS_PER_BLOCK = 15


def synthetic_graph(n_eqns: int, width: int = 64) -> I.Graph:
    b = I.GraphBuilder()
    x = b.input(["B", width])
    h = x
    rng = np.random.default_rng(0)
    w = rng.standard_normal((width, width)).astype(np.float32)
    for blk in range(max(1, n_eqns // EQNS_PER_BLOCK)):
        ws = [b.param(f"layers.{blk}.{n}.weight", w) for n in ("q", "k", "v", "o")]
        q = b.dot_general(h, ws[0], contract=((1,), (1,)))
        k = b.dot_general(h, ws[1], contract=((1,), (1,)))
        v = b.dot_general(h, ws[2], contract=((1,), (1,)))
        s1 = b.mul(q, k)
        s2 = b.mul(q, k)  # duplicate: CSE merges it with s1
        t = b.add(s1, s2)
        r = b.reshape(t, shape=(I.sym("B"), 8, width // 8))
        r = b.reshape(r, shape=(I.sym("B"), width))
        u = b.add(r, v)
        dead = b.mul(u, 3.0)  # dead branch: DCE removes it
        b.add(dead, 1.0)
        o = b.dot_general(u, ws[3], contract=((1,), (1,)))
        o = b.mul(o, 0.125)
        o = b.sub(o, 0.0)
        h = b.add(h, o)
    return b.build(h)


def _time(fn, repeat: int, gc_paused: bool = False):
    best, out = float("inf"), None
    for _ in range(repeat):
        out = None
        gc.collect()
        if gc_paused:
            gc.disable()
        try:
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        finally:
            gc.enable()
    return best, out


def measure(n: int, repeat: int, gc_paused: bool = False) -> dict[str, float]:
    def timed(fn):
        return _time(fn, repeat, gc_paused)

    t_build, g = timed(lambda: synthetic_graph(n))
    n_eqns = len(g.eqns)
    t_verify, _ = timed(lambda: I.verify(g))
    t_print, text = timed(lambda: I.print_graph(g))
    t_parse, _ = timed(lambda: I.parse(text))
    dce_cse = PassManager(parse_pipeline("cse,dce"), verify=False, timing=False, dump_ir=False)
    t_dce_cse, small = timed(lambda: dce_cse.run(g, PassContext()))
    cleanup = PassManager(parse_pipeline("cleanup"), verify=False, timing=False, dump_ir=False)
    t_cleanup, cleaned = timed(lambda: cleanup.run(g, PassContext()))
    return {
        "eqns": n_eqns,
        "after_cleanup": len(cleaned.eqns),
        "build": t_build,
        "verify": t_verify,
        "print": t_print,
        "parse": t_parse,
        "dce+cse": t_dce_cse,
        "cleanup": t_cleanup,
    }


STAGES = ("build", "verify", "print", "parse", "dce+cse", "cleanup")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 60000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not write to benchmarks/RESULTS.md")
    args = ap.parse_args()
    lines = []
    for gc_paused in (False, True):
        rows = [measure(n, args.repeat, gc_paused) for n in args.sizes]
        lines.append(
            "Python's cyclic GC " + ("paused (the algorithmic cost)" if gc_paused else "on (what a user sees)")
        )
        lines.append(f"{'eqns':>7} {'->':>6} " + " ".join(f"{s:>16}" for s in STAGES))
        for r in rows:
            cells = " ".join(f"{r[s] * 1e3:8.1f}ms {r[s] / r['eqns'] * 1e6:4.0f}us" for s in STAGES)
            lines.append(f"{r['eqns']:>7} {r['after_cleanup']:>6} {cells}")
        for a, z in zip(rows, rows[1:]):
            ratio = " ".join(f"{s}={(z[s] / z['eqns']) / (a[s] / a['eqns']):.2f}" for s in STAGES)
            lines.append(f"per-equation cost ratio {z['eqns']}/{a['eqns']} eqns (1.00 = linear): {ratio}")
        target = next((r for r in rows if abs(r["eqns"] - 2000) <= 100), None)
        if target and not gc_paused:
            ok = "meets" if target["cleanup"] < 0.5 else "MISSES"
            lines.append(
                f"cleanup pipeline on {target['eqns']} eqns: {target['cleanup'] * 1e3:.0f} ms ({ok} the 0.5 s target)"
            )
        lines.append("")
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        cpu = platform.processor() or platform.machine()
        section = (
            f"## ir_overhead\n\n{date.today()}, {cpu}, Python {platform.python_version()}, best of {args.repeat}.\n\n"
            f"`python benchmarks/ir_overhead.py` — time per stage, total and per equation.\n\n```\n{report}\n```\n"
        )
        from results import write_section

        write_section("ir_overhead", section)


if __name__ == "__main__":
    main()
