"""pared's JAX overhead on the Flax BERT (all-MiniLM-L6-v2 weights): trace + import + lowering
time, and the run-time ratio of ``pared.compress``'s function (empty recipe) to the original
``jax.jit`` function, measured in the same run. Target: ratio within 1.1x.

    python benchmarks/jax_overhead.py [--batch 8 --seq 128 --iters 50] [--no-write]

Replaces the jax_overhead section of benchmarks/RESULTS.md (device, date, numbers); the old one goes to
benchmarks/history/.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from pared.backends.xla import graph_params, lower  # noqa: E402
from pared.compiler.jax_api import compress_jax  # noqa: E402
from pared.frontends.jax.importer import trace  # noqa: E402
from pared.tools.flax_bert import load_minilm  # noqa: E402


def _time_runs(f, args, iters):
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (median of each)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)

    model = load_minilm()
    graphdef, state = nnx.split(model)

    def apply(state, ids, am, tt):
        return nnx.merge(graphdef, state)(ids, am, tt)

    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1000, 30000, size=(a.batch, a.seq)), jnp.int32)
    am = jnp.ones((a.batch, a.seq), jnp.int32).at[:, a.seq * 3 // 4 :].set(0)
    tt = jnp.zeros((a.batch, a.seq), jnp.int32)
    args = (ids, am, tt)

    # phases of pared.compress: trace + import (jaxpr -> IR), lowering (IR -> jax fn) + XLA compile
    t0 = time.perf_counter()
    traced = trace(apply, state, args)
    t_trace = time.perf_counter() - t0
    t0 = time.perf_counter()
    f = lower(traced.graph)
    params_c = graph_params(traced.graph)
    run = jax.jit(lambda w, *xs: f(w, *xs))
    jax.block_until_ready(run.lower(params_c, *args).compile())
    t_lower = time.perf_counter() - t0

    t0 = time.perf_counter()
    fn_c, params_c = compress_jax(apply, state, *args)
    fn_c_jit = jax.jit(fn_c)
    jax.block_until_ready(fn_c_jit(params_c, *args))
    t_total = time.perf_counter() - t0

    orig = jax.jit(apply)
    t0 = time.perf_counter()
    jax.block_until_ready(orig(state, *args))
    t_orig_compile = time.perf_counter() - t0

    want, got = orig(state, *args), fn_c_jit(params_c, *args)
    err = max(float(jnp.max(jnp.abs(w - g))) for w, g in zip(want, got))

    t_orig, t_pared = [], []
    for _ in range(a.rounds):  # alternate to cancel drift
        t_orig.append(_time_runs(orig, (state, *args), a.iters))
        t_pared.append(_time_runs(fn_c_jit, (params_c, *args), a.iters))
    to, tp = min(t_orig), min(t_pared)
    ratio = tp / to

    dev = jax.devices()[0]
    device = f"{dev.platform} ({dev.device_kind}), {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    lines = [
        "## jax_overhead",
        "",
        f"Flax BERT (all-MiniLM-L6-v2), batch {a.batch} x seq {a.seq}, empty recipe.",
        "",
        f"- device: {device}; jax {jax.__version__}; date: {datetime.date.today().isoformat()}",
        f"- trace + import (make_jaxpr -> IR, {len(traced.graph.eqns)} eqns): {t_trace * 1e3:.1f} ms",
        f"- lowering + XLA compile: {t_lower * 1e3:.1f} ms "
        f"(original jax.jit first call: {t_orig_compile * 1e3:.1f} ms)",
        f"- pared.compress end to end incl. first run: {t_total * 1e3:.1f} ms",
        f"- run time: original jax.jit {to * 1e3:.2f} ms, pared {tp * 1e3:.2f} ms -> ratio **{ratio:.3f}x** "
        f"(target <= 1.1x; best of {a.rounds} medians of {a.iters})",
        f"- max |difference| of outputs: {err:.2e}",
        "",
    ]
    print("\n".join(lines))
    if not a.no_write:
        from results import write_section

        write_section("jax_overhead", "\n".join(lines))
    return ratio


if __name__ == "__main__":
    main()
