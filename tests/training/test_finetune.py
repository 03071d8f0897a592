"""The fine-tuner: the constraint after every step, torch and JAX agreeing, resume after an interrupt,
one-shot artifacts, real torch / Flax models, and the saved result."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

import pared  # noqa: E402
from pared.ir import Sparse  # noqa: E402
from pared.ir.ops.train import fake_quant  # noqa: E402
from pared.passes.train import MatrixView, holds, parse_train_pattern, training_sites  # noqa: E402
from pared.training import finetune  # noqa: E402

from .tiny import batches, mlp_graph, teacher_fn, weights  # noqa: E402

RECIPES = {
    "srste 2:4": "train_sparse{pattern=2:4,schedule=dynamic,decay=0.01}",
    "gradual": "train_sparse{sparsity=0.75,schedule=gradual,every=2,end=8}",
    "srigl fanin": "train_sparse{pattern=fanin,sparsity=0.75,schedule=rigl,every=2,alpha=0.5}",
    "rigl": "train_sparse{sparsity=0.6,schedule=rigl,every=3}",
    "block": "train_sparse{pattern=block:2x2,sparsity=0.5,schedule=dynamic,every=2}",
    "qat int4": "train_quant{weights=int4,group=4}",
    "2:4 + uint4": "train_sparse{pattern=2:4},train_quant{weights=uint4,group=4}",
}


def _improved(history) -> bool:
    """The loss over the last 4 steps is below that of the first 4 (the same 4 batches)."""
    loss = [h["loss"] for h in history]
    return np.mean(loss[-4:]) < np.mean(loss[:4])


def _teacher():
    return mlp_graph(weights(seed=5))


def _run(recipe, backend, steps=10, **kw):
    return finetune(mlp_graph(weights()), _teacher(), batches(), steps=steps, lr=1e-2, recipe=recipe,
                    backend=backend, progress=False, **kw)


def _check_constraints(graph, step, engine):
    """The constraint of every training site, from the engine's current values (independently of the
    fine-tuner's own check): masks obey their pattern, pruned weights of masked methods are zero,
    fake-quantized weights sit on their grid."""
    for s in training_sites(graph):
        a = s.eqn.attrs
        w = engine.get(s.param)
        if s.eqn.op == "ste_mask":
            m = engine.get(s.mask)
            assert set(np.unique(m)) <= {0.0, 1.0}
            pat = parse_train_pattern(a["pattern"])
            view = MatrixView(tuple(a["perm"]), a["outs"])
            m2 = view.to2d(m)
            why = holds(m2, pat, pat.fixed_density or float(np.mean(m2)))  # N:M counts, fan-in, whole blocks
            assert why is None, f"step {step}: {s.param}: {why}"
            if a["backward"] == "masked":
                assert not np.any(w[m == 0]), f"step {step}: pruned weights of {s.param} are not zero"
        else:
            scale = np.asarray(graph.weight(s.eqn.inputs[1].name))
            zero = np.asarray(graph.weight(s.eqn.inputs[2].name)) if len(s.eqn.inputs) > 2 else None
            src = w * engine.get(s.param + ".mask") if any(t.mask for t in training_sites(graph)) else w
            eff = fake_quant(src, scale, zero, **dict(a))
            q = eff / scale.repeat(a["group_size"], axis=1) + (0 if zero is None else zero.repeat(a["group_size"], 1))
            np.testing.assert_allclose(q, np.rint(q), atol=1e-4, err_msg=f"step {step}: {s.param} off its grid")


@pytest.mark.parametrize("name", list(RECIPES))
@pytest.mark.parametrize("backend", ["torch", "xla"])
def test_constraint_holds_after_every_step(name, backend):
    from pared.compiler.pass_manager import run_pipeline

    graph = run_pipeline(mlp_graph(weights()), RECIPES[name])
    seen = []
    res = finetune(graph, _teacher(), batches(), steps=10, lr=1e-2, backend=backend, progress=False, check_every=1,
                   on_step=lambda step, rec, engine: (_check_constraints(graph, step, engine), seen.append(step)))
    assert seen == list(range(10))
    assert _improved(res.history)
    if "gradual" in name:  # the cubic schedule reached its final sparsity
        for s in training_sites(res.training_graph):
            assert np.mean(np.asarray(res.training_graph.weight(s.mask))) == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize("name", ["srste 2:4", "gradual", "srigl fanin", "rigl", "qat int4", "2:4 + uint4"])
def test_torch_and_jax_train_the_same_masks_and_weights(name):
    a = _run(RECIPES[name], "torch")
    b = _run(RECIPES[name], "xla")
    ga, gb = a.training_graph, b.training_graph
    for p in ga.params:
        wa, wb = np.asarray(ga.weight(p.name)), np.asarray(gb.weight(p.name))
        if p.name.endswith(".mask"):
            np.testing.assert_array_equal(wa, wb, err_msg=f"{name}: mask {p.name}")
        else:
            np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-5, err_msg=f"{name}: {p.name}")
    np.testing.assert_allclose([h["loss"] for h in a.history], [h["loss"] for h in b.history], rtol=1e-4, atol=1e-6)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("backend", ["torch", "xla"])
def test_resume_after_an_interrupt_gives_the_same_final_weights(backend, tmp_path):
    recipe = RECIPES["srigl fanin"]
    straight = _run(recipe, backend, steps=9)

    def stop(step, rec, engine):
        if step == 6:
            raise _Interrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(_Interrupt):
        _run(recipe, backend, steps=9, checkpoint=str(ckpt), checkpoint_every=3, on_step=stop)
    resumed = _run(recipe, backend, steps=9, checkpoint=str(ckpt), checkpoint_every=3)
    assert resumed.resumed_from == 6
    for p in straight.training_graph.params:
        np.testing.assert_array_equal(np.asarray(resumed.training_graph.weight(p.name)),
                                      np.asarray(straight.training_graph.weight(p.name)), err_msg=p.name)
    assert [h["step"] for h in resumed.history] == list(range(1, 10))


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    from pared.training import CheckpointError

    _run(RECIPES["rigl"], "torch", steps=3, checkpoint=str(tmp_path))
    with pytest.raises(CheckpointError, match="another run"):
        _run(RECIPES["rigl"], "torch", steps=4, checkpoint=str(tmp_path))


def test_one_shot_sparse_graph_keeps_its_masks_and_exports_sparse():
    from pared.compiler.pass_manager import run_pipeline
    from pared.passes import sparsify  # noqa: F401

    one_shot = run_pipeline(mlp_graph(weights()), "sparsify{method=magnitude,pattern=2:4}")
    res = finetune(one_shot, _teacher(), batches(), steps=6, lr=1e-2, progress=False)
    for name in ("fc1.weight", "fc2.weight"):
        before, after = np.asarray(one_shot.weight(name)), np.asarray(res.graph.weight(name))
        np.testing.assert_array_equal(before != 0, after != 0)  # schedule=fixed: the one-shot mask
        assert not np.allclose(before, after)  # the kept weights did train
        assert res.graph.param(name).type.encoding == Sparse("nm", n=2, m=4, axis=1)
    assert _improved(res.history)


def test_exported_graph_computes_what_the_trained_graph_computes():
    from pared.backends.reference import run_graph

    res = _run(RECIPES["2:4 + uint4"], "torch", steps=4)
    assert {e.op for e in res.graph.eqns} >= {"qlinear"}
    assert not {e.op for e in res.graph.eqns} & {"ste_mask", "fake_quant"}
    x, = batches(1, seed=9)[0]
    np.testing.assert_allclose(run_graph(res.graph, [x])[0], run_graph(res.training_graph, [x])[0], rtol=1e-5,
                               atol=1e-5)


def test_torch_module_through_pared_compress_and_finetune():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    xs = [torch.randn(6, 8) for _ in range(4)]
    cm, _ = pared.compress(model, (xs[0],), recipe="train_sparse{pattern=2:4,schedule=dynamic}", lowering=False)
    res = pared.finetune(cm, model, [(x,) for x in xs], steps=8, lr=1e-2, progress=False)
    assert _improved(res.history)
    from pared.backends.torch import lower

    out = lower(res.graph)(xs[0])[0]
    assert out.shape == (6, 4)
    w = [p for p in res.graph.params if isinstance(p.type.encoding, Sparse)]
    assert len(w) == 2


def test_flax_model_trains_on_xla_with_optax():
    pytest.importorskip("flax")
    from flax import nnx

    from pared.frontends.jax.importer import trace

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.fc1, self.fc2 = nnx.Linear(8, 16, rngs=rngs), nnx.Linear(16, 4, rngs=rngs)

        def __call__(self, x):
            return self.fc2(jax.nn.relu(self.fc1(x)))

    graphdef, state = nnx.split(MLP(nnx.Rngs(0)))

    def apply(state, x):
        return nnx.merge(graphdef, state)(x)

    xs = [np.random.default_rng(i).standard_normal((6, 8)).astype(np.float32) for i in range(4)]
    g = trace(apply, state, (xs[0],)).graph
    teacher = jax.jit(lambda x: apply(state, x))
    res = finetune(g, teacher, [(x,) for x in xs], steps=8, lr=1e-2, backend="xla", progress=False, check_every=1,
                   recipe="train_sparse{pattern=2:4,schedule=dynamic},train_quant{weights=int8}")
    assert _improved(res.history)
    kernels = [p for p in res.graph.params if p.name.endswith(".q")]
    assert len(kernels) == 2  # flax [in, out] kernels, N:M along the input axis, then int8 codes
    for p in kernels:  # stored [out, in]: 2 of every 4 along the input axis (qlinear drops the encoding of
        q = np.asarray(res.graph.weight(p.name))  # a transposed [K, N] weight, as the quantize pass does)
        assert q.shape == ((16, 8) if "fc1" in p.name else (4, 16))
        assert ((q.reshape(q.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
    from pared.backends.xla import graph_params, lower

    out = lower(res.graph)(graph_params(res.graph), xs[0])[0]
    assert out.shape == (6, 4)


def test_pared_finetune_saves_an_artifact(tmp_path):
    from pared.tools.artifact import load_artifact, save_artifact

    sparse = pared.run_pipeline(mlp_graph(weights()), "sparsify{method=magnitude,pattern=2:4}")
    save_artifact(tmp_path / "oneshot", sparse, recipe="sparsify{method=magnitude,pattern=2:4}")
    res = pared.finetune(str(tmp_path / "oneshot"), _teacher(), batches(), steps=4, lr=1e-2, progress=False,
                         out=tmp_path / "tuned")
    art = load_artifact(tmp_path / "tuned")
    assert "finetune" in art.recipe
    assert art.graph.param("fc1.weight").type.encoding == Sparse("nm", n=2, m=4, axis=1)
    tuned = np.asarray(res.graph.weight("fc1.weight"))
    np.testing.assert_array_equal(np.asarray(art.graph.weight("fc1.weight")), tuned)
    from pared.backends.reference import run_graph

    x, = batches()[0]
    t = teacher_fn(weights(seed=5))(x)
    assert np.abs(art.run(x)[0] - t).mean() < np.abs(run_graph(sparse, [x])[0] - t).mean()  # closer to the teacher
