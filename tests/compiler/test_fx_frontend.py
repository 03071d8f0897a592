"""The FX frontend: weights as named Params, the op mapping, opaque ops, symbolic dims, graph
breaks, the fallback that never breaks torch.compile, and the ``"pared"`` backend name."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from pared.backends.reference.interpreter import run_graph  # noqa: E402
from pared.compiler import torch_backend  # noqa: E402
from pared.compiler.torch_backend import backend  # noqa: E402
from pared.frontends.torch.importer import import_exported, module_path  # noqa: E402
from pared.ir import dims as D  # noqa: E402
from pared.ir.core import Param  # noqa: E402

from .torch_zoo import MLP, TransformerBlock  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compile_once(model, *args, **kw):
    be = backend(strict=True, **kw)
    with torch.no_grad():
        out = torch.compile(model, backend=be)(*args)
    return be, out


@pytest.mark.parametrize(
    "source, path",
    [
        (
            "L['self']._modules['layers']._modules['0']._modules['q_proj']._parameters['weight']",
            "layers.0.q_proj.weight",
        ),
        ("L['model']._buffers['pos']", "pos"),
        ("G['net']._modules['fc']._parameters['bias']", "fc.bias"),
        ("L['self'].encoder.layer[0]", "encoder.layer.0"),
        ("model.layers.0.mlp", "model.layers.0.mlp"),
        # a forward behind a ``wrapper(*args, **kwargs)`` decorator: the module is args[0]
        ("L['args'][0]._modules['model']._parameters['weight']", "model.weight"),
    ],
)
def test_module_path(source, path):
    assert module_path(source) == path


def test_weights_become_named_params():
    model = MLP().eval()
    be, _ = compile_once(model, torch.randn(2, 16))
    g = be.compiled[0].graph
    assert {p.name for p in g.params} == {"fc1.weight", "fc1.bias", "fc2.weight", "fc3.weight", "fc3.bias"}
    assert len(g.inputs) == 1  # only the user's tensor; weights are not inputs
    dots = [e for e in g.eqns if e.op == "dot_general"]
    assert [e.inputs[1].name for e in dots] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert all(e.attrs["contract"] == ((1,), (1,)) for e in dots)
    np.testing.assert_array_equal(g.weight("fc1.weight"), model.fc1.weight.detach().numpy())


def test_buffers_and_export_names():
    model = TransformerBlock().eval()
    ep = torch.export.export(model, (torch.randn(2, 8, 32),))
    imp = import_exported(ep)
    names = {p.name for p in imp.graph.params}
    assert {"qkv.weight", "mlp.0.weight", "mlp.2.bias", "ln1.weight"} <= names
    assert not imp.opaque
    x = torch.randn(2, 8, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    (got,) = run_graph(imp.graph, [x.numpy()])
    np.testing.assert_allclose(got, ref, atol=1e-5)


class Unknown(nn.Module):
    """``torch.cumprod`` has no rule: it must stay an opaque call and still run."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(torch.cumprod(torch.sigmoid(x), dim=1)) * 2


def test_unknown_op_is_opaque_and_reported():
    model = Unknown().eval()
    x = torch.randn(3, 8)
    be, out = compile_once(model, x)
    torch.testing.assert_close(out, model(x), rtol=1e-6, atol=1e-6)
    c = be.compiled[0]
    rows = [r for r in c.report if r.fields.get("kind") == "opaque"]
    assert [(r.name, r.fields["count"]) for r in rows] == [("cumprod", 1)]
    assert "cumprod" in rows[0].fields["where"][0]
    assert [e.op for e in c.graph.eqns].count("opaque") == 1
    assert any(e.op == "dot_general" and isinstance(e.inputs[1], Param) for e in c.graph.eqns)


def test_opaque_call_runs_through_torch_on_the_reference_target():
    model = Unknown().eval()
    x = torch.randn(3, 8)
    be, out = compile_once(model, x, target="reference")
    torch.testing.assert_close(out, model(x), rtol=1e-6, atol=1e-6)
    rows = [r for r in be.compiled[0].report if r.pass_name == "reference"]
    assert [(r.name, r.fields["ran"]) for r in rows] == [("cumprod#0", "through torch")]
    assert "cumprod" in rows[0].fields["where"]


class Constants(nn.Module):
    """Tensors made from Python values, as HF's mask and cache code makes them."""

    def forward(self, x):
        window = torch.tensor(4, dtype=torch.int64)  # a 0-d constant
        empty = torch.tensor([], dtype=torch.float32)  # an empty cache entry, concatenated away
        table = torch.tensor([[1.0, -2.0], [0.5, 3.0]])  # distinct values: a graph constant
        ramp = torch.linspace(0.0, 1.0, 8)  # no rule: folded at import time
        y = torch.cat([empty, x.flatten()]).view(x.shape)
        return (y + ramp) * window, table @ x[:2, :2], torch.eye(2) + torch.full((2, 2), 0.5)


def test_constants_are_imported_as_constants():
    model = Constants()
    x = torch.randn(4, 8)
    for target in ("torch", "reference"):
        torch._dynamo.reset()
        be, out = compile_once(model, x, target=target)
        for o, r in zip(out, model(x)):
            torch.testing.assert_close(o, r)
    c = be.compiled[0]
    assert not c.imported.opaque, c.report.table()
    consts = {p.name: c.graph.weight(p.name) for p in c.graph.params}
    assert sorted(consts) == ["const.eye", "const.ramp", "const.table"]  # uniform values are broadcast Literals
    np.testing.assert_array_equal(consts["const.table"], [[1.0, -2.0], [0.5, 3.0]])
    fills = [e for e in c.graph.eqns if e.op == "broadcast_in_dim" and e.loc in ("window", "empty", "full")]
    assert sorted((e.loc, e.out.type.shape) for e in fills) == [("empty", (0,)), ("full", (2, 2)), ("window", ())]


