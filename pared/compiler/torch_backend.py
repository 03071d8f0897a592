"""The ``torch.compile`` backend: ``torch.compile(model, backend="pared")`` or
``torch.compile(model, backend=pared.backend(recipe=...))``.

Dynamo hands the backend one FX graph per captured region (several when the model has graph
breaks; each is compiled on its own, per Dynamo's contract) with the module's parameters and
buffers lifted to graph inputs. The backend imports the graph into pared's IR (weights become
named Params), runs the recipe's passes, lowers the result to an FX GraphModule of torch ops
(optionally handed to Inductor) and returns a callable with the graph's calling convention.
Weights are constants of the compiled code (like Inductor's freezing): the runtime weight
arguments Dynamo passes are ignored. If anything fails, the backend warns and runs the graph as
Dynamo captured it: pared never breaks a user's torch.compile.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from ..frontends.torch.importer import Imported, import_dynamo
from ..ir import dims as D
from ..ir.core import Graph
from ..ir.shapes import bind_symbols
from ..ir.torch_dtypes import to_torch
from ..passes.context import PassContext, Report
from .pipeline import parse_pipeline
from .presets import LOWERING

TARGETS = ("torch", "reference", "triton")


@dataclass
class CompiledGraph:
    """One compiled graph: call it with the FX graph's arguments.

    Attributes:
        graph: the IR after the recipe's passes (run it with the reference interpreter to check).
        imported: the frontend's result (the IR before passes, the opaque side table).
        report: rows from the import (opaque ops: name, count, where) and from the passes.
        timings: seconds spent in pared: ``import``, ``passes``, ``lower`` (and ``inductor``).
        fn: the lowered callable taking the IR inputs.
    """

    graph: Graph
    imported: Imported
    report: Report
    timings: dict[str, float]
    fn: Callable
    input_positions: list[int] = field(default_factory=list)

    @property
    def overhead_s(self) -> float:
        return sum(self.timings.values())

    def __call__(self, *args):
        ins = [args[i] for i in self.input_positions]
        outs = self.fn(*ins)
        result = []
        for kind, v in self.imported.outputs:
            if kind == "ir":
                result.append(outs[v])
            elif isinstance(v, D.Sym):
                env = bind_symbols([x.type for x in self.graph.inputs], [tuple(t.shape) for t in map(_Shape, ins)])
                result.append(D.evaluate(v, env))
            else:
                result.append(v)
        return tuple(result)


class _Shape:
    """Lets :func:`bind_symbols` read a tensor's shape without converting it to numpy."""

    def __init__(self, t):
        self.shape = tuple(t.shape)


def _device(values: Sequence[Any]) -> torch.device:
    for v in values:
        if isinstance(v, torch.Tensor) and not isinstance(v, torch._subclasses.FakeTensor):
            return v.device
    return torch.device("cpu")


