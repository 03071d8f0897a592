"""The lowering table: IR op -> torch calls, ``LOWER[op](lowerer, eqn, index) -> fx value``.

Ops without an entry run their numpy reference implementation (:func:`lower_reference`).
``dot_general`` picks ``F.linear`` / ``matmul`` where the layout allows (and fuses a following
bias add into ``F.linear``), and falls back to ``einsum``; ``attention`` is
``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import operator
import string
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...ir.core import Eqn, Literal, Param, Var
from ...ir.opdef import get_op
from ...ir.torch_dtypes import to_torch

LOWER: dict[str, Callable] = {}


def lowers(*ops: str):
    def deco(fn):
        for op in ops:
            LOWER[op] = fn
        return fn

    return deco


def _simple(fn, tensor_args: int = 1):
    """A rule calling ``fn(*inputs, **attrs)``; the first ``tensor_args`` inputs must be tensors."""

    def rule(L, eqn, i):
        args = [L.tensor(a) if k < tensor_args else L.value(a) for k, a in enumerate(eqn.inputs)]
        return L.call(fn, *args)

    return rule


for _op, _fn in {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
    "silu": F.silu, "sin": torch.sin, "cos": torch.cos, "erf": torch.erf, "reciprocal": torch.reciprocal,
    "floor": torch.floor, "sign": torch.sign, "logical_not": torch.logical_not,
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "pow": torch.pow,
    "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge,
}.items():
    LOWER[_op] = _simple(_fn)
for _op, _fn in {"maximum": torch.maximum, "minimum": torch.minimum, "logical_and": torch.logical_and,
                 "logical_or": torch.logical_or}.items():
    LOWER[_op] = _simple(_fn, 2)


@lowers("div")
def _div(L, eqn, i):
    x, y = L.tensor(eqn.inputs[0]), L.value(eqn.inputs[1])
    if eqn.outputs[0].type.dtype.is_int:
        return L.call(torch.div, x, y, rounding_mode="trunc")
    return L.call(torch.div, x, y)


@lowers("gelu")
def _gelu(L, eqn, i):
    return L.call(F.gelu, L.value(eqn.inputs[0]), approximate=eqn.attrs["approximate"])


@lowers("where")
def _where(L, eqn, i):
    c, x, y = eqn.inputs
    xv = L.tensor(x) if isinstance(x, Literal) and isinstance(y, Literal) else L.value(x)
    return L.call(torch.where, L.value(c), xv, L.value(y))


@lowers("cast")
def _cast(L, eqn, i):
    return L.method("to", L.tensor(eqn.inputs[0]), to_torch(eqn.attrs["dtype"]))


@lowers("clamp")
def _clamp(L, eqn, i):
    return L.call(torch.clamp, L.value(eqn.inputs[0]), eqn.attrs["min"], eqn.attrs["max"])


def _reduce(fn):
    def rule(L, eqn, i):
        x, axes, keep = L.value(eqn.inputs[0]), list(eqn.attrs["axes"]), eqn.attrs["keepdims"]
        return L.call(fn, x, axes, keepdim=keep) if axes else x

    return rule


LOWER["reduce_sum"] = _reduce(torch.sum)
LOWER["reduce_mean"] = _reduce(torch.mean)
LOWER["reduce_max"] = _reduce(torch.amax)
LOWER["reduce_min"] = _reduce(torch.amin)


@lowers("reduce_prod")
def _prod(L, eqn, i):
    x = L.value(eqn.inputs[0])
    rank = eqn.inputs[0].type.rank
    for a in sorted(eqn.attrs["axes"], reverse=True):
        x = L.call(torch.prod, x, a % rank, keepdim=eqn.attrs["keepdims"])
    return x


@lowers("argmax")
def _argmax(L, eqn, i):
    return L.call(torch.argmax, L.value(eqn.inputs[0]), eqn.attrs["axis"], keepdim=eqn.attrs["keepdims"])


@lowers("cumsum")
def _cumsum(L, eqn, i):
    return L.call(torch.cumsum, L.value(eqn.inputs[0]), eqn.attrs["axis"], dtype=to_torch(eqn.outputs[0].type.dtype))


@lowers("softmax", "log_softmax")
def _softmax(L, eqn, i):
    fn = torch.softmax if eqn.op == "softmax" else torch.log_softmax
    return L.call(fn, L.value(eqn.inputs[0]), eqn.attrs["axis"])


@lowers("layer_norm", "rms_norm")
def _norm(L, eqn, i):
    x = eqn.inputs[0]
    axes = sorted(a % x.type.rank for a in eqn.attrs["axes"])
    shape = L.shape(x.type.shape[axes[0]:], allow_infer=False)
    rest = [L.value(a) for a in eqn.inputs[1:]]
    if eqn.op == "layer_norm":
        rest += [None] * (2 - len(rest))
        return L.call(F.layer_norm, L.value(x), shape, *rest, eqn.attrs["eps"])
    rest += [None] * (1 - len(rest))
    return L.call(F.rms_norm, L.value(x), shape, *rest, eqn.attrs["eps"])


@lowers("batch_norm")
def _batch_norm(L, eqn, i):
    if eqn.attrs["axis"] % eqn.inputs[0].type.rank != 1:
        return lower_reference(L, eqn, i)
    x, mean, var, *rest = (L.value(a) for a in eqn.inputs)
    rest += [None] * (2 - len(rest))
    return L.call(F.batch_norm, x, mean, var, rest[0], rest[1], False, 0.0, eqn.attrs["eps"])


# -- contractions -----------------------------------------------------------------------------


@lowers("dot_general")
def _dot(L, eqn, i):
    x, y = eqn.inputs
    (lc, rc), (lb, rb) = eqn.attrs["contract"], eqn.attrs["batch"]
    rx, ry = x.type.rank, y.type.rank
    if eqn.attrs["out_dtype"] not in (None, x.type.dtype) or x.type.dtype.is_int:
        return lower_reference(L, eqn, i)
    a, b = L.tensor(x), L.tensor(y)
    nb = len(lb)
    if lb == rb == tuple(range(nb)) and len(lc) == 1:
        if ry == nb + 2 and lc == (rx - 1,) and rc == (nb + 1,) and nb == 0:
            return _linear(L, eqn, i, a, b)
        if ry == nb + 2 and lc == (rx - 1,) and rc == (nb,) and (nb == 0 or rx == nb + 2):
            return L.call(torch.matmul, a, b)
        if nb and rx == nb + 2 and ry == nb + 2 and lc == (rx - 1,) and rc == (ry - 1,):
            return L.call(torch.matmul, a, L.call(torch.transpose, b, -1, -2))
    return L.call(torch.einsum, _einsum_spec(rx, ry, lc, rc, lb, rb), a, b)


def following_bias(L, eqn):
    """(index, bias atom) of an ``add`` of a 1-d bias that is the only user of ``eqn``'s output, else None."""
    out = eqn.outputs[0]
    j = L.single_user(out)
    if j is not None:
        nxt = L.graph.eqns[j]
        if nxt.op == "add" and out in nxt.inputs:
            bias = nxt.inputs[1] if nxt.inputs[0] is out else nxt.inputs[0]
            if isinstance(bias, (Param, Var)) and bias.type.shape == (out.type.shape[-1],) and bias.type.dtype == out.type.dtype:
                return j, bias
    return None


