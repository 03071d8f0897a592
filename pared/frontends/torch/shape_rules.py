"""Rules for shape, indexing and tensor-creation calls (view, permute, getitem, cat, arange...).

Sizes are IR dims (int or symbolic), so ``x.view(x.size(0), -1)`` keeps a dynamic batch symbolic.
"""

from __future__ import annotations

import builtins

import torch

from ...ir import dims as D
from ...ir import dtypes as DT
from ...ir.core import Literal
from ...ir.torch_dtypes import from_torch, to_torch
from .rules import Unsupported, is_tensor, promote, rule


def _sizes(args) -> tuple:
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    return tuple(a.value if isinstance(a, Literal) else a for a in args)


def reshape(cx, x, shape):
    shape = tuple(shape)
    if -1 in shape:
        known = D.prod([d for d in shape if not (isinstance(d, int) and d == -1)])
        rest = D.exact_div(x.type.numel, known)
        if rest is None:
            rest = cx.out_type().shape[shape.index(-1)]
        shape = tuple(rest if (isinstance(d, int) and d == -1) else d for d in shape)
    if x.type.shape == shape:
        return x
    return cx.emit("reshape", x, shape=shape)


@rule("view", "reshape", "aten.view", "aten.reshape", "aten._unsafe_view")
def _view(cx, x, *shape, **kw):
    shape = _sizes(shape or (kw.get("shape") or kw.get("size"),))
    if shape and isinstance(shape[0], torch.dtype):
        raise Unsupported("view as another dtype")
    return reshape(cx, x, shape)


@rule("view_as", "reshape_as")
def _view_as(cx, x, other):
    return reshape(cx, x, other.type.shape)


@rule("flatten", "aten.flatten")
def _flatten(cx, x, start_dim=0, end_dim=-1):
    r = x.type.rank
    if r == 0:
        return reshape(cx, x, (1,))
    s, e = start_dim % r, end_dim % r
    sh = x.type.shape
    return reshape(cx, x, sh[:s] + (D.prod(sh[s : e + 1]),) + sh[e + 1 :])


@rule("unflatten", "aten.unflatten")
def _unflatten(cx, x, dim, sizes):
    dim %= x.type.rank
    sh = x.type.shape
    return reshape(cx, x, sh[:dim] + tuple(_sizes((sizes,))) + sh[dim + 1 :])


@rule("squeeze", "aten.squeeze")
def _squeeze(cx, x, dim=None):
    r = x.type.rank
    dims = range(r) if dim is None else [d % r for d in ((dim,) if isinstance(dim, int) else dim)]
    drop = {d for d in dims if x.type.shape[d] == 1}
    return reshape(cx, x, tuple(s for i, s in enumerate(x.type.shape) if i not in drop))


@rule("unsqueeze", "aten.unsqueeze")
def _unsqueeze(cx, x, dim):
    dim %= x.type.rank + 1
    sh = x.type.shape
    return reshape(cx, x, sh[:dim] + (1,) + sh[dim:])


def transpose(cx, x, perm):
    perm = tuple(p % x.type.rank for p in perm)
    if perm == tuple(range(x.type.rank)):
        return x
    return cx.emit("transpose", x, perm=perm)


@rule("permute", "aten.permute")
def _permute(cx, x, *dims, **kw):
    return transpose(cx, x, _sizes(dims or (kw["dims"],)))


@rule("transpose", "swapaxes", "aten.transpose", "aten.swapaxes")
def _transpose(cx, x, dim0, dim1):
    perm = list(range(x.type.rank))
    a, b = dim0 % x.type.rank, dim1 % x.type.rank
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(cx, x, perm)


@rule("t", "aten.t")
def _t(cx, x):
    return transpose(cx, x, (1, 0)) if x.type.rank == 2 else x


def expand(cx, x, shape):
    off = len(shape) - x.type.rank
    shape = tuple(x.type.shape[i - off] if (isinstance(d, int) and d == -1) else d for i, d in enumerate(shape))
    if shape == x.type.shape:
        return x
    return cx.emit("broadcast_in_dim", x, shape=shape, dims=tuple(range(off, len(shape))))


@rule("expand", "aten.expand")
def _expand(cx, x, *sizes, implicit=False, **kw):
    return expand(cx, x, _sizes(sizes or (kw["size"],)))


@rule("expand_as")
def _expand_as(cx, x, other):
    return expand(cx, x, other.type.shape)


@rule("repeat", "aten.repeat")
def _repeat(cx, x, *sizes):
    reps = _sizes(sizes)
    sh = (1,) * (len(reps) - x.type.rank) + x.type.shape
    x = reshape(cx, x, sh)
    inter = tuple(v for d in sh for v in (1, d))
    big = tuple(v for r, d in zip(reps, sh) for v in (r, d))
    y = cx.emit("broadcast_in_dim", reshape(cx, x, inter), shape=big, dims=tuple(range(len(big))))
    return reshape(cx, y, tuple(D.mul(r, d) for r, d in zip(reps, sh)))


