"""The torch backend's lowering rules: IR op -> torch calls (see :mod:`pared.backends.lowering`).

Each rule is ``rule(lowerer, eqn, *inputs) -> fx value`` where ``inputs`` are the FX values of the
equation's inputs (Python numbers for Literals; ``lowerer.tensor(atom)`` makes a 0-d tensor of one).
An op without a rule, or whose rule declines, runs its decomposition or its numpy reference
(:func:`lower_reference`). ``dot_general`` picks ``F.linear`` / ``matmul`` where the layout allows
(and fuses a following bias add into ``F.linear``), and falls back to ``einsum``; ``attention``
is ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
import operator
import string

import numpy as np
import torch
import torch.nn.functional as F

from ...ir.core import Eqn, Literal
from ...ir.dtypes import from_numpy, int_range
from ...ir.opdef import get_op
from ...ir.torch_dtypes import to_torch
from ..lowering import register_lowering
from .bias import absorb_bias, following_bias
from .sparse import lower_sparse_linear


def lowers(*ops: str, **kw):
    """``register_lowering(ops, "torch")``."""
    return register_lowering(ops, "torch", **kw)


def _simple(fn, tensor_args: int = 1):
    """A rule calling ``fn(*inputs)``; the first ``tensor_args`` inputs must be tensors."""

    def rule(L, eqn, *inputs):
        args = [
            L.tensor(a) if k < tensor_args and isinstance(a, Literal) else x
            for k, (a, x) in enumerate(zip(eqn.inputs, inputs))
        ]
        return L.call(fn, *args)

    return rule


for _op, _fn in {
    "neg": torch.neg,
    "abs": torch.abs,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "silu": F.silu,
    "sin": torch.sin,
    "cos": torch.cos,
    "erf": torch.erf,
    "reciprocal": torch.reciprocal,
    "floor": torch.floor,
    "sign": torch.sign,
    "logical_not": torch.logical_not,
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "pow": torch.pow,
    "eq": torch.eq,
    "ne": torch.ne,
    "lt": torch.lt,
    "le": torch.le,
    "gt": torch.gt,
    "ge": torch.ge,
}.items():
    lowers(_op)(_simple(_fn))
for _op, _fn in {
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
}.items():
    lowers(_op)(_simple(_fn, 2))


@lowers("div")
def _div(L, eqn, x, y):
    x = L.tensor(eqn.inputs[0])
    if eqn.outputs[0].type.dtype.is_int:
        return L.call(torch.div, x, y, rounding_mode="trunc")
    return L.call(torch.div, x, y)


@lowers("gelu")
def _gelu(L, eqn, x):
    return L.call(F.gelu, x, approximate=eqn.attrs["approximate"])


@lowers("where")
def _where(L, eqn, c, x, y):
    if isinstance(eqn.inputs[1], Literal) and isinstance(eqn.inputs[2], Literal):
        x = L.tensor(eqn.inputs[1])
    return L.call(torch.where, c, x, y)


def _float_to_int(x, dtype: torch.dtype, lo: int, hi: int):
    """cast's float -> int: truncate toward zero and saturate, nan -> 0 (XLA's convert)."""
    return torch.nan_to_num(x.double(), nan=0.0).trunc().clamp(lo, hi).to(dtype)


@lowers("cast")
def _cast(L, eqn, x):
    src, dst = eqn.inputs[0].type.dtype, eqn.attrs["dtype"]
    x = L.tensor(eqn.inputs[0])
    if dst.is_int and src.is_float:
        return L.call(_float_to_int, x, to_torch(dst), *int_range(dst))
    y = L.method("to", x, to_torch(dst))
    if dst.is_int and dst.bits < 8:  # 4-bit values live in 8-bit storage: the reference clamps them
        y = L.call(torch.clamp, y, *int_range(dst))
    return y


@lowers("clamp")
def _clamp(L, eqn, x):
    lo, hi = eqn.attrs["min"], eqn.attrs["max"]
    dt = eqn.inputs[0].type.dtype
    if dt.is_int:  # an integer input clamps to the integers inside [min, max], within its range
        a, b = int_range(dt)
        lo = None if lo is None else min(max(math.ceil(lo), a), b)
        hi = None if hi is None else min(max(math.floor(hi), a), b)
    return x if lo is None and hi is None else L.call(torch.clamp, x, lo, hi)


def _reduce(fn):
    def rule(L, eqn, x):
        axes, keep = list(eqn.attrs["axes"]), eqn.attrs["keepdims"]
        if not axes:
            return x
        dt = eqn.outputs[0].type.dtype
        if dt.is_int and fn in (torch.sum, torch.prod):  # torch widens to int64; the IR wraps in the input's type
            return L.call(fn, x, axes, keepdim=keep, dtype=to_torch(dt))
        return L.call(fn, x, axes, keepdim=keep)

    return rule


lowers("reduce_sum")(_reduce(torch.sum))
lowers("reduce_mean")(_reduce(torch.mean))
lowers("reduce_max")(_reduce(torch.amax))
lowers("reduce_min")(_reduce(torch.amin))


@lowers("reduce_prod")
def _prod(L, eqn, x):
    rank, dt = eqn.inputs[0].type.rank, eqn.outputs[0].type.dtype
    kw = {"dtype": to_torch(dt)} if dt.is_int else {}  # torch widens integer products to int64
    for a in sorted(eqn.attrs["axes"], reverse=True):
        x = L.call(torch.prod, x, a % rank, keepdim=eqn.attrs["keepdims"], **kw)
    return x


@lowers("argmax")
def _argmax(L, eqn, x):
    return L.call(torch.argmax, x, eqn.attrs["axis"], keepdim=eqn.attrs["keepdims"])


@lowers("cumsum")
def _cumsum(L, eqn, x):
    return L.call(torch.cumsum, x, eqn.attrs["axis"], dtype=to_torch(eqn.outputs[0].type.dtype))


@lowers("softmax", "log_softmax")
def _softmax(L, eqn, x):
    fn = torch.softmax if eqn.op == "softmax" else torch.log_softmax
    return L.call(fn, x, eqn.attrs["axis"])


@lowers("layer_norm", "rms_norm")
def _norm(L, eqn, x, *rest):
    t = eqn.inputs[0].type
    axes = sorted(a % t.rank for a in eqn.attrs["axes"])
    shape = L.shape(t.shape[axes[0] :], allow_infer=False)
    rest = list(rest)
    if eqn.op == "layer_norm":
        rest += [None] * (2 - len(rest))
        return L.call(F.layer_norm, x, shape, *rest, eqn.attrs["eps"])
    rest += [None] * (1 - len(rest))
    return L.call(F.rms_norm, x, shape, *rest, eqn.attrs["eps"])


@lowers("batch_norm", checker=lambda eqn: eqn.attrs["axis"] % eqn.inputs[0].type.rank == 1)
def _batch_norm(L, eqn, x, mean, var, *rest):
    rest = list(rest) + [None] * (2 - len(rest))
    return L.call(F.batch_norm, x, mean, var, rest[0], rest[1], False, 0.0, eqn.attrs["eps"])


# -- contractions -----------------------------------------------------------------------------


def _float_dot(eqn: Eqn) -> bool:
    """Integer dots/convs and those that widen their accumulation run the reference (exact integers)."""
    x = eqn.inputs[0]
    return eqn.attrs["out_dtype"] in (None, x.type.dtype) and not x.type.dtype.is_int


@lowers("dot_general", checker=_float_dot)
def _dot(L, eqn, *inputs):
    x, y = eqn.inputs
    rx, ry = x.type.rank, y.type.rank
    (lc, rc), (lb, rb) = eqn.attrs["contract"], eqn.attrs["batch"]
    lc, lb, rc, rb = (tuple(a % r for a in axes) for axes, r in ((lc, rx), (lb, rx), (rc, ry), (rb, ry)))
    a, b = L.tensor(x), L.tensor(y)
    nb = len(lb)
    if lb == rb == tuple(range(nb)) and len(lc) == 1:
        if ry == nb + 2 and lc == (rx - 1,) and rc == (nb + 1,) and nb == 0:
            return _linear(L, eqn, a, b)
        if ry == nb + 2 and lc == (rx - 1,) and rc == (nb,) and (nb == 0 or rx == nb + 2):
            return L.call(torch.matmul, a, b)
        if nb and rx == nb + 2 and ry == nb + 2 and lc == (rx - 1,) and rc == (ry - 1,):
            return L.call(torch.matmul, a, L.call(torch.transpose, b, -1, -2))
    return L.call(torch.einsum, _einsum_spec(rx, ry, lc, rc, lb, rb), a, b)


def _linear(L, eqn, a, b):
    """``x @ W.T`` as F.linear, absorbing a following ``add`` of a 1-d bias; a sparse-encoded
    weight on CPU first offers its sparse kernel to the cost model (:mod:`.sparse`)."""
    out = lower_sparse_linear(L, eqn, a)
    if out is not None:
        return out
    fb = following_bias(L, eqn)
    if fb is not None:
        return absorb_bias(L, fb[0], L.call(F.linear, a, b, L.value(fb[1])))
    return L.call(F.linear, a, b)


def _einsum_spec(rx, ry, lc, rc, lb, rb) -> str:
    letters = iter(string.ascii_letters)
    xs = [next(letters) for _ in range(rx)]
    ys = [None] * ry
    for a, b in zip(lc + lb, rc + rb):
        ys[b] = xs[a]
    ys = [c if c is not None else next(letters) for c in ys]
    out = [xs[a] for a in lb] + [c for k, c in enumerate(xs) if k not in lc and k not in lb]
    out += [c for k, c in enumerate(ys) if k not in rc and k not in rb]
    return f"{''.join(xs)},{''.join(ys)}->{''.join(out)}"


@lowers("attention")
def _attention(L, eqn, *inputs):
    """``F.scaled_dot_product_attention``: flash kernels on CPU and GPU, scores never stored."""
    q, k, v, *mask = eqn.inputs
    kw = {"scale": eqn.attrs["scale"]}
    if mask:
        kw["attn_mask"] = L.tensor(mask[0])
    if q.type.shape[-3] != k.type.shape[-3]:
        kw["enable_gqa"] = True
    return L.call(F.scaled_dot_product_attention, *(L.tensor(a) for a in (q, k, v)), **kw)


@lowers("conv", checker=_float_dot)
def _conv(L, eqn, *inputs):
    x, w = (L.tensor(a) for a in eqn.inputs)
    n = eqn.inputs[0].type.rank - 2
    pads = eqn.attrs["padding"]
    if all(lo == hi for lo, hi in pads):
        padding = [lo for lo, _ in pads]
    else:
        x = L.call(F.pad, x, [p for lo, hi in reversed(pads) for p in (lo, hi)])
        padding = 0
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    return L.call(fn, x, w, None, list(eqn.attrs["strides"]), padding, list(eqn.attrs["dilation"]), eqn.attrs["groups"])


def _symmetric_pool(eqn: Eqn) -> bool:
    """torch pools pad symmetrically, by at most half the window; other paddings run the reference."""
    return all(lo == hi and 2 * lo <= k for (lo, hi), k in zip(eqn.attrs["padding"], eqn.attrs["window"]))


@lowers("max_pool", "avg_pool", checker=_symmetric_pool)
def _pool(L, eqn, x):
    win, strides, pads = list(eqn.attrs["window"]), list(eqn.attrs["strides"]), eqn.attrs["padding"]
    n = len(win)
    padding = [lo for lo, _ in pads]
    if eqn.op == "max_pool":
        return L.call({1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n], x, win, strides, padding)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    return L.call(fn, x, win, strides, padding, False, eqn.attrs["count_include_pad"])


# -- shape ops ----------------------------------------------------------------------------------


@lowers("reshape")
def _reshape(L, eqn, x):
    return L.call(torch.reshape, L.tensor(eqn.inputs[0]), L.shape(eqn.attrs["shape"]))


@lowers("transpose")
def _transpose(L, eqn, x):
    return L.call(torch.permute, L.tensor(eqn.inputs[0]), list(eqn.attrs["perm"]))


@lowers("broadcast_in_dim")
def _broadcast(L, eqn, *inputs):
    x = eqn.inputs[0]
    shape, dims = eqn.attrs["shape"], eqn.attrs["dims"]
    out_dt = to_torch(eqn.outputs[0].type.dtype)
    if isinstance(x, Literal):
        return L.call(torch.full, L.shape(shape, allow_infer=False), x.value, dtype=out_dt, device=L.device)
    v = L.tensor(x)
    if list(dims) != sorted(dims):
        order = sorted(range(len(dims)), key=lambda k: dims[k])
        v = L.call(torch.permute, v, order)
        dims = tuple(sorted(dims))
    if tuple(dims) != tuple(range(len(shape) - len(dims), len(shape))):
        inter = [1] * len(shape)
        for k, d in enumerate(dims):
            inter[d] = x.type.shape[k]
        v = L.call(torch.reshape, v, L.shape(inter))
    return L.method("expand", v, *L.shape(shape))


@lowers("slice")
def _slice(L, eqn, *inputs):
    x = eqn.inputs[0]
    st, lim = eqn.attrs["start"], eqn.attrs["limit"]
    strides = eqn.attrs["stride"] or (1,) * x.type.rank
    idx = []
    for a, d in enumerate(x.type.shape):
        s, e, k = st[a], lim[a], strides[a]
        if s == 0 and e == d and k == 1:
            idx.append(slice(None))
        else:
            idx.append(slice(L.dim(s) if s != 0 else None, None if e == d else L.dim(e), k if k != 1 else None))
    return L.call(operator.getitem, L.tensor(x), tuple(idx))


@lowers("concat")
def _concat(L, eqn, *inputs):
    return L.call(torch.cat, [L.tensor(a) for a in eqn.inputs], eqn.attrs["axis"])


def _wrap_negative(idx, n):
    """np.take's indices: a negative index counts from the end."""
    return torch.where(idx < 0, idx + n, idx)


