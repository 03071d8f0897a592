"""Saved artifacts: round trips that equal the in-memory model exactly, and every damage named."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pared.backends.reference import run_graph
from pared.compiler.pass_manager import run_pipeline
from pared.compiler.presets import register_builtin_passes
from pared.ir import tensor
from pared.ir.types import Quant, Sparse
from pared.tools import safetensors_io as st
from pared.tools.artifact import (
    GRAPH_FILE,
    MANIFEST,
    WEIGHTS_FILE,
    ArtifactError,
    compile_graph,
    decode_weight,
    encode_weight,
    load_artifact,
    save_artifact,
)
from tests.compiler.mlp import build_mlp

register_builtin_passes()


@pytest.fixture
def mlp_artifact(tmp_path):
    g = run_pipeline(build_mlp(), "cleanup,sparsify{method=magnitude,pattern=2:4}")
    path = save_artifact(
        tmp_path / "mlp", g, recipe="cleanup,sparsify{pattern=2:4}", report_rows=[{"pass": "x", "name": "y"}]
    )
    return g, path


def _x(rows=4):
    return np.random.default_rng(0).standard_normal((rows, 64)).astype(np.float32)


# --- round trips ---------------------------------------------------------------------------------------


def test_round_trip_reference_exact(mlp_artifact):
    g, path = mlp_artifact
    art = load_artifact(path)
    for a, b in zip(run_graph(g, [_x()]), art.run(_x())):
        np.testing.assert_array_equal(a, b)
    assert art.recipe == "cleanup,sparsify{pattern=2:4}"
    assert art.report_rows == [{"pass": "x", "name": "y"}]
    m = art.manifest
    assert (
        m["pared_version"] and m["files"][WEIGHTS_FILE]["sha256"] and m["tensors"]["fc1.weight"]["codec"] == "bitmask"
    )
    assert m["tensors"]["fc1.weight"]["stored_bytes"] < 0.6 * m["tensors"]["fc1.weight"]["dense_bytes"]


def test_codecs_round_trip():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 32)).astype(np.float32) * (rng.random((16, 32)) > 0.5)
    codec, parts = encode_weight("w", w, tensor((16, 32), "f32", Sparse("bitmask")))
    assert codec == "bitmask"
    np.testing.assert_array_equal(decode_weight("w", codec, w.shape, "float32", parts), w)
    q = rng.integers(-8, 8, size=(16, 32)).astype(np.int8)
    codec, parts = encode_weight("q", q, tensor((16, 32), "i4", Quant(4, axis=0, group_size=16, group_axis=1)))
    assert codec == "packed:4:i" and parts["q::packed"].nbytes == q.size // 2
    out = decode_weight("q", codec, q.shape, "int8", parts)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, q)


def test_quantized_round_trip_packs_int4(tmp_path):
    g = run_pipeline(build_mlp(), "quantize{weights=int4,group=32}")
    art = load_artifact(save_artifact(tmp_path / "q", g))
    assert any(v["codec"].startswith("packed:4") for v in art.manifest["tensors"].values())
    for a, b in zip(run_graph(g, [_x()]), art.run(_x())):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["f8e4m3", "f8e5m2"])
def test_fp8_codes_cover_every_value(name):
    from pared.ir import dtypes

    dt = dtypes.get(name)
    table = dtypes.fp8_table(dt)
    finite = np.isfinite(table)
    codes = dtypes.fp8_encode(dt, table[finite])
    np.testing.assert_array_equal(dtypes.fp8_table(dt)[codes], table[finite])  # -0.0 included
    assert np.array_equal(np.signbit(table[codes]), np.signbit(table[finite]))
    assert np.nanmax(table[finite]) == {"f8e4m3": 448.0, "f8e5m2": 57344.0}[name]
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 30
    assert dtypes.fp8_encode(dt, x) is None  # not fp8 values: refused, not rounded
    r = dtypes.round_to(dt, x)
    np.testing.assert_array_equal(table[dtypes.fp8_encode(dt, r)], r)


@pytest.mark.parametrize("recipe", ["fp8{activations=none}", "fp8"])
def test_fp8_weights_are_stored_in_one_byte(tmp_path, recipe):
    g = run_pipeline(build_mlp(), recipe)
    art = load_artifact(save_artifact(tmp_path / "f8", g))
    fp8 = [v for v in art.manifest["tensors"].values() if v["codec"].startswith("fp8:")]
    assert fp8 and all(v["stored_bytes"] * 4 == v["dense_bytes"] for v in fp8)
    for a, b in zip(run_graph(g, [_x()]), art.run(_x())):
        np.testing.assert_array_equal(a, b)


def test_safetensors_interoperates(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": np.array([1, -2], np.int8)}
    st.save(tmp_path / "a.safetensors", a)
    b = safetensors_numpy.load_file(str(tmp_path / "a.safetensors"))
    safetensors_numpy.save_file(b, str(tmp_path / "b.safetensors"))
    c, _ = st.load(tmp_path / "b.safetensors")
    for k in a:
        np.testing.assert_array_equal(a[k], c[k])


@pytest.fixture(scope="module")
def minilm_case(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pared.tools.models import ModelError, resolve_model
    from pared.tools.offline import compress_model, save_result

    try:
        lm = resolve_model("minilm")
    except ModelError as e:
        pytest.skip(str(e))
    result = compress_model(lm, "magnitude-2:4", None, log=lambda s: None)
    path = save_result(result, tmp_path_factory.mktemp("art") / "minilm", {}, html=False)
    return lm, result, path


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype")
def test_minilm_round_trip_torch_reference_xla(minilm_case):
    """compress -> save -> load -> run equals the in-memory compressed model (exactly on the
    reference interpreter and XLA)."""
    import torch

    lm, result, path = minilm_case
    art = load_artifact(path)
    ins = lm.graph_inputs(lm.example_kwargs)
    # the in-memory torch module: its lowering and the reloaded one's each time the sparse kernels
    # against dense (the measured cost model), and may pick differently: equal up to summation order
    for a, b in zip(result.run(ins), art.run(*ins, backend="torch")):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    np_ins = [x.numpy() for x in ins]
    for a, b in zip(run_graph(result.graph, np_ins), art.run(*np_ins, backend="reference")):
        np.testing.assert_array_equal(a, b)
    try:
        import jax  # noqa: F401

        from pared.backends.xla import lower  # noqa: F401
    except ImportError:
        return
    for a, b in zip(compile_graph(result.graph, "xla")(*np_ins), art.run(*np_ins, backend="xla")):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert art.input_names == ["input_ids", "attention_mask"]
    assert art.source["sha256"] == lm.sha256()


# --- faults -------------------------------------------------------------------------------------------


def test_truncated_weights(mlp_artifact):
    _, path = mlp_artifact
    w = path / WEIGHTS_FILE
    data = w.read_bytes()
    w.write_bytes(data[: len(data) - 100])
    with pytest.raises(ArtifactError, match=r"weights\.safetensors: truncated"):
        load_artifact(path)
    with pytest.raises(
        ArtifactError, match=r"truncated: tensor '.*' ends at byte"
    ):  # without the manifest's size check
        load_artifact(path, check=False)


def test_flipped_byte_names_the_tensor(mlp_artifact):
    _, path = mlp_artifact
    w = path / WEIGHTS_FILE
    header, start = st.read_header(w)
    b0, _ = header["fc2.weight::values"]["data_offsets"]
    data = bytearray(w.read_bytes())
    data[start + b0 + 5] ^= 0x10
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"corrupted: tensor 'fc2.weight::values' \(param @fc2.weight\)"):
        load_artifact(path)


def test_flipped_byte_in_header_and_graph(mlp_artifact):
    _, path = mlp_artifact
    w = path / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[12] ^= 0xFF  # inside the JSON header
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"weights\.safetensors: corrupted"):
        load_artifact(path)
    g = path / GRAPH_FILE
    text = bytearray(g.read_bytes())
    text[40] ^= 0x01
    g.write_bytes(bytes(text))
    with pytest.raises(ArtifactError, match=r"graph\.ir: corrupted"):
        load_artifact(path)


def test_missing_manifest_and_files(mlp_artifact):
    _, path = mlp_artifact
    (path / GRAPH_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"graph\.ir: missing"):
        load_artifact(path)
    (path / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match=r"has no manifest\.json: it is not a pared artifact"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(path.parent / "nope")


def test_newer_format_is_refused(mlp_artifact):
    _, path = mlp_artifact
    m = json.loads((path / MANIFEST).read_text())
    m["format_version"] = 99
    (path / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="newer than this pared"):
        load_artifact(path)


# --- atomic writes ------------------------------------------------------------------------------------


def test_existing_output_is_protected(mlp_artifact, tmp_path):
    g, path = mlp_artifact
    with pytest.raises(ArtifactError, match="--overwrite"):
        save_artifact(path, g)
    save_artifact(path, g, recipe="again", overwrite=True)
    assert load_artifact(path).recipe == "again"
    other = tmp_path / "user-data"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not a pared artifact"):
        save_artifact(other, g, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_interrupted_save_leaves_nothing(mlp_artifact, tmp_path):
    g, path = mlp_artifact

    def interrupt(tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_artifact(tmp_path / "new", g, extra=interrupt)
    assert not (tmp_path / "new").exists()
    with pytest.raises(KeyboardInterrupt):  # over an existing artifact: the old one stays intact
        save_artifact(path, g, recipe="half", extra=interrupt, overwrite=True)
    assert load_artifact(path).recipe == "cleanup,sparsify{pattern=2:4}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in path.parent.iterdir() if ".partial-" in p.name] == []


def test_stale_partial_of_a_dead_writer_is_cleaned(mlp_artifact):
    g, path = mlp_artifact
    stale = path.parent / ".next.partial-999999999-abc"
    stale.mkdir()
    save_artifact(path.parent / "next", g)
    assert not stale.exists() and (path.parent / "next" / MANIFEST).is_file()
    assert os.path.isdir(path.parent / "next")