@rule("cat", "concat", "concatenate", "aten.cat", "aten.concat")
def _cat(cx, tensors, dim=0):
    ts = [t for t in tensors if not (t.type.rank == 1 and t.type.shape[0] == 0)]
    dt = promote(*ts)
    ts = [cx.cast(t, dt) for t in ts]
    if len(ts) == 1:
        return ts[0]
    return cx.emit("concat", *ts, axis=dim % ts[0].type.rank)


@rule("stack", "aten.stack")
def _stack(cx, tensors, dim=0):
    r = tensors[0].type.rank + 1
    dim %= r
    return _cat(cx, [reshape(cx, t, t.type.shape[:dim] + (1,) + t.type.shape[dim:]) for t in tensors], dim)


def slice_axis(cx, x, axis, start, stop, step=1):
    d = x.type.shape[axis]
    start = 0 if start is None else start
    stop = d if stop is None else stop
    step = 1 if step is None else step
    if isinstance(start, int) and start < 0:
        start = D.add(d, start)
    if isinstance(stop, int) and stop < 0:
        stop = D.add(d, stop)
    if isinstance(d, int) and isinstance(start, int) and isinstance(stop, int):
        start, stop = min(max(start, 0), d), min(max(stop, 0), d)
        stop = max(stop, start)
    elif isinstance(stop, int) and stop > 2**62:  # INT64_MAX from torch.export means "to the end"
        stop = d
    if start == 0 and stop == d and step == 1:
        return x
    st = [0] * x.type.rank
    lim = list(x.type.shape)
    strides = [1] * x.type.rank
    st[axis], lim[axis], strides[axis] = start, stop, step
    return cx.emit("slice", x, start=tuple(st), limit=tuple(lim), stride=tuple(strides))


@rule("aten.slice")
def _aten_slice(cx, x, dim=0, start=None, end=None, step=1):
    return slice_axis(cx, x, dim % x.type.rank, start, end, step)


@rule("narrow", "aten.narrow")
def _narrow(cx, x, dim, start, length):
    return slice_axis(cx, x, dim % x.type.rank, start, D.add(start, length))


@rule("select", "aten.select")
def _select(cx, x, dim, index):
    return index_tensor(cx, x, (slice(None),) * (dim % x.type.rank) + (index,))


def _split_sizes(d, size_or_sections):
    if isinstance(size_or_sections, (list, tuple)):
        return list(size_or_sections)
    if not isinstance(d, int):
        raise Unsupported("split of a symbolic dim")
    n = size_or_sections
    return [min(n, d - i) for i in range(0, d, n)] or [0]


def _split(cx, x, sizes, dim):
    dim %= x.type.rank
    out, pos = [], 0
    for s in sizes:
        out.append(slice_axis(cx, x, dim, pos, D.add(pos, s)))
        pos = D.add(pos, s)
    return tuple(out)


@rule("split", "aten.split", "aten.split_with_sizes", "split_with_sizes")
def _split_rule(cx, x, split_size_or_sections, dim=0):
    return _split(cx, x, _split_sizes(x.type.shape[dim % x.type.rank], split_size_or_sections), dim)


