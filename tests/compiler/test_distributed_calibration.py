"""Data-parallel calibration (docs/distributed.md): N processes, or the devices of a JAX mesh, each
calibrate on their share of the batches, and the combined statistics give the one-process weights.

The multi-process tests launch real processes (``torch.distributed.run`` with gloo, and a JAX
subprocess with 8 simulated host devices); the reducer hook is tested in-process with a fake one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pared.compiler import make_context, run_pipeline
from pared.passes.calibration import CalibrationError, CalibrationRequest, Statistic, calibrate, find_weight_sites
from tests.compiler.mlp import build_mlp

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {"gptq": "gptq{weights=int4,group=32}", "sparsegpt": "sparsify{method=sparsegpt,pattern=2:4}"}


class FakeReducer:
    """Plays one rank of ``world``: records each collective; the 'other ranks' contribute nothing."""

    name = "fake"
    parts = 1

    def __init__(self, rank: int, world: int):
        self.rank, self.world, self.calls = rank, world, []

    def executor(self, part, ex):
        return ex

    def sum(self, parts):
        self.calls.append(("sum", [np.shape(p) for p in parts]))
        return np.sum(parts, axis=0)

    def max(self, parts):
        self.calls.append(("max", [np.shape(p) for p in parts]))
        return np.max(parts, axis=0)


def _batches(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((8, 64)).astype(np.float32),) for _ in range(n)]


class Histogram(Statistic):
    """A user statistic: token counts per sign of the first channel."""

    key = "signs"

    def __init__(self):
        self.counts = np.zeros(2)

    def update(self, x):
        self.counts += [(x[:, 0] < 0).sum(), (x[:, 0] >= 0).sum()]

    def result(self):
        return self.counts


class ReducibleHistogram(Histogram):
    def reduce(self, reducer):
        self.counts = reducer.sum([self.counts])


def _request(stat_cls, seen):
    g = build_mlp()
    sites = find_weight_sites(g)

    def rewrite(site, w, stats):
        seen[site.param] = dict(stats)

    return g, CalibrationRequest("custom", sites, lambda s: ("hessian", stat_cls()), rewrite)


def test_a_custom_statistic_without_reduce_is_refused_across_processes():
    g, req = _request(Histogram, {})
    reducer = FakeReducer(0, 2)
    ctx = make_context(calibration=_batches(2), calibration_reducer=reducer, progress=False)
    with pytest.raises(CalibrationError, match=r"fc1.weight.*Histogram.*cannot be combined across 2 processes.*"
                                               r"Histogram.reduce\(reducer\)"):
        calibrate(g, ctx, req)
    assert reducer.calls == []  # refused before any collective
    with pytest.raises(CalibrationError, match="define Histogram.reduce"):
        Histogram().reduce(reducer)


def test_a_custom_statistic_with_reduce_is_combined_through_the_reducer():
    seen = {}
    g, req = _request(ReducibleHistogram, seen)
    reducer = FakeReducer(1, 2)
    calibrate(g, make_context(calibration=_batches(4), calibration_reducer=reducer, progress=False), req)
    assert seen["fc1.weight"]["signs"].sum() == 2 * 8  # rank 1 of 2 saw batches 1 and 3
    assert ("sum", [(2,)]) in reducer.calls


def test_every_rank_reduces_the_same_statistics_in_the_same_order_even_without_batches():
    """One batch, two ranks: rank 1 has none, yet makes the same collectives with zeros of each
    site's shape, so the collectives of the two ranks match."""
    calls, seen = {}, {}
    for rank in (0, 1):
        reducer = FakeReducer(rank, 2)
        ctx = make_context(calibration=_batches(1), calibration_reducer=reducer, progress=False)
        got = seen.setdefault(rank, {})
        g = build_mlp()
        req = CalibrationRequest("t", find_weight_sites(g), lambda s: ("hessian", "cross", "norms", "mean", "absmax"),
                                 lambda site, w, stats, got=got: got.setdefault(site.param, dict(stats)) and None)
        calibrate(g, ctx, req)
        calls[rank] = reducer.calls
    assert calls[0] == calls[1]
    assert ("sum", [(64, 64)]) in calls[0] and ("sum", [(128, 128)]) in calls[0] and ("max", [(128,)]) in calls[0]
    assert seen[1]["fc1.weight"]["count"] == 0 and not seen[1]["fc2.weight"]["hessian"].any()
    assert seen[0]["fc1.weight"]["count"] == 8


