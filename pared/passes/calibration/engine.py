"""The calibration engine: run a graph over calibration batches, one equation at a time.

Passes never call this module directly; they build a
:class:`~pared.passes.calibration.sites.CalibrationRequest` and call
:func:`pared.passes.calibration.sites.calibrate`, which validates the data and lands here::

    run_calibration(graph, batches, request, executor, progress=True) -> CalibrationResult

How it runs (docs/architecture.md, "Calibration"):

1. Plan: only equations whose results reach a requested weight site run (the LM head's logits
   do not); every value is freed after its last use. The memory plan (peak live activations over
   all batches, the largest statistic, the weights) is printed before any work.
2. Walk the equations in order, each over every batch (batches may differ in shape: symbols are
   bound per batch). At a weight site, accumulate the statistics its pass asked for (shared
   between sites that read the same activation, e.g. q/k/v), call the pass's ``rewrite``, and
   run the equation with the NEW weight, so downstream sites calibrate on the compressed
   model's activations without re-running the prefix (SparseGPT/GPTQ's sequential mode).
3. Dense shadow stream: when a site asks for ``cross`` (X^T X_dense, the compressed model's
   activation against the dense model's), the engine also runs every batch through the ORIGINAL
   weights, so a pass can reconstruct the dense model's outputs instead of the layer's own
   (twice the forward work and live activations once the first weight changes; until then the
   two streams share their values).
4. Executors: the engine runs equations through an :class:`Executor` that the compiler picks
   (``PassContext.calibration_executor``): the torch backend's (each equation lowered once per
   shape with the torch lowering table; weights are arguments, so rewritten weights need no
   re-lowering) when torch is installed, otherwise the reference interpreter's. Executors live in
   the backends (:mod:`pared.backends.executors`), so this package imports none of them.
5. Data-parallel (``PassContext.calibration_reducer``, :mod:`.reduce`): each process runs its
   share of the batches and every site's statistics are combined across processes before the
   rewrite, so all processes solve on the same global statistics.
6. Out of core (:mod:`.streaming`, docs/out_of_core.md): the executor releases each weight after
   its last use, rewritten weights are staged to disk (``staging``), and the streamed plan's peak
   is checked against ``max_memory`` before any work.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import numpy as np

from ...ir.core import Graph, Var
from ...ir.opdef import eqn_cost
from ...ir.shapes import bind_symbols
from .linalg import gram_upper_add, symmetric_from_upper
from .reduce import LocalReducer, Reducer, deal, describe, is_data_parallel, local_share
from .sites import (
    STATISTICS,
    CalibrationError,
    CalibrationRequest,
    CalibrationResult,
    Rewrite,
    Statistic,
    Stats,
    WeightSite,
    normalize_batches,
    retype_params,
)
from .streaming import (
    Staging,
    budget_error,
    current_rss,
    lazy_row_lookup,
    param_last_uses,
    streamed_peak,
    take_rows,
    weight_nbytes,
)


def calibrate(graph: Graph, ctx: Any, request: CalibrationRequest) -> CalibrationResult:
    """Run the calibration engine for ``request`` on ``ctx.calibration`` (validated first)."""
    if not request.sites:
        return CalibrationResult(graph, {})
    params = [s.param for s in request.sites]
    if len(set(params)) != len(params):
        dup = next(p for p in params if params.count(p) > 1)
        raise CalibrationError(f"{request.name}: param {dup!r} is listed at two sites; calibrate each weight once")
    reducer = getattr(ctx, "calibration_reducer", None)
    for s in request.sites:
        for spec in request.statistics(s):
            if isinstance(spec, str) and spec not in STATISTICS:
                raise CalibrationError(f"{request.name}: unknown statistic {spec!r}; valid: {', '.join(STATISTICS)}")
            if isinstance(spec, Statistic) and reducer is not None and reducer.world > 1 and not spec.reducible():
                raise CalibrationError(
                    f"{request.name}: layer {s.param!r} asks for the custom statistic {type(spec).__name__} "
                    f"({spec.key!r}), which cannot be combined across {reducer.world} processes: define "
                    f"{type(spec).__name__}.reduce(reducer), or calibrate in one process (no torchrun)")
    batches = normalize_batches(graph, getattr(ctx, "calibration", None))  # every process checks ALL batches
    factory = getattr(ctx, "calibration_executor", None)
    if factory is None:
        raise CalibrationError(
            f"{request.name}: the pass context has no calibration executor; run the pass through "
            "pared.run_pipeline (or PassManager), or build the context with pared.compiler.make_context")
    progress, log = getattr(ctx, "progress", True), None
    if is_data_parallel(reducer):
        if reducer.rank == 0:
            print(describe(reducer, len(batches)), file=sys.stderr)
        else:  # one console: only rank 0 logs the plan and shows progress
            progress, log = False, lambda s: None
        batches = local_share(batches, reducer.rank, reducer.world)
    return run_calibration(graph, batches, request, factory(graph), progress=progress, log=log, reducer=reducer,
                           max_memory=getattr(ctx, "max_memory", None), staging=getattr(ctx, "staging_dir", None))


class Executor(Protocol):
    """Runs one equation at a time on some backend; the backends implement it, the compiler picks one.

    ``run(i, eqn, args, syms, weights)`` evaluates equation ``i`` on operand values ``args`` (Vars
    already read from the environment; Params and Literals left as atoms for the executor to
    resolve from ``weights``) with symbols bound to ``syms``, returning one value per output.
    """

    name: str

    def inputs(self, v: Var, x: Any) -> Any: ...
    def set_weight(self, name: str, value: np.ndarray) -> None: ...
    def twin(self) -> Executor: ...
    def run(self, i: int, eqn: Any, args: Sequence[Any], syms: dict, weights: Mapping[str, Any]) -> list: ...
    def as_float(self, x: Any) -> Any: ...
    def absmax(self, x: Any) -> Any: ...
    def to_numpy(self, x: Any) -> np.ndarray: ...
    # optional: ``host_view(x)`` -> a numpy array sharing x's memory (float32, host), or None


def run_calibration(graph: Graph, batches: Sequence[tuple], request: CalibrationRequest, executor: Executor, *,
                    progress: bool = True, log: Optional[Callable[[str], None]] = None,
                    reducer: Optional[Reducer] = None, max_memory: Optional[int] = None,
                    staging: Optional[str] = None) -> CalibrationResult:
    """Calibrate ``request.sites`` of ``graph`` on ``batches`` (validated tuples, one value per input).

    ``reducer``: data-parallel calibration (:mod:`.reduce`); ``batches`` are then this process's
    share, and every site's statistics are combined across processes before its rewrite.
    ``staging``: a directory; each rewritten weight is written there and the result's graph reads
    it back lazily (:mod:`.streaming`, out-of-core). ``max_memory``: bytes; a streamed plan whose
    peak (plus what the process holds now) exceeds it raises :class:`CalibrationError` before any work.
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    t0 = time.perf_counter()
    ex = executor
    sites = {s.index: [] for s in request.sites}
    for s in request.sites:
        sites[s.index].append(s)
    needed = _needed_eqns(graph, request.sites)
    last_use = _last_uses(graph, needed, request.sites)
    share = _shared_statistics(request)
    shadow = request.sequential and any("cross" in request.statistics(s) for s in request.sites)
    plan = memory_plan(graph, batches, request, needed, last_use)
    if shadow:
        plan += "\n  + a dense shadow stream (statistic 'cross'): up to twice the live activations"
    order = sorted(needed | set(sites))
    _, last_w, pinned_w = param_last_uses(graph, order)
    release_after: dict[int, list[str]] = {}
    for name, i in last_w.items():
        if name not in pinned_w:
            release_after.setdefault(i, []).append(name)
    peak, peak_w = _streamed_plan(graph, batches, request, needed, last_use, order, shadow)
    rss_now = current_rss()
    plan += (f"\n  streamed (weights read at their layer, released after it): peak {_mib(peak)} "
             f"(weights live at the peak {_mib(peak_w)}); with this process's {_mib(rss_now)} now, "
             f"an expected peak RSS of {_mib(rss_now + peak)}")
    log(f"[pared calibration: {request.name}] backend={ex.name}\n{plan}")
    if max_memory is not None:
        refusal = budget_error(request.name, peak, rss_now, int(max_memory), plan.replace("\n  ", "; ").strip())
        if refusal:
            raise CalibrationError(refusal)
    stage = Staging(staging) if staging is not None else None
    ex_dense = ex.twin() if shadow else None

    weights = dict(graph.weights)
    envs = [{v: ex.inputs(v, x) for v, x in zip(graph.inputs, batch)} for batch in batches]
    dense_envs = [dict(env) for env in envs] if shadow else None
    diverged = False  # the shadow stream equals the main one until a weight changes
    syms = [bind_symbols([v.type for v in graph.inputs], list(batch)) for batch in batches]
    rewrites: dict[str, Rewrite] = {}
    new_types: dict[str, Any] = {}
    cache: dict[Any, Stats] = {}
    bar = _Progress(len(order), request.name, progress)
    try:
        for i in order:
            eqn = graph.eqns[i]
            for site in sites.get(i, ()):
                bar.note(site.param)
                stats = _site_stats(site, request, envs, ex, cache, share, dense_envs, reducer)
                w = np.asarray(weights[site.param])
                out = request.rewrite(site, w, stats)
                if out is None:
                    continue
                rw = out if isinstance(out, Rewrite) else Rewrite(out)
                value = np.asarray(rw.value)
                if value.shape != w.shape:
                    raise ValueError(f"{request.name}: rewrite of {site.param!r} returned shape {list(value.shape)}, "
                                     f"expected {list(w.shape)}")
                if stage is not None:  # out of core: the graph keeps a handle on the staged copy
                    rw = Rewrite(stage.stage(site.param, value), rw.type, rw.info)
                rewrites[site.param] = rw
                if rw.type is not None:
                    new_types[site.param] = rw.type
                if request.sequential:
                    weights[site.param] = rw.value if stage is not None else value
                    ex.set_weight(site.param, value)
                    diverged = True
                del w, value, out
            for b, env in enumerate(envs):
                if i in needed:
                    args = [_read(a, env) for a in eqn.inputs]
                    outs = _run(ex, i, eqn, args, syms[b], weights)
                    for v, val in zip(eqn.outputs, outs):
                        env[v] = val
                    if shadow:
                        denv = dense_envs[b]
                        douts = _run(ex_dense, i, eqn, [_read(a, denv) for a in eqn.inputs], syms[b],
                                     graph.weights) if diverged else outs
                        for v, val in zip(eqn.outputs, douts):
                            denv[v] = val
                    syms[b] = bind_symbols([v.type for v in eqn.outputs], outs, syms[b], what=f"output of {eqn.op}")
                for v in last_use.get(i, ()):
                    env.pop(v, None)
                    if shadow:
                        dense_envs[b].pop(v, None)
            for key in share.release.get(i, ()):
                cache.pop(key, None)
            for name in release_after.get(i, ()):  # a weight is held from its first use to its last
                for e in (ex, ex_dense):
                    if e is not None and hasattr(e, "release"):
                        e.release(name)
            bar.update()
    finally:
        bar.close()
    final = {n: rw.value for n, rw in rewrites.items()}
    new_graph = retype_params(graph.with_weights(final), new_types) if final else graph
    seconds = time.perf_counter() - t0
    log(f"[pared calibration: {request.name}] {len(rewrites)} weight(s) rewritten in {seconds:.1f} s")
    return CalibrationResult(new_graph, rewrites, plan, seconds, ex.name)


