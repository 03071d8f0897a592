"""Which output channels can be removed together: channel groups found by tracking axes forward.

Every linear layer (a ``dot_general`` with a param weight) produces channels along one output
axis. Following that axis forward through the ops that only move or broadcast it (elementwise
ops, bias adds, reshape splits and merges, transposes, batched dots that keep it as a batch
axis, softmax over other axes, ...) reaches the linears that contract it. Values that meet in a
binary op or a batched dot must drop the same channels, so their producers join one group:
gate/up of a Llama MLP (through ``silu(gate) * up``), q/k/v of an attention block (through
``q @ k^T`` and ``p @ v``). Removing a group's unit u removes, on every tracked value whose
tracked axis has size n, the block [u*n/U, (u+1)*n/U); U is the gcd of those sizes, so a group
that passes a (B, S, H*D) -> (B, S, H, D) reshape has U = H units of D channels (heads), and a
GQA block whose k/v are repeated has U = H_kv units of one kv head plus its query heads.

Anything the tracking does not understand (a reduction, norm or concat along the channel axis,
an add with the residual stream, a graph output, a weight used twice) refuses the group, with
the reason, so the rewrite never touches a shape it cannot fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from ...ir import Graph, Param, Var, get_op
from ...ir import dims as D
from ..calibration import find_weight_sites


def _elementwise(op: str) -> Optional[str]:
    """``"unary"`` or ``"nary"`` (broadcasting) for an elementwise op the tracked axis passes
    straight through, else None (quantize/dequantize are elementwise, but their scales are
    indexed by the channels too: not tracked)."""
    d = get_op(op)
    if not d.has("elementwise") or d.has("quant"):
        return None
    return "unary" if d.arity == 1 else "nary"


@dataclass
class Group:
    """One removable group (after unions): its weights and the attrs that carry its sizes.

    ``producers``/``consumers``/``biases``: (param name, axis of the param, size n of that axis);
    ``attrs``: (equation index, attr name, position, n) entries to rescale; ``sizes``: every
    tracked axis size (U divides all of them).
    """

    gid: int
    producers: list = field(default_factory=list)
    consumers: list = field(default_factory=list)
    biases: list = field(default_factory=list)
    attrs: list = field(default_factory=list)
    sizes: set = field(default_factory=set)
    refused: list = field(default_factory=list)

    @property
    def units(self) -> int:
        return math.gcd(*self.sizes) if self.sizes else 0

    @property
    def kind(self) -> str:
        """``channels`` when every unit is one producer channel, else ``heads``."""
        return "channels" if all(n == self.units for _, _, n in self.producers) else "heads"

    @property
    def name(self) -> str:
        return "+".join(p for p, _, _ in self.producers)

    def params(self) -> list[str]:
        return [p for p, _, _ in (*self.producers, *self.consumers, *self.biases)]


class _Tracker:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.track: dict[Var, tuple[int, int]] = {}  # var -> (group id, tracked axis)
        self.parent: dict[int, int] = {}
        self.groups: dict[int, Group] = {}

    def root(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def group(self, g: int) -> Group:
        return self.groups[self.root(g)]

    def new(self) -> int:
        g = len(self.parent)
        self.parent[g] = g
        self.groups[g] = Group(g)
        return g

    def union(self, a: int, b: int) -> int:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            ga, gb = self.groups.pop(rb), self.groups[ra]
            for f in ("producers", "consumers", "biases", "attrs", "refused"):
                getattr(gb, f).extend(getattr(ga, f))
            gb.sizes |= ga.sizes
            self.parent[rb] = ra
        return ra

    def refuse(self, g: int, why: str) -> None:
        self.group(g).refused.append(why)

    def set(self, var: Var, g: int, axis: int) -> None:
        n = var.type.shape[axis]
        if not isinstance(n, int):
            self.refuse(g, f"the channel axis of {var.type} is symbolic")
            return
        self.group(g).sizes.add(n)
        self.track[var] = (g, axis)


def find_channel_groups(graph: Graph) -> list[Group]:
    """Every channel group of ``graph`` (refused ones carry their reasons in ``refused``)."""
    t = _Tracker(graph)
    producers = {s.index: s for s in find_weight_sites(graph) if s.kind == "dot" and s.w_out == 1}
    for i, e in enumerate(graph.eqns):
        tracked = [(k, a) for k, a in enumerate(e.inputs) if isinstance(a, Var) and a in t.track]
        if tracked:
            _step(t, i, e, tracked)
        s = producers.get(i)
        if s is not None and e.outputs[0] not in t.track:
            g = t.new()
            out_axis = e.outputs[0].type.rank - 1 if s.operand == 1 else 0
            t.group(g).producers.append((s.param, s.w_perm[0], e.outputs[0].type.shape[out_axis]))
            t.set(e.outputs[0], g, out_axis)
    for v in graph.outputs:
        if isinstance(v, Var) and v in t.track:
            t.refuse(t.track[v][0], "its channels reach a graph output")
    uses: dict[str, int] = {}
    for e in graph.walk():
        for a in e.inputs:
            if isinstance(a, Param):
                uses[a.name] = uses.get(a.name, 0) + 1
    params = graph.param_types
    out = []
    for g in t.groups.values():
        if not g.consumers:
            g.refused.append("no linear layer contracts its channels")
        for p in g.params():
            if uses.get(p, 0) != 1:
                g.refused.append(f"weight {p!r} is used {uses.get(p, 0)} times (tied)")
            elif params[p].encoding is not None:
                g.refused.append(f"weight {p!r} already carries encoding {params[p].encoding}; remove structure first")
        if g.units < 2 and not g.refused:
            g.refused.append("its channels do not split into at least two units")
        out.append(g)
    return out


def _step(t: _Tracker, i: int, e, tracked) -> None:
    """Propagate the tracked inputs of equation ``i`` to its output (or end / refuse the group)."""
    gs = [t.track[e.inputs[k]][0] for k, _ in tracked]
    g = gs[0]
    for other in gs[1:]:
        g = t.union(g, other)
    op, out = e.op, (e.outputs[0] if len(e.outputs) == 1 else None)

    def refuse(why: str) -> None:
        t.refuse(g, f"equation {i} ({op}) {why}")

    k0, x0 = tracked[0]
    a0 = t.track[x0][1]
    kind = _elementwise(op)
    if kind == "unary":
        t.set(out, g, a0)
    elif kind == "nary":
        r = out.type.rank
        axes = {t.track[x][1] + r - x.type.rank for _, x in tracked}
        if len(axes) != 1:
            return refuse("combines channels on different axes")
        (a,) = axes
        n = out.type.shape[a]
        for x in e.inputs:
            if isinstance(x, Var) and x in t.track:
                continue
            pos = a - (r - x.type.rank)
            if pos < 0 or x.type.shape[pos] == 1:
                continue  # broadcast along the channels: untouched
            if isinstance(x, Param) and x.type.shape[pos] == n:
                t.group(g).biases.append((x.name, pos, n))
            else:
                return refuse(f"mixes the channels with a value that has them too ({x.type}; e.g. a residual)")
        t.set(out, g, a)
    elif op == "transpose":
        t.set(out, g, list(e.attrs["perm"]).index(a0))
    elif op == "reshape":
        b = _reshape_axis(x0.type.shape, a0, out.type.shape)
        if b is None:
            return refuse(f"reshapes {x0.type} -> {out.type} across the channel axis")
        t.group(g).attrs.append((i, "shape", b, out.type.shape[b]))
        t.set(out, g, b)
    elif op == "broadcast_in_dim":
        b = e.attrs["dims"][a0]
        t.group(g).attrs.append((i, "shape", b, out.type.shape[b]))
        t.set(out, g, b)
    elif op == "slice":
        st, lim = e.attrs["start"], e.attrs["limit"]
        stride = e.attrs["stride"] or (1,) * len(st)
        if st[a0] != 0 or lim[a0] != x0.type.shape[a0] or stride[a0] != 1:
            return refuse("slices the channel axis")
        t.group(g).attrs.append((i, "limit", a0, lim[a0]))
        t.set(out, g, a0)
    elif op == "pad":
        if e.attrs["low"][a0] or e.attrs["high"][a0]:
            return refuse("pads the channel axis")
        t.set(out, g, a0)
    elif op in ("softmax", "log_softmax", "cumsum"):
        if e.attrs["axis"] % x0.type.rank == a0:
            return refuse("normalizes along the channel axis")
        t.set(out, g, a0)
    elif get_op(op).has("reduction"):
        axes = [a % x0.type.rank for a in e.attrs["axes"]]
        if a0 in axes:
            return refuse("reduces the channel axis")
        t.set(out, g, a0 if e.attrs["keepdims"] else a0 - sum(a < a0 for a in axes))
    elif op in ("layer_norm", "rms_norm"):
        if k0 != 0 or len(tracked) > 1 or a0 in [a % x0.type.rank for a in e.attrs["axes"]]:
            return refuse("normalizes over the channel axis")
        t.set(out, g, a0)
    elif op == "concat":
        ax = e.attrs["axis"] % out.type.rank
        if ax == a0 or len(tracked) != len(e.inputs) or any(t.track[x][1] != a0 for _, x in tracked):
            return refuse("concatenates the channels with other values")
        t.set(out, g, a0)
    elif op == "dot_general":
        _dot(t, i, e, g, refuse)
    else:
        refuse("is not understood by channel tracking")


def _dot(t: _Tracker, i: int, e, g: int, refuse) -> None:
    (lc, rc), (lb, rb) = e.attrs["contract"], e.attrs["batch"]
    lhs, rhs = e.inputs
    ranks = (lhs.type.rank, rhs.type.rank)
    contract = ([a % ranks[0] for a in lc], [a % ranks[1] for a in rc])
    batch = ([a % ranks[0] for a in lb], [a % ranks[1] for a in rb])
    tr = [t.track.get(x)[1] if isinstance(x, Var) and x in t.track else None for x in (lhs, rhs)]
    out_axis = None
    for k in (0, 1):
        a = tr[k]
        if a is None:
            continue
        other = (lhs, rhs)[1 - k]
        if a in batch[k]:
            j = batch[k].index(a)
            if tr[1 - k] != batch[1 - k][j]:
                return refuse("batches the channels with an operand that does not carry them")
            out_axis = j
        elif a in contract[k]:
            j = contract[k].index(a)
            if isinstance(other, Param) and len(contract[k]) == 1:
                t.group(g).consumers.append(
                    (other.name, contract[1 - k][j], lhs.type.shape[a] if k == 0 else rhs.type.shape[a])
                )
            else:
                return refuse("contracts the channels with something other than one weight axis")
        else:
            free = [x for x in range(ranks[k]) if x not in contract[k] and x not in batch[k]]
            pos = len(batch[0]) + (
                free.index(a)
                if k == 0
                else len([x for x in range(ranks[0]) if x not in contract[0] and x not in batch[0]]) + free.index(a)
            )
            if out_axis is not None and out_axis != pos:
                return refuse("carries the channels on two output axes")
            out_axis = pos
    if out_axis is not None:
        t.set(e.outputs[0], g, out_axis)


def _reshape_axis(src, a: int, dst) -> Optional[int]:
    """The output axis that carries input axis ``a`` of ``src`` (its outer part when split, or
    the merge of it with inner axes), or None when the channels would not stay contiguous."""
    pre = D.prod(src[:a])
    n = src[a]
    for b in range(len(dst)):
        if D.prod(dst[:b]) != pre or dst[b] == 1 and n != 1:
            continue
        m = dst[b]
        if not isinstance(m, int):
            return None
        if m == n:
            return b
        if n % m == 0 and any(D.prod(dst[b:c]) == n for c in range(b + 1, len(dst) + 1)):
            return b  # split: the outer part carries the units
        if m % n == 0 and any(D.prod(src[a:c]) == m for c in range(a + 1, len(src) + 1)):
            return b  # merge with inner axes
        return None
    return None
