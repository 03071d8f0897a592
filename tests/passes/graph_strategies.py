"""Hypothesis strategies for random IR graphs (with their sample inputs).

A graph mixes elementwise ops, reshapes/transposes (including chains that cancel), dot_general
(with and without a transposed weight), reductions, literals, params with values, identity
arithmetic, a fused region, deliberate duplicate subexpressions and dead code, so every cleanup
pass has something to do.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from pared.ir import Graph, GraphBuilder, Param, Var

DIMS = (2, 3, 4)
BINARY = ("add", "sub", "mul", "maximum", "minimum")
UNARY = ("neg", "tanh", "abs", "relu", "sigmoid")
KINDS = (
    "binary", "binary", "unary", "transpose", "transpose2", "reshape", "dot", "dot", "reduce",
    "identity", "dup", "dup", "param_expr", "scalar_expr", "fused",
)


@st.composite
def graphs(draw, max_steps: int = 14) -> tuple[Graph, list[np.ndarray]]:
    """A random valid graph with param values, and a list of input arrays for it."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = GraphBuilder()
    pool: list = []
    history: list[tuple[str, tuple, dict]] = []
    n_params = [0]

    def shape():
        return tuple(draw(st.sampled_from(DIMS)) for _ in range(draw(st.integers(1, 3))))

    def param(shape_):
        n_params[0] += 1
        return b.param(f"layer{n_params[0]}.weight", rng.standard_normal(shape_).astype(np.float32))

    def emit(op, *inputs, **attrs):
        history.append((op, inputs, attrs))  # never region ops: a region body is not shared
        out = b.op(op, *inputs, **attrs)
        pool.append(out)
        return out

    def pick(pred=lambda a: True):
        cands = [a for a in pool if pred(a)]
        return draw(st.sampled_from(cands)) if cands else None

    inputs = [b.input(shape()) for _ in range(draw(st.integers(1, 2)))]
    pool += inputs
    for _ in range(draw(st.integers(1, 3))):
        pool.append(param(draw(st.sampled_from([v.type.shape for v in inputs] + [(3, 4), (4,)]))))

    for _ in range(draw(st.integers(2, max_steps))):
        kind = draw(st.sampled_from(KINDS))
        a = pick()
        rank = a.type.rank
        if kind == "binary":
            other = draw(st.sampled_from(["same", "literal", "scalar"]))
            if other == "same":
                y = pick(lambda v, a=a: v.type.shape == a.type.shape)
            elif other == "literal":
                y = float(draw(st.sampled_from([0.5, -1.5, 2.0, 1.0, 0.0])))
            else:
                y = pick(lambda v: v.type.rank == 0) or 3.0
            args = (a, y) if draw(st.booleans()) else (y, a)
            emit(draw(st.sampled_from(BINARY)), *args)
        elif kind == "unary":
            emit(draw(st.sampled_from(UNARY)), a)
        elif kind in ("transpose", "transpose2") and rank >= 2:
            t = emit("transpose", a, perm=tuple(draw(st.permutations(range(rank)))))
            if kind == "transpose2":
                emit("transpose", t, perm=tuple(draw(st.permutations(range(rank)))))
        elif kind == "reshape" and rank >= 1:
            n = int(np.prod(a.type.shape))
            r = emit("reshape", a, shape=(n,))
            if n % 2 == 0 and draw(st.booleans()):
                emit("reshape", r, shape=(2, n // 2))
        elif kind == "dot":
            a = pick(lambda v: v.type.rank == 2) or emit("reshape", a, shape=(1, int(np.prod(a.type.shape))))
            k = a.type.shape[1]
            n = draw(st.sampled_from(DIMS))
            if draw(st.booleans()):
                w = param((n, k))
                emit("dot_general", a, emit("transpose", w, perm=(1, 0)), contract=((1,), (0,)))
            else:
                w = pick(lambda v, k=k: v.type.rank == 2 and v.type.shape[1] == k) or param((n, k))
                emit("dot_general", a, w, contract=((1,), (1,)))
        elif kind == "reduce" and rank >= 1:
            axes = tuple(sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1))))
            emit(draw(st.sampled_from(["reduce_sum", "reduce_max"])), a, axes=axes, keepdims=draw(st.booleans()))
        elif kind == "identity":
            form = draw(st.sampled_from(["mul1", "add0", "sub0", "negneg", "cast"]))
            if form == "mul1":
                emit("mul", a, 1.0)
            elif form == "add0":
                emit("add", 0.0, a)
            elif form == "sub0":
                emit("sub", a, 0.0)
            elif form == "negneg":
                emit("neg", emit("neg", a))
            else:
                emit("cast", a, dtype="f32")
        elif kind == "dup" and history:
            op, ins, attrs = draw(st.sampled_from(history))
            if op in ("add", "mul", "maximum") and draw(st.booleans()):  # commutative: swap operands
                ins = ins[::-1]
            emit(op, *ins, **attrs)
        elif kind == "param_expr":
            p = pick(lambda v: isinstance(v, Param))
            form = draw(st.sampled_from(["neg", "mul", "transpose"]))
            if p is None:
                pass
            elif form == "transpose" and p.type.rank >= 2:
                emit("transpose", p, perm=tuple(reversed(range(p.type.rank))))
            elif form == "mul":
                emit("mul", p, 2.0)
            else:
                emit("neg", p)
        elif kind == "scalar_expr":
            emit("add", 1.5, b.op("mul", 2.0, 0.5) if draw(st.booleans()) else 0.25)
        elif kind == "fused":
            free = pick(lambda v, a=a: isinstance(v, Var) and v.type.shape == a.type.shape and v is not a)
            for _ in range(draw(st.integers(1, 2))):  # twice: structurally equal regions for CSE
                pool.append(b.op("fused", a, regions=[_body(a.type, free)], kind="test"))

    outs = [pool[-1]] + [v for v in pool[:-1] if isinstance(v, Var) and draw(st.integers(0, 4)) == 0]
    g = b.build(*outs)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in inputs]
    return g, xs


def _body(t, free) -> Graph:
    """A region body: tanh(x*1) twice (a duplicate inside), times a free outer value if given."""
    sb = GraphBuilder()
    xi = sb.input(t)
    h = sb.tanh(sb.mul(xi, 1.0))
    h2 = sb.tanh(sb.mul(xi, 1.0))
    return sb.build(sb.add(h, h2 if free is None else sb.mul(h2, free)))