# --- statistics ----------------------------------------------------------------------------------


class _Share:
    """Which statistic keys each site uses, and after which equation a key can be dropped."""

    def __init__(self):
        self.keys: dict[str, Any] = {}
        self.release: dict[int, list] = {}


def _activation_key(site: WeightSite):
    a = site.activation
    if site.kind == "conv":
        attrs = site.eqn.attrs
        return (id(a), "conv", attrs["strides"], attrs["dilation"], attrs["padding"], site.type.shape[1:])
    return (id(a), "dot", site.x_perm, site.x_in)


def _shared_statistics(request: CalibrationRequest) -> _Share:
    share = _Share()
    last: dict[Any, int] = {}
    for s in request.sites:
        key = _activation_key(s)
        share.keys[s.param] = key
        last[key] = max(last.get(key, -1), s.index)
    for key, i in last.items():
        share.release.setdefault(i, []).append(key)
    return share


def _site_stats(site: WeightSite, request: CalibrationRequest, envs, ex, cache, share, dense_envs=None,
                reducer: Optional[Reducer] = None) -> Stats:
    reducer = reducer or LocalReducer()
    specs = list(request.statistics(site))
    names = {s for s in specs if isinstance(s, str)}
    if "norms" in names:
        names.add("sqnorms")
    customs = [s for s in specs if isinstance(s, Statistic)]
    key = share.keys[site.param]
    have = cache.setdefault(key, {})
    missing = sorted(n for n in names if n not in have and n not in ("norms", "count"))
    if missing or "count" not in have or customs:
        if not isinstance(site.activation, Var):
            raise ValueError(f"weight site {site.param!r} has a constant activation; nothing to calibrate")
        accs = []
        for part, batches in enumerate(deal(len(envs), reducer.parts)):
            acc, pex = _Accumulator(missing), reducer.executor(part, ex)
            for b in batches:
                x2d = site.activation_matrix(envs[b][site.activation])
                xd = None
                if "cross" in missing:  # without a shadow stream (not sequential) the dense input is x itself
                    xd = site.activation_matrix(dense_envs[b][site.activation]) if dense_envs is not None else x2d
                acc.update(pex, x2d, xd)
                if customs:
                    xn = ex.to_numpy(x2d).astype(np.float32, copy=False)
                    for c in customs:
                        c.update(xn)
            accs.append(acc)
        have.update(_reduced(accs, site.shape2d[1], reducer))
        if reducer.world > 1:
            for c in customs:
                c.reduce(reducer)
    out = {n: have[n] for n in names if n != "norms"}
    if "norms" in names:
        out["norms"] = np.sqrt(have["sqnorms"])
    out["count"] = have["count"]
    for c in customs:
        out[c.key] = c.result()
    return Stats(out)