@lowers("index_copy")
def _index_copy(L, eqn, x, idx, src):
    axis = eqn.attrs["axis"] % eqn.inputs[0].type.rank
    n = L.dim(eqn.inputs[0].type.shape[axis])
    idx = L.call(_wrap_negative, L.call(torch.Tensor.long, L.tensor(eqn.inputs[1])), n)
    return L.call(torch.index_copy, L.tensor(eqn.inputs[0]), axis, idx, L.tensor(eqn.inputs[2]))


@lowers("take")
def _take(L, eqn, *inputs):
    x, idx = eqn.inputs
    axis = eqn.attrs["axis"] % x.type.rank
    tx, ti = L.tensor(x), L.tensor(idx)
    if idx.type.dtype.is_signed:
        ti = L.call(_wrap_negative, ti, L.dim(x.type.shape[axis]))
    if axis == 0 and x.type.rank == 2 and x.type.dtype.is_float:
        return L.call(F.embedding, ti, tx)
    flat = L.call(torch.reshape, ti, [-1])
    picked = L.call(torch.index_select, tx, axis, flat)
    return L.call(torch.reshape, picked, L.shape(eqn.outputs[0].type.shape))


@lowers("pad")
def _pad(L, eqn, x):
    low, high = eqn.attrs["low"], eqn.attrs["high"]
    pads = [p for lo, hi in reversed(list(zip(low, high))) for p in (lo, hi)]
    return L.call(F.pad, L.tensor(eqn.inputs[0]), pads, value=eqn.attrs["value"])


