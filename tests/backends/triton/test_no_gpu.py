"""Without a GPU (and without the interpreter) the Triton target fails fast and clearly, or falls
back to the torch backend when asked to, and says so in the report. Never a hang."""

import time

import numpy as np
import pytest
import torch

from pared.backends.triton import TritonUnavailableError, lower
from pared.passes import Report
from pared.passes.fuse import Fuse
from tests.passes.fuse.blocks import block_inputs, llama_block

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")


def test_clear_error_without_gpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(TritonUnavailableError, match="no CUDA GPU.*target='torch'"):
        lower(Fuse()(llama_block()))
    assert time.perf_counter() - t0 < 10


def test_documented_fallback_to_torch(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    g = Fuse()(llama_block())
    report = Report()
    module = lower(g, fallback="torch", report=report)
    assert [(r.name, r.fields["backend"]) for r in report] == [("triton", "torch")]
    ins = block_inputs(T=4)
    from pared.backends.reference.interpreter import run_graph

    out = module(*[torch.from_numpy(a) for a in ins])[0]
    np.testing.assert_allclose(out.numpy(), run_graph(Fuse()(llama_block()), ins)[0], rtol=1e-4, atol=1e-4)