def compile_imported(
    imported: Imported,
    *,
    recipe=None,
    calibration=None,
    target: str = "torch",
    inductor: bool = False,
    device=None,
    example_inputs: Optional[Sequence[Any]] = None,
    timings: Optional[dict[str, float]] = None,
    verify: bool = True,
    lowering: bool = True,
) -> CompiledGraph:
    """Run the recipe on an imported graph and lower it (shared by the Dynamo and export paths).

    ``lowering``: then run the target's lowering passes (``presets.LOWERING``), e.g. attention
    fusion for the torch target.
    """
    if target not in TARGETS:
        raise ValueError(f"pared torch path: target {target!r} is not supported here; use one of {TARGETS}")
    timings = dict(timings or {})
    report = Report()
    for row in imported.report:
        report.add(row.pass_name, row.name, **row.fields)
    graph = imported.graph
    t0 = time.perf_counter()
    passes = parse_pipeline(recipe) if recipe else []
    if lowering:
        passes += parse_pipeline(LOWERING.get(target, ""))
    if passes:
        from .pass_manager import run_pipeline

        ctx = PassContext(calibration=calibration, backend=target, device=str(device or "cpu"), report=report,
                          opaque=imported.opaque)
        graph = run_pipeline(graph, passes, ctx, verify=verify)
    timings["passes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if target == "reference":
        fn = _reference_fn(graph, imported.opaque, report)
    elif target == "triton":  # raises TritonUnavailableError (with what to do) when no GPU is present
        from ..backends.triton import lower as triton_lower

        same = {n: t for n, t in imported.sources.items() if graph.weights.get(n) is imported.graph.weights.get(n)}
        fn = triton_lower(graph, device=device, tensors=same, opaque=imported.opaque, report=report)
    else:
        from ..backends.costmodel import decisions_of, report_decisions
        from ..backends.costmodel.whole_graph import whole_graph_check
        from ..backends.torch import lower

        same = {n: t for n, t in imported.sources.items() if graph.weights.get(n) is imported.graph.weights.get(n)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn = lower(graph, device=device, tensors=same, opaque=imported.opaque)
        fn, caught = whole_graph_check(fn, caught, example_inputs, report,
                                       lambda: lower(graph, device=device, tensors=same, opaque=imported.opaque))
        decisions = decisions_of(fn)
        report_decisions(report, decisions)  # one cost_model row per quantized layer, with its timings
        if len(decisions):
            print(f"pared: {decisions.summary()}", file=sys.stderr)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    timings["lower"] = time.perf_counter() - t0
    if inductor and target == "torch":
        t0 = time.perf_counter()
        fn = _inductor(fn, example_inputs)
        timings["inductor"] = time.perf_counter() - t0
    positions = [k for k, idx in enumerate(imported.inputs) if idx is not None]
    return CompiledGraph(graph, imported, report, timings, fn, positions)


def _reference_fn(graph: Graph, opaque: Optional[dict[str, Callable]] = None,
                  report: Optional[Report] = None) -> Callable:
    """The numpy reference interpreter on torch tensors. An ``opaque`` equation calls its torch
    callable back (numpy in, numpy out) and the report says so, one row per equation."""
    from ..backends.reference.interpreter import run_graph

    calls = {}
    for e in graph.walk():
        tag = e.attrs["target"] if e.op == "opaque" else None
        if tag in (opaque or {}) and tag not in calls:
            calls[tag] = _torch_on_numpy(opaque[tag], [a.type.dtype for a in e.inputs])
            if report is not None:
                where = getattr(opaque[tag], "where", "")
                report.add("reference", tag, kind="opaque", ran="through torch", where=where)

    def run(*ins):
        outs = run_graph(graph, [t.detach().cpu().numpy() for t in ins], opaque=calls)
        dev = _device(ins)
        return tuple(torch.from_numpy(o.copy()).to(dev) for o in outs)

    return run


def _torch_on_numpy(fn: Callable, dtypes: list) -> Callable:
    """``fn`` (a torch call) on numpy arrays: each becomes a tensor of its IR dtype (bf16 is stored
    as float32 in numpy), each result a numpy array."""
    def run(*arrays):
        with torch.no_grad():
            out = fn(*(torch.tensor(a).to(to_torch(dt)) for a, dt in zip(arrays, dtypes)))
        outs = [t.detach().cpu() for t in (out if isinstance(out, (tuple, list)) else (out,))]
        return [(t.float() if t.dtype == torch.bfloat16 else t).numpy() for t in outs]

    return run


def _inductor(gm, example_inputs) -> Callable:
    try:
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, list(example_inputs))
    except Exception as e:  # Inductor is an optimisation: fall back to the plain FX module
        warnings.warn(
            f"pared: Inductor hand-off failed ({type(e).__name__}: {e}); running the torch lowering without it",
            stacklevel=2,
        )
        return gm


class PaRedBackend:
    """A configured Dynamo backend; ``compiled`` lists every graph it compiled (with reports)."""

    def __init__(
        self,
        recipe=None,
        calibration=None,
        target: str = "torch",
        inductor: bool = False,
        verify: bool = True,
        strict: Optional[bool] = None,
        lowering: bool = True,
    ):
        if target not in TARGETS:
            raise ValueError(
                f"pared.backend: target {target!r} is not supported for torch models; use one of {TARGETS}"
            )
        # a bad recipe fails here, when the backend is made, not at the first call inside Dynamo
        self.recipe = parse_pipeline(recipe) if recipe else None
        data_aware = [p.name for p in self.recipe or [] if p.needs_calibration()]
        if isinstance(calibration, bool) or (isinstance(calibration, int) and calibration < 1):
            raise ValueError(f"pared.backend: calibration={calibration!r}: give a number of calls to record "
                             "(calibration=8) or a list of batches of the graph's inputs")
        if data_aware and calibration is None:
            raise ValueError(
                f"pared.backend: the recipe's {', '.join(data_aware)} pass needs calibration data and none was "
                "given. Pass calibration=N to record the first N calls of each compiled graph (they run "
                "uncompressed) and compress from them, or compress offline with pared.compress(model, example, "
                "recipe=..., calibration=batches)")
        self.calibration = calibration
        self.target = target
        self.inductor = inductor
        self.verify = verify
        self.strict = bool(self.recipe) if strict is None else strict
        self.lowering = lowering
        self.compiled: list[CompiledGraph] = []
        self.fallbacks: list[str] = []
        self.__name__ = "pared"

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        if isinstance(self.calibration, int) and any(p.needs_calibration() for p in self.recipe or []):
            return _LazyCalibration(self, gm, self.calibration)
        return self._compile(gm, example_inputs, None if isinstance(self.calibration, int) else self.calibration)

    def _compile(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any], calibration) -> Callable:
        try:
            t0 = time.perf_counter()
            imported = import_dynamo(gm, example_inputs)
            t_import = time.perf_counter() - t0
            user = [imported.inputs[k] is not None for k in range(len(imported.inputs))]
            fakes = [_timing_input(n, ex) for n, ex, u in zip(_placeholders(gm), example_inputs, user) if u]
            compiled = compile_imported(
                imported,
                recipe=self.recipe,
                calibration=calibration,
                target=self.target,
                inductor=self.inductor,
                device=_device(example_inputs),
                example_inputs=fakes,
                timings={"import": t_import},
                verify=self.verify,
                lowering=self.lowering,
            )
        except Exception as e:
            if self.strict:
                raise
            msg = f"{type(e).__name__}: {e}"
            self.fallbacks.append(msg)
            warnings.warn(
                f"pared: could not compile this graph ({msg}); running the captured FX graph as is "
                "(nothing to compress: no recipe)"
                if not self.recipe
                else f"pared: could not compile this graph ({msg}); running it UNCOMPRESSED as asked (strict=False)",
                stacklevel=2,
            )
            return gm.forward
        self.compiled.append(compiled)
        return compiled

    @property
    def report(self) -> Report:
        """The rows of every compiled graph's report, in compile order."""
        out = Report()
        for c in self.compiled:
            for row in c.report:
                out.add(row.pass_name, row.name, **row.fields)
        return out