@lowers("iota")
def _iota(L, eqn):
    shape, axis = eqn.attrs["shape"], eqn.attrs["axis"]
    r = L.call(torch.arange, L.dim(shape[axis]), dtype=to_torch(eqn.attrs["dtype"]), device=L.device)
    if len(shape) == 1:
        return r
    inter = [1] * len(shape)
    inter[axis] = -1
    return L.method("expand", L.call(torch.reshape, r, inter), *L.shape(shape, allow_infer=False))


@lowers("opaque")
def _opaque(L, eqn, *inputs):
    target = eqn.attrs["target"]
    if target not in L.opaque:
        raise KeyError(f"opaque call {target!r} has no callable (the frontend's side table was not passed)")
    return L.call(L.opaque[target], *(L.tensor(a) for a in eqn.inputs))


# -- quantization and sparsity ------------------------------------------------------------------


def _groups(p, n: int, group_axis, group_size):
    """Per-group scales/zeros repeated over their groups along ``group_axis`` (ragged last group)."""
    if group_axis is None or p.dim() == 0:
        return p
    return p.repeat_interleave(group_size, dim=group_axis).narrow(group_axis, 0, n)


def _quantize_torch(x, scale, zero, dtype: torch.dtype, lo, hi, group_axis, group_size):
    """quantize's reference numerics in float64: round half to even, nan -> 0, clip (ints); fp8
    rounds the float32 quotient, e4m3 saturating (``ir/ops/quant.py``)."""
    n = x.shape[group_axis] if group_axis is not None else 0
    y = x.double() / _groups(scale, n, group_axis, group_size).double()
    if lo is None:  # fp8
        y = y.float()
        if dtype == torch.float8_e4m3fn:
            y = torch.where(y.isnan(), y, y.clamp(-448.0, 448.0))
        return y.to(dtype)
    q = torch.round(y)
    if zero is not None:
        q = q + _groups(zero, n, group_axis, group_size).double()
    return torch.nan_to_num(q, nan=0.0).clamp(lo, hi).to(dtype)