def test_seeded_calls_are_not_folded():
    class Noisy(nn.Module):
        def forward(self, x):
            return x + torch.randn(8)

    be, _ = compile_once(Noisy(), torch.randn(2, 8))
    c = be.compiled[0]
    assert list(c.imported.opaque_counts) == ["randn"] and not c.graph.params


def test_torch_tensor_of_sizes_stays_symbolic():
    class Sizes(nn.Module):
        def forward(self, x):
            return x * torch.tensor([x.shape[0], 3], dtype=torch.float32) + torch.tensor(x.shape[0])

    be = backend(strict=True, target="reference")
    f = torch.compile(Sizes(), backend=be)
    for n in (2, 5):
        x = torch.randn(n, 2)
        torch._dynamo.mark_dynamic(x, 0)
        torch.testing.assert_close(f(x), Sizes()(x))
    (c,) = be.compiled
    assert isinstance(c.graph.inputs[0].type.shape[0], D.Sym)
    assert not c.imported.opaque and not c.graph.params


def test_fully_masked_attention_rows_give_zeros():
    """torch's SDPA gives zeros for a query whose every key is masked; so does the import, with
    or without attention fusion (the reference target runs the unfused decomposition)."""

    class Attn(nn.Module):
        def forward(self, q, mask):
            return nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)

    q = torch.randn(1, 2, 4, 8)
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    mask[1] = False
    for m in (mask, torch.zeros(4, 4).masked_fill(~mask, float("-inf"))):
        for target in ("torch", "reference"):
            torch._dynamo.reset()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # numpy: the masked row's softmax
                _, out = compile_once(Attn(), q, m, target=target)
            torch.testing.assert_close(out, Attn()(q, m))
            assert not out[:, :, 1].any()


def test_graph_break_compiles_each_graph():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

        def forward(self, x):
            y = torch.relu(self.a(x))
            torch._dynamo.graph_break()
            return self.b(y)

    model = Broken().eval()
    x = torch.randn(2, 8)
    be, out = compile_once(model, x)
    torch.testing.assert_close(out, model(x), rtol=1e-6, atol=1e-6)
    assert len(be.compiled) == 2
    assert [p.name for p in be.compiled[1].graph.params] == ["b.weight", "b.bias"]


def test_dynamic_batch_is_symbolic():
    model = MLP().eval()
    be = backend(strict=True)
    f = torch.compile(model, backend=be, dynamic=True)
    with torch.no_grad():
        for n in (2, 5, 9):
            x = torch.randn(n, 16)
            torch.testing.assert_close(f(x), model(x), rtol=1e-6, atol=1e-6)
    assert len(be.compiled) == 1
    (inp,) = be.compiled[0].graph.inputs
    assert isinstance(inp.type.shape[0], D.Sym) and inp.type.shape[1] == 16


def test_symbolic_view_and_slices():
    class Views(nn.Module):
        def forward(self, x):
            b, s, d = x.shape
            y = x.reshape(b * s, d)[:, : d // 2]
            return y.view(b, s, -1).transpose(1, 2)[..., 1:] + x[:, -1:, :4].unsqueeze(1).mean(-1, keepdim=True)

    model = Views()
    be = backend(strict=True)
    f = torch.compile(model, backend=be)
    for shape in [(2, 5, 8), (3, 7, 8)]:
        x = torch.randn(*shape)
        torch._dynamo.mark_dynamic(x, 0)
        torch._dynamo.mark_dynamic(x, 1)  # the feature dim stays static, so d // 2 is a plain int
        torch.testing.assert_close(f(x), model(x))
    assert len(be.compiled) == 1 and not be.compiled[0].imported.opaque


def test_failure_falls_back_with_warning(monkeypatch):
    def boom(gm, example_inputs):
        raise RuntimeError("simulated import failure")

    monkeypatch.setattr(torch_backend, "import_dynamo", boom)
    model = MLP().eval()
    x = torch.randn(2, 16)
    be = backend()
    with pytest.warns(UserWarning, match="running the captured FX graph as is"):
        out = torch.compile(model, backend=be)(x)
    torch.testing.assert_close(out, model(x))
    assert be.fallbacks and "simulated import failure" in be.fallbacks[0]


def test_backend_by_name():
    assert "pared" in torch._dynamo.list_backends(exclude_tags=())
    model = MLP().eval()
    x = torch.randn(2, 16)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback warning
        out = torch.compile(model, backend="pared")(x)
    torch.testing.assert_close(out, model(x))


def test_reference_target_and_recipe():
    model = TransformerBlock().eval()
    x = torch.randn(2, 8, 32)
    be, out = compile_once(model, x, target="reference")
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
    try:
        from pared.compiler.pipeline import parse_pipeline

        parse_pipeline("cleanup")
    except Exception as e:  # the cleanup passes land separately
        pytest.skip(f"cleanup pipeline unavailable: {e}")
    torch._dynamo.reset()
    be, out = compile_once(model, x, recipe="cleanup")
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
    assert len(be.compiled[0].graph.eqns) <= len(be.compiled[0].imported.graph.eqns)


@pytest.mark.slow
def test_inductor_handoff():
    model = MLP().eval()
    be = backend(strict=True, inductor=True)
    f = torch.compile(model, backend=be)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "Inductor hand-off failed" fallback
        for n in (2, 5):
            x = torch.randn(n, 16)
            torch.testing.assert_close(f(x), model(x), rtol=1e-5, atol=1e-5)
    assert "inductor" in be.compiled[0].timings
