"""The sparse CPU kernels against the reference interpreter's numerics: formats, kernels, lowering,
cost-model choices, and the fallback when no compiler is available.

The kernel library is built once per machine (a few seconds with g++, cached under
``~/.cache/pared/cpu_kernels``); without a compiler these tests skip with the build's message,
except the fallback tests, which need none.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pared.backends.cpu import build as cpu_build  # noqa: E402
from pared.backends.cpu.formats import pack_ell, pack_nm8  # noqa: E402
from pared.backends.cpu.kernels import ALGOS, SparseLinear  # noqa: E402
from pared.ir.opdef import get_op  # noqa: E402
from pared.ir.ops.qops import dequantize_weight  # noqa: E402

LIB = cpu_build.library()
needs_lib = pytest.mark.skipif(LIB is None, reason=f"sparse CPU kernels unavailable: {cpu_build.unavailable_reason()}")
ALGO_NAMES = [a for a in ALGOS if a != "auto"]


def qlinear_ref(x, q, scale, zero=None, group_size=None, act="none", act_dtype=None, act_scale=None):
    """qlinear's numpy reference (the reference interpreter's implementation of the op)."""
    args = [x, q, scale] + ([zero] if zero is not None else []) + ([np.float32(act_scale)] if act == "static" else [])
    return get_op("qlinear").impl(*args, group_size=group_size, act=act, act_dtype=act_dtype)


def _mask(rng, n, k, kind, density, nm=(2, 4), block=16):
    """A keep-mask: ``nm`` (N of every M along K), ``fanin`` (the same count per row),
    ``unstructured`` (Bernoulli; some rows empty) or ``block`` (1 x block runs)."""
    if kind == "nm":
        keep, m = nm
        s = rng.random((n, k // m, m))
        idx = np.argsort(-s, axis=-1)[..., :keep]
        mk = np.zeros_like(s, bool)
        np.put_along_axis(mk, idx, True, -1)
        return mk.reshape(n, k)
    if kind == "fanin":
        keep = max(0, min(k, int(round(k * density))))
        mk = np.zeros((n, k), bool)
        if keep:
            np.put_along_axis(mk, np.argsort(-rng.random((n, k)), axis=1)[:, :keep], True, 1)
        return mk
    if kind == "block":
        nb = -(-k // block)
        kept = rng.random((n, nb)) < density
        return np.repeat(kept, block, axis=1)[:, :k]
    mk = rng.random((n, k)) < density
    mk[rng.random(n) < 0.2] = False  # empty rows
    return mk


def _run(op, x, bias=None):
    b = None if bias is None else torch.from_numpy(bias)
    return op(torch.from_numpy(x), b).numpy()


# ---- formats ------------------------------------------------------------------------------------


def test_pack_ell_layouts():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 32)).astype(np.float32)
    nm = w * _mask(rng, 8, 32, "nm", 0.5)
    e = pack_ell(nm)
    assert (e.fanin, e.padding, e.group, e.vtype) == (16, 0.0, 16, "f32")
    assert np.all(np.diff(e.cols.astype(int), axis=1) > 0)  # ascending columns
    fan = w * _mask(rng, 8, 32, "fanin", 0.25)
    assert pack_ell(fan).fanin == 8 and pack_ell(fan).padding == 0.0
    blk = np.zeros((4, 64), np.float32)
    blk[:, 16:32] = 1.0
    assert pack_ell(blk).contiguous
    un = w.copy()
    un[0, :] = 0.0  # an empty row
    un[1, 5:] = 0.0
    e = pack_ell(un)
    assert e.fanin == 32 and e.nnz == int((un != 0).sum()) and e.padding > 0
    empty = pack_ell(np.zeros((3, 10), np.float32))
    assert empty.fanin == 0 and empty.nnz == 0


def test_pack_ell_groups_pad_each_group_to_its_fullest_row():
    rng = np.random.default_rng(1)
    n, k, gs = 6, 72, 32  # ragged last group of 8 columns
    mk = _mask(rng, n, k, "nm", 0.5)
    q = (rng.integers(-8, 8, (n, k)) * mk).astype(np.int8)
    s = (rng.random((n, 3)) + 0.1).astype(np.float32)
    e = pack_ell(dequantize_weight(q, s, None, gs), vtype="u4", q=q, scales=s, group_size=gs)
    assert e.group % 2 == 0 and e.fanin == 3 * e.group and e.scales.shape == (n, 3)
    assert e.zeros is not None and np.all(e.zeros == 8)  # signed int4 is stored as q + 8


def test_pack_errors_are_clear():
    with pytest.raises(ValueError, match="uint16"):
        pack_ell(np.ones((1, 1 << 16), np.float32))
    with pytest.raises(ValueError, match="needs q and scales"):
        pack_ell(np.ones((2, 4), np.float32), vtype="i8")
    assert pack_nm8(np.ones((2, 8), np.int8), np.ones(2, np.float32)) is None  # 8 of 8 kept: not 4-of-8


# ---- kernels vs the reference ------------------------------------------------------------------


@needs_lib
@settings(max_examples=25)
@given(n=st.integers(1, 40), k=st.integers(1, 90), m=st.sampled_from([1, 2, 3, 5, 17, 40, 70]),
       kind=st.sampled_from(["fanin", "unstructured", "block"]), density=st.floats(0.0, 0.6),
       vtype=st.sampled_from(["f32", "bf16"]), algo=st.sampled_from(ALGO_NAMES), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_float_ell_matches_dense(n, k, m, kind, density, vtype, algo, bias, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32) * _mask(rng, n, k, kind, density)
    x = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    wr = w if vtype == "f32" else torch.from_numpy(w).bfloat16().float().numpy()
    ref = x @ wr.T + (0 if b is None else b)
    out = _run(SparseLinear(pack_ell(w, vtype=vtype), algo=algo), x, b)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(ref).max()))


@needs_lib
@settings(max_examples=25)
@given(n=st.integers(1, 24), groups=st.integers(1, 3), ragged=st.sampled_from([0, 4, 8]), gs=st.sampled_from([16, 32]),
       m=st.sampled_from([1, 3, 20, 65]), signed=st.booleans(), bf16=st.booleans(),
       algo=st.sampled_from(ALGO_NAMES), seed=st.integers(0, 2**16))
def test_nm_int4_groups_match_qlinear(n, groups, ragged, gs, m, signed, bf16, algo, seed):
    """2:4 + 4-bit groups (sym int4, asym uint4 with zero points), K not a multiple of the group."""
    rng = np.random.default_rng(seed)
    k = (groups - 1) * gs + (ragged or gs)
    g = -(-k // gs)
    mk = _mask(rng, n, k, "nm", 0.5)
    s = (rng.random((n, g)) + 0.05).astype(np.float32)
    if signed:
        q, z = (rng.integers(-8, 8, (n, k)) * mk).astype(np.int8), None
    else:
        z = rng.integers(0, 16, (n, g)).astype(np.float32)
        zfull = np.repeat(z, gs, axis=1)[:, :k].astype(np.uint8)
        q = np.where(mk, rng.integers(0, 16, (n, k)), zfull).astype(np.uint8)
    x = rng.standard_normal((m, k)).astype(np.float32)
    adt = "bf16" if bf16 else None
    ref = qlinear_ref(x, q, s, z, gs, act_dtype=None if adt is None else __import__("pared").ir.dtypes.bf16)
    e = pack_ell(dequantize_weight(q, s, z, gs), vtype="u4", q=q, scales=s, zeros=z, group_size=gs)
    out = _run(SparseLinear(e, act_dtype=torch.bfloat16 if bf16 else None, algo=algo), x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()))


@needs_lib
@settings(max_examples=25)
@given(n=st.integers(1, 30), k8=st.integers(1, 12), half=st.booleans(), m=st.sampled_from([1, 2, 16, 17, 50]),
       kind=st.sampled_from(["2:4", "4:8", "fanin"]), act=st.sampled_from(["dynamic", "static"]),
       algo=st.sampled_from(ALGO_NAMES), seed=st.integers(0, 2**16))
def test_w8a8_matches_qlinear(n, k8, half, m, kind, act, algo, seed):
    """int8 x int8 kernels (ELL with f32 sums; NM8 with vpermt2b + VNNI) equal qlinear's integer
    reference; K not a multiple of 8 (half a window) included, rows with no weights included."""
    rng = np.random.default_rng(seed)
    k = k8 * 8 - (4 if half and k8 > 1 else 0)
    nm = (4, 8) if kind == "4:8" and k % 8 == 0 else (2, 4)
    mk = _mask(rng, n, k, "fanin", 0.2) if kind == "fanin" else _mask(rng, n, k, "nm", 0.5, nm=nm)
    q = (rng.integers(-127, 128, (n, k)) * mk).astype(np.int8)
    q[rng.random(n) < 0.1] = 0
    s = (rng.random((n, 1)) + 0.01).astype(np.float32)
    x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
    a_s = 0.05 if act == "static" else None
    ref = qlinear_ref(x, q, s, act=act, act_scale=a_s)
    tol = dict(rtol=2e-6, atol=2e-6 * max(1.0, np.abs(ref).max()))
    ell = pack_ell(dequantize_weight(q, s), vtype="i8", q=q, scales=s)
    np.testing.assert_allclose(_run(SparseLinear(ell, act=act, act_scale=a_s, algo=algo), x), ref, **tol)
    nm8 = pack_nm8(q, s)
    if kind != "fanin":
        assert nm8 is not None
    if nm8 is not None and LIB.nm8:
        np.testing.assert_allclose(_run(SparseLinear(nm8, act=act, act_scale=a_s), x), ref, **tol)


@needs_lib
def test_m1_int8_weight_only_and_bf16_inputs():
    rng = np.random.default_rng(3)
    n, k = 48, 96
    q = (rng.integers(-127, 128, (n, k)) * _mask(rng, n, k, "nm", 0.5)).astype(np.int8)
    s = (rng.random((n, 1)) + 0.01).astype(np.float32)
    x = rng.standard_normal((1, k)).astype(np.float32)
    op = SparseLinear(pack_ell(dequantize_weight(q, s), vtype="i8", q=q, scales=s))
    np.testing.assert_allclose(_run(op, x), qlinear_ref(x, q, s), rtol=1e-5, atol=1e-5)
    y = op(torch.from_numpy(x).bfloat16().reshape(1, 1, k))
    assert y.dtype == torch.bfloat16 and y.shape == (1, 1, n)


# ---- the lowering, the cost model, the fallback -------------------------------------------------


def _mlp_graph(rng, k=64, hidden=96, m=4):
    from pared.ir import GraphBuilder

    b = GraphBuilder()
    x = b.input((m, k))
    w1 = b.param("fc1.weight", (rng.standard_normal((hidden, k)) * 0.1).astype(np.float32))
    b1 = b.param("fc1.bias", rng.standard_normal(hidden).astype(np.float32))
    w2 = b.param("fc2.weight", (rng.standard_normal((k, hidden)) * 0.1).astype(np.float32))
    h = b.relu(b.add(b.dot_general(x, w1, contract=((1,), (1,))), b1))
    return b.build(b.dot_general(h, w2, contract=((1,), (1,))))


RECIPES = [
    ("sparsify{method=magnitude,pattern=2:4}", "sparse_nm_f32"),
    ("sparsify{method=magnitude,sparsity=0.9,granularity=row}", "sparse_fanin_f32"),
    ("sparsify{method=magnitude,pattern=block:1x16,sparsity=0.75}", "sparse_block_f32"),
    ("sparsify{method=magnitude,pattern=2:4},quantize{weights=int8}", "sparse_nm_i8"),
    ("sparsify{method=magnitude,pattern=2:4},quantize{weights=uint4,group=32}", "sparse_nm_u4"),
    ("sparsify{method=magnitude,pattern=4:8},w8a8", None),  # nm8 where the CPU has VNNI + VBMI, else ELL
    ("sparsify{method=magnitude,sparsity=0.8,granularity=row},w8a8", "sparse_fanin_i8_w8a8"),
]


@needs_lib
@pytest.mark.parametrize("recipe,kernel", RECIPES)
def test_lowered_sparse_layers_match_the_reference_interpreter(recipe, kernel):
    import pared.passes.quantize  # noqa: F401  (registers quantize, w8a8)
    from pared.backends.costmodel import decisions_of, use_kernels
    from pared.backends.reference import run_graph
    from pared.backends.torch import lower
    from pared.compiler.pass_manager import run_pipeline

    rng = np.random.default_rng(0)
    g = run_pipeline(_mlp_graph(rng), recipe)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    (ref,) = run_graph(g, [x])
    with use_kernels("compressed"):
        gm = lower(g)
    (out,) = gm(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    chosen = {c.chosen for c in decisions_of(gm)}
    want = kernel or ("sparse_nm8_w8a8" if LIB.nm8 else "sparse_nm_i8_w8a8")
    assert chosen == {want}, chosen


def _fake_timings(monkeypatch, seconds: dict):
    """measure() returning ``seconds[kind]`` for the candidate (kind: sparse / quant) and 1.0 for the baseline."""
    from pared.backends.costmodel import measured

    def fake(fn, k, n, baseline=None, rows=measured.PROBE_M, **kw):
        kind = "sparse" if "_candidate" in fn.__qualname__ else "quant"
        return {m: (seconds[kind], 1.0) for m in rows}

    monkeypatch.setattr(measured, "measure", fake)


@needs_lib
@pytest.mark.parametrize("sparse_s,quant_s,want", [(0.2, 0.5, "sparse"), (0.6, 0.5, "int_mm"), (2.0, 3.0, "dense")])
def test_cost_model_picks_the_fastest_and_never_a_slower_sparse_kernel(monkeypatch, sparse_s, quant_s, want):
    import pared.passes.quantize  # noqa: F401
    from pared.backends.costmodel import decisions_of
    from pared.backends.torch import lower
    from pared.compiler.pass_manager import run_pipeline

    _fake_timings(monkeypatch, {"sparse": sparse_s, "quant": quant_s})
    g = run_pipeline(_mlp_graph(np.random.default_rng(0), m=32), "sparsify{method=magnitude,pattern=2:4},w8a8")
    for c in decisions_of(lower(g)):
        kernels = c.kernels
        assert kernels[-1] == "dense" and "int_mm" in kernels and kernels[0].startswith("sparse_")
        assert c.chooser == "measured"
        assert c.chosen.startswith("sparse_") if want == "sparse" else c.chosen == want, (c.chosen, c.reason)


def test_without_the_library_sparse_layers_stay_dense_and_say_why(monkeypatch):
    from pared.backends.costmodel import decisions_of
    from pared.backends.reference import run_graph
    from pared.backends.torch import lower
    from pared.compiler.pass_manager import run_pipeline

    monkeypatch.setattr(cpu_build, "_state", {"lib": None, "why": "no compiler (test)"})
    rng = np.random.default_rng(0)
    g = run_pipeline(_mlp_graph(rng), "sparsify{method=magnitude,pattern=2:4}")
    x = rng.standard_normal((4, 64)).astype(np.float32)
    gm = lower(g)
    (out,) = gm(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), run_graph(g, [x])[0], rtol=1e-5, atol=1e-5)
    ds = list(decisions_of(gm))
    assert ds and all(c.chosen == "dense" and "unavailable" in c.reason and "no compiler" in c.reason for c in ds)


def test_a_failed_build_warns_once_and_returns_none(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="failed"):
        cpu_build.build(cxx="/bin/false", out_dir=tmp_path)
    monkeypatch.setattr(cpu_build, "_state", {})
    monkeypatch.setattr(cpu_build, "build", lambda: (_ for _ in ()).throw(RuntimeError("g++ failed (exit 1)")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cpu_build.library() is None
        assert cpu_build.library() is None
    assert len([w for w in caught if "sparse CPU kernels unavailable" in str(w.message)]) == 1
    assert "g++ failed" in cpu_build.unavailable_reason()


class _Slowed:
    """A lowered module made slower by ``seconds`` per call, keeping its decisions."""

    def __init__(self, fn, seconds: float):
        from pared.backends.costmodel.choice import MODULE_ATTR

        self.fn, self.seconds = fn, seconds
        setattr(self, MODULE_ATTR, getattr(fn, MODULE_ATTR))

    def __call__(self, *xs):
        time.sleep(self.seconds)
        return self.fn(*xs)


@needs_lib
def test_whole_graph_check_keeps_a_model_no_slower_than_without_its_sparse_kernels(monkeypatch):
    """Sparse kernels that won layer by layer but lose as a whole graph are replaced by the
    dense-layout lowering (timings reused, not taken again), and the decisions say why."""
    import pared.passes.quantize  # noqa: F401
    from pared.backends.costmodel import decisions_of, kernel_policy
    from pared.backends.costmodel import measured as measured_mod
    from pared.backends.costmodel.whole_graph import whole_graph_check
    from pared.backends.reference import run_graph
    from pared.backends.torch import lower
    from pared.compiler.pass_manager import run_pipeline
    from pared.passes.context import Report

    _fake_timings(monkeypatch, {"sparse": 0.2, "quant": 0.5})
    timed = []
    fake = measured_mod.measure
    monkeypatch.setattr(measured_mod, "measure", lambda *a, **kw: timed.append(1) or fake(*a, **kw))
    rng = np.random.default_rng(0)
    g = run_pipeline(_mlp_graph(rng, m=32), "sparsify{method=magnitude,pattern=2:4},w8a8")
    fn = lower(g)
    assert all(c.chosen.startswith("sparse_") for c in decisions_of(fn))
    n_timed = len(timed)
    policies = []

    def again():
        policies.append(kernel_policy())
        return lower(g)

    x = torch.from_numpy(rng.standard_normal((32, 64)).astype(np.float32))
    report = Report()
    out, caught = whole_graph_check(_Slowed(fn, 0.02), ["w"], (x,), report, again)
    assert policies == ["dense-layout"] and len(timed) == n_timed  # the per-layer timings were reused
    assert caught == []
    ds = list(decisions_of(out))
    assert ds and all(c.chosen == "int_mm" and c.chooser == "whole-graph" for c in ds), ds
    assert all("no sparse kernels" in c.reason and c.kernels[0].startswith("sparse_") for c in ds)
    (row,) = [r for r in report.rows if r.name == "whole graph"]
    assert row.fields["kept"] == "no sparse kernels"
    assert row.fields["no_sparse_kernels_ms"] < row.fields["per_layer_ms"]
    (ref,) = run_graph(g, [x.numpy()])
    np.testing.assert_allclose(out(x)[0].numpy(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