def _dequantize_torch(q, scale, zero, storage: torch.dtype, dtype: torch.dtype, group_axis, group_size):
    """(q - zero) * scale in float64, rounded to the float ``dtype`` through its storage (as the
    reference interpreter does: float64 -> float32 -> bf16 rounds twice)."""
    n = q.shape[group_axis] if group_axis is not None else 0
    x = q.double()
    if zero is not None:
        x = x - _groups(zero, n, group_axis, group_size).double()
    return (x * _groups(scale, n, group_axis, group_size).double()).to(storage).to(dtype)


@lowers("quantize")
def _quantize(L, eqn, *inputs):
    a, dt = eqn.attrs, eqn.attrs["dtype"]
    lo, hi = int_range(dt) if dt.is_int else (None, None)
    args = [L.tensor(t) for t in eqn.inputs] + [None] * (3 - len(eqn.inputs))  # x, scale, zero or None
    return L.call(_quantize_torch, *args, to_torch(dt), lo, hi, a["group_axis"], a["group_size"])


@lowers("dequantize")
def _dequantize(L, eqn, *inputs):
    a, dt = eqn.attrs, eqn.attrs["dtype"]
    args = [L.tensor(t) for t in eqn.inputs] + [None] * (3 - len(eqn.inputs))  # q, scale, zero or None
    storage = to_torch(from_numpy(dt.np))
    return L.call(_dequantize_torch, *args, storage, to_torch(dt), a["group_axis"], a["group_size"])