class _Accumulator:
    """Sums over tokens, in float64 (per-batch products in float32 on the backend).

    Hessians of activations the executor holds in host memory (``host_view``) are computed by
    ``ssyrk`` (upper triangle: half a GEMM's flops) and completed once, when read.
    """

    SQUARE = ("hessian", "cross")

    def __init__(self, names):
        self.names = names
        self.sums: dict[str, Any] = {}
        self.count = 0
        self._upper: Optional[np.ndarray] = None  # float64 sum of the upper triangles of X^T X

    def update(self, ex, x, x_dense=None) -> None:
        x = ex.as_float(x)
        self.count += int(x.shape[0])
        for n in self.names:
            if n == "hessian":
                host = getattr(ex, "host_view", None)
                xh = host(x) if host is not None else None
                if xh is not None:
                    self._upper = gram_upper_add(self._upper, xh)
                    continue
                v = x.T @ x
            elif n == "cross":
                v = x.T @ ex.as_float(x_dense)
            elif n == "sqnorms":
                v = (x * x).sum(0)
            elif n == "mean":
                v = x.sum(0)
            elif n == "absmax":
                v = ex.absmax(x)
            else:
                continue
            v = ex.to_numpy(v).astype(np.float64)
            if n == "absmax":
                self.sums[n] = v if n not in self.sums else np.maximum(self.sums[n], v)
            else:
                self.sums[n] = v if n not in self.sums else self.sums[n] + v

    def _flush(self) -> None:
        if self._upper is None:
            return
        v = symmetric_from_upper(self._upper, overwrite=True)  # the accumulator is done with it
        self.sums["hessian"] = v if "hessian" not in self.sums else self.sums["hessian"] + v
        self._upper = None

    def partial(self, n: str, n_in: int) -> np.ndarray:
        """The local sum of ``n``; zeros of the site's shape when no batch was seen (absmax >= 0)."""
        if n == "hessian":
            self._flush()
        if n in self.sums:
            return self.sums[n]
        return np.zeros((n_in, n_in) if n in self.SQUARE else (n_in,), np.float64)


