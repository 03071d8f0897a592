"""Lower a graph for the Triton target: fused regions and linear GEMMs become Triton launches,
every other equation a torch op (through the torch backend's lowering).

Each kernel equation is swapped for an ``opaque`` equation whose callable is the kernel's host
wrapper, and the torch backend lowers the rest; the result is an FX GraphModule like the torch
backend's. Regions the generator cannot express run as torch ops (their equations are inlined)
and are reported, never a crash.

Devices: Triton needs a CUDA GPU, or the Triton interpreter (``TRITON_INTERPRET=1`` in the
environment before kernels are generated; it runs them on CPU tensors, slowly, for tests).
Without either, :func:`lower` raises :class:`TritonUnavailableError` at once, or with
``fallback="torch"`` returns the torch backend's module and reports the fallback.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from ...ir import Eqn, Graph, Var, make_eqn
from ...ir.opdef import get_op
from ...ir.ops.region import GEMM_KINDS, POINTWISE_KINDS
from ...ir.regions import splice_region
from ..costmodel.choice import KernelChoice, report_decisions
from ..costmodel.roofline import DevicePeaks, choose, device_peaks
from .emit import CodegenError
from .gemm import GemmKernel, analyze
from .pointwise import PointwiseKernel
from .source import interpreting


class TritonUnavailableError(RuntimeError):
    """The Triton target cannot run here (no CUDA GPU and no interpreter)."""


def check_device(device=None) -> torch.device:
    """The device kernels will run on; raises :class:`TritonUnavailableError` if none can."""
    try:
        import triton  # noqa: F401
    except ImportError as e:
        raise TritonUnavailableError("pared triton target: the `triton` package is not installed "
                                     "(pip install triton), or compile with target='torch'") from e
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TritonUnavailableError("pared triton target: device 'cuda' was asked for but torch sees no CUDA GPU")
        return dev
    if dev.type == "cpu" and interpreting():
        return dev
    raise TritonUnavailableError(
        f"pared triton target: no CUDA GPU here (torch.cuda.is_available() is False, device {dev}). "
        "Triton kernels need an NVIDIA/AMD GPU. Compile with target='torch', pass fallback='torch' to "
        "run the same graph with torch ops (reported), or set TRITON_INTERPRET=1 before compiling to run "
        "the kernels on the CPU interpreter (tests only: very slow)."
    )


class Launch:
    """An FX-callable kernel: returns one tensor for one output, else a tuple."""

    def __init__(self, fn: Callable, n_out: int, name: str):
        self.fn = fn
        self.n_out = n_out
        self.__name__ = name

    def __call__(self, *xs):
        outs = self.fn(*xs)
        return outs[0] if self.n_out == 1 else tuple(outs)


class GemmDispatch:
    """A compressed GEMM kernel plus its dense twin; per call the roofline chooser picks the faster
    for the actual M (memoised), so a user never gets a predicted slowdown silently."""

    def __init__(self, region: Graph, kind: str, fmt: str, index: int, peaks: DevicePeaks, name: str = ""):
        self.region, self.kind, self.fmt, self.peaks, self.name = region, kind, fmt, peaks, name
        self.spec = analyze(region)
        self.compressed = GemmKernel(region, kind, {index: fmt})
        self.dense_region, self.dequants = _dense_variant(region)
        self.dense: Optional[GemmKernel] = None
        self.dense_weights: Optional[list] = None
        self.choices: dict[int, KernelChoice] = {}
        x = region.inputs[self.spec.x_index]
        w = self.spec.dots[0].out.type.shape[-1]
        self.n = w if isinstance(w, int) else None
        self.k = x.type.shape[-1]
        self.group = self.spec.operands[index].group_size
        self.elem = 4 if x.type.dtype.name == "f32" else 2

    def choice(self, m: int, n: int) -> KernelChoice:
        c = self.choices.get(m)
        if c is None:
            c = choose(self.fmt, m, n, self.k, self.peaks, group_size=self.group, elem_bytes=self.elem,
                       layer=self.name, op=self.kind)
            self.choices[m] = c
        return c

    def __call__(self, *xs):
        x = xs[self.spec.x_index]
        m = math.prod(x.shape[:-1])
        n = self.n or self.spec.dots[0].out.type.shape[-1]
        if self.choice(m, n).chosen != "dense":
            return self.compressed(*xs)
        if self.dense is None:
            self.dense = GemmKernel(self.dense_region, "gemm")
            self.dense_weights = [
                _dequantize_torch(e, [xs[self.region.inputs.index(a)] for a in e.inputs]) for e in self.dequants
            ]
        return self.dense(*xs, *self.dense_weights)


def _dense_variant(region: Graph) -> tuple[Graph, list[Eqn]]:
    """The region with each weight dequantize hoisted out: its result becomes an extra input."""
    dq = [e for e in region.eqns if e.op == "dequantize"]
    return Graph(
        region.inputs + tuple(e.out for e in dq), tuple(e for e in region.eqns if e.op != "dequantize"), region.outputs
    ), dq


def _dequantize_torch(e: Eqn, ts) -> torch.Tensor:
    """A weight's dequantization, once, with the op's reference (weights are constants)."""
    arrays = [t.detach().cpu().numpy() for t in ts]
    out = get_op("dequantize").impl(*arrays, **dict(e.attrs))
    from ...ir.torch_dtypes import to_torch

    return torch.from_numpy(np.ascontiguousarray(out)).to(ts[0].device, to_torch(e.out.type.dtype))


def _weight_format(region: Graph, graph_inputs: tuple, index: int) -> Optional[str]:
    """The compressed format a dot's weight asks for through its type's encoding, if any."""
    spec = analyze(region)
    op = spec.operands[index]
    t = graph_inputs[op.inputs[0]].type
    enc = t.encoding
    sparse = getattr(enc, "sparse", enc if getattr(enc, "kind", None) == "sparse" else None)
    is24 = sparse is not None and sparse.format == "nm" and (sparse.n, sparse.m) == (2, 4)
    if op.fmt == "dense":
        return "sparse24" if is24 else None
    if op.fmt == "int4":
        return "sparse24_int4" if is24 else "int4"
    return op.fmt


def _single_dot_region(e: Eqn) -> Optional[Graph]:
    x, w = e.inputs
    (lc, rc), (lb, rb) = e.attrs["contract"], e.attrs["batch"]
    if lb or rb or w.type.rank != 2 or x.type.rank < 1 or lc != (x.type.rank - 1,) or rc not in ((0,), (1,)):
        return None
    if x.type.dtype.name not in ("f16", "bf16", "f32") or w.type.dtype != x.type.dtype:
        return None
    if e.attrs["out_dtype"] not in (None, x.type.dtype):
        return None
    xi, wi = Var(x.type), Var(w.type)
    d = make_eqn("dot_general", [xi, wi], dict(e.attrs))
    return Graph((xi, wi), (d,), d.outputs)


def lower(
    graph: Graph,
    *,
    device=None,
    tensors: Optional[Mapping[str, torch.Tensor]] = None,
    opaque: Optional[Mapping[str, Any]] = None,
    fallback: str = "error",
    report=None,
    device_name: Optional[str] = None,
):
    """An FX GraphModule running ``graph`` with Triton kernels (see the module docstring).

    Args:
        graph: the IR, usually after the ``fuse`` pass.
        device: where inputs and weights live (default: cuda if present).
        tensors, opaque: as for :func:`pared.backends.torch.lower`.
        fallback: ``"error"`` (raise when Triton cannot run here) or ``"torch"`` (use the torch
            backend instead and add a report row saying so).
        report: a :class:`pared.passes.Report` for one row per kernel decision.
        device_name: peaks table entry for the cost model (default: the GPU's name, else H100).
    """
    from ..torch import lower as torch_lower

    if fallback not in ("error", "torch"):
        raise ValueError(f"fallback must be 'error' or 'torch', got {fallback!r}")
    try:
        dev = check_device(device)
    except TritonUnavailableError as err:
        if fallback != "torch":
            raise
        if report is not None:
            report.add("lower", "triton", backend="torch", reason=str(err).split(". ")[0])
        # the torch backend has no rule for region ops: run their equations as torch ops
        flat = [x for e in graph.eqns for x in (_inline(e) if e.op == "fused" else [e])]
        return torch_lower(graph.replace(eqns=tuple(flat)), device=device, tensors=tensors, opaque=opaque)
    if device_name is None and dev.type == "cuda":
        device_name = torch.cuda.get_device_name(dev)
    peaks = device_peaks(device_name)
    launchers: dict[str, Any] = {}
    eqns: list[Eqn] = []
    for i, e in enumerate(graph.eqns):
        made = _kernel_for(e, i, peaks, report)
        if made is None:
            if e.op == "fused":
                eqns.extend(_inline(e))
            else:
                eqns.append(e)
            continue
        target = f"triton.{i}.{e.attrs['kind'] if e.op == 'fused' else 'gemm'}"
        launchers[target] = Launch(made, len(e.outputs), target.replace(".", "_"))
        out_types = tuple((v.type.dtype, v.type.shape) for v in e.outputs)
        op = make_eqn("opaque", e.inputs, {"target": target, "out_types": out_types}, loc=e.loc)
        eqns.append(op.replace(outputs=e.outputs))
    lowered = graph.replace(eqns=tuple(eqns))
    return torch_lower(lowered, device=dev, tensors=tensors, opaque={**(opaque or {}), **launchers})


def _kernel_for(e: Eqn, i: int, peaks, report) -> Optional[Callable]:
    name = e.loc or f"eqn{i}"
    try:
        if e.op == "fused":
            kind = e.attrs["kind"]
            (region,) = e.regions
            if kind in POINTWISE_KINDS:
                k = PointwiseKernel(region, kind)
                _row(report, name, kind=kind, kernel="pointwise")
                return k
            if kind in GEMM_KINDS:
                return _gemm(region, kind, e.inputs, name, peaks, report)
            raise CodegenError(f"no Triton template for fused kind {kind!r}")
        if e.op == "dot_general":
            region = _single_dot_region(e)
            if region is not None:
                return _gemm(region, "gemm", e.inputs, name, peaks, report)
    except CodegenError as err:
        _row(report, name, kind=e.attrs["kind"] if e.op == "fused" else e.op, kernel="torch", reason=str(err))
    return None


def _gemm(region: Graph, kind: str, outer_inputs, name: str, peaks, report) -> Callable:
    spec = analyze(region)
    for idx in range(len(spec.operands)):
        fmt = _weight_format(region, outer_inputs, idx)
        if fmt is not None and kind != "int8_gemm" and len(spec.operands) == 1:
            d = GemmDispatch(region, kind, fmt, idx, peaks, name)
            n = spec.dots[0].out.type.shape[-1]
            if isinstance(n, int):  # the roofline's decisions at decode, small-batch and prefill sizes
                report_decisions(
                    report, [d.choice(m, n) for m in (1, 16, 2048)], kind=kind, backend="triton", device=peaks.name
                )
            return d
    _row(report, name, kind=kind, kernel="+".join(op.fmt for op in spec.operands))
    return GemmKernel(region, kind)


def _row(report, name: str, **fields) -> None:
    if report is not None:
        report.add("lower", name, backend="triton", **fields)


def _inline(e: Eqn) -> list[Eqn]:
    """A region's equations in its place (torch runs them as separate ops), or the region op
    itself when its body cannot stand in for it (the torch backend then runs its decomposition)."""
    body = splice_region(e)
    return body if body is not None else [e]


__all__ = ["GemmDispatch", "Launch", "TritonUnavailableError", "check_device", "lower"]
