"""The offline torch entry: ``compress_torch(model, example_inputs, recipe=...)`` -> (module, report).

The model is captured once with ``torch.export`` (an ATen graph whose signature names every
parameter and buffer), imported into the IR, run through the recipe and lowered with the torch
backend. With ``dynamic=True`` (the default) every input dim is exported as ``Dim.AUTO``: torch
keeps a dim symbolic unless the model specialises it, so batch size and sequence length may change
between calls. A call whose shapes the compiled graph cannot take (a dim torch specialised, e.g.
one whose example size was 1) triggers a new export for those shapes, kept next to the first, like
a Dynamo recompile; ``recompile=False`` makes it an error instead.
"""

from __future__ import annotations

import inspect
import sys
import time
import warnings
from typing import Any, Optional

import torch
import torch.utils._pytree as pytree

from ..frontends.torch.importer import import_exported
from ..ir.errors import BindError
from ..ir.shapes import bind_symbols
from ..passes.context import Report
from .distributed import init_from_env
from .torch_backend import CompiledGraph, _Shape, compile_imported


def _as_tuple(example_inputs) -> tuple:
    if isinstance(example_inputs, tuple):
        return example_inputs
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    return (example_inputs,)


def _dynamic_shapes(model, args, kwargs):
    def spec(x):
        if isinstance(x, torch.Tensor):
            return {i: torch.export.Dim.AUTO for i in range(x.ndim)} or None
        return None

    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return tuple(pytree.tree_map(spec, a) for a in args) if not kwargs else None
    out = {}
    for name, v in bound.arguments.items():
        param = inspect.signature(model.forward).parameters[name]
        if param.kind == inspect.Parameter.VAR_POSITIONAL:
            out[name] = tuple(pytree.tree_map(spec, a) for a in v)
        elif param.kind == inspect.Parameter.VAR_KEYWORD:
            out[name] = {k: pytree.tree_map(spec, a) for k, a in v.items()}
        else:
            out[name] = pytree.tree_map(spec, v)
    return out


class _Variant:
    """One exported + compiled graph and how to feed it the caller's (args, kwargs)."""

    def __init__(self, ep, compiled: CompiledGraph):
        from torch.export.graph_signature import InputKind, OutputKind

        self.ep = ep
        self.compiled = compiled
        specs = ep.graph_signature.input_specs
        self.n_placeholders = len(specs)
        self.user_slots = [k for k, s in enumerate(specs) if s.kind == InputKind.USER_INPUT]
        self.user_outputs = [
            k for k, s in enumerate(ep.graph_signature.output_specs) if s.kind == OutputKind.USER_OUTPUT
        ]

    def flat_inputs(self, args, kwargs) -> list:
        in_spec = self.ep.call_spec.in_spec
        try:
            from torch.export._tree_utils import reorder_kwargs

            kwargs = reorder_kwargs(kwargs, in_spec)
        except Exception:  # older layouts: keep the caller's order
            pass
        flat, _ = pytree.tree_flatten((args, kwargs))
        full: list[Any] = [None] * self.n_placeholders
        for slot, v in zip(self.user_slots, flat):
            full[slot] = v
        return full

    def accepts(self, full: list) -> bool:
        g = self.compiled.graph
        ins = [full[k] for k in self.compiled.input_positions]
        if len(ins) != len(g.inputs) or not all(isinstance(t, torch.Tensor) for t in ins):
            return False
        try:
            bind_symbols([v.type for v in g.inputs], [_Shape(t) for t in ins])
        except BindError:
            return False
        return True

    def __call__(self, full: list):
        outs = self.compiled(*full)
        user = [outs[k] for k in self.user_outputs]
        return pytree.tree_unflatten(user, self.ep.call_spec.out_spec)


class CompressedModule(torch.nn.Module):
    """The compiled model: call it like the original. ``graph`` is the IR, ``report`` the report."""

    def __init__(self, model: torch.nn.Module, variant: _Variant, options: dict, recompile: bool):
        super().__init__()
        self._variants = [variant]
        self._options = options
        self._recompile = recompile
        self._model = [model]  # a list keeps the original out of this module's parameters

    @property
    def compiled(self) -> CompiledGraph:
        return self._variants[0].compiled

    @property
    def graph(self):
        return self.compiled.graph

    @property
    def report(self) -> Report:
        return self.compiled.report

    @property
    def variants(self) -> int:
        return len(self._variants)

    def forward(self, *args, **kwargs):
        for v in self._variants:
            full = v.flat_inputs(args, kwargs)
            if v.accepts(full):
                return v(full)
        if not self._recompile:
            raise ValueError(
                f"pared: the compiled graph does not accept inputs {_shapes(args, kwargs)} "
                "(export specialised a dim); compress with dynamic=True or recompile=True"
            )
        check_example(self._model[0], args, kwargs, "the call's inputs")
        variant, _ = _export_and_compile(self._model[0], args, kwargs, **self._options)
        self._variants.append(variant)
        return variant(variant.flat_inputs(args, kwargs))


