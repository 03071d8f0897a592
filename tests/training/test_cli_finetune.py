"""``pared finetune DIR --steps N --out DIR2`` on small artifacts."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from pared.compiler.pass_manager import run_pipeline  # noqa: E402
from pared.ir import Sparse  # noqa: E402
from pared.tools.artifact import load_artifact, save_artifact  # noqa: E402
from pared.tools.cli import main  # noqa: E402

from .tiny import mlp_graph, weights  # noqa: E402


@pytest.fixture()
def artifacts(tmp_path):
    dense = mlp_graph(weights())
    save_artifact(tmp_path / "dense", dense)
    sparse = run_pipeline(dense, "sparsify{method=magnitude,pattern=2:4}")
    save_artifact(tmp_path / "sparse", sparse, recipe="sparsify{method=magnitude,pattern=2:4}")
    return tmp_path


def test_cli_finetune_writes_a_sparse_artifact(artifacts, capsys):
    out = artifacts / "tuned"
    rc = main(["finetune", str(artifacts / "sparse"), "--teacher", str(artifacts / "dense"), "--data", "random",
               "--steps", "5", "--lr", "0.01", "--n-train", "4", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    art = load_artifact(out)
    assert art.recipe.endswith("finetune{steps=5}")
    assert art.graph.param("fc1.weight").type.encoding == Sparse("nm", n=2, m=4, axis=1)
    w = np.asarray(art.graph.weight("fc1.weight"))
    assert ((w.reshape(-1, 4) != 0).sum(1) <= 2).all()
    assert art.manifest["metrics"]["finetune"]["step"] == 5
    assert not (artifacts / "tuned.checkpoint").exists()  # removed once the artifact is written


def test_cli_finetune_with_a_recipe_and_errors(artifacts, capsys):
    out = artifacts / "qat"
    rc = main(["finetune", str(artifacts / "dense"), "--teacher", str(artifacts / "dense"), "--data", "random",
               "--recipe", "train_quant{weights=int8}", "--steps", "3", "--out", str(out), "--backend", "xla"])
    assert rc == 0, capsys.readouterr().err
    assert [e.op for e in load_artifact(out).graph.eqns].count("qlinear") == 2
    rc = main(["finetune", str(artifacts / "dense"), "--teacher", str(artifacts / "dense"), "--data", "random",
               "--steps", "3", "--out", str(artifacts / "none")])
    assert rc == 2 and "no sparse or quantized weights" in capsys.readouterr().err
