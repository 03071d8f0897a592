"""A causal LM's artifact stores a decode step over a static KV cache; `pared generate` streams
from it, and its greedy tokens equal the same graph's on the reference interpreter."""

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pared.tools.artifact import load_artifact  # noqa: E402
from pared.tools.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    """A 2-layer Llama with SmolLM2's tokenizer (random weights), as an HF folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from pared.tools.models import smollm2_fp32_dir

    src = smollm2_fp32_dir()
    d = tmp_path_factory.mktemp("tiny_lm")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, architectures=["LlamaForCausalLM"])
    LlamaForCausalLM(cfg).eval().save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(src / f, d / f)
    return d


@pytest.fixture(scope="module")
def artifact(tiny_lm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "a"
    rc = main(["compress", str(tiny_lm_dir), "--recipe", "quantize{weights=int8}", "--out", str(out),
               "--calib", "none", "--no-eval", "--context", "48"])
    assert rc == 0
    return out


def test_the_artifact_stores_a_decode_graph_with_its_compressed_weights(artifact):
    art = load_artifact(artifact)
    dec = art.decode
    assert dec is not None and dec.source["context"] == 48
    assert dec.input_names[:2] == ["input_ids", "start"] and len(dec.graph.inputs) == 2 + 2 * 2
    q = sorted(p.name for p in dec.graph.params if p.name.endswith(".q"))
    assert len(q) == 2 * 7 + 1  # every linear of both layers and the tied LM head, quantized once, replayed
    for name in q:  # the very codes of the ids->logits graph, stored once (in the enclosing artifact)
        np.testing.assert_array_equal(np.asarray(dec.graph.weights[name]), np.asarray(art.graph.weights[name]))
        assert dec.manifest["tensors"][name]["codec"] == "shared"
    stored = sum(f.stat().st_size for f in (artifact / "decode").iterdir())
    assert stored < 0.1 * (artifact / "weights.safetensors").stat().st_size


def test_a_nested_decode_artifact_alone_says_where_its_weights_are(artifact):
    from pared.tools.artifact import ArtifactError

    with pytest.raises(ArtifactError, match="stored in the enclosing artifact"):
        load_artifact(artifact / "decode")


def test_greedy_tokens_equal_the_reference_interpreter_for_32_tokens(artifact):
    art = load_artifact(artifact)
    prompt = [1, 520, 3000, 17, 77]
    fast = art.generate(prompt, 32, backend="torch", stop_at_eos=False)
    ref = art.generate(prompt, 32, backend="reference", stop_at_eos=False)
    assert len(fast) == 32 and fast == ref


def test_the_decode_graph_continues_as_the_dense_model_does_without_a_recipe(tiny_lm_dir, tmp_path):
    out = tmp_path / "dense"
    assert main(["compress", str(tiny_lm_dir), "--recipe", "cleanup", "--out", str(out), "--calib", "none",
                 "--no-eval", "--context", "40"]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    ids = torch.tensor([[1, 520, 3000, 17, 77]])
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=12, do_sample=False, cache_implementation="static",
                              disable_compile=True)[0, 5:].tolist()
    got = load_artifact(out).generate(ids[0].tolist(), 12, stop_at_eos=False)
    assert got == want


def test_pared_generate_streams_text_and_sampling_is_seeded(artifact, capsys):
    assert main(["generate", str(artifact), "The capital of France is", "-n", "6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The capital of France is") and out.endswith("\n")
    a = load_artifact(artifact).generate("Hello", 8, temperature=0.8, top_p=0.9, seed=3, stop_at_eos=False)
    b = load_artifact(artifact).generate("Hello", 8, temperature=0.8, top_p=0.9, seed=3, stop_at_eos=False)
    assert a == b and len(a) == 8


def test_too_many_tokens_for_the_cache_are_refused(artifact, capsys):
    assert main(["generate", str(artifact), "Hello", "-n", "100"]) != 0
    assert "exceed the cache's 48 positions" in capsys.readouterr().err


def test_generate_on_an_artifact_without_a_decode_graph_says_why(tiny_lm_dir, tmp_path, capsys):
    out = tmp_path / "nodec"
    assert main(["compress", str(tiny_lm_dir), "--recipe", "cleanup", "--out", str(out), "--calib", "none",
                 "--no-eval", "--context", "0"]) == 0
    assert main(["generate", str(out), "Hello"]) != 0
    assert "no decode/ graph" in capsys.readouterr().err


def test_a_quantized_tied_embedding_is_stored_once_and_decodes_as_the_reference(tiny_lm_dir, tmp_path):
    out = tmp_path / "tied"
    rc = main(["compress", str(tiny_lm_dir), "--recipe", "quantize{weights=int8,tied_embedding=quantized}",
               "--out", str(out), "--calib", "none", "--no-eval", "--context", "40"])
    assert rc == 0
    art = load_artifact(out)
    for g in (art.graph, art.decode.graph):  # the float table is gone from both graphs
        names = {p.name for p in g.params}
        assert "model.embed_tokens.weight" not in names and "model.embed_tokens.weight.q" in names
        assert "dequantize" in {e.op for e in g.eqns}
    prompt = [1, 520, 3000, 17, 77]
    fast = art.generate(prompt, 16, backend="torch", stop_at_eos=False)
    assert fast == art.generate(prompt, 16, backend="reference", stop_at_eos=False)
