"""Data-aware recipes through torch.compile: lazy calibration (``calibration=N``) or a refusal up front."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pared  # noqa: E402
from pared.backends.reference.interpreter import run_graph  # noqa: E402


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)).eval()


def test_a_data_aware_recipe_without_calibration_is_refused_when_the_backend_is_made():
    with pytest.raises(ValueError, match=r"gptq pass needs calibration data.*calibration=N.*pared.compress"):
        pared.backend(recipe="gptq{weights=uint4,group=32}")


@pytest.mark.parametrize("bad", [0, -2, True])
def test_a_bad_call_count_is_refused(bad):
    with pytest.raises(ValueError, match="number of calls to record"):
        pared.backend(recipe="gptq{weights=uint4,group=32}", calibration=bad)


def test_lazy_calibration_runs_uncompressed_then_compresses_from_the_recorded_calls(capsys):
    torch._dynamo.reset()
    m = _mlp()
    be = pared.backend(recipe="sparsify{method=wanda,sparsity=0.5}", calibration=3)
    f = torch.compile(m, backend=be, dynamic=False)
    xs = [torch.randn(4, 32) for _ in range(5)]
    with torch.no_grad():
        first = [f(x) for x in xs[:2]]
        assert not be.compiled  # nothing compressed while recording
        first.append(f(xs[2]))  # the third call is recorded, then the graph is compressed
        assert len(be.compiled) == 1
        for x, y in zip(xs[:3], first):
            assert torch.equal(y, m(x))  # the recorded calls ran the captured graph as is
        later = f(xs[3])
    assert len(be.compiled) == 1
    c = be.compiled[0]
    rows = [r for r in c.report.for_pass("sparsify") if "sparsity" in r.fields]
    assert len(rows) == 2 and all(abs(r.fields["sparsity"] - 0.5) < 1e-6 for r in rows)
    # the compressed graph is what runs now, and it equals the reference interpreter on it
    want = run_graph(c.graph, [xs[3].numpy()])[0]
    np.testing.assert_allclose(later.numpy(), want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(later, m(xs[3]))  # pruned: it differs from the dense model
    assert "calibration from its first 3 call(s)" in capsys.readouterr().err


def test_lazy_calibration_equals_offline_compression_on_the_same_batches():
    torch._dynamo.reset()
    m = _mlp()
    xs = [torch.randn(4, 32) for _ in range(2)]
    be = pared.backend(recipe="gptq{weights=uint4,group=32}", calibration=2)
    f = torch.compile(m, backend=be, dynamic=False)
    with torch.no_grad():
        for x in xs:
            f(x)
        probe = torch.randn(4, 32)
        got = f(probe)
        off, _ = pared.compress(m, xs[0], recipe="gptq{weights=uint4,group=32}", calibration=[(x,) for x in xs])
        want = off(probe)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
