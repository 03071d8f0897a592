"""torch lowering of sparse linear layers onto pared's CPU sparse kernels, chosen by measurement.

A linear whose weight param carries a ``Sparse`` encoding (``dot_general``: f32/bf16 values) or a
``SparseQuant`` one (``qlinear``: int8 per channel, 4-bit groups, W8A8) gets sparse candidate
kernels next to its dense ones (:mod:`pared.backends.cpu`):

==================  ==============================================  ===========================
kernel              layout                                          activations
==================  ==============================================  ===========================
``sparse_<f>_f32``  ELL (constant fan-in) values + uint16 columns   f32 (bf16 values: ``_bf16``)
``sparse_<f>_i8``   ELL, int8 values, per-channel scales            f32 (or rounded to bf16)
``sparse_<f>_u4``   ELL, 4-bit values, per-group scales (+ zeros)   f32 (or rounded to bf16)
``sparse_<f>_w8a8`` ELL, int8 values                                int8 per token, f32 sums
``sparse_nm8_w8a8`` 4 of every 8 columns (2:4, 4:8), vpermt2b+VNNI  int8 per token, i32 sums
==================  ==============================================  ===========================

``<f>`` names the layer's pattern: ``nm`` (N:M), ``block``, ``fanin`` (every row keeps the same
count: constant fan-in) or ``unstructured`` (rows padded to the fullest one). The measured
chooser times every candidate — the sparse kernels, the dense-quantized kernel the layer would
otherwise get (``int_mm``, ``int8pack``, ``int4pack``) and the dense baseline — at the layer's
row counts, and the fastest no slower than the baseline wins (:func:`choose_fastest`), so a
sparse layer is never slower than its dense lowering; the decision is a ``KernelChoice`` row of
the report. ``use_kernels("compressed")`` forces the first sparse candidate; ``"dense"`` and
``"dense-layout"`` (the whole-graph check's alternative: dense-quantized kernels still compete) never
offer one. Without the kernel library (no compiler) the layer stays dense and the decision
says why.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from ...ir.core import Eqn, Param
from ...ir.ops.qops import dequantize_weight, split_inputs
from ...ir.packing import storage_bits
from ...ir.torch_dtypes import to_torch
from ...ir.types import TensorType
from ..costmodel.choice import KernelChoice
from ..costmodel.chooser import Candidate, Gemm, by_policy
from ..costmodel.measured import MeasuredChooser, probe_rows
from ..costmodel.policy import kernel_policy
from .bias import absorb_bias, following_bias

Build = Callable[[], object]


def _cpu():
    from ..cpu import build, formats, kernels  # the kernel package (torch + a C++ compiler at first use)

    return build, formats, kernels


def pattern_name(t: TensorType, padding: float) -> str:
    """``nm`` | ``block`` | ``fanin`` | ``unstructured``: the weight's pattern as the kernels see it."""
    sp = t.sparse
    if sp is not None and sp.format in ("nm", "block"):
        return sp.format
    return "fanin" if padding == 0.0 else "unstructured"


def _register(L, name: str, op) -> None:
    """The packed tensors become (non-persistent) buffers of the module, so its size counts them."""
    for key, t in op.tensors.items():
        if t is not None:
            L.root.register_buffer(L._reserve(f"sparse_{name}_{key}"), t, persistent=False)


def _candidate(L, name: str, op, fmt: str, key: tuple, xv, bias_node=None) -> tuple[Candidate, Build]:
    """(the candidate, with a callable for timing; the builder of its FX call on ``xv``)."""
    kernel = f"sparse_{fmt}_{op.kind.split('_', 1)[1]}" if op.kind.startswith("ell_") else f"sparse_{op.kind}"

    def build():
        _register(L, name, op)
        return L.call(op, xv, bias_node) if bias_node is not None else L.call(op, xv)

    return Candidate(kernel, lambda xx: op(xx), key=(kernel, *key), weight_bytes=op.weight.nbytes), build


def choose_fastest(L, gemm: Gemm, candidates: list[Candidate], policy: str, slower_than: str) -> KernelChoice:
    """Time every candidate (baseline last) and keep the fastest no slower than the baseline at
    every row count (``use_kernels("compressed")``: the first candidate, untimed)."""
    if policy == "compressed":
        return by_policy(gemm, candidates, candidates[0].kernel, "policy=compressed")
    chooser = MeasuredChooser(L.decisions.measurements, slower_than=slower_than,
                              cold=getattr(L, "streams_weights", False))
    choice = chooser.choose(gemm, candidates)
    base = choice.candidates[-1][1]
    ok = [(sum(t / b for t, b in zip(s, base)), k) for k, s in choice.candidates[:-1]
          if len(s) == len(base) and all(t <= b for t, b in zip(s, base))]
    if not ok:
        return choice  # decide() already refused every compressed kernel and said why
    best = min(ok)[1]
    if best == choice.chosen:
        return choice
    others = ", ".join(f"{k} {np.mean([b / t for t, b in zip(s, base)]):.2f}x" for k, s in choice.candidates[:-1])
    return dataclasses.replace(choice, chosen=best, reason=f"fastest measured (vs {choice.baseline}: {others})")


# ---- dot_general with a Sparse weight (float values) -----------------------------------------