def _placeholders(gm) -> list:
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def _timing_input(node, ex):
    """What the whole-graph check runs the graph on: a copy of the real input (the graph may
    update it in place, e.g. a KV cache), else the fake example value Dynamo recorded."""
    from torch._subclasses.fake_tensor import FakeTensor

    if isinstance(ex, torch.Tensor) and not isinstance(ex, FakeTensor):
        return ex.detach().clone()
    m = node.meta.get("example_value")
    return m if isinstance(m, torch.Tensor) else ex


def _copy_input(a):
    """A recorded call's argument: a copy of an input tensor, a weight (Parameter) as it is."""
    if isinstance(a, torch.Tensor) and not isinstance(a, torch.nn.Parameter):
        return a.detach().clone()
    return a


class _LazyCalibration:
    """Dynamo's compiled function for a data-aware recipe under ``calibration=N``: the captured
    graph runs as is for its first N calls while their inputs are recorded (copies of the graph's
    own inputs, whatever the model-level call was), then the recipe runs with them as calibration
    batches and the compressed code replaces the graph for every later call."""

    def __init__(self, backend: PaRedBackend, gm: torch.fx.GraphModule, n: int):
        self.backend, self.gm, self.n = backend, gm, n
        self.recorded: list[list] = []
        self.compiled: Optional[Callable] = None

    def __call__(self, *args):
        if self.compiled is not None:
            return self.compiled(*args)
        # weights (Parameters) are kept as they are: the importer tells them from inputs by their type
        self.recorded.append([_copy_input(a) for a in args])
        out = self.gm.forward(*args)
        if len(self.recorded) >= self.n:
            self._compress()
        return out

    def _compress(self) -> None:
        imported_inputs = import_dynamo(self.gm, self.recorded[0]).inputs
        user = [k for k, idx in enumerate(imported_inputs) if idx is not None]
        batches = [tuple(call[k] for k in user) for call in self.recorded]
        print(f"pared: compressing a graph with calibration from its first {len(batches)} call(s)", file=sys.stderr)
        self.compiled = self.backend._compile(self.gm, self.recorded[-1], batches)
        self.recorded = []


def backend(
    recipe=None,
    calibration=None,
    target: str = "torch",
    inductor: bool = False,
    verify: bool = True,
    strict: Optional[bool] = None,
    lowering: bool = True,
) -> PaRedBackend:
    """A ``torch.compile`` backend running ``recipe`` (a pipeline string, list or YAML recipe).

    Args:
        recipe: the passes to run (None or "" compiles the graph unchanged).
        calibration: for a recipe with data-aware passes (GPTQ, SparseGPT, Wanda, static W8A8,
            SmoothQuant, ...): an int N records the first N calls of each compiled graph (run
            uncompressed), then compresses from them (lazy calibration; weights are then
            constants of the compiled code, as with Inductor's freezing); a list gives batches of
            the graph's own inputs. A data-aware recipe without it is refused here.
        target: "torch" (lower to torch ops) or "reference" (numpy interpreter; for debugging).
        inductor: hand the lowered graph to Inductor.
        verify: verify the IR between passes.
        strict: raise when compiling a graph fails, instead of running the captured graph as is
            (uncompressed). Default: raise when there is a recipe (a compression never silently
            disappears), fall back with a warning when there is none. The recipe itself is parsed
            here, so a misspelt pass or option fails at once.
        lowering: run the target's lowering passes after the recipe (``presets.LOWERING``: attention
            fusion for the torch target).
    """
    return PaRedBackend(recipe, calibration, target, inductor, verify, strict, lowering)


def pared_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
    """The backend registered as ``"pared"``: an empty recipe, torch lowering."""
    return PaRedBackend()(gm, example_inputs)


def _register() -> None:
    """Make ``torch.compile(backend="pared")`` work even when pared is not pip-installed."""
    try:
        from torch._dynamo.backends import registry
    except Exception:  # pragma: no cover - a torch without Dynamo
        return
    if "pared" in registry._COMPILER_FNS or registry._BACKENDS.get("pared") is not None:
        return  # already registered, or the entry point is being loaded and will register us
    registry.register_backend(pared_backend, name="pared")


_register()