def absorb_bias(L, j: int, node):
    """Let ``node`` (which already adds the bias) stand for the skipped ``add`` at index ``j``."""
    L.skip.add(j)
    L.env[L.graph.eqns[j].outputs[0]] = node
    return node


def _linear(L, eqn, i, a, b):
    """``x @ W.T`` as F.linear, absorbing a following ``add`` of a 1-d bias."""
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
def _attention(L, eqn, i):
    """``F.scaled_dot_product_attention``: flash kernels on CPU and GPU, scores never stored."""
    q, k, v, *mask = eqn.inputs
    kw = {"scale": eqn.attrs["scale"]}
    if mask:
        kw["attn_mask"] = L.tensor(mask[0])
    if q.type.shape[-3] != k.type.shape[-3]:
        kw["enable_gqa"] = True
    return L.call(F.scaled_dot_product_attention, *(L.tensor(a) for a in (q, k, v)), **kw)


@lowers("conv")
def _conv(L, eqn, i):
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


@lowers("max_pool", "avg_pool")
def _pool(L, eqn, i):
    x = L.value(eqn.inputs[0])
    win, strides, pads = list(eqn.attrs["window"]), list(eqn.attrs["strides"]), eqn.attrs["padding"]
    n = len(win)
    sym = all(lo == hi and 2 * lo <= k for (lo, hi), k in zip(pads, win))
    if not sym:
        return lower_reference(L, eqn, i)
    padding = [lo for lo, _ in pads]
    if eqn.op == "max_pool":
        return L.call({1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n], x, win, strides, padding)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    return L.call(fn, x, win, strides, padding, False, eqn.attrs["count_include_pad"])


# -- shape ops ----------------------------------------------------------------------------------


@lowers("reshape")
def _reshape(L, eqn, i):
    return L.call(torch.reshape, L.tensor(eqn.inputs[0]), L.shape(eqn.attrs["shape"]))


