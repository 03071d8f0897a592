"""HF ``generate`` with a static KV cache through ``torch.compile(backend=pared.backend(...))``:
one compile for the prefill, one for the decode step, no recompile per token."""

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pared  # noqa: E402


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _generate(m, ids, n):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return m.generate(ids, max_new_tokens=n, do_sample=False, cache_implementation="static", disable_compile=True)


@pytest.mark.parametrize("recipe", [None, "quantize{weights=int8}"])
def test_static_cache_generate_compiles_prefill_and_decode_once(recipe):
    from torch._dynamo.utils import counters

    m = _tiny_llama()
    ids = torch.randint(0, 128, (1, 8))
    want = _generate(m, ids, 10)
    torch._dynamo.reset()
    counters.clear()
    be = pared.backend(recipe=recipe)
    m.forward = torch.compile(m.forward, backend=be, dynamic=False)
    got = _generate(m, ids, 10)
    assert counters["stats"]["unique_graphs"] == 2  # prefill + decode, whatever the number of tokens
    assert len(be.compiled) == 2 and not be.fallbacks
    assert [c.graph.inputs[0].type.shape for c in be.compiled][1][-1] == 1  # the second graph is the 1-token step
    if recipe is None:
        assert torch.equal(got, want)  # the uncompressed graph generates the eager model's tokens
    else:
        assert got.shape == want.shape
        rows = [r for r in be.report.for_pass("quantize") if "bits" in r.fields]
        assert len(rows) == 2 * 15  # every linear of both graphs (7 per layer x 2 layers + the LM head)