def _densify_nm_torch(values, indices, n: int, m: int):
    lead, groups = values.shape[:-1], values.shape[-1] // n
    out = values.new_zeros(*lead, groups, m)
    out.scatter_(-1, indices.reshape(*lead, groups, n).long(), values.reshape(*lead, groups, n))
    return out.reshape(*lead, groups * m)


def _topk_mask_torch(x, k: int, axis: int):
    key = torch.nan_to_num(x.float(), nan=-float("inf"))  # nan is never selected ahead of a number
    idx = torch.sort(key, dim=axis, descending=True, stable=True).indices.narrow(axis, 0, k)  # ties: lower index first
    return torch.zeros(x.shape, dtype=torch.bool, device=x.device).scatter_(axis, idx, True)


@lowers("topk_mask")
def _topk_mask(L, eqn, x):
    return L.call(_topk_mask_torch, L.tensor(eqn.inputs[0]), eqn.attrs["k"], eqn.attrs["axis"])


@lowers("densify_nm")
def _densify_nm(L, eqn, *inputs):
    v, idx = (L.tensor(a) for a in eqn.inputs)
    return L.call(_densify_nm_torch, v, idx, eqn.attrs["n"], eqn.attrs["m"])


# -- the fallbacks: an op's decomposition, its numpy reference ------------------------------------


def lower_decomposition(L, eqn: Eqn, eqns: list, outputs: dict):
    """An op's decomposition lowered inline, equation by equation: a ``fused`` region's body
    (torch/Inductor fuse on their own; the Triton backend turns regions into single kernels)."""
    for e in eqns:
        L.bind(e, L.lower_eqn(e))
    outs = tuple(L.tensor(outputs[v]) for v in eqn.outputs)
    return outs[0] if len(outs) == 1 else outs


def _host(a, dt) -> np.ndarray:
    """A tensor as the reference sees it: a numpy array in the IR dtype's storage (bf16 and fp8
    as float32 values, which numpy lacks)."""
    if not isinstance(a, torch.Tensor):
        return np.asarray(a, dtype=dt.np)
    return a.detach().cpu().to(to_torch(from_numpy(dt.np))).numpy()


class ReferenceCall:
    """Runs one equation's numpy reference on torch tensors (slow; for ops the table lacks)."""

    def __init__(self, eqn: Eqn):
        self.eqn = eqn
        self.__name__ = f"reference_{eqn.op}"

    def __call__(self, *args):
        from ...ir.shapes import bind_symbols, resolve_dims

        eqn = self.eqn
        arrays = [_host(a, v.type.dtype) for a, v in zip(args, eqn.inputs)]
        env = bind_symbols([a.type for a in eqn.inputs], arrays)
        attrs = {k: resolve_dims(v, env) for k, v in eqn.attrs.items()}
        res = get_op(eqn.op).impl(*arrays, **attrs)
        res = list(res) if isinstance(res, (tuple, list)) else [res]
        dev = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        outs = [
            torch.from_numpy(np.ascontiguousarray(np.asarray(r).astype(v.type.dtype.np))).to(
                dev, to_torch(v.type.dtype)
            )
            for r, v in zip(res, eqn.outputs)
        ]
        return outs[0] if len(outs) == 1 else tuple(outs)


def lower_reference(L, eqn: Eqn, *inputs):
    """The op's numpy reference, called on host copies of the tensors (slow, never a crash)."""
    if get_op(eqn.op).impl is None or eqn.regions:
        raise NotImplementedError(f"no torch lowering and no reference implementation for {eqn.op}")
    return L.call(ReferenceCall(eqn), *(L.tensor(a) for a in eqn.inputs))