@lowers("transpose")
def _transpose(L, eqn, i):
    return L.call(torch.permute, L.tensor(eqn.inputs[0]), list(eqn.attrs["perm"]))


@lowers("broadcast_in_dim")
def _broadcast(L, eqn, i):
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
def _slice(L, eqn, i):
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
def _concat(L, eqn, i):
    return L.call(torch.cat, [L.tensor(a) for a in eqn.inputs], eqn.attrs["axis"])


@lowers("take")
def _take(L, eqn, i):
    x, idx = eqn.inputs
    axis = eqn.attrs["axis"] % x.type.rank
    tx, ti = L.tensor(x), L.tensor(idx)
    if axis == 0 and x.type.rank == 2 and x.type.dtype.is_float:
        return L.call(F.embedding, ti, tx)
    flat = L.call(torch.reshape, ti, [-1])
    picked = L.call(torch.index_select, tx, axis, flat)
    return L.call(torch.reshape, picked, L.shape(eqn.outputs[0].type.shape))


@lowers("pad")
def _pad(L, eqn, i):
    low, high = eqn.attrs["low"], eqn.attrs["high"]
    pads = [p for lo, hi in reversed(list(zip(low, high))) for p in (lo, hi)]
    return L.call(F.pad, L.tensor(eqn.inputs[0]), pads, value=eqn.attrs["value"])


@lowers("iota")
def _iota(L, eqn, i):
    shape, axis = eqn.attrs["shape"], eqn.attrs["axis"]
    r = L.call(torch.arange, L.dim(shape[axis]), dtype=to_torch(eqn.attrs["dtype"]), device=L.device)
    if len(shape) == 1:
        return r
    inter = [1] * len(shape)
    inter[axis] = -1
    return L.method("expand", L.call(torch.reshape, r, inter), *L.shape(shape, allow_infer=False))


@lowers("opaque")
def _opaque(L, eqn, i):
    target = eqn.attrs["target"]
    if target not in L.opaque:
        raise KeyError(f"opaque call {target!r} has no callable (the frontend's side table was not passed)")
    return L.call(L.opaque[target], *(L.tensor(a) for a in eqn.inputs))


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
def _topk_mask(L, eqn, i):
    return L.call(_topk_mask_torch, L.tensor(eqn.inputs[0]), eqn.attrs["k"], eqn.attrs["axis"])


@lowers("densify_nm")
def _densify_nm(L, eqn, i):
    v, idx = (L.tensor(a) for a in eqn.inputs)
    return L.call(_densify_nm_torch, v, idx, eqn.attrs["n"], eqn.attrs["m"])


@lowers("fused")
def _fused(L, eqn, i):
    """A fused region's body is lowered inline, op by op (torch/Inductor fuse on their own; the
    Triton backend is the one that turns regions into single kernels)."""
    (region,) = eqn.regions
    for v, a in zip(region.inputs, eqn.inputs):
        L.env[v] = L.value(a)
    for e in region.eqns:
        L.bind(e, LOWER.get(e.op, lower_reference)(L, e, -1))
    outs = tuple(L.tensor(a) for a in region.outputs)
    return outs[0] if len(outs) == 1 else outs


# -- the default: the op's numpy reference ------------------------------------------------------


class ReferenceCall:
    """Runs one equation's numpy reference on torch tensors (slow; for ops the table lacks)."""

    def __init__(self, eqn: Eqn):
        self.eqn = eqn
        self.__name__ = f"reference_{eqn.op}"

    def __call__(self, *args):
        from ...ir.shapes import bind_symbols, resolve_dims

        eqn = self.eqn
        arrays = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in args]
        env = bind_symbols([a.type for a in eqn.inputs], arrays)
        attrs = {k: resolve_dims(v, env) for k, v in eqn.attrs.items()}
        res = get_op(eqn.op).impl(*arrays, **attrs)
        res = list(res) if isinstance(res, (tuple, list)) else [res]
        dev = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        outs = [torch.from_numpy(np.ascontiguousarray(np.asarray(r).astype(v.type.dtype.np))).to(dev, to_torch(v.type.dtype))
                for r, v in zip(res, eqn.outputs)]
        return outs[0] if len(outs) == 1 else tuple(outs)


def lower_reference(L, eqn: Eqn, i: int):
    if get_op(eqn.op).impl is None or eqn.regions:
        raise NotImplementedError(f"no torch lowering and no reference implementation for {eqn.op}")
    return L.call(ReferenceCall(eqn), *(L.tensor(a) for a in eqn.inputs))



from . import quantized  # noqa: E402,F401  (registers the qlinear rule: real int8/int4 CPU kernels)