def _reduced(accs: Sequence[_Accumulator], n_in: int, reducer: Reducer) -> dict[str, Any]:
    """The statistics of every part of every process: one collective per statistic, in ``names``
    order (the same on every process, batches or not), then ``mean`` divided by the global count."""
    out: dict[str, Any] = {}
    for n in accs[0].names:
        if n in STATISTICS and n not in ("norms", "count"):
            parts = [a.partial(n, n_in) for a in accs]
            out[n] = reducer.max(parts) if n == "absmax" else reducer.sum(parts)
    count = int(round(float(np.asarray(reducer.sum([np.array([a.count], np.float64) for a in accs])).ravel()[0])))
    if "mean" in out:
        out["mean"] = out["mean"] / max(count, 1)
    out["count"] = count
    return out


# --- planning --------------------------------------------------------------------------------


def _needed_eqns(graph: Graph, sites: Sequence[WeightSite]) -> set[int]:
    """Equations whose results reach a site's activation (everything else is skipped)."""
    want = {s.activation for s in sites if isinstance(s.activation, Var)}
    last = max((s.index for s in sites), default=-1)
    needed: set[int] = set()
    for i in range(last, -1, -1):
        e = graph.eqns[i]
        if any(v in want for v in e.outputs):
            needed.add(i)
            for a in e.inputs:
                if isinstance(a, Var):
                    want.add(a)
            for r in e.regions:
                want |= r.free_vars()
    return needed


