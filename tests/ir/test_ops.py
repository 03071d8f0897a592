"""The core op set against independent references, through the reference interpreter.

Every registered op has an OpInfo entry (tests/ir/opinfo.py) and is run, for every dtype it
declares, as a one-equation graph. Then: symbolic shape rules, rule errors, and costs.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import pared.ir as I
from pared.backends.reference import InterpreterError, run_graph
from pared.ir import GraphBuilder, TensorType, eqn_cost, make_eqn, sym, tensor
from pared.ir import dtypes as DT
from pared.ir.opdef import ops_with
from pared.ir.ops.unary import erf

from .opinfo import FLOAT_UNARY, OPINFOS, SIGNED_UNARY, TOL, arr
from .opinfo_qlinear import QLINEAR_SYMBOLIC

TESTED = sorted(set(I.OPS) - {"opaque"})


def _cases():
    for name in TESTED:
        for dt in I.OPS[name].dtypes or (None,):
            yield pytest.param(name, dt, id=f"{name}-{dt}")


def _wide(a: np.ndarray) -> np.ndarray:
    """What references see: float64 floats, int64 ints, bools."""
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind == "f" else a.astype(np.int64) if a.dtype.kind in "iu" else a


def run_sample(name: str, sample) -> tuple[I.Graph, list[np.ndarray]]:
    b = GraphBuilder()
    ins = [b.input(TensorType(a.shape, dt)) for dt, a in sample.args]
    out = b.op(name, *ins, regions=sample.regions, **sample.attrs)
    g = b.build(*(out if isinstance(out, tuple) else (out,)))
    return g, run_graph(g, [a for _, a in sample.args])


def check_close(name, got, want, dtype, tol_factor, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    assert got.dtype == dtype.np, f"{what}: storage {got.dtype}, declared {dtype}"
    if dtype.is_float:
        tol = TOL[dtype.name] * tol_factor
        np.testing.assert_allclose(
            got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol, equal_nan=True, err_msg=what
        )
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("name,dt", list(_cases()))
def test_op_matches_reference(name, dt):
    info = OPINFOS[name]
    samples = info.samples(dt, np.random.default_rng(zlib.crc32(f"{name}-{dt}".encode())))
    assert samples, f"{name} has no samples for {dt}"
    for i, sample in enumerate(samples):
        g, got = run_sample(name, sample)
        want = info.ref(*[_wide(a) for _, a in sample.args], **g.eqns[0].attrs)  # normalised: defaults filled
        want = want if isinstance(want, tuple) else (want,)
        assert len(got) == len(want)
        for v, r, e in zip(g.outputs, got, want):
            what = f"{name} sample {i}: {[str(dt_) + str(a.shape) for dt_, a in sample.args]} {sample.attrs}"
            check_close(name, r, DT.round_to(v.type.dtype, np.asarray(e)), v.type.dtype, info.tol, what)
            assert r.shape == v.type.concrete_shape({}), f"{what}: result shape differs from the inferred type {v.type}"


def test_every_op_has_an_opinfo():
    missing = sorted(set(TESTED) - set(OPINFOS))
    assert not missing, f"ops without an OpInfo entry in tests/ir/opinfo.py: {missing}"
    assert not set(OPINFOS) - set(I.OPS), "OpInfo entries for unregistered ops"


def test_every_op_is_documented():
    for name, op in I.OPS.items():
        assert op.doc, f"{name} has no doc"
        assert all(isinstance(d, I.DType) for d in op.dtypes), name


def test_traits_are_queried_not_listed():
    assert ops_with("free") == {"reshape", "transpose", "broadcast_in_dim"}
    assert ops_with("row", "reduction") == {"reduce_sum", "reduce_max", "reduce_min", "reduce_mean"}
    assert I.get_op("dequantize").has("elementwise") and I.get_op("dequantize").has("quant")
    assert all(I.OPS[n].arity in (1, 2, 3, (2, 3)) for n in ops_with("elementwise"))
    with pytest.raises(ValueError, match="unknown trait 'rows'"):
        I.get_op("softmax").has("rows")
    with pytest.raises(ValueError, match="unknown trait"):
        I.OpDef("probe", lambda ts, attrs: ts, None, traits={"elementwize"})


@pytest.mark.parametrize("name", [n for n in TESTED if I.OPS[n].commutative])
def test_commutative_ops_commute(name):
    rng = np.random.default_rng(0)
    dt = I.OPS[name].dtypes[0]
    x, y = arr(dt, (3, 1), rng, -3, 3, ints=True), arr(dt, (1, 4), rng, -3, 3, ints=True)
    b = GraphBuilder()
    xi, yi = b.input((3, 1), dt), b.input((1, 4), dt)
    g = b.build(b.op(name, xi, yi), b.op(name, yi, xi))
    p, q = run_graph(g, [x, y])
    np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("name", ["add", "mul", "maximum", "lt", "div", "pow"])
def test_python_number_operands_become_literals(name):
    b = GraphBuilder()
    x = b.input((2, 3))
    out = b.op(name, x, 2.0)
    assert isinstance(b._eqns[-1].inputs[-1], I.Literal)
    xv = np.array([[-1.0, 0.5, 2.0], [3.0, -0.25, 4.0]], np.float32)
    (got,) = run_graph(b.build(out), [xv])
    want = {"add": xv + 2, "mul": xv * 2, "maximum": np.maximum(xv, 2), "lt": xv < 2, "div": xv / 2, "pow": xv**2}[name]
    np.testing.assert_allclose(got, want)


def test_erf_matches_math_erf():
    xs = np.concatenate(
        [np.linspace(-7, 7, 100_001), np.geomspace(1e-300, 1, 500), -np.geomspace(1e-8, 1, 50), [0.0, np.inf, -np.inf]]
    )
    want = np.array([math.erf(v) for v in xs])
    got = erf(xs)
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-300)
    assert rel.max() < 1e-12, f"worst at x={xs[rel.argmax()]}: rel err {rel.max()}"
    assert np.isnan(erf(np.array([np.nan])))[0]


def test_opaque_rule_and_interpreter_refusal():
    b = GraphBuilder()
    x = b.input(("B", 4))
    y = b.op("opaque", x, target="torch.ops.aten.foo", out_types=(("f32", ("B", 8)), ("i64", ())))
    assert [v.type for v in y] == [tensor(("B", 8)), tensor((), "i64")]
    with pytest.raises(InterpreterError, match="opaque has no reference implementation"):
        run_graph(b.build(*y), [np.zeros((2, 4), np.float32)])


# ---- symbolic shape rules: (op, input types, attrs, expected output types) ----

B, S = sym("B"), sym("S")


def t(*shape, dt="f32"):
    return tensor(shape, dt)  # strings are symbolic dims: "B*S", "S+1"


def _region(in_types, fn):
    b = GraphBuilder()
    ins = [b.input(ty) for ty in in_types]
    return b.build(*fn(b, *ins))


SYMBOLIC = [
    *[(n, [t(B, S, 4)], {}, [t(B, S, 4)]) for n in (*FLOAT_UNARY, *SIGNED_UNARY, "gelu")],
    ("logical_not", [t(B, S, dt="bool")], {}, [t(B, S, dt="bool")]),
    *[(n, [t(B, 1, 4), t(S, 1)], {}, [t(B, S, 4)]) for n in ("add", "sub", "mul", "div", "pow", "maximum", "minimum")],
    *[(n, [t(B, S), t(1, S)], {}, [t(B, S, dt="bool")]) for n in ("eq", "ne", "lt", "le", "gt", "ge")],
    *[(n, [t(B, dt="bool"), t(1, dt="bool")], {}, [t(B, dt="bool")]) for n in ("logical_and", "logical_or")],
    ("where", [t(B, 1, dt="bool"), t(S), t()], {}, [t(B, S)]),
    ("cast", [t(B, S)], {"dtype": "i8"}, [t(B, S, dt="i8")]),
    ("clamp", [t(B, S)], {"min": 0.0}, [t(B, S)]),
    *[
        (n, [t(B, S, 4)], {"axes": (1,)}, [t(B, 4)])
        for n in ("reduce_sum", "reduce_max", "reduce_min", "reduce_mean", "reduce_prod")
    ],
    ("reduce_sum", [t(B, S, 4)], {"axes": (-2, -1), "keepdims": True}, [t(B, 1, 1)]),
    ("argmax", [t(B, S)], {"axis": -1}, [t(B, dt="i64")]),
    ("cumsum", [t(B, S)], {"axis": 1}, [t(B, S)]),
    ("topk_mask", [t(B, S, 64)], {"k": 8}, [t(B, S, 64, dt="bool")]),
    ("softmax", [t(B, 8, S, S)], {}, [t(B, 8, S, S)]),
    ("log_softmax", [t(B, S)], {"axis": 0}, [t(B, S)]),
    ("layer_norm", [t(B, S, 64), t(64), t(64)], {"axes": (-1,)}, [t(B, S, 64)]),
    ("rms_norm", [t(B, S, 64), t(64)], {"axes": (2,)}, [t(B, S, 64)]),
    ("batch_norm", [t(B, 3, S), t(3), t(3)], {}, [t(B, 3, S)]),
    ("max_pool", [t(B, 3, S, 8)], {"window": (3, 2), "strides": (1, 2), "padding": ((1, 1), (0, 0))}, [t(B, 3, S, 4)]),
    ("avg_pool", [t(B, 3, "2*S")], {"window": (2,), "strides": (2,), "padding": ((0, 0),)}, [t(B, 3, S)]),
    (
        "conv",
        [t(B, 4, "S+2", 8), t(6, 2, 3, 3)],
        {"strides": (1, 2), "dilation": (1, 1), "padding": ((0, 0), (1, 0)), "groups": 2},
        [t(B, 6, S, 4)],
    ),
    ("dot_general", [t(B, S, 64), t(32, 64)], {"contract": ((2,), (1,))}, [t(B, S, 32)]),
    (
        "dot_general",
        [t(B, 8, S, 16), t(B, 8, S, 16)],
        {"contract": ((3,), (3,)), "batch": ((0, 1), (0, 1))},
        [t(B, 8, S, S)],
    ),
    (
        "dot_general",
        [t(B, 4, dt="i8"), t(4, 3, dt="i8")],
        {"contract": ((1,), (0,)), "out_dtype": "i32"},
        [t(B, 3, dt="i32")],
    ),
    (
        "attention",
        [t(B, 9, S, 64), t(B, 3, "S+1", 64), t(B, 3, "S+1", 32), t(B, 1, S, "S+1", dt="bool")],
        {"scale": 0.125},
        [t(B, 9, S, 32)],
    ),
    ("reshape", [t(B, S, 4)], {"shape": ("B*S", 4)}, [t("B*S", 4)]),
    ("transpose", [t(B, S, 4)], {"perm": (2, 0, 1)}, [t(4, B, S)]),
    ("broadcast_in_dim", [t(S, 1)], {"shape": (B, S, 4), "dims": (1, 2)}, [t(B, S, 4)]),
    ("slice", [t(B, "S+1")], {"start": (0, 1), "limit": (B, "S+1")}, [t(B, S)]),
    ("slice", [t(B, "2*S")], {"start": (0, 0), "limit": (B, "2*S"), "stride": (1, 2)}, [t(B, S)]),
    ("concat", [t(B, S, 4), t(B, 1, 4)], {"axis": 1}, [t(B, "S+1", 4)]),
    ("take", [t(32000, 64), t(B, S, dt="i64")], {"axis": 0}, [t(B, S, 64)]),
    ("index_copy", [t(1, 3, 256, 64), t(S, dt="i64"), t(1, 3, S, 64)], {"axis": 2}, [t(1, 3, 256, 64)]),
    ("pad", [t(B, S)], {"low": (0, 1), "high": (0, 2)}, [t(B, "S+3")]),
    ("iota", [], {"shape": (B, S), "axis": 1, "dtype": "i32"}, [t(B, S, dt="i32")]),
    ("quantize", [t(B, "4*S"), t(B, S)], {"dtype": "i4", "group_axis": 1, "group_size": 4}, [t(B, "4*S", dt="i4")]),
    ("quantize", [t(B, S), t(), t(dt="u8")], {"dtype": "u8"}, [t(B, S, dt="u8")]),
    ("dequantize", [t(S, 64, dt="i8"), t(S, 1)], {"dtype": "bf16"}, [t(S, 64, dt="bf16")]),
    ("fused", [t(B, S), t(S)], {"kind": "add_relu"}, [t(B, S)]),
]
SYMBOLIC += QLINEAR_SYMBOLIC
SYMBOLIC += [
    ("densify_nm", [tensor((B, 6)), tensor((B, 6), "u8")], {"n": 2, "m": 4}, [tensor((B, 12))]),
    ("ste_mask", [t(S, 64), t(S, 64)], {"backward": "srste", "decay": 2e-4}, [t(S, 64)]),
    ("fake_quant", [t(S, "4*B"), t(S, B)], {"dtype": "u4", "group_axis": 1, "group_size": 4}, [t(S, "4*B")]),
]
_FUSED_BODY = _region([t(B, S), t(S)], lambda b, x, y: [b.relu(b.add(x, y))])


def _symbolic_id(case):
    return case[0]


@pytest.mark.parametrize("name,ins,attrs,want", SYMBOLIC, ids=[_symbolic_id(c) for c in SYMBOLIC])
def test_symbolic_rule(name, ins, attrs, want):
    regions = [_FUSED_BODY] if name == "fused" else []
    op = I.get_op(name)
    assert list(op.infer_types(ins, op.normalize_attrs(attrs), regions)) == want


def test_every_op_has_a_symbolic_rule_test():
    assert not set(TESTED) - {c[0] for c in SYMBOLIC}


def test_symbolic_graph_runs_with_bound_sizes():
    """dims attributes (reshape, slice, iota, broadcast_in_dim) resolve from the bound symbols."""
    b = GraphBuilder()
    x = b.input(("B", "S", 4))
    h = b.reshape(x, shape=("B*S", 4))
    y = b.reshape(b.reduce_sum(b.softmax(h), axes=(1,)), shape=(B, S))  # all ones
    pos = b.iota(shape=(B, S), axis=1, dtype="f32")
    last = b.slice(b.add(y, pos), start=(0, 1), limit=(B, S))
    wide = b.broadcast_in_dim(last, shape=(B, "S-1", 2), dims=(0, 1))
    g = b.build(wide)
    assert g.outputs[0].type == t(B, "S-1", 2)
    xv = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    (got,) = run_graph(g, [xv])
    np.testing.assert_allclose(got, np.broadcast_to(np.array([2.0, 3.0])[None, :, None], (2, 2, 2)), rtol=1e-6)


# ---- rule errors: (op, input types, attrs, substrings of the message) ----

NEGATIVE = [
    ("add", [t(B, 4), t(S, 4)], {}, ["add", "do not broadcast"]),
    ("add", [t(3, 4), t(3, 5)], {}, ["add", "[3,4]", "[3,5]"]),
    ("mul", [t(3), t(3, dt="f16")], {}, ["mul", "dtype mismatch", "cast"]),
    ("exp", [t(3, dt="i32")], {}, ["exp", "float", "i32"]),
    ("logical_and", [t(3), t(3)], {}, ["logical_and", "bool"]),
    ("where", [t(3), t(3), t(3)], {}, ["where", "bool"]),
    ("clamp", [t(3)], {"min": 2.0, "max": 1.0}, ["clamp", "min"]),
    ("reduce_sum", [t(B, S)], {"axes": (2,)}, ["reduce_sum", "out of range", "f32[B,S]"]),
    ("reduce_max", [t(B, S)], {"axes": (1, -1)}, ["reduce_max", "repeated"]),
    ("reduce_mean", [t(4, dt="i32")], {"axes": (0,)}, ["reduce_mean", "float"]),
    ("argmax", [t(B, S)], {"axis": -3}, ["argmax", "out of range"]),
    ("cumsum", [t(4)], {"axis": 1}, ["cumsum", "out of range"]),
    ("topk_mask", [t(B, 8)], {"k": 9}, ["topk_mask", "k=9", "[0, 8]"]),
    ("topk_mask", [t(B, 8, dt="i32")], {"k": 2}, ["topk_mask", "float"]),
    ("softmax", [t(B, S)], {"axis": 2}, ["softmax", "out of range"]),
    ("layer_norm", [t(B, S, 8)], {"axes": (1,)}, ["layer_norm", "trailing"]),
    ("layer_norm", [t(B, S, 8), t(4)], {"axes": (-1,)}, ["layer_norm", "[4]", "[8]"]),
    ("rms_norm", [t(B, 8), t(8, dt="bf16")], {"axes": (-1,)}, ["rms_norm", "dtype mismatch"]),
    ("batch_norm", [t(2, 3, 4), t(4), t(4)], {}, ["batch_norm", "[3]"]),
    (
        "max_pool",
        [t(1, 1, 2, 2)],
        {"window": (3, 3), "strides": (1, 1), "padding": ((0, 0), (0, 0))},
        ["max_pool", "window larger"],
    ),
    ("avg_pool", [t(1, 1, S)], {"window": (2,), "strides": (2,), "padding": ((0, 0),)}, ["avg_pool", "stride 2"]),
    (
        "max_pool",
        [t(1, 4, 4)],
        {"window": (2, 2), "strides": (1, 1), "padding": ((0, 0), (0, 0))},
        ["max_pool", "spatial"],
    ),
    (
        "conv",
        [t(1, 4, 5, 5), t(6, 3, 3, 3)],
        {"strides": (1, 1), "dilation": (1, 1), "padding": ((0, 0), (0, 0))},
        ["conv", "channels"],
    ),
    (
        "conv",
        [t(1, 4, 5, 5), t(6, 4, 3, 3, dt="f16")],
        {"strides": (1, 1), "dilation": (1, 1), "padding": ((0, 0), (0, 0))},
        ["conv", "dtype mismatch"],
    ),
    (
        "dot_general",
        [t(B, 64), t(32, 63)],
        {"contract": ((1,), (1,))},
        ["dot_general", "contracted dims differ", "64 vs 63"],
    ),
    ("dot_general", [t(4, 4), t(4, 4)], {"contract": ((2,), (0,))}, ["dot_general", "out of range"]),
    ("attention", [t(B, 4, S, 8), t(B, 3, S, 8), t(B, 3, S, 8)], {"scale": 1.0}, ["attention", "head counts"]),
    ("attention", [t(B, 4, S, 8), t(B, 4, S, 4), t(B, 4, S, 8)], {"scale": 1.0}, ["attention", "head dims differ"]),
    ("attention", [t(S, 8), t(S, 8), t(S, 8)], {"scale": 1.0}, ["attention", "rank >= 3"]),
    (
        "attention",
        [t(B, 4, S, 8), t(B, 4, S, 8), t(B, 4, S, 8), t(B, 4, S, S, dt="i32")],
        {"scale": 1.0},
        ["attention", "bool or f32"],
    ),
    (
        "attention",
        [t(B, 4, S, 8), t(B, 4, S, 8), t(B, 4, S, 8), t(B, 2, S, S, dt="bool")],
        {"scale": 1.0},
        ["attention", "does not broadcast"],
    ),
    ("reshape", [t(B, S)], {"shape": (B, 4)}, ["reshape", "[B,S]", "[B,4]"]),
    ("transpose", [t(2, 3)], {"perm": (0, 0)}, ["transpose", "permutation"]),
    ("broadcast_in_dim", [t(3)], {"shape": (2, 4), "dims": (1,)}, ["broadcast_in_dim", "neither 1 nor 4"]),
    ("slice", [t(4)], {"start": (1,), "limit": (5,)}, ["slice", "limit <= dim"]),
    ("slice", [t(S)], {"start": (0,), "limit": (S,), "stride": (2,)}, ["slice", "symbolic extent"]),
    ("concat", [t(2, 3), t(3, 3)], {"axis": 1}, ["concat", "[2,3] [3,3]", "differ outside axis"]),
    ("concat", [t(2, 3), t(2, 3, dt="f16")], {"axis": 0}, ["concat", "dtype mismatch"]),
    ("take", [t(5, 3), t(4)], {"axis": 0}, ["take", "integer"]),
    ("index_copy", [t(5, 3), t(2, dt="i64"), t(3, 3)], {"axis": 0}, ["index_copy", "does not fit"]),
    ("pad", [t(3)], {"low": (-1,), "high": (0,)}, ["pad", "negative"]),
    ("iota", [], {"shape": (3,), "axis": 1, "dtype": "i32"}, ["iota", "out of range"]),
    ("quantize", [t(4, 10), t(4, 2)], {"dtype": "i4", "group_axis": 1, "group_size": 4}, ["quantize", "3 entries"]),
    ("quantize", [t(4, 10), t(4, 3)], {"dtype": "i4", "group_axis": 1}, ["quantize", "go together"]),
    ("quantize", [t(4, 10), t(5, 1)], {"dtype": "i8"}, ["quantize", "does not broadcast"]),
    ("quantize", [t(4), t()], {"dtype": "f32"}, ["quantize", "integer or fp8"]),
    ("quantize", [t(4), t(), t()], {"dtype": "f8e4m3"}, ["quantize", "zero point"]),
    ("dequantize", [t(4, dt="i8"), t()], {"dtype": "i32"}, ["dequantize", "float"]),
    ("fused", [t(B, 4)], {"kind": "k"}, ["fused[k]", "f32[B,S]", "f32[B,4]"]),
]


@pytest.mark.parametrize("name,ins,attrs,needles", NEGATIVE, ids=[f"{c[0]}-{i}" for i, c in enumerate(NEGATIVE)])
def test_rule_rejects(name, ins, attrs, needles):
    op = I.get_op(name)
    regions = [_region([t(B, S)], lambda b, x: [b.neg(x)])] if name == "fused" else []
    with pytest.raises(I.TypeInferenceError) as err:
        op.infer_types(ins, op.normalize_attrs(attrs), regions)
    for needle in needles:
        assert needle in str(err.value), f"{needle!r} not in {str(err.value)!r}"


# ---- costs ----


def test_dot_general_cost_is_2mnk():
    x, w = I.Var(t(B, 64)), I.Var(t(32, 64))
    e = make_eqn("dot_general", [x, w], {"contract": ((1,), (1,))})
    c = eqn_cost(e, {"B": 8})
    assert c.flops == 2 * 8 * 32 * 64
    assert c.bytes == 4 * (8 * 64 + 32 * 64 + 8 * 32)


def test_batched_dot_cost():
    q, k = I.Var(t(2, 4, 16, 8)), I.Var(t(2, 4, 16, 8))
    e = make_eqn("dot_general", [q, k], {"contract": ((3,), (3,)), "batch": ((0, 1), (0, 1))})
    assert eqn_cost(e).flops == 2 * (2 * 4) * 16 * 16 * 8


def test_conv_cost():
    x, w = I.Var(t(2, 4, 8, 8)), I.Var(t(6, 2, 3, 3))
    e = make_eqn("conv", [x, w], {"strides": (1, 1), "dilation": (1, 1), "padding": ((1, 1), (1, 1)), "groups": 2})
    assert e.out.type == t(2, 6, 8, 8)
    assert eqn_cost(e).flops == 2 * (2 * 6 * 8 * 8) * (2 * 3 * 3)


def test_elementwise_and_reduction_costs():
    x, y = I.Var(t(4, 5)), I.Var(t(4, 5, dt="bf16"))
    add = eqn_cost(make_eqn("add", [x, x]))
    assert (add.flops, add.bytes) == (20, 3 * 80)
    red = eqn_cost(make_eqn("reduce_sum", [y], {"axes": (1,)}))
    assert (red.flops, red.bytes) == (20, 2 * 20 + 2 * 4)
    assert eqn_cost(make_eqn("reshape", [x], {"shape": (20,)})).flops == 0
    q = eqn_cost(make_eqn("quantize", [x, I.Var(t())], {"dtype": "i4"}))
    assert q.bytes == 80 + 4 + 10  # int4 output is packed: half a byte per element


@pytest.mark.parametrize("name", TESTED)
def test_cost_is_nonnegative(name):
    info = OPINFOS[name]
    dt = (I.OPS[name].dtypes or (None,))[0]
    sample = info.samples(dt, np.random.default_rng(0))[0]
    b = GraphBuilder()
    ins = [b.input(TensorType(a.shape, d)) for d, a in sample.args]
    b.op(name, *ins, regions=sample.regions, **sample.attrs)
    c = eqn_cost(b._eqns[-1])
    assert c.flops >= 0 and c.bytes >= 0