def lower_sparse_linear(L, eqn: Eqn, xv):
    """The FX value of ``x @ W^T`` (+ a following bias) on a sparse kernel, or None to let the
    dense rule lower it (the weight is not sparse-encoded, not on CPU, or measured slower)."""
    w = eqn.inputs[1]
    if not (isinstance(w, Param) and w.type.sparse is not None and w.type.rank == 2 and L.device.type == "cpu"):
        return None
    if w.type.dtype.name not in ("f32", "bf16") or eqn.inputs[0].type.dtype.name not in ("f32", "bf16"):
        return None
    policy = kernel_policy()
    n, k = w.type.shape
    x = eqn.inputs[0]
    gemm = Gemm(w.name, eqn.op, n, k, probe_rows(x.type), x.type.dtype.name)
    base = Candidate("dense")
    if policy in ("dense", "dense-layout"):
        L.decisions.add(by_policy(gemm, [base], "dense", f"policy={policy}"))
        return None
    build_mod, formats, kernels = _cpu()
    if build_mod.library() is None:
        why = f"sparse CPU kernels unavailable ({build_mod.unavailable_reason()})"
        L.decisions.add(by_policy(gemm, [base], "dense", why))
        return None
    dense = np.asarray(L.graph.weight(w.name), np.float32)
    try:
        packed = formats.pack_ell(dense, vtype="bf16" if w.type.dtype.name == "bf16" else "f32")
    except ValueError as e:
        L.decisions.add(by_policy(gemm, [base], "dense", f"no sparse layout: {e}"))
        return None
    op = kernels.SparseLinear(packed)
    fmt = pattern_name(w.type, packed.padding)
    fb = following_bias(L, eqn)
    bias = None if fb is None else L.value(fb[1])
    cand, build = _candidate(L, w.name, op, fmt, (n, k, packed.fanin, packed.vtype), xv, bias)
    choice = choose_fastest(L, gemm, [cand, base], policy, "dense fp32")
    L.decisions.add(choice)
    if choice.chosen != cand.kernel:
        return None
    out = build()
    return absorb_bias(L, fb[0], out) if fb is not None else out


# ---- qlinear with a SparseQuant weight ---------------------------------------------------------


def sparse_qlinear_candidates(L, eqn: Eqn, xv) -> list[tuple[Candidate, Build]]:
    """Sparse kernels for a qlinear whose weight is sparse then quantized (CPU), fastest-first
    guess order; empty when none applies (the layer keeps its dense-quantized kernels)."""
    act, gs, act_dtype = eqn.attrs["act"], eqn.attrs["group_size"], eqn.attrs["act_dtype"]
    x, q_atom, scale_a, zero_a, act_scale_a = split_inputs(list(eqn.inputs), act)
    if L.device.type != "cpu" or q_atom.type.sparse is None or not isinstance(q_atom, Param):
        return []
    build_mod, formats, kernels = _cpu()
    lib = build_mod.library()
    if lib is None:
        return []
    get = lambda a: None if a is None else np.asarray(L.graph.weight(a.name))
    q, scale, zero, act_scale = get(q_atom), get(scale_a), get(zero_a), get(act_scale_a)
    if q.dtype not in (np.int8, np.uint8):
        return []  # fp8
    n, k = q.shape
    w = dequantize_weight(q, scale, zero, gs)
    out: list[tuple[Candidate, Build]] = []
    a_s = None if act_scale is None else float(act_scale)
    if act in ("dynamic", "static"):
        if q.dtype == np.int8 and lib.nm8:
            nm8 = formats.pack_nm8(q, scale)
            if nm8 is not None:
                op = kernels.SparseLinear(nm8, act=act, act_scale=a_s)
                out.append(_candidate(L, q_atom.name, op, "nm8", (n, k, act), xv))
        try:
            packed = formats.pack_ell(w, vtype="i8", q=q, scales=scale)
        except ValueError:
            packed = None
        if packed is not None and packed.fanin <= 1000:  # f32 sums of int8 products stay exact
            op = kernels.SparseLinear(packed, act=act, act_scale=a_s)
            fmt = pattern_name(q_atom.type, packed.padding)
            out.append(_candidate(L, q_atom.name, op, fmt, (n, k, packed.fanin, act), xv))
        return out
    else:
        bits = storage_bits(q_atom.type)
        vtype = "u4" if bits <= 4 else ("i8" if q.dtype == np.int8 else None)
        if vtype is None:
            return []
        try:
            packed = formats.pack_ell(w, vtype=vtype, q=q, scales=scale, zeros=zero, group_size=gs)
        except ValueError:
            return []
        adt = to_torch(act_dtype) if act_dtype is not None else None
        op = kernels.SparseLinear(packed, act_dtype=adt if adt == torch.bfloat16 else None)
        fmt = pattern_name(q_atom.type, packed.padding)
        out.append(_candidate(L, q_atom.name, op, fmt, (n, k, packed.fanin, packed.group, vtype, str(adt)), xv))
    return out


def choose_sparse_qlinear(L, gemm: Gemm, candidates: list[Candidate], base: Candidate, policy: str) -> KernelChoice:
    """A qlinear's decision among its sparse kernels and dense-quantized kernels (``candidates``,
    sparse first) and its baseline; the caller builds the chosen one."""
    cands = [*candidates, base]
    slower_than = "the int8 emulation in fp32" if base.fn is not None else "dense fp32"
    return choose_fastest(L, gemm, cands, policy, slower_than)


__all__ = ["choose_fastest", "choose_sparse_qlinear", "lower_sparse_linear", "pattern_name",
           "sparse_qlinear_candidates"]
