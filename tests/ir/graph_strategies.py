"""Hypothesis strategies for random IR graphs (used by the round-trip property tests)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import pared.ir as I

SYMS = ("B", "S", "T")
NAMES = ("fc.weight", "layers.0.attn.q_proj.weight", "params/Dense_0/kernel", "emb", "odd name:[0]", 'quo"te')
LOCS = ("", "layers.0.mlp", 'file.py:12 "quoted" \\ back')


@st.composite
def dims(draw):
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return I.sym(draw(st.sampled_from(SYMS)))
    if kind == 1:
        a, b = draw(st.sampled_from(SYMS)), draw(st.sampled_from(SYMS))
        return I.dims.mul(I.sym(a), I.sym(b))
    if kind == 2:
        return I.dims.add(I.sym(draw(st.sampled_from(SYMS))), draw(st.integers(1, 3)))
    return draw(st.integers(1, 6))


@st.composite
def types(draw, rank=None):
    r = draw(st.integers(0, 3)) if rank is None else rank
    shape = tuple(draw(dims()) for _ in range(r))
    dt = draw(st.sampled_from(["f32", "f16", "bf16", "i32", "i8", "bool", "f8e4m3"]))
    enc = None
    if dt == "i8" and r >= 1 and draw(st.booleans()):
        enc = I.Quant(bits=8, signed=True, scheme=draw(st.sampled_from(["sym", "asym"])), axis=0)
    return I.TensorType(shape, dt, enc)


def _literal(draw, dtype):
    if dtype.kind == "bool":
        return I.Literal(draw(st.booleans()), I.scalar(dtype))
    if dtype.is_int:
        return I.Literal(draw(st.integers(-100, 100)), I.scalar(dtype))
    v = draw(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -0.0, 1e-30, 3.5]))
    )
    return I.Literal(v, I.scalar(dtype))


def _region(t, draw):
    """A small elementwise body: ((x * c) + x), as a fusion pass would produce."""
    r = I.GraphBuilder()
    a = r.input(t)
    m = r.op("mul", a, _literal(draw, t.dtype))
    return r.build(r.op("add", m, a))


@st.composite
def graphs(draw, max_eqns=12):
    """Random well-typed graphs: elementwise ops with literals and params, dots, reshapes,
    opaque calls with odd attribute values, encoded input types, quoted names and locs."""
    b = I.GraphBuilder()
    n_in = draw(st.integers(1, 3))
    pool = [b.input(draw(types())) for _ in range(n_in)]
    params = {}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(NAMES))
        if name not in params:
            shape = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 2))))
            params[name] = b.param(name, np.zeros(shape, np.float32))
    pool += list(params.values())
    for _ in range(draw(st.integers(1, max_eqns))):
        x = draw(st.sampled_from(pool))
        choice = draw(st.integers(0, 8))
        loc = draw(st.sampled_from(LOCS))
        try:
            if choice == 0 and x.type.dtype.kind != "bool":
                op = draw(st.sampled_from(["add", "sub", "mul"]))
                y = draw(st.one_of(st.just(x), st.sampled_from(pool)))
                if y.type.dtype != x.type.dtype or y is x:
                    y = _literal(draw, x.type.dtype)
                v = b.op(op, x, y, loc=loc)
            elif choice == 1 and x.type.rank >= 1:
                y = draw(st.sampled_from(pool))
                v = b.op("dot_general", x, y, contract=((x.type.rank - 1,), (0,)), loc=loc)
            elif choice == 2:
                v = b.op("reshape", x, shape=(I.dims.prod(x.type.shape),), loc=loc)
            elif choice == 5 and x.type.rank >= 1:
                perm = tuple(draw(st.permutations(range(x.type.rank))))
                v = b.op("transpose", x, perm=perm, loc=loc)
            elif choice == 6 and x.type.rank >= 1:
                axes = tuple(sorted(draw(st.sets(st.integers(0, x.type.rank - 1), min_size=1))))
                v = b.op("reduce_sum", x, axes=axes, keepdims=draw(st.booleans()), loc=loc)
            elif choice == 7:
                v = b.op("cast", x, dtype=draw(st.sampled_from(["f32", "i32", "bf16"])), loc=loc)
            elif choice == 8 and x.type.dtype.is_float:
                v = b.op("fused", x, kind="elementwise", regions=[_region(x.type, draw)], loc=loc)
            else:
                t = draw(types())
                v = b.op(
                    "opaque",
                    x,
                    target=draw(st.sampled_from(["aten.foo", 'weird "target"\n'])),
                    out_types=((t.dtype, t.shape),),
                    loc=loc,
                )
        except I.IRError:
            continue  # the random pick did not type-check; draw another
        pool.append(v)
    outs = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    return b.build(*outs)
