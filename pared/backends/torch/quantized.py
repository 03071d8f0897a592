"""torch lowering of ``qlinear`` onto torch's low-precision CPU/GPU kernels, with a cost model.

Importing this module registers the torch backend's ``qlinear`` rule in the lowering table
(:mod:`pared.backends.lowering`). Each quantized linear becomes one of:

==============  ==============================================  ===========================================
kernel          when                                            torch op
==============  ==============================================  ===========================================
``int4pack``    weight-only, <= 4 bits, any group (ragged last  ``aten._weight_int4pack_mm_for_cpu`` (K is
                group: K is zero-padded), bf16/f32 activations  padded to a whole group; x padded at run time)
``int8pack``    weight-only int8 per-channel symmetric          ``aten._weight_int8pack_mm``
``int_mm``      W8A8 int8 (per-token dynamic or static x)       ``torch._int_mm`` (int8 x int8 -> int32)
``dense``       anything else, or when measured slower          weights dequantized once; ``F.linear``
==============  ==============================================  ===========================================

The kernel is picked by the measured chooser of :mod:`pared.backends.costmodel` (a micro-benchmark
per weight shape: each candidate kernel and the dense fp32 ``F.linear`` are timed, best of 7, at
the layer's row counts on random data), and a compressed kernel is used only when it is no slower
than dense at each (a user never gets a slowdown silently). Every choice is a
:class:`~pared.backends.costmodel.KernelChoice` in ``Lowerer.decisions`` and then in the module's
``pared_kernel_decisions`` (:func:`kernel_choices` counts them); the compiler turns them into
report rows and one summary line (a layer kept dense is a decision, not a warning). ``use_kernels("compressed")``
(a context manager) forces compressed kernels, e.g. to test their numerics.

Numerics follow ``qlinear``'s reference: activations are read at ``act_dtype`` (bf16 for the
fast int4/int8 weight-only paths); the kernels keep scales in the activation dtype, so outputs
match the reference interpreter to bf16/f32 rounding, not bit for bit. A weight-only layer the
cost model keeps dense runs the fp32 ``F.linear`` it was measured against, without rounding its
activations to bf16 first (that cast alone made such layers ~20% slower than dense fp32 on CPU);
it is then closer to the unquantized function than the reference, by at most bf16 rounding.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ...ir.core import Eqn, Param
from ...ir.ops.qops import dequantize_weight, split_inputs
from ...ir.packing import storage_bits
from ...ir.torch_dtypes import to_torch
from ..costmodel.choice import KernelChoice, kernel_choices
from ..costmodel.chooser import Candidate, Gemm, by_policy
from ..costmodel.measured import MeasuredChooser, probe_rows
from ..costmodel.policy import POLICIES, kernel_policy, use_kernels
from ..lowering import register_lowering
from .bias import absorb_bias, following_bias
from .sparse import choose_sparse_qlinear, sparse_qlinear_candidates

INT4_GROUPS = (32, 64, 128, 256)
# int4pack on activations rounded to bf16, offered for an fp32 layer whose recipe left act_dtype
# unset (None: the lowering may pick) in a graph whose weights stream from memory (larger than the
# LLC: where 4-bit weights pay); a recipe that sets act_dtype=f32 never gets it
INT4_BF16 = "int4pack_bf16"
__all__ = ["INT4_GROUPS", "POLICIES", "kernel_choices", "lower_qlinear", "pack_int4", "use_kernels"]


# ---- the kernels (plain functions: FX calls them; Inductor can trace them) ---------------------


def int4pack_linear(x, w_packed, scale_zeros, group_size: int, n: int, k_pad: int):
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).to(scale_zeros.dtype)
    if x2.shape[1] != k_pad:
        x2 = F.pad(x2, (0, k_pad - x2.shape[1]))
    out = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, w_packed, group_size, scale_zeros)
    if out.shape[1] != n:
        out = out[:, :n]
    return out.to(x.dtype).reshape(*lead, n)


def int8pack_linear(x, w, scales):
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).to(scales.dtype)
    if x2.shape[1] != w.shape[1]:  # K zero-padded to a multiple of 16 (the kernel crashes otherwise)
        x2 = F.pad(x2, (0, w.shape[1] - x2.shape[1]))
    out = torch._weight_int8pack_mm(x2, w, scales)
    return out.to(x.dtype).reshape(*lead, w.shape[0])


def _tokens_and_scale(x, qmax: float, act_scale: Optional[torch.Tensor] = None):
    """x as fp32 rows [tokens, K] and its activation scale: per token max|x| / qmax (1 for an
    all-zero row), or the static ``act_scale`` (qops.quantize_activation's semantics)."""
    x2 = x.reshape(-1, x.shape[-1]).float()
    if act_scale is not None:
        return x2, act_scale.float()
    s = x2.abs().amax(-1, keepdim=True) / qmax
    return x2, torch.where(s > 0, s, torch.ones_like(s))


def int8_dynamic_linear(x, w_t, w_scale, act_scale: Optional[torch.Tensor] = None):
    """Per-token (or static per-tensor) int8 activations times int8 weights, int32 accumulation."""
    lead = x.shape[:-1]
    x2, s = _tokens_and_scale(x, 127.0, act_scale)
    xq = torch.round(x2 / s).clamp_(-127, 127).to(torch.int8)
    acc = torch._int_mm(xq, w_t)
    return (acc.float() * s * w_scale).to(x.dtype).reshape(*lead, w_t.shape[1])


def fp8_dynamic_linear(x, w, w_scale, act_scale: Optional[torch.Tensor] = None):
    """fp8 e4m3 per-token activations times fp8 weights (emulated in fp32: no fast CPU fp8 GEMM)."""
    lead = x.shape[:-1]
    x2, s = _tokens_and_scale(x, 448.0, act_scale)
    xq = (x2 / s).clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float()
    return (F.linear(xq, w) * s * w_scale).to(x.dtype).reshape(*lead, w.shape[0])


def dense_linear(x, w, act_dtype: Optional[torch.dtype] = None, bias: Optional[torch.Tensor] = None):
    if act_dtype is not None and act_dtype != x.dtype:
        x = x.to(act_dtype).to(x.dtype)
    return F.linear(x, w, bias)


# ---- weight preparation ----------------------------------------------------------------------


def pack_int4(
    q: np.ndarray, scale: np.ndarray, zero: Optional[np.ndarray], group_size: Optional[int], dtype: torch.dtype
):
    """(packed weight, scale_and_zeros [K'/g, N, 2], g, K') for ``_weight_int4pack_mm_for_cpu``.

    The kernel computes ``w = (u - 8) * s + z_t`` from unsigned nibbles u. Signed q (sym): u = q + 8,
    z_t = 0. Unsigned q with zero point z: u = q and ``(q - z) * s = (u - 8) * s + (8 - z) * s``.
    Per-channel scales are repeated over groups; a ragged last group is padded with u = 8 (the
    matching activations are zero-padded, so the pad contributes nothing); N is padded to a
    multiple of 16 with zero rows that the call slices off.
    """
    n, k = q.shape
    signed = q.dtype == np.int8
    if group_size is None:
        g = next((c for c in reversed(INT4_GROUPS) if k % c == 0), INT4_GROUPS[-1])
        reps = -(-k // g)
        scale = np.repeat(scale, reps, axis=1)
        zero = np.repeat(zero, reps, axis=1) if zero is not None else None
    else:
        g = group_size
    groups = -(-k // g)
    k_pad = groups * g
    u = q.astype(np.int32) + (8 if signed else 0)
    if k_pad != k:
        u = np.concatenate([u, np.full((n, k_pad - k), 8, np.int32)], axis=1)
    s = scale.astype(np.float32)
    zt = np.zeros_like(s) if zero is None else (8.0 - zero.astype(np.float32)) * s
    n_pad = -(-n // 16) * 16  # the packing wants N % 16 == 0: extra rows are sliced off the output
    if n_pad != n:
        u = np.concatenate([u, np.full((n_pad - n, k_pad), 8, np.int32)], axis=0)
        s = np.concatenate([s, np.zeros((n_pad - n, groups), np.float32)], axis=0)
        zt = np.concatenate([zt, np.zeros((n_pad - n, groups), np.float32)], axis=0)
    sz = np.stack([s.T, zt.T], axis=-1)  # [groups, N, 2]
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.from_numpy(np.ascontiguousarray(u)), 8)
    return packed, torch.from_numpy(np.ascontiguousarray(sz)).to(dtype), g, k_pad


# ---- the lowering rule -----------------------------------------------------------------------


def _nbytes(*ts: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def _register(L, name: str, t: torch.Tensor):
    return L._register(name, t.to(L.device) if t.device != L.device else t)


def _weights(L, eqn: Eqn):
    x, q, scale, zero, act_scale = split_inputs(list(eqn.inputs), eqn.attrs["act"])
    get = lambda a: None if a is None else np.asarray(L.graph.weight(a.name))
    return x, q, get(q), get(scale), get(zero), get(act_scale)


def _int4_option(L, xv, name, q, scale, zero, gs, adt, kernel: str):
    """(int4pack candidate on ``adt`` activations, builder of its FX call) for one layer."""
    n, k = q.shape
    cache = L.__dict__.setdefault("_int4_packed", {})  # the f32 and bf16 candidates share one packing
    if name not in cache:
        cache[name] = pack_int4(q, scale, zero, gs, torch.float32)
    packed, sz, g, k_pad = cache[name]
    sz = sz.to(adt)
    cand = Candidate(kernel, lambda xx: int4pack_linear(xx, packed, sz, g, n, k_pad), (k, n, g, str(adt)),
                     weight_bytes=_nbytes(packed, sz))

    def build():
        w, s = _register(L, f"int4pack_{name}", packed), _register(L, f"qaux_sz_{name}", sz)
        return L.call(int4pack_linear, xv, w, s, g, n, k_pad)

    return cand, build


def lower_qlinear(L, eqn: Eqn, i: int):
    act, gs, act_dtype = eqn.attrs["act"], eqn.attrs["group_size"], eqn.attrs["act_dtype"]
    x, q_atom, q, scale, zero, act_scale = _weights(L, eqn)
    n, k = q.shape
    xdt = to_torch(x.type.dtype)
    name = q_atom.name
    policy = kernel_policy()
    cpu = L.device.type == "cpu"
    xv = L.value(x)
    gemm = Gemm(name, eqn.op, n, k, probe_rows(x.type), x.type.dtype.name)
    base = Candidate("dense")  # dense fp32 F.linear: what runs when no compressed kernel does

    candidate = None  # (the compressed kernel, with a callable for measuring; builder of its fx call)
    extra = []  # further (kernel, builder) pairs, after ``candidate`` in preference order
    if act == "none" and cpu:
        adt = to_torch(act_dtype) if act_dtype is not None else xdt
        bits = storage_bits(q_atom.type)  # the encoding's bits (sparse+quant included), else the dtype's
        if q_atom.type.dtype.is_int and bits <= 4 and adt in (torch.bfloat16, torch.float32):
            candidate = _int4_option(L, xv, name, q, scale, zero, gs, adt, "int4pack")
            # the kernel's fast path reads bf16 activations: offered where the weights stream from memory
            if act_dtype is None and adt == torch.float32 and L.streams_weights:
                extra.append(_int4_option(L, xv, name, q, scale, zero, gs, torch.bfloat16, INT4_BF16))
        elif q.dtype == np.int8 and zero is None and gs is None and adt in (torch.bfloat16, torch.float32):
            k16 = -(-k // 16) * 16
            wq = torch.from_numpy(np.ascontiguousarray(np.pad(q, ((0, 0), (0, k16 - k)))))
            sc = torch.from_numpy(scale.reshape(-1).astype(np.float32)).to(adt)
            fn = lambda xx: int8pack_linear(xx, wq, sc)
            candidate = (
                Candidate("int8pack", fn, (k, n, str(adt)), weight_bytes=_nbytes(wq, sc)),
                lambda: L.call(
                    int8pack_linear, xv, _register(L, f"int8pack_{name}", wq), _register(L, f"qaux_s_{name}", sc)
                ),
            )
    elif act in ("dynamic", "static") and q.dtype == np.int8:
        w_t = torch.from_numpy(np.ascontiguousarray(q.T))
        ws = torch.from_numpy(scale.reshape(1, -1).astype(np.float32))
        a_s = torch.tensor(float(act_scale), dtype=torch.float32) if act_scale is not None else None
        fn = lambda xx: int8_dynamic_linear(xx, w_t, ws, a_s)
        w_f = torch.from_numpy(q.astype(np.float32))
        base = Candidate("dense", lambda xx: _int8_emulated(xx, w_f, ws, a_s))  # what runs if int_mm is not used

        def build():
            args = [xv, _register(L, f"int_mm_{name}", w_t), _register(L, f"qaux_s_{name}", ws)]
            if a_s is not None:
                args.append(_register(L, f"qaux_as_{name}", a_s))
            return L.call(int8_dynamic_linear, *args)

        candidate = (Candidate("int_mm", fn, (k, n, act), weight_bytes=_nbytes(w_t, ws)), build)

    sparse = sparse_qlinear_candidates(L, eqn, xv) if cpu and policy not in ("dense", "dense-layout") else []
    if sparse:  # a sparse + quantized weight: its sparse kernels compete with the dense-quantized ones
        options = sparse + ([candidate, *extra] if candidate is not None else [])
        choice = choose_sparse_qlinear(L, gemm, [c for c, _ in options], base, policy)
        _record(L, choice, eqn)
        for c, b in options:
            if choice.chosen == c.kernel:
                return b()
        return _lower_dense(L, eqn, xv, q, scale, zero, act_scale, name, act_dtype=act != "none")
    if candidate is not None and policy != "dense":
        cand, build = candidate
        options = [candidate, *extra]
        kernels = [c for c, _ in options]
        if policy == "compressed":
            choice = by_policy(gemm, [*kernels, base], cand.kernel, "policy=compressed")
        elif not cpu:
            why = f"not timed on {L.device.type} (the measured chooser runs on CPU)"
            choice = by_policy(gemm, [*kernels, base], cand.kernel, why)
        else:
            slower_than = "the int8 emulation in fp32" if base.fn is not None else "dense fp32"
            chooser = MeasuredChooser(L.decisions.measurements, slower_than=slower_than, cold=L.streams_weights)
            choice = chooser.choose(gemm, [*kernels, base])
        _record(L, choice, eqn)
        for c, b in options:
            if choice.chosen == c.kernel:
                return b()
        if act == "none":  # run the baseline that was measured: fp32 activations, not a slower cast to bf16
            return _lower_dense(L, eqn, xv, q, scale, zero, act_scale, name, act_dtype=False)
    elif candidate is None and policy != "dense":
        _record(L, by_policy(gemm, [base], "dense", "no compressed kernel for this layout on this device"), eqn)
    else:
        kernels = [candidate[0], base] if candidate is not None else [base]
        _record(L, by_policy(gemm, kernels, "dense", "policy=dense"), eqn)
    return _lower_dense(L, eqn, xv, q, scale, zero, act_scale, name)


def _lower_dense(L, eqn, xv, q, scale, zero, act_scale, name, act_dtype: bool = True):
    """The layer in float with the weights dequantized once. ``act_dtype=False`` ignores a weight-only
    layer's activation dtype (bf16) and runs in the input's dtype: what the cost model measured as
    the baseline, and closer to the unquantized function than the bf16 cast."""
    act, gs = eqn.attrs["act"], eqn.attrs["group_size"]
    if act == "none":
        w = torch.from_numpy(dequantize_weight(q, scale, zero, gs))
        adt = to_torch(eqn.attrs["act_dtype"]) if act_dtype and eqn.attrs["act_dtype"] is not None else None
        fb = following_bias(L, eqn)  # the bias inside F.linear, as the dense lowering does
        if fb is not None:
            return absorb_bias(
                L, fb[0], L.call(dense_linear, xv, _register(L, f"dense_{name}", w), adt, L.value(fb[1]))
            )
        return L.call(dense_linear, xv, _register(L, f"dense_{name}", w), adt)
    ws = torch.from_numpy(scale.reshape(1, -1).astype(np.float32))
    a_s = torch.tensor(float(act_scale), dtype=torch.float32) if act_scale is not None else None
    args = [xv]
    if q.dtype == np.int8:  # int8 activations on a device without _int_mm: exact integers in fp32
        w = torch.from_numpy(q.astype(np.float32))
        args += [_register(L, f"dense_{name}", w), _register(L, f"qaux_s_{name}", ws)]
        fn = _int8_emulated
    else:
        w = torch.from_numpy(q.astype(np.float32))
        args += [_register(L, f"dense_{name}", w), _register(L, f"qaux_s_{name}", ws)]
        fn = fp8_dynamic_linear
    if a_s is not None:
        args.append(_register(L, f"qaux_as_{name}", a_s))
    return L.call(fn, *args)


def _int8_emulated(x, w, w_scale, act_scale=None):
    lead = x.shape[:-1]
    x2, s = _tokens_and_scale(x, 127.0, act_scale)
    xq = torch.round(x2 / s).clamp_(-127, 127)
    # |xq|, |q| <= 127: integer products summed in fp32 are exact up to K ~ 1000, close beyond
    return (F.linear(xq, w) * s * w_scale).to(x.dtype).reshape(*lead, w.shape[0])


def _record(L, choice: KernelChoice, eqn: Eqn) -> None:
    """Keep the decision on the lowering (the compiler reports it: one row per layer, one summary line)."""
    L.decisions.add(choice)


def _lowerable(eqn: Eqn) -> bool:
    """The rule reads the weights as constants, and packs 4-bit weight-only layers in groups the
    int4pack kernel takes; other qlinears decline and run qlinear's numpy reference."""
    gs = eqn.attrs["group_size"]
    int4_groups = eqn.attrs["act"] != "none" or storage_bits(eqn.inputs[1].type) > 4 or gs is None or gs in INT4_GROUPS
    return int4_groups and all(isinstance(a, Param) for a in eqn.inputs[1:])


register_lowering("qlinear", "torch", lambda L, eqn, *inputs: lower_qlinear(L, eqn, -1), checker=_lowerable)