def _shapes(args, kwargs) -> str:
    def one(v):
        return (
            f"{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
            if isinstance(v, torch.Tensor)
            else type(v).__name__
        )

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def check_example(model: torch.nn.Module, args: tuple, kwargs: dict, what: str = "the example inputs") -> None:
    """Fail with a readable error (before torch.export's own, and its logs) when ``model`` cannot
    be called on ``args``/``kwargs``: numpy arrays, a call that does not fit ``forward``'s
    signature, or shapes the model rejects (the model is run once, eagerly)."""
    name = type(model).__name__
    for where, v in [*((f"positional input {i}", a) for i, a in enumerate(args)), *kwargs.items()]:
        if type(v).__module__ == "numpy":
            raise TypeError(f"{what}: {where} is a numpy array; torch models take tensors: pass torch.from_numpy(x)")
    try:
        sig = inspect.signature(model.forward)
        sig.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{what} {_shapes(args, kwargs)} do not fit {name}.forward{sig}: {e}") from None
    except ValueError:  # no signature to read (a builtin forward): the call below checks
        pass
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure of the user's model on its example
        raise ValueError(
            f"{name} fails on {what} {_shapes(args, kwargs)}: {type(e).__name__}: {e}. "
            "Pass inputs the model accepts (the shapes and dtypes of a real call)"
        ) from None


def _export(model, args, kwargs, dynamic: bool):
    with torch.no_grad():
        if dynamic:
            return torch.export.export(
                model, args, kwargs, dynamic_shapes=_dynamic_shapes(model, args, kwargs), strict=False
            )
        return torch.export.export(model, args, kwargs, strict=False)


def _export_and_compile(model, args, kwargs, *, dynamic, recipe, calibration, target, inductor, verify, lowering):
    t0 = time.perf_counter()
    imported = None
    if dynamic:
        try:
            ep = _export(model, args, kwargs, True)
            t_export = time.perf_counter() - t0
            t0 = time.perf_counter()
            imported = import_exported(ep)
        except Exception as e:  # e.g. a dim only expressible as floor(s/2) after pooling
            warnings.warn(
                f"pared: dynamic shapes not usable for this model ({type(e).__name__}: {e}); compiling for the "
                "example shapes (other shapes export again)",
                stacklevel=3,
            )
            t0 = time.perf_counter()
    if imported is None:
        ep = _export(model, args, kwargs, False)
        t_export = time.perf_counter() - t0
        t0 = time.perf_counter()
        imported = import_exported(ep)
    t_import = time.perf_counter() - t0
    device = next((p.device for p in model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    user = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    compiled = compile_imported(
        imported,
        recipe=recipe,
        calibration=calibration,
        target=target,
        inductor=inductor,
        device=device or (user[0].device if user else None),
        example_inputs=user,
        timings={"import": t_import},
        verify=verify,
        lowering=lowering,
    )
    compiled.timings["export"] = t_export
    return _Variant(ep, compiled), compiled


def compress_torch(
    model: torch.nn.Module,
    example_inputs,
    recipe=None,
    *,
    example_kwargs: Optional[dict] = None,
    calibration=None,
    dynamic: bool = True,
    recompile: bool = True,
    target: str = "torch",
    inductor: bool = False,
    verify: bool = True,
    lowering: bool = True,
) -> tuple[CompressedModule, Report]:
    """Compile ``model`` offline through pared (torch.export capture); returns (module, report).

    Args:
        model: an ``nn.Module`` in eval mode (training-mode dropout/batchnorm stay opaque).
        example_inputs: a tensor or a tuple of positional arguments.
        recipe: the passes (pipeline string, list, or recipe); None runs none (only the lowering passes).
        example_kwargs: keyword arguments of the example call.
        calibration: calibration batches for data-aware passes (through the PassContext).
        dynamic: export every input dim as ``Dim.AUTO`` so batch/sequence changes need no recompile.
        recompile: export again for inputs the compiled graph cannot take instead of raising.
        target: "torch" or "reference" (run the IR with the numpy interpreter; for debugging).
        inductor: hand the lowered graph to Inductor.
        verify: verify the IR between passes.
        lowering: run the target's lowering passes after the recipe (``presets.LOWERING``: for
            the torch target, attention becomes one ``attention`` op run by
            ``F.scaled_dot_product_attention``); False keeps the recipe's graph as it is.

    Weights are constants of the result (changing the model's weights afterwards does not
    change it); the report lists opaque ops (name, count, where) and every pass's rows.

    Under ``torchrun --nproc-per-node N`` (or an initialised process group of N processes) give
    every process the same ``calibration``: process r calibrates on batches r, r + N, ... and
    the statistics are all-reduced, so every process gets the same weights (docs/distributed.md).
    """
    if calibration is not None:
        init_from_env(log=lambda s: print(s, file=sys.stderr))
    args = _as_tuple(example_inputs)
    kwargs = dict(example_kwargs or {})
    check_example(model, args, kwargs)
    options = dict(
        dynamic=dynamic,
        recipe=recipe,
        calibration=calibration,
        target=target,
        inductor=inductor,
        verify=verify,
        lowering=lowering,
    )
    variant, compiled = _export_and_compile(model, args, kwargs, **options)
    module = CompressedModule(model, variant, options, recompile)
    warn_unmatched(recipe, compiled.report, compiled.imported.graph)
    return module, compiled.report


def warn_unmatched(recipe: Any, report: Report, graph: Any) -> None:
    """Warn once per quantize/sparsify pass of ``recipe`` that changed no layer of ``graph``."""
    if recipe is None:
        return
    from .pipeline import parse_pipeline, unmatched_rewrites

    for msg in unmatched_rewrites(parse_pipeline(recipe), report, len(graph.params)):
        warnings.warn(msg, UserWarning, stacklevel=3)
