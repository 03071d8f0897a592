"""The training ops' backward rules on the torch backend (autograd.Function) and the XLA backend
(custom_vjp) equal the numpy VJP specification in pared/ir/ops/train.py."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

from pared.backends.torch import train as torch_train  # noqa: E402
from pared.backends.xla import train as xla_train  # noqa: E402
from pared.ir import dtypes as DT  # noqa: E402
from pared.ir.ops.train import fake_quant, fake_quant_vjp, ste_mask_vjp  # noqa: E402

RNG = np.random.default_rng(0)
W = RNG.standard_normal((6, 8)).astype(np.float32)
MASK = (RNG.random((6, 8)) < 0.5).astype(np.float32)
G = RNG.standard_normal((6, 8)).astype(np.float32)


@pytest.mark.parametrize("backward", ["masked", "ste", "srste"])
def test_ste_mask_vjp_torch_and_jax(backward):
    want_w, want_m = ste_mask_vjp(W, MASK, G, backward=backward, decay=0.3)
    w = torch.tensor(W, requires_grad=True)
    m = torch.tensor(MASK, requires_grad=True)
    out = torch_train.ste_mask(w, m, backward, 0.3)
    np.testing.assert_array_equal(out.detach().numpy(), W * MASK)
    out.backward(torch.tensor(G))
    np.testing.assert_allclose(w.grad.numpy(), want_w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m.grad.numpy(), want_m, rtol=1e-6, atol=1e-7)
    f = xla_train._ste_mask_fn()
    _, vjp = jax.vjp(lambda a, b: f(a, b, backward, 0.3), W, MASK)
    gw, gm = vjp(G)
    np.testing.assert_allclose(np.asarray(gw), want_w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(gm), want_m, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backward", ["ste", "clipped"])
def test_fake_quant_forward_and_vjp_torch_and_jax(backward):
    scale = np.full((6, 2), 0.12, np.float32)  # 4-bit: range +-0.84, the tails of W clip
    attrs = dict(dtype=DT.i4, group_axis=1, group_size=4)
    want = fake_quant(W, scale, None, **attrs)
    want_g = fake_quant_vjp(W, scale, None, G, backward=backward, **attrs)
    assert 0 < np.count_nonzero(want_g == 0) < G.size if backward == "clipped" else True
    w = torch.tensor(W, requires_grad=True)
    out = torch_train.fake_quant(w, torch.tensor(scale), None, -8, 7, 1, 4, backward)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-6)
    out.backward(torch.tensor(G))
    np.testing.assert_allclose(w.grad.numpy(), want_g, rtol=1e-6)
    f = xla_train._fake_quant_fn()
    out_j, vjp = jax.vjp(lambda a: f(a, scale, None, -8, 7, 1, 4, backward), W)
    np.testing.assert_allclose(np.asarray(out_j), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(vjp(G)[0]), want_g, rtol=1e-6)
    q = np.rint(want / np.repeat(scale, 4, axis=1))  # the forward sits on the grid
    np.testing.assert_allclose(want, q * np.repeat(scale, 4, axis=1), rtol=1e-6)
    assert q.min() >= -8 and q.max() <= 7