def _last_uses(graph: Graph, needed: set[int], sites: Sequence[WeightSite]) -> dict[int, list[Var]]:
    """eqn index -> the Vars dead after it (values never read die right after they are made; a
    site's activation lives until the site)."""
    last: dict[Var, int] = {}
    for i in sorted(needed):
        e = graph.eqns[i]
        for v in e.outputs:
            last.setdefault(v, i)
        for a in e.inputs:
            if isinstance(a, Var):
                last[a] = i
        for r in e.regions:
            for v in r.free_vars():
                last[v] = i
    for s in sites:
        if isinstance(s.activation, Var):
            last[s.activation] = max(last.get(s.activation, -1), s.index)
    for v in graph.inputs:
        last.setdefault(v, -1)
    out: dict[int, list[Var]] = {}
    for v, i in last.items():
        out.setdefault(max(i, min(needed | {s.index for s in sites}, default=0)), []).append(v)
    return out


def _nbytes(t, env) -> int:
    try:
        shape = t.concrete_shape(env)
    except KeyError:
        return 0
    return int(np.prod(shape, dtype=np.int64)) * max(1, int(np.ceil(t.dtype.bits / 8)))


def memory_plan(
    graph: Graph,
    batches: Sequence[tuple],
    request: CalibrationRequest,
    needed: Optional[set[int]] = None,
    last_use: Optional[dict] = None,
) -> str:
    """A few lines: batches and tokens, equations to run, peak live activations, statistics, weights."""
    needed = _needed_eqns(graph, request.sites) if needed is None else needed
    last_use = _last_uses(graph, needed, request.sites) if last_use is None else last_use
    _, peak, at = _activation_profile(graph, batches, needed, last_use)
    stat = _largest_statistic(request)
    wbytes = sum(weight_nbytes(w) for w in graph.weights.values())  # a lazy weight is not read for its size
    where = f" (at equation {at}: {graph.eqns[at].op})" if at is not None else ""
    return (
        f"  {len(batches)} batch(es); {len(needed)} of {len(graph.eqns)} equations reach the "
        f"{len(request.sites)} weight site(s)\n"
        f"  peak live activations {_mib(peak)}{where} + statistics {_mib(stat)} (largest site) "
        f"+ weights {_mib(wbytes)}\n"
        f"  {_forward_estimate(graph, batches, needed)}"
    )


def _forward_estimate(graph: Graph, batches, needed) -> str:
    """The forward work of the equations that reach a site over all batches, and the time it takes
    at the rate of a short float32 GEMM probe on this host (the Hessian products and the solvers
    come on top; elementwise work is counted as flops, so memory-bound steps take longer)."""
    per_shape: dict[tuple, int] = {}  # batches of the same shapes cost the same
    flops = 0
    for b in batches:
        env = bind_symbols([v.type for v in graph.inputs], list(b))
        key = tuple(sorted(env.items()))
        if key not in per_shape:
            total = 0
            for i in needed:
                try:
                    total += eqn_cost(graph.eqns[i], env).flops
                except Exception:  # noqa: BLE001 - an op without a cost model counts as nothing
                    continue
            per_shape[key] = total
        flops += per_shape[key]
    a = np.ones((512, 576), np.float32)
    w = np.ones((576, 1536), np.float32)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        a @ w
        best = min(best, time.perf_counter() - t)
    rate = 2 * 512 * 576 * 1536 / max(best, 1e-9)
    return (f"forward passes: {flops / 1e9:.0f} GFLOP, at least {duration(flops / rate)} at this host's "
            f"{rate / 1e9:.0f} GFLOP/s (a float32 GEMM probe)")


