"""Generation from compressed causal LMs: a decode-step graph over a static KV cache, and a sampler.

The decode step is one graph for both phases of generation::

    step(input_ids[1, T], start[], k_0, v_0, ..., k_L, v_L) -> (logits[1, V], k_0', v_0', ...)

``T`` is symbolic: the prompt runs as one call (prefill, ``start = 0``), each new token as a call
with ``T = 1``. Each ``k_i``/``v_i`` is ``[1, kv_heads, context, head_dim]``; the step writes the
new positions ``start .. start+T-1`` into copies of them (``index_copy``) and attends over the
whole static cache, masked causally, as transformers' ``StaticCache`` does. The caches are inputs
and outputs (no state inside the graph), so the same graph runs on every backend, the reference
interpreter included, and the caller owns the cache.

The step's weights are not compressed again: :func:`pared.passes.replay.replay_weights` carries the
compressed ids->logits graph's weights over (no second calibration), and the result is checked
against it with the reference interpreter (:func:`build_decode_graph`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from ..ir.core import Graph

PREFIX = "model."  # the decode step wraps the model: its param names gain this prefix
DEFAULT_CONTEXT = 1024


class DecodeError(ValueError):
    """The model cannot be captured as a decode step, or generation was asked for wrongly."""


def cache_shapes(config: Any, context: int) -> list[tuple[int, ...]]:
    """``[k_0, v_0, k_1, ...]`` shapes of a static cache of ``context`` positions for ``config``."""
    layers = int(config.num_hidden_layers)
    heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    return [(1, heads, context, head_dim)] * (2 * layers)


def _decode_module(model: Any, context: int):
    """The torch module of the decode step (built lazily: transformers is imported only here)."""
    import torch
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    class FunctionalLayer(StaticLayer):
        """A static cache layer whose update returns new tensors (out-of-place ``index_copy``)."""

        def __init__(self, keys, values, start):
            super().__init__(max_cache_len=context)
            self.keys, self.values = keys, values
            self.is_initialized = True
            self.cumulative_length = start
            self.device = keys.device
            self.batch_size, self.num_heads = keys.shape[:2]
            self.k_head_dim, self.v_head_dim = keys.shape[-1], values.shape[-1]

        def update(self, key_states, value_states, *args, **kwargs):
            pos = torch.arange(key_states.shape[-2], device=self.device) + self.cumulative_length
            self.keys = self.keys.index_copy(2, pos, key_states)
            self.values = self.values.index_copy(2, pos, value_states)
            return self.keys, self.values

    class DecodeStep(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.model = m

        def forward(self, input_ids, start, kv):
            cache = StaticCache(config=self.model.config, max_cache_len=context)
            cache.layers = [FunctionalLayer(kv[2 * i], kv[2 * i + 1], start) for i in range(len(kv) // 2)]
            pos = torch.arange(input_ids.shape[1]) + start
            out = self.model(input_ids=input_ids, cache_position=pos, past_key_values=cache, use_cache=True)
            return out.logits[:, -1], [t for layer in cache.layers for t in (layer.keys, layer.values)]

    return DecodeStep(model).eval()


def capture_decode(model: Any, context: int = DEFAULT_CONTEXT):
    """torch.export the decode step of an HF causal LM and import it (an ``Imported``)."""
    import torch
    from torch.export import Dim

    from ..frontends.torch.importer import import_exported

    context = int(min(context, getattr(model.config, "max_position_embeddings", context) or context))
    step = _decode_module(model, context)
    kv = [torch.zeros(s) for s in cache_shapes(model.config, context)]
    ids = torch.zeros((1, min(4, context)), dtype=torch.long)
    try:
        with torch.no_grad():
            ep = torch.export.export(step, (ids, torch.tensor(0), kv), strict=False,
                                     dynamic_shapes=({1: Dim("T", min=1, max=context)}, None, [None] * len(kv)))
    except Exception as e:  # an architecture whose cache code export cannot trace
        raise DecodeError(f"{type(model).__name__}: the decode step over a static cache could not be exported "
                          f"({type(e).__name__}: {e})") from e
    imported = import_exported(ep)
    if imported.opaque:
        names = ", ".join(sorted({o.name for o in imported.opaque.values()}))
        raise DecodeError(f"{type(model).__name__}: the decode step has ops pared cannot capture ({names})")
    return imported, context


def build_decode_graph(dense: Graph, compressed: Graph, model: Any, context: int = DEFAULT_CONTEXT,
                       check_tokens: int = 8, log: Callable[[str], None] = print) -> tuple[Graph, int]:
    """The decode step of ``model`` with ``compressed``'s weights (replayed from ``dense``), checked:
    its logits for a short prompt equal the compressed graph's last-position logits (reference
    interpreter). Returns (graph, context)."""
    from ..backends.reference.interpreter import run_graph
    from ..passes.replay import replay_weights

    imported, context = capture_decode(model, context)
    graph = replay_weights(dense, compressed, imported.graph, prefix=PREFIX)
    t = min(check_tokens, context)
    ids = (np.arange(t, dtype=np.int64) * 7919 % int(model.config.vocab_size)).reshape(1, t)
    want = run_graph(compressed, [ids] + _other_inputs(compressed, ids))[0][:, -1]
    got = run_graph(graph, [ids, np.array(0, np.int64), *zero_cache(graph)])[0]
    err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))
    if not err <= 1e-4:
        raise DecodeError(f"the decode step disagrees with the compressed graph (max relative error {err:.2e})")
    log(f"decode graph: {len(graph.eqns)} equations, context {context}; matches the compressed graph "
        f"(max relative error {err:.1e} on {t} tokens)")
    return graph, context


def lower_for_torch(graph: Graph) -> Graph:
    """The decode graph after the torch target's lowering passes (attention fusion), as the
    compressed ids->logits graph is saved."""
    from ..compiler.pass_manager import run_pipeline
    from ..compiler.presets import LOWERING
    from ..passes.context import PassContext

    spec = LOWERING.get("torch", "")
    return run_pipeline(graph, spec, PassContext(progress=False)) if spec else graph


def share_weights(step: Graph, main: Graph) -> tuple[Graph, list[str]]:
    """``step`` with its params named as ``main``'s (the ``model.`` prefix dropped) and the names of
    those whose value equals ``main``'s weight of that name (stored once, in the enclosing artifact)."""
    from ..ir.core import Param

    def rename(name: str) -> str:
        return name[len(PREFIX):] if name.startswith(PREFIX) else name

    def atom(a):
        return Param(rename(a.name), a.type) if isinstance(a, Param) else a

    def fix(h: Graph) -> Graph:
        eqns = [e.replace(inputs=[atom(a) for a in e.inputs], regions=[fix(r) for r in e.regions]) for e in h.eqns]
        return h.replace(eqns=eqns, outputs=[atom(a) for a in h.outputs])

    g = fix(step)
    g = g.replace(params=tuple(Param(rename(p.name), p.type) for p in step.params),
                  weights={rename(k): v for k, v in step.weights.items()})
    types = main.param_types
    shared = [p.name for p in g.params if p.name in types and types[p.name] == p.type
              and np.array_equal(np.asarray(g.weights[p.name]), np.asarray(main.weights[p.name]))]
    return g, shared