@rule("chunk", "aten.chunk")
def _chunk(cx, x, chunks, dim=0):
    d = x.type.shape[dim % x.type.rank]
    if not isinstance(d, int):
        raise Unsupported("chunk of a symbolic dim")
    return _split(cx, x, _split_sizes(d, -(-d // chunks)), dim)


@rule("unbind", "aten.unbind")
def _unbind(cx, x, dim=0):
    dim %= x.type.rank
    d = x.type.shape[dim]
    if not isinstance(d, int):
        raise Unsupported("unbind of a symbolic dim")
    return tuple(index_tensor(cx, x, (slice(None),) * dim + (i,)) for i in range(d))


# -- indexing ---------------------------------------------------------------------------------


@rule("getitem")
def _getitem(cx, obj, idx):
    if is_tensor(obj):
        return index_tensor(cx, obj, idx)
    if isinstance(idx, D.Sym):
        raise Unsupported("indexing a container with a symbolic size")
    return obj[idx]


def index_tensor(cx, x, idx):
    """``x[idx]`` for ints, slices, None, Ellipsis and (adjacent) integer index tensors."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    used = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if Ellipsis in idx:
        k = idx.index(Ellipsis)
        idx = idx[:k] + (slice(None),) * (x.type.rank - used) + idx[k + 1 :]
    else:
        idx = idx + (slice(None),) * (x.type.rank - used)
    axis, shape, tensors = 0, [], []
    for item in idx:
        if item is None:
            shape.append(1)
            continue
        if isinstance(item, slice):
            x = slice_axis(cx, x, axis, item.start, item.stop, item.step)
            shape.append(x.type.shape[axis])
        elif is_tensor(item):
            if item.type.dtype == DT.boolean:
                raise Unsupported("boolean mask indexing has a data-dependent shape")
            tensors.append((len(shape), item))
            shape.append(x.type.shape[axis])
        elif isinstance(item, (int, D.Sym)):
            i = item if not (isinstance(item, int) and item < 0) else D.add(x.type.shape[axis], item)
            x = slice_axis(cx, x, axis, i, D.add(i, 1))
        else:
            raise Unsupported(f"index {item!r}")
        axis += 1
    x = reshape(cx, x, shape)
    if not tensors:
        return x
    pos = [p for p, _ in tensors]
    if pos != list(range(pos[0], pos[0] + len(pos))):
        raise Unsupported("non-adjacent advanced indices")
    return gather_axes(cx, x, pos[0], [t for _, t in tensors])


def gather_axes(cx, x, first, idxs):
    """Advanced indexing on adjacent axes first..first+len(idxs): one ``take`` on their product."""
    sh = x.type.shape
    n = len(idxs)
    merged = D.prod(sh[first : first + n])
    flat = None
    for j, t in enumerate(idxs):
        t = cx.cast(t, DT.i64)
        stride = D.prod(sh[first + j + 1 : first + n])
        if stride != 1:
            t = cx.emit("mul", t, cx.lit(stride, DT.i64))
        flat = t if flat is None else cx.emit("add", flat, t)
    x = reshape(cx, x, sh[:first] + (merged,) + sh[first + n :])
    return cx.emit("take", x, flat, axis=first)


@rule("aten.index")
def _aten_index(cx, x, indices):
    return index_tensor(cx, x, tuple(slice(None) if i is None else i for i in indices))


@rule("gather", "aten.gather")
def _gather(cx, x, dim, index, *, sparse_grad=False):
    """out[i..] = x[i.. with axis dim replaced by index[i..]]: a take on the flattened x."""
    dim %= x.type.rank
    sh = x.type.shape
    if not all(isinstance(d, int) for d in sh):
        raise Unsupported("gather on a symbolic shape")
    flat = None
    for a in range(x.type.rank):
        stride = D.prod(sh[a + 1 :])
        i = cx.cast(index, DT.i64) if a == dim else cx.emit("iota", shape=index.type.shape, axis=a, dtype=DT.i64)
        term = cx.emit("mul", i, cx.lit(stride, DT.i64)) if stride != 1 else i
        flat = term if flat is None else cx.emit("add", flat, term)
    return cx.emit("take", reshape(cx, x, (D.prod(sh),)), flat, axis=0)


@rule("diff", "aten.diff")
def _diff(cx, x, n=1, dim=-1, prepend=None, append=None):
    if n != 1:
        raise Unsupported("diff with n > 1")
    dim %= x.type.rank
    x = _cat(cx, [t for t in (prepend, x, append) if t is not None], dim)
    d = x.type.shape[dim]
    hi, lo = slice_axis(cx, x, dim, 1, d), slice_axis(cx, x, dim, 0, D.add(d, -1))
    return cx.emit("ne" if x.type.dtype == DT.boolean else "sub", hi, lo)


def _tri(cmp):
    def fn(cx, x, diagonal=0):
        r, c = x.type.shape[-2:]
        row = cx.emit("iota", shape=(r, c), axis=0, dtype=DT.i64)
        col = cx.emit("iota", shape=(r, c), axis=1, dtype=DT.i64)
        keep = cx.emit(cmp, cx.emit("sub", col, row), cx.lit(diagonal, DT.i64))
        return cx.emit("where", keep, x, cx.lit(0, x.type.dtype))

    return fn


rule("tril", "aten.tril")(_tri("le"))
rule("triu", "aten.triu")(_tri("ge"))


# -- sizes and attributes ---------------------------------------------------------------------


@rule("size", "aten.sym_size")
def _size(cx, x, dim=None):
    return tuple(x.type.shape) if dim is None else x.type.shape[dim % x.type.rank]


@rule("dim", "ndimension")
def _dim(cx, x):
    return x.type.rank


@rule("numel", "aten.sym_numel")
def _numel(cx, x):
    return x.type.numel


@rule("getattr")
def _getattr(cx, obj, name, *default):
    if not is_tensor(obj):
        return builtins.getattr(obj, name, *default)
    if name == "shape":
        return tuple(obj.type.shape)
    if name == "ndim":
        return obj.type.rank
    if name == "dtype":
        from ...ir.torch_dtypes import to_torch

        return to_torch(obj.type.dtype)
    if name == "device":
        return None  # placement is the backend's business
    if name == "T":
        return transpose(cx, obj, tuple(reversed(range(obj.type.rank))))
    raise Unsupported(f"tensor attribute {name}")


# -- creation ---------------------------------------------------------------------------------


def fill(cx, shape, value, dtype):
    lit = cx.lit(value.value if isinstance(value, Literal) else value, dtype)
    if is_tensor(value):
        return expand(cx, cx.cast(value, dtype), tuple(shape))
    return cx.emit("broadcast_in_dim", lit, shape=tuple(shape), dims=())


def _dtype(cx, dtype):
    return from_torch(dtype) if dtype is not None else cx.out_type().dtype


@rule("arange", "aten.arange")
def _arange(cx, start, end=None, step=1, *, dtype=None, **kw):
    if end is None:
        start, end = 0, start
    out = cx.out_type()
    y = cx.emit("iota", shape=out.shape, axis=0, dtype=out.dtype)
    if step != 1:
        y = cx.emit("mul", y, cx.lit(step, out.dtype))
    if start != 0:
        y = cx.emit("add", y, cx.lit(start, out.dtype))
    return y


def _full_rule(value):
    def fn(cx, *size, dtype=None, **kw):
        if value is None:
            *size, v = size
        else:
            v = value
        if "fill_value" in kw:
            v = kw["fill_value"]
        return fill(cx, _sizes(tuple(size) or (kw.get("size"),)), v, _dtype(cx, dtype))

    return fn


rule("ones", "aten.ones")(_full_rule(1))
rule("zeros", "aten.zeros", "empty", "aten.empty")(_full_rule(0))
rule("full", "aten.full")(_full_rule(None))


def _like_rule(value):
    def fn(cx, x, *args, dtype=None, **kw):
        v = value if value is not None else (args[0] if args else kw["fill_value"])
        return fill(cx, x.type.shape, v, from_torch(dtype) if dtype is not None else x.type.dtype)

    return fn


rule("ones_like", "aten.ones_like")(_like_rule(1))
rule("zeros_like", "empty_like", "aten.zeros_like", "aten.empty_like")(_like_rule(0))
rule("full_like", "aten.full_like")(_like_rule(None))


def _new_rule(value):
    def fn(cx, x, size, *args, dtype=None, **kw):
        v = value if value is not None else (args[0] if args else kw["fill_value"])
        return fill(cx, _sizes((size,)), v, from_torch(dtype) if dtype is not None else x.type.dtype)

    return fn


rule("new_ones", "aten.new_ones")(_new_rule(1))
rule("new_zeros", "new_empty", "aten.new_zeros", "aten.new_empty")(_new_rule(0))
rule("new_full", "aten.new_full")(_new_rule(None))


def _plain(data):
    """Nested lists of numbers with Literals replaced by their values."""
    if isinstance(data, (tuple, list)):
        return [_plain(d) for d in data]
    return data.value if isinstance(data, Literal) else data


def _leaves(data) -> list:
    return [v for d in data for v in _leaves(d)] if isinstance(data, list) else [data]


@rule("tensor", "as_tensor", "asarray")
def _tensor(cx, data, *, dtype=None, **kw):
    """``torch.tensor(data)``: a constant (see ``FxImporter.constant``); sizes in ``data`` stay symbolic."""
    out = cx.out_type()
    if is_tensor(data):  # as_tensor(t, dtype=...) converts
        return cx.cast(data, out.dtype)
    data = _plain(data)
    leaves = _leaves(data)
    if any(is_tensor(v) for v in leaves):
        raise Unsupported("torch.tensor of tensors")
    if not any(isinstance(v, D.Sym) for v in leaves):
        return cx.constant(torch.tensor(data, dtype=to_torch(out.dtype)))
    if out.rank == 0:
        return cx.lit(leaves[0], out.dtype)  # a size: a rank-0 tensor computed from it
    parts = [fill(cx, (1,), v, out.dtype) for v in leaves]
    flat = cx.emit("concat", *parts, axis=0) if len(parts) > 1 else parts[0]
    return reshape(cx, flat, out.shape)


@rule("scalar_tensor", "aten.scalar_tensor")
def _scalar_tensor(cx, value, *, dtype=None, **kw):
    return fill(cx, (), value, _dtype(cx, dtype))


# -- higher-order ops: inline their sub-graphs ---------------------------------------------------


@rule("higher_order.wrap_with_set_grad_enabled")
def _wrap_grad(cx, enabled, body, *args):
    return cx.inline(body, args)


@rule("higher_order.wrap_with_autocast")
def _wrap_autocast(cx, device_type, dtype, enabled, cache_enabled, body, *args):
    if enabled and dtype is not None:
        raise Unsupported("autocast regions change dtypes")
    return cx.inline(body, args)