def duration(seconds: float) -> str:
    """'2 min 10 s', '45 s', '1 h 3 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _activation_profile(graph: Graph, batches, needed, last_use) -> tuple[dict[int, int], int, Optional[int]]:
    """(live activation bytes over all batches right after each needed equation, the peak, where)."""
    envs = [bind_symbols([v.type for v in graph.inputs], list(b)) for b in batches]
    live = sum(_nbytes(v.type, env) for env in envs for v in graph.inputs)
    peak, at, after = live, None, {}
    for i in sorted(needed):
        e = graph.eqns[i]
        live += sum(_nbytes(v.type, env) for env in envs for v in e.outputs)
        after[i] = live
        if live > peak:
            peak, at = live, i
        live -= sum(_nbytes(v.type, env) for env in envs for v in last_use.get(i, ()))
    return after, peak, at


def _largest_statistic(request: CalibrationRequest) -> int:
    stat = 0
    for s in request.sites:
        n_in = s.shape2d[1]
        specs = [x for x in request.statistics(s) if isinstance(x, str)]
        square = sum(1 for x in ("hessian", "cross") if x in specs)
        stat = max(stat, 8 * n_in * n_in * square + 8 * n_in * (len(specs) + 1))
    return stat


def _streamed_plan(graph, batches, request, needed, last_use, order, shadow: bool) -> tuple[int, int]:
    """(peak bytes, weights live at the peak) of the streamed run (:func:`.streaming.streamed_peak`);
    a dense shadow stream doubles the activations and the weights it reads."""
    after, _, _ = _activation_profile(graph, batches, needed, last_use)
    if shadow:
        after = {i: 2 * b for i, b in after.items()}
    ptypes = graph.param_types
    largest = max((weight_nbytes(graph.weights.get(s.param), ptypes.get(s.param)) for s in request.sites), default=0)
    peak, peak_w = streamed_peak(graph, order, after, _largest_statistic(request), largest)
    return (peak + peak_w, 2 * peak_w) if shadow else (peak, peak_w)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# --- executors -----------------------------------------------------------------------------------


def _run(ex, i, eqn, args, syms, weights):
    """``ex.run``, except that an embedding lookup in a lazy (out-of-core) table reads only the
    looked-up rows: a vocabulary-sized table is never read whole for calibration."""
    table = lazy_row_lookup(eqn, weights)
    if table is None:
        return ex.run(i, eqn, args, syms, weights)
    out = take_rows(table, ex.to_numpy(args[1]), f"equation {i} (take of {eqn.inputs[0].name})")
    return [ex.inputs(eqn.outputs[0], out)]


def _read(a, env):
    if isinstance(a, Var):
        return env[a]
    return a  # Params and Literals are resolved by the executor


class _Progress:
    """tqdm when installed, else a line on stderr every 10%."""

    def __init__(self, total: int, name: str, enabled: bool):
        self.total, self.n, self.enabled, self.name = total, 0, enabled, name
        self._bar = None
        self._t0 = time.perf_counter()
        self._shown = -1
        if enabled:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=f"calibrating ({name})", unit="eqn", file=sys.stderr, leave=False)
            except ImportError:
                pass

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def update(self) -> None:
        self.n += 1
        if self._bar is not None:
            self._bar.update(1)
        elif self.enabled and self.total:
            pct = 10 * self.n // self.total
            if pct != self._shown:
                self._shown = pct
                print(
                    f"calibrating ({self.name}): {self.n}/{self.total} equations, "
                    f"{time.perf_counter() - self._t0:.0f} s",
                    file=sys.stderr,
                )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
