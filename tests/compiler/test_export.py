"""Exports: a dense HF checkpoint that transformers loads, and compressed-tensors layouts whose
decompressed weights (by the compressed-tensors package itself) equal pared's dequantized weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pared.compiler.presets import register_builtin_passes  # noqa: E402
from pared.tools import safetensors_io as st  # noqa: E402
from pared.tools.artifact import load_artifact  # noqa: E402
from pared.tools.export import ExportError, dense_weights, export, pack_int32, qlinears  # noqa: E402
from pared.tools.models import ModelError, resolve_model  # noqa: E402
from pared.tools.offline import compress_model, save_result  # noqa: E402

register_builtin_passes()


@pytest.fixture(scope="module")
def minilm():
    try:
        return resolve_model("minilm")
    except ModelError as e:
        pytest.skip(str(e))


_CACHE: dict = {}


def _artifact(lm, recipe, path):
    """(result, artifact) of ``recipe`` on MiniLM, compressed once per test module."""
    if recipe not in _CACHE:
        r = compress_model(lm, recipe, None, log=lambda s: None)
        _CACHE[recipe] = r, load_artifact(save_result(r, path, {}, html=False))
    return _CACHE[recipe]


@pytest.fixture(scope="module")
def int4_artifact(minilm, tmp_path_factory):
    return _artifact(minilm, "quantize{weights=int4,group=128}", tmp_path_factory.mktemp("a") / "int4")


def test_pack_int32_matches_compressed_tensors():
    ct = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    rng = np.random.default_rng(0)
    for bits in (2, 3, 4, 8):
        codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(5, 77)).astype(np.int8)
        ref = ct.pack_to_int32(torch.from_numpy(codes), bits).numpy()
        np.testing.assert_array_equal(pack_int32(codes, bits), ref)


def test_hf_export_loads_with_transformers(minilm, int4_artifact, tmp_path):
    result, art = int4_artifact
    out = export(art, tmp_path / "hf", "hf")
    model = transformers.AutoModel.from_pretrained(out).eval()
    dense = dense_weights(art.graph)
    sd = model.state_dict()
    for name, w in dense.items():
        if name in sd:
            np.testing.assert_array_equal(sd[name].numpy(), w)
    q = "encoder.layer.0.attention.self.query.weight"
    assert q in dense and q in sd and q + ".q" not in sd  # dequantized under the original name
    kw = minilm.example_kwargs
    with torch.no_grad():
        hf = model(**kw).last_hidden_state
    # the graph's own numerics (reference interpreter): the torch lowering may run int4 layers on
    # bf16 activations where the cost model picks int4pack_bf16 (act_dtype unset), ~1e-2 away
    ins = [t.numpy() for t in minilm.graph_inputs(kw)]
    pared_out = torch.from_numpy(np.asarray(art.run(*ins, backend="reference")[0]))
    torch.testing.assert_close(hf, pared_out, rtol=1e-4, atol=1e-4)


def _ct_decompress(export_dir):
    """Decompress every quantized module of an export with compressed-tensors' own compressors."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme

    cfg = json.loads((export_dir / "config.json").read_text())["quantization_config"]
    tensors, _ = st.load(export_dir / "model.safetensors")
    comp = BaseCompressor.get_value_from_registry(cfg["format"])
    out = {}
    for group in cfg["config_groups"].values():
        scheme = QuantizationScheme(targets=group["targets"], weights=group["weights"],
                                    input_activations=group.get("input_activations"))
        for m in group["targets"]:
            local = {
                k[len(m) + 1 :]: torch.from_numpy(np.array(v))
                for k, v in tensors.items()
                if k.startswith(m + ".weight")
            }
            out[m + ".weight"] = comp.decompress(local, scheme)["weight"].numpy()
    return out


@pytest.mark.parametrize(
    "recipe,fmt",
    [
        ("quantize{weights=int4,group=128}", "pack-quantized"),
        ("quantize{weights=uint4,group=128}", "pack-quantized"),
        ("quantize{weights=int8}", "int-quantized"),
        ("quantize{weights=int8}", "pack-quantized"),
    ],
)
def test_compressed_tensors_decompress_equals_pared(minilm, tmp_path, recipe, fmt):
    pytest.importorskip("compressed_tensors")
    _, art = _artifact(minilm, recipe, tmp_path / "a")
    out = export(art, tmp_path / fmt, fmt)
    got = _ct_decompress(out)
    dense = dense_weights(art.graph)
    assert len(got) == len(qlinears(art.graph)) == 37
    for name, w in got.items():
        np.testing.assert_array_equal(w, dense[name], err_msg=name)


def test_int_quantized_refuses_int4(int4_artifact, tmp_path):
    with pytest.raises(ExportError, match="int-quantized stores int8"):
        export(int4_artifact[1], tmp_path / "x", "int-quantized")
    assert not (tmp_path / "x").exists()


def test_compressed_tensors_needs_quantized_layers(minilm, tmp_path):
    _, art = _artifact(minilm, "magnitude-2:4", tmp_path / "a")
    with pytest.raises(ExportError, match="no quantized layers"):
        export(art, tmp_path / "x", "pack-quantized")
    out = export(art, tmp_path / "hf", "hf")  # the sparse model densified
    model = transformers.AutoModel.from_pretrained(out)
    w = model.state_dict()["encoder.layer.0.intermediate.dense.weight"].numpy()
    assert (w.reshape(-1, 4) != 0).sum(1).max() <= 2