def test_a_fake_world_of_one_leaves_the_one_process_weights_unchanged():
    bs = _batches(3)
    plain = run_pipeline(build_mlp(), RECIPES["sparsegpt"], make_context(calibration=bs, progress=False))
    ctx = make_context(calibration=bs, calibration_reducer=FakeReducer(0, 1), progress=False)
    same = run_pipeline(build_mlp(), RECIPES["sparsegpt"], ctx)
    for k, w in plain.weights.items():
        np.testing.assert_array_equal(np.asarray(w), np.asarray(same.weights[k]))


# --- real processes --------------------------------------------------------------------------------


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}
    env.pop("WORLD_SIZE", None)
    return env


def _run(cmd, timeout=120, **env) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def _torchrun(*args) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]


def _assert_same_weights(one: dict, many: dict, where: str) -> None:
    assert sorted(one) == sorted(many), where
    for k in one:
        a, b = np.asarray(one[k]), np.asarray(many[k])
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {k}"
        np.testing.assert_array_equal(a == 0, b == 0, err_msg=f"{where}: mask of {k}")
        if a.dtype.kind == "f":
            # relative to the weight's norm: the least-squares refit stops each row at a tolerance, and a
            # row whose residual sits at it may take one CG step more or less when the Hessian's float64
            # sums are added in another order (a few 1e-5 elementwise, ~1e-6 of the weight's norm)
            rel = float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-30))
            assert rel <= 1e-5, f"{where}: {k}: relative difference {rel:.2e}"
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{where}: {k}")


TORCH_SCRIPT = """
    import os, sys
    import numpy as np
    import torch
    import pared

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64), torch.nn.GELU(),
                                torch.nn.Linear(64, 16)).eval()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 64, generator=gen) for _ in range(5)]  # 3 on rank 0, 2 on rank 1


    def run(out_dir, rank):
        out = {}
        for name, recipe in RECIPES.items():
            module, _ = pared.compress(model, batches[0], recipe=recipe, calibration=batches)
            out.update({f"{name}/{k}": np.asarray(v) for k, v in module.graph.weights.items()})
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **out)


    if __name__ == "__main__":
        run(sys.argv[1], os.environ["RANK"])
"""


def test_two_gloo_processes_give_the_one_process_gptq_and_sparsegpt_weights(tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "compress.py"
    script.write_text(f"RECIPES = {RECIPES!r}\n" + textwrap.dedent(TORCH_SCRIPT))
    p = _run(_torchrun(str(script), str(tmp_path)))
    # one process, with the thread count torchrun gives each rank (OMP_NUM_THREADS=1): LAPACK's
    # Cholesky differs in its last bits between 1 and 2 OpenBLAS threads under some kernels
    # (OPENBLAS_CORETYPE=Haswell: ~1e-14), and the refit's per-row stopping test can turn that into
    # one CG step more or less; this test is about splitting the data, not about BLAS threads
    _run([sys.executable, str(script), str(tmp_path)], RANK="single", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    assert p.stderr.count("[pared] data-parallel calibration: 2 processes (gloo), batches per rank 3/2 of 5") == 2
    one, r0, r1 = (dict(np.load(tmp_path / f"rank{r}.npz")) for r in ("single", 0, 1))
    assert any(k.endswith(".q") for k in one) and any((v == 0).mean() == 0.5 for v in one.values())
    _assert_same_weights(r0, r1, "rank 0 vs rank 1")
    _assert_same_weights(one, r0, "1 process vs 2")


def _tiny_bert(d: Path) -> Path:
    """A 2-layer BERT with a character-level WordPiece vocabulary, as a local HF folder."""
    import string

    import torch
    from transformers import BertConfig, BertModel

    chars = string.ascii_lowercase
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars), ".", ",", "'"]
    d.mkdir()
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, architectures=["BertModel"])
    BertModel(cfg).eval().save_pretrained(d)
    return d


