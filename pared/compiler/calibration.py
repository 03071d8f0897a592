"""The calibration engine: run a graph over calibration batches, one equation at a time.

Passes never call this module directly; they build a
:class:`~pared.passes.calibrated.CalibrationRequest` and call
:func:`pared.passes.calibrated.calibrate`, which validates the data and lands here::

    run_calibration(graph, batches, request, backend="auto", progress=True) -> CalibrationResult

How it runs (DESIGN.md, "Calibration engine"):

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
4. Backends: ``torch`` (each equation lowered once per shape with the torch backend's own
   per-op rules; weights are arguments, so rewritten weights need no re-lowering) when torch is
   installed, otherwise ``reference`` (the numpy interpreter). ``auto`` picks the fastest.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ..backends.reference.interpreter import bind_symbols, run_graph
from ..ir.build import make_eqn
from ..ir.core import Eqn, Graph, Literal, Param, Var
from ..passes.calibrated import (
    CalibrationRequest,
    CalibrationResult,
    Rewrite,
    Statistic,
    Stats,
    WeightSite,
    retype_params,
)

BACKENDS = ("auto", "torch", "reference")


def run_calibration(graph: Graph, batches: Sequence[tuple], request: CalibrationRequest, *, backend: str = "auto",
                    progress: bool = True, opaque: Optional[Mapping[str, Any]] = None,
                    log: Optional[Callable[[str], None]] = None) -> CalibrationResult:
    """Calibrate ``request.sites`` of ``graph`` on ``batches`` (validated tuples, one value per input)."""
    if backend not in BACKENDS:
        raise ValueError(f"calibration backend {backend!r} unknown; valid: {', '.join(BACKENDS)}")
    log = log or (lambda s: print(s, file=sys.stderr))
    t0 = time.perf_counter()
    ex = _pick_executor(backend, graph, opaque)
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
    log(f"[pared calibration: {request.name}] backend={ex.name}\n{plan}")
    ex_dense = ex.twin() if shadow else None

    weights = dict(graph.weights)
    envs = [{v: ex.inputs(v, x) for v, x in zip(graph.inputs, batch)} for batch in batches]
    dense_envs = [dict(env) for env in envs] if shadow else None
    diverged = False  # the shadow stream equals the main one until a weight changes
    syms = [bind_symbols([v.type for v in graph.inputs], list(batch)) for batch in batches]
    rewrites: dict[str, Rewrite] = {}
    new_types: dict[str, Any] = {}
    cache: dict[Any, Stats] = {}
    order = sorted(needed | set(sites))
    bar = _Progress(len(order), request.name, progress)
    try:
        for i in order:
            eqn = graph.eqns[i]
            for site in sites.get(i, ()):
                bar.note(site.param)
                stats = _site_stats(site, request, envs, ex, cache, share, dense_envs)
                w = np.asarray(weights[site.param])
                out = request.rewrite(site, w, stats)
                if out is None:
                    continue
                rw = out if isinstance(out, Rewrite) else Rewrite(out)
                value = np.asarray(rw.value)
                if value.shape != w.shape:
                    raise ValueError(f"{request.name}: rewrite of {site.param!r} returned shape {list(value.shape)}, "
                                     f"expected {list(w.shape)}")
                rewrites[site.param] = rw
                if rw.type is not None:
                    new_types[site.param] = rw.type
                if request.sequential:
                    weights[site.param] = value
                    ex.set_weight(site.param, value)
                    diverged = True
            for b, env in enumerate(envs):
                if i in needed:
                    args = [_read(a, env) for a in eqn.inputs]
                    outs = ex.run(i, eqn, args, syms[b], weights)
                    for v, val in zip(eqn.outputs, outs):
                        env[v] = val
                    if shadow:
                        denv = dense_envs[b]
                        douts = ex_dense.run(i, eqn, [_read(a, denv) for a in eqn.inputs], syms[b], graph.weights) \
                            if diverged else outs
                        for v, val in zip(eqn.outputs, douts):
                            denv[v] = val
                    syms[b] = bind_symbols([v.type for v in eqn.outputs], outs, syms[b], what=f"output of {eqn.op}")
                for v in last_use.get(i, ()):
                    env.pop(v, None)
                    if shadow:
                        dense_envs[b].pop(v, None)
            for key in share.release.get(i, ()):
                cache.pop(key, None)
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
        return (id(a), "conv", site.eqn.attrs["strides"], site.eqn.attrs["dilation"], site.eqn.attrs["padding"], site.type.shape[1:])
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


def _site_stats(site: WeightSite, request: CalibrationRequest, envs, ex, cache, share, dense_envs=None) -> Stats:
    specs = list(request.statistics(site))
    names = {s for s in specs if isinstance(s, str)}
    if "norms" in names:
        names.add("sqnorms")
    customs = [s for s in specs if isinstance(s, Statistic)]
    key = share.keys[site.param]
    have = cache.setdefault(key, {})
    missing = sorted(n for n in names if n not in have and n not in ("norms", "count"))
    if missing or "count" not in have or customs:
        acc = _Accumulator(missing)
        for b, env in enumerate(envs):
            if not isinstance(site.activation, Var):
                raise ValueError(f"weight site {site.param!r} has a constant activation; nothing to calibrate")
            x2d = site.activation_matrix(env[site.activation])
            xd = None
            if "cross" in missing:  # without a shadow stream (not sequential) the dense input is x itself
                xd = site.activation_matrix(dense_envs[b][site.activation]) if dense_envs is not None else x2d
            acc.update(ex, x2d, xd)
            if customs:
                xn = ex.to_numpy(x2d).astype(np.float32, copy=False)
                for c in customs:
                    c.update(xn)
        have.update(acc.result())
    out = {n: have[n] for n in names if n != "norms"}
    if "norms" in names:
        out["norms"] = np.sqrt(have["sqnorms"])
    out["count"] = have["count"]
    for c in customs:
        out[c.key] = c.result()
    return Stats(out)


class _Accumulator:
    """Sums over tokens, in float64 (per-batch products in float32 on the backend)."""

    def __init__(self, names):
        self.names = names
        self.sums: dict[str, Any] = {}
        self.count = 0

    def update(self, ex, x, x_dense=None) -> None:
        x = ex.as_float(x)
        self.count += int(x.shape[0])
        for n in self.names:
            if n == "hessian":
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

    def result(self) -> dict[str, Any]:
        out = dict(self.sums)
        if "mean" in out:
            out["mean"] = out["mean"] / max(self.count, 1)
        out["count"] = self.count
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


def memory_plan(graph: Graph, batches: Sequence[tuple], request: CalibrationRequest,
                needed: Optional[set[int]] = None, last_use: Optional[dict] = None) -> str:
    """A few lines: batches and tokens, equations to run, peak live activations, statistics, weights."""
    needed = _needed_eqns(graph, request.sites) if needed is None else needed
    last_use = _last_uses(graph, needed, request.sites) if last_use is None else last_use
    envs = [bind_symbols([v.type for v in graph.inputs], list(b)) for b in batches]
    live = sum(_nbytes(v.type, env) for env in envs for v in graph.inputs)
    peak, at = live, None
    for i in sorted(needed):
        e = graph.eqns[i]
        live += sum(_nbytes(v.type, env) for env in envs for v in e.outputs)
        if live > peak:
            peak, at = live, i
        live -= sum(_nbytes(v.type, env) for env in envs for v in last_use.get(i, ()))
    stat = 0
    for s in request.sites:
        n_in = s.shape2d[1]
        specs = [x for x in request.statistics(s) if isinstance(x, str)]
        square = sum(1 for x in ("hessian", "cross") if x in specs)
        stat = max(stat, 8 * n_in * n_in * square + 8 * n_in * (len(specs) + 1))
    wbytes = sum(np.asarray(w).nbytes for w in graph.weights.values())
    where = f" (at equation {at}: {graph.eqns[at].op})" if at is not None else ""
    return (f"  {len(batches)} batch(es); {len(needed)} of {len(graph.eqns)} equations reach the "
            f"{len(request.sites)} weight site(s)\n"
            f"  peak live activations {_mib(peak)}{where} + statistics {_mib(stat)} (largest site) "
            f"+ weights {_mib(wbytes)}")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# --- executors -----------------------------------------------------------------------------------


def _shape(x) -> tuple:
    return tuple(int(d) for d in getattr(x, "shape", np.shape(x)))


def _read(a, env):
    if isinstance(a, Var):
        return env[a]
    return a  # Params and Literals are resolved by the executor


def _one_eqn_graph(eqn: Eqn) -> tuple[Graph, list]:
    """``eqn`` alone as a graph whose inputs are its distinct Var operands."""
    ins = []
    for a in eqn.inputs:
        if isinstance(a, Var) and a not in ins:
            ins.append(a)
    for r in eqn.regions:
        ins += [v for v in r.free_vars() if v not in ins]
    return Graph(tuple(ins), (eqn,), eqn.outputs), ins


class _ReferenceExecutor:
    """Each equation with the numpy reference interpreter."""

    name = "reference"

    def __init__(self, graph: Graph):
        self.graph = graph
        self._graphs: dict[int, tuple[Graph, list]] = {}

    def inputs(self, v: Var, x):
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        return np.asarray(x)

    def set_weight(self, name: str, value) -> None:
        pass  # run() reads the current weight table

    def twin(self) -> _ReferenceExecutor:
        """An executor for the dense shadow stream (run() is given the original weights)."""
        return _ReferenceExecutor(self.graph)

    def run(self, i: int, eqn: Eqn, args, syms, weights):
        if i not in self._graphs:
            self._graphs[i] = _one_eqn_graph(eqn)
        g, ins = self._graphs[i]
        pos = {id(a): k for k, a in enumerate(eqn.inputs)}
        values = [args[pos[id(v)]] if id(v) in pos else None for v in ins]
        if any(v is None for v in values):
            raise NotImplementedError("region ops with captured values are not supported by the calibration engine")
        return run_graph(g, values, weights, _symbols=syms)

    def as_float(self, x):
        return np.asarray(x, dtype=np.float32)

    def absmax(self, x):
        return np.abs(x).max(0)

    def to_numpy(self, x):
        return np.asarray(x)


class _TorchExecutor:
    """Each equation lowered once per input shapes by the torch backend's rule table; weights are
    arguments of the lowered function so a rewritten weight needs no new lowering."""

    name = "torch"

    def __init__(self, graph: Graph, opaque: Optional[Mapping[str, Any]]):
        import torch

        from ..backends.torch import lower
        from ..backends.torch.dtypes import to_torch

        self.torch, self._lower, self._to_torch = torch, lower, to_torch
        self.graph = graph
        self.opaque = dict(opaque or {})
        self.ptypes = graph.param_types
        self._w: dict[str, Any] = {}
        self._fns: dict[tuple, tuple] = {}
        self._ref = _ReferenceExecutor(graph)

    def inputs(self, v: Var, x):
        t = x if isinstance(x, self.torch.Tensor) else self.torch.as_tensor(np.asarray(x))
        return t.to(self._to_torch(v.type.dtype)) if t.dtype != self._to_torch(v.type.dtype) else t

    def weight(self, name: str):
        if name not in self._w:
            w = self.graph.weight(name)
            if not isinstance(w, self.torch.Tensor):
                with warnings.catch_warnings():  # read-only arrays are only read here; set_weight replaces
                    warnings.simplefilter("ignore", UserWarning)
                    w = self.torch.from_numpy(np.ascontiguousarray(np.asarray(w)))
            t = w
            self._w[name] = t.detach().to(self._to_torch(self.ptypes[name].dtype))
        return self._w[name]

    def set_weight(self, name: str, value) -> None:
        self._w[name] = self.torch.from_numpy(np.ascontiguousarray(value)).to(self._to_torch(self.ptypes[name].dtype))

    def twin(self) -> _TorchExecutor:
        """An executor for the dense shadow stream: the same lowered equations, the original weights."""
        other = _TorchExecutor(self.graph, self.opaque)
        other._fns = self._fns
        return other

    def run(self, i: int, eqn: Eqn, args, syms, weights):
        key = (i, tuple(_shape(a) if isinstance(a, self.torch.Tensor) else None for a in args))
        if key not in self._fns:
            self._fns[key] = self._build(eqn, syms)
        fn, picks = self._fns[key]
        if fn is None:  # no torch lowering: the numpy reference for this one equation
            np_args = [a.numpy() if isinstance(a, self.torch.Tensor) else a for a in args]
            tables = {n: np.asarray(weights[n]) for n in weights}
            return [self.torch.from_numpy(np.ascontiguousarray(o)) for o in self._ref.run(i, eqn, np_args, syms, tables)]
        values = [self.weight(eqn.inputs[k].name) if isinstance(eqn.inputs[k], Param) else args[k] for k in picks]
        with self.torch.no_grad():
            out = fn(*values)
        return list(out)

    def _build(self, eqn: Eqn, syms):
        """Lower ``eqn`` specialised to the concrete shapes of this batch: every Var and Param
        operand becomes an input of a one-equation graph (Literals stay)."""
        if eqn.regions:
            return None, None
        from ..backends.reference.interpreter import _resolve

        new_inputs, picks, seen = [], [], {}
        for k, a in enumerate(eqn.inputs):
            if isinstance(a, Literal):
                new_inputs.append(a)
                continue
            ident = (type(a), a.name) if isinstance(a, Param) else id(a)
            if ident not in seen:
                t = a.type
                seen[ident] = Var(t.with_(shape=t.concrete_shape(syms)))
                picks.append(k)
            new_inputs.append(seen[ident])
        try:
            attrs = {n: _resolve(v, syms) for n, v in eqn.attrs.items()}
            e = make_eqn(eqn.op, new_inputs, attrs, (), eqn.loc)
            g = Graph(tuple(seen.values()), (e,), e.outputs)
            return self._lower(g, opaque=self.opaque), picks
        except Exception:  # noqa: BLE001 - unlowerable ops fall back to the reference
            return None, None

    def as_float(self, x):
        return x.detach().float()

    def absmax(self, x):
        return x.abs().amax(0)

    def to_numpy(self, x):
        return x.detach().cpu().numpy() if isinstance(x, self.torch.Tensor) else np.asarray(x)


def _pick_executor(backend: str, graph: Graph, opaque):
    if backend in ("auto", "torch"):
        try:
            return _TorchExecutor(graph, opaque)
        except ImportError:
            if backend == "torch":
                raise
    return _ReferenceExecutor(graph)


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
                print(f"calibrating ({self.name}): {self.n}/{self.total} equations, "
                      f"{time.perf_counter() - self._t0:.0f} s", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
