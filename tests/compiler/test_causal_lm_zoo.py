"""Tiny random HF causal LMs through ``torch.compile(backend=pared.backend(target="reference"))``,
built as a new user builds them (default configs: the KV cache on). Each captures as one graph
that the numpy reference interpreter runs: logits and cache equal eager's, and the tensors HF's
mask and cache code makes (``torch.tensor(...)``, ``arange``, empty cache entries) are imported
as constants and IR ops, not opaque calls."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pared.compiler.torch_backend import backend  # noqa: E402

from .torch_zoo import CAUSAL_LM_VOCAB, CAUSAL_LMS, causal_lm  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def assert_same(out, ref):
    """Logits and every layer's cached keys and values equal eager's."""
    torch.testing.assert_close(out.logits, ref.logits, **TOL)
    assert len(out.cache.layers) == len(ref.cache.layers)
    for got, want in zip(out.cache.layers, ref.cache.layers):
        torch.testing.assert_close(got.keys, want.keys, **TOL)
        torch.testing.assert_close(got.values, want.values, **TOL)


def opaque_targets(compiled) -> list[str]:
    """The ``target`` of every opaque equation left in a compiled graph; each must be reported
    as run through torch by the reference target."""
    targets = [e.attrs["target"] for e in compiled.graph.walk() if e.op == "opaque"]
    ran = [r.name for r in compiled.report if r.pass_name == "reference" and r.fields.get("ran") == "through torch"]
    assert sorted(ran) == sorted(targets), compiled.report.table()
    return targets


@pytest.mark.parametrize("name", list(CAUSAL_LMS))
def test_reference_equals_eager(name):
    model, (ids,) = causal_lm(name)
    be = backend(target="reference", strict=True)
    with torch.no_grad():
        out = torch.compile(model, backend=be)(ids)
        ref = model(ids)
    assert_same(out, ref)
    assert len(be.compiled) == 1 and not be.fallbacks
    (c,) = be.compiled
    assert opaque_targets(c) == [], c.report.table()
    assert not c.imported.opaque, c.report.table()


@pytest.mark.parametrize("name", list(CAUSAL_LMS))
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the masked rows' softmax
def test_left_padded_batch(name):
    """A left-padded row has queries whose every key is masked: torch's SDPA gives zeros there,
    and so must the imported graph (a plain softmax would give nan and spread it)."""
    model, (ids,) = causal_lm(name)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    be = backend(target="reference", strict=True)
    with torch.no_grad():
        out = torch.compile(model, backend=be)(ids, attention_mask=mask)
        ref = model(ids, attention_mask=mask)
    assert not out.logits.isnan().any()
    assert_same(out, ref)
    assert [opaque_targets(c) for c in be.compiled] == [[]]


@pytest.mark.parametrize("name", ["llama", "opt", "gpt2"])
def test_decode_step_reads_the_cache(name):
    """A second call with the cache from the first (one decode step) compiles a second graph."""
    model, (ids,) = causal_lm(name)
    be = backend(target="reference", strict=True)
    f = torch.compile(model, backend=be)
    with torch.no_grad():
        out, ref = f(ids), model(ids)
        nxt = torch.randint(0, CAUSAL_LM_VOCAB, (ids.shape[0], 1), generator=torch.Generator().manual_seed(2))
        assert_same(f(nxt, cache=out.cache), model(nxt, cache=ref.cache))
    assert len(be.compiled) == 2 and all(opaque_targets(c) == [] for c in be.compiled)