def cache_names(graph: Graph) -> list[str]:
    """``k0, v0, k1, v1, ...``: names of a decode graph's cache inputs (and outputs)."""
    return [f"{'kv'[i % 2]}{i // 2}" for i in range(len(graph.inputs) - 2)]


def _other_inputs(graph: Graph, ids: np.ndarray) -> list:
    """Inputs after input_ids for an ids->logits graph (an all-ones attention mask, if it takes one)."""
    return [np.ones(ids.shape, dtype=v.type.dtype.np) for v in graph.inputs[1:]]


def zero_cache(graph: Graph) -> list[np.ndarray]:
    """An empty static cache for a decode graph: zeros of each cache input's type."""
    shapes = [tuple(int(d) for d in v.type.shape) for v in graph.inputs[2:]]
    return [np.zeros(s, dtype=v.type.dtype.np) for s, v in zip(shapes, graph.inputs[2:])]


# ---- sampling ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked: greedy when ``temperature`` is 0, else softmax(logits / T)
    restricted to the smallest set of tokens whose probability reaches ``top_p``."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None

    def __post_init__(self):
        if not self.temperature >= 0:
            raise DecodeError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise DecodeError(f"top_p must be in (0, 1], got {self.top_p}")


def pick(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    if sampling.temperature == 0:
        return int(np.argmax(z))
    z = (z - z.max()) / sampling.temperature
    p = np.exp(z)
    p /= p.sum()
    order = np.argsort(-p)
    keep = order[: int(np.searchsorted(np.cumsum(p[order]), sampling.top_p) + 1)]
    q = p[keep] / p[keep].sum()
    return int(rng.choice(keep, p=q))


def generate_tokens(step: Callable[..., Sequence[Any]], prompt: Sequence[int], cache: list, *,
                    max_new_tokens: int, sampling: Sampling = Sampling(), eos: Sequence[int] = (),
                    to_array: Callable[[np.ndarray], Any] = lambda a: a) -> Iterator[int]:
    """Yield new tokens one by one: ``step(ids, start, *cache) -> (logits, *cache)`` runs the
    prompt at once, then one token per call; stops after ``max_new_tokens`` or at an ``eos`` token
    (which is yielded). ``to_array`` turns numpy inputs into what ``step`` takes."""
    if not len(prompt):
        raise DecodeError("the prompt is empty: give at least one token")
    context = int(np.shape(cache[0])[2]) if cache else 0
    if len(prompt) + max_new_tokens > context:
        raise DecodeError(f"{len(prompt)} prompt + {max_new_tokens} new tokens exceed the cache's {context} positions; "
                          "generate fewer tokens or compress with a larger --context")
    rng = np.random.default_rng(sampling.seed)
    ids = np.asarray(prompt, dtype=np.int64).reshape(1, -1)
    start = 0
    for _ in range(max_new_tokens):
        logits, *cache = step(to_array(ids), to_array(np.array(start, np.int64)), *cache)
        start += ids.shape[1]
        tok = pick(np.asarray(_numpy(logits)), sampling, rng)
        yield tok
        if tok in eos:
            return
        ids = np.array([[tok]], dtype=np.int64)


def _numpy(x):
    return x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x)


def load_tokenizer(artifact_dir: Any) -> Any:
    """The tokenizer stored in an artifact (``model/``), or None."""
    from pathlib import Path

    d = Path(artifact_dir) / "model"
    if not d.is_dir():
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(d)
    except Exception:  # noqa: BLE001 - no tokenizer files, or an unreadable one: the caller says what to do
        return None


def stream(tokens: Iterator[int], tokenizer: Any, out=None) -> list[int]:
    """Print tokens as text as they come (decoding the running sequence, so multi-token characters
    print whole) to ``out`` (default stdout); returns the tokens."""
    out = sys.stdout if out is None else out
    got: list[int] = []
    shown = ""
    for t in tokens:
        got.append(t)
        text = tokenizer.decode(got, skip_special_tokens=True)
        if len(text) > len(shown) and not text.endswith("\ufffd"):
            out.write(text[len(shown):])
            out.flush()
            shown = text
    out.write("\n")
    return got