def test_pared_compress_under_torchrun_writes_the_one_process_artifact(tmp_path):
    pytest.importorskip("transformers")
    from pared.tools.artifact import load_artifact
    from pared.tools.cli import main

    bert = _tiny_bert(tmp_path / "bert")
    args = ["compress", str(bert), "--recipe", RECIPES["gptq"], "--calib", "builtin", "--n-calib", "12",
            "--seq-len", "32", "--no-eval"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    p = _run(_torchrun("-m", "pared.tools.cli", *args, "--out", str(tmp_path / "two")))
    assert p.stderr.count("[pared] data-parallel calibration: 2 processes (gloo), batches per rank 1/1 of 2") == 1
    assert p.stdout.count("wrote ") == 1  # rank 0 alone writes and prints
    one, two = load_artifact(tmp_path / "one"), load_artifact(tmp_path / "two")
    assert one.graph.params == two.graph.params
    _assert_same_weights(one.graph.weights, two.graph.weights, "artifact of 1 process vs 2")


JAX_SCRIPT = """
    import numpy as np
    import jax
    from jax.sharding import Mesh
    import pared
    from pared.compiler.distributed import JaxMeshReducer

    assert len(jax.devices()) == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    r = JaxMeshReducer(mesh)  # the collective itself: partial p = p on device p
    assert r.sum([np.full(3, float(p)) for p in range(8)]).tolist() == [28.0] * 3
    assert r.max([np.full((2, 2), float(p)) for p in range(8)]).tolist() == [[7.0, 7.0]] * 2
    class Host:  # the executor side of a block: numpy
        as_float = to_numpy = staticmethod(np.asarray)

    assert r.executor(5, Host()).as_float(np.ones((2, 2), np.float32)).devices() == {jax.devices()[5]}

    rng = np.random.default_rng(0)
    params = {"w1": (rng.standard_normal((64, 128)) / 8).astype(np.float32), "b1": np.zeros(128, np.float32),
              "w2": (rng.standard_normal((128, 32)) / 11).astype(np.float32)}

    def f(p, x):
        return jax.nn.gelu(x @ p["w1"] + p["b1"]) @ p["w2"]

    batches = [(rng.standard_normal((8, 64)).astype(np.float32),) for _ in range(11)]

    def arr(v):  # int4 (ml_dtypes) does not round-trip through npz
        a = np.asarray(v)
        return a.astype(np.int8) if a.dtype.name.startswith("int4") else a

    out = {}
    for name, recipe in RECIPES.items():
        _, one = pared.compress(f, params, batches[0][0], recipe=recipe, calibration=batches)
        _, dp = pared.compress(f, params, batches[0][0], recipe=recipe, calibration=batches, mesh=mesh)
        out.update({f"one/{name}/{k}": arr(v) for k, v in one.items()})
        out.update({f"dp/{name}/{k}": arr(v) for k, v in dp.items()})
    np.savez(OUT, **out)
"""


def test_a_jax_mesh_of_8_devices_gives_the_one_device_weights(tmp_path):
    pytest.importorskip("jax")
    script = tmp_path / "jax_compress.py"
    script.write_text(f"RECIPES = {RECIPES!r}\nOUT = {str(tmp_path / 'jax.npz')!r}\n" + textwrap.dedent(JAX_SCRIPT))
    p = _run([sys.executable, str(script)], XLA_FLAGS="--xla_force_host_platform_device_count=8")
    assert "1 process x 8 devices (jax mesh), batches per device 2/2/2/1/1/1/1/1 of 11" in p.stderr
    got = dict(np.load(tmp_path / "jax.npz"))
    one = {k[4:]: v for k, v in got.items() if k.startswith("one/")}
    dp = {k[3:]: v for k, v in got.items() if k.startswith("dp/")}
    assert (one["sparsegpt/w1"] == 0).mean() == 0.5 and "gptq/w1.q" in one
    _assert_same_weights(one, dp, "1 device vs a mesh of 8")


class _TwoProcesses:
    """A reducer standing for two processes: the other one's partials are given."""

    name, rank, world, parts = "fake", 0, 2, 1

    def __init__(self, other):
        self.other = list(other)

    def executor(self, part, ex):
        return ex

    def sum(self, parts):
        return np.sum(parts, axis=0) + self.other.pop(0)

    def max(self, parts):
        return np.maximum(np.max(parts, axis=0), self.other.pop(0))


def test_static_activation_ranges_combine_across_processes():
    from pared.passes.quantize.w8a8 import ActivationRange

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((16, 8)) * 3, rng.standard_normal((16, 8))
    whole, mine, theirs = (ActivationRange("minmax", "fc") for _ in range(3))
    whole.update(a), whole.update(b), mine.update(a), theirs.update(b)
    o = theirs.obs
    mine.reduce(_TwoProcesses([np.array([-o.lo, o.hi]), np.array([o.seen])]))
    assert mine.obs.range() == whole.obs.range() and mine.obs.seen == whole.obs.seen
    sampled = ActivationRange("percentile", "fc")
    sampled.update(a)
    with pytest.raises(CalibrationError, match="observer=minmax"):
        sampled.reduce(_TwoProcesses([]))
