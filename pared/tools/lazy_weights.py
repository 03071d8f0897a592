"""Capture a Hugging Face model folder without reading its weights (out-of-core compression).

The model is built with parameters that own no memory (a one-element tensor expanded to the
parameter's shape: a real CPU tensor, so ``torch.export`` traces it like any other, but it costs
nothing); buffers computed at construction (rotary ``inv_freq``) are real. After capture, every
graph Param that comes from a checkpoint tensor gets a :class:`~pared.ir.lazy.LazyArray` that reads
that tensor from its safetensors shard when a pass asks for it (``np.fromfile`` at the tensor's
offset: nothing stays mapped), converted to the graph's dtype (bf16 and f16 shards become f32).
Tied weights (an LM head sharing the embedding) are one Param and read the one stored tensor.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..ir.core import Graph
from ..ir.lazy import LazyArray
from . import safetensors_io as st


class LazyWeightsError(ValueError):
    """The model folder cannot be read out of core (no safetensors shards, a missing tensor)."""


def checkpoint_index(folder: Path) -> dict[str, tuple[Path, str, tuple, int]]:
    """name -> (shard file, safetensors dtype, shape, absolute byte offset) over every shard."""
    folder = Path(folder)
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise LazyWeightsError(
            f"{folder}: no *.safetensors file; out-of-core compression (--max-memory) reads safetensors "
            "shards by offset: save the model with save_pretrained(..., safe_serialization=True)")
    out = {}
    for shard in shards:
        header, start = st.read_header(shard)
        for name, info in header.items():
            if name != "__metadata__":
                out[name] = (shard, info["dtype"], tuple(info["shape"]), start + info["data_offsets"][0])
    return out


_CHUNK = 1 << 22  # elements per read of a bf16 tensor


def read_tensor(shard: Path, dtype: str, shape: tuple, offset: int, want: np.dtype) -> np.ndarray:
    """One tensor of a shard as a fresh ``want`` array (bf16 widened exactly to f32)."""
    n = int(np.prod(shape, dtype=np.int64))
    if dtype == "BF16" and sys.byteorder == "little":
        # bf16 -> f32 is the 16 bits placed above 16 zero bits: read the file in chunks straight into
        # the high halves of the result (no widened temporaries: the peak is the result + one chunk)
        a = np.empty(n, np.float32)
        halves = a.view(np.uint16)
        halves[0::2] = 0
        with open(shard, "rb") as f:
            f.seek(offset)
            for start in range(0, n, _CHUNK):
                count = min(_CHUNK, n - start)
                halves[2 * start + 1:2 * (start + count):2] = np.fromfile(f, dtype=np.uint16, count=count)
    elif dtype == "BF16":
        raw = np.fromfile(shard, dtype=np.uint16, count=n, offset=offset)
        a = (raw.astype(np.uint32) << 16).view(np.float32)
        del raw
    else:
        a = np.fromfile(shard, dtype=st._np_dtype(st._FROM_ST[dtype]), count=n, offset=offset)
    a = a.reshape(shape)
    return a if a.dtype == want else a.astype(want)


@contextlib.contextmanager
def _params_on_meta() -> Iterator[None]:
    """While open, every parameter a module registers moves to the meta device (no memory, no
    initialisation work); buffers stay real. accelerate's ``init_empty_weights(include_buffers=False)``."""
    import torch

    orig = torch.nn.Module.register_parameter

    def register(self, name, param):
        orig(self, name, param)
        if param is not None and param.device.type != "meta":
            p = self._parameters[name]
            self._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = orig


def empty_model(auto_cls: Any, config: Any) -> Any:
    """``auto_cls.from_config(config)`` in f32 whose parameters hold no memory (module docstring)."""
    import torch

    with _params_on_meta():
        model = auto_cls.from_config(config, dtype=torch.float32)
    stand_in: dict[int, torch.nn.Parameter] = {}  # one stand-in per tensor keeps tied weights tied
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) not in stand_in:
                stand_in[id(p)] = torch.nn.Parameter(torch.zeros((), dtype=p.dtype).expand(p.shape),
                                                     requires_grad=False)
            module._parameters[name] = stand_in[id(p)]
    for name, b in model.named_buffers():
        if b.device.type == "meta":
            raise LazyWeightsError(f"buffer {name!r} of {type(model).__name__} was not computed at construction; "
                                   "this model cannot be captured out of core: drop --max-memory")
    return model.eval()


def attach_lazy_weights(graph: Graph, model: Any, folder: Path) -> Graph:
    """``graph`` with every Param that names a checkpoint tensor (directly or through a tied alias)
    holding a :class:`LazyArray` of that tensor; other weights (buffers, constants) stay as they are."""
    index = checkpoint_index(folder)
    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    names_of = {n: group for group in aliases.values() for n in group}
    lazy, missing = {}, []
    for p in graph.params:
        group = names_of.get(p.name)
        if group is None:
            continue
        key = next((n for n in group if n in index), None)
        if key is None:
            missing.append(p.name)
            continue
        shard, dtype, shape, offset = index[key]
        want = np.dtype(graph.weights[p.name].dtype)
        if tuple(shape) != tuple(p.type.shape):
            raise LazyWeightsError(f"{shard.name}: tensor {key!r} has shape {list(shape)}, the model's "
                                   f"parameter {p.name!r} {list(p.type.shape)}: config.json does not match the shards")
        lazy[p.name] = LazyArray(shape, want, _reader(shard, dtype, shape, offset, want), f"{shard.name}:{key}",
                                 rows=_row_reader(shard, dtype, shape, offset, want))
    if missing:
        raise LazyWeightsError(f"{folder}: the shards hold no tensor for parameter(s) {missing[:5]} "
                               f"({len(missing)} in all); is the checkpoint complete?")
    return graph.with_weights(lazy)


def _reader(shard, dtype, shape, offset, want):
    return lambda: read_tensor(shard, dtype, shape, offset, want)


def _row_reader(shard, dtype, shape, offset, want):
    return lambda index: read_rows(shard, dtype, shape, offset, want, index)


def read_rows(shard: Path, dtype: str, shape: tuple, offset: int, want: np.dtype, index) -> np.ndarray:
    """Rows ``index`` (int array or slice of axis 0) of one shard tensor as a fresh ``want`` array;
    only the pages holding those rows are read (the file is mapped, not loaded)."""
    if not shape:
        raise LazyWeightsError(f"{shard.name}: a scalar tensor has no rows")
    storage = np.uint16 if dtype == "BF16" else st._np_dtype(st._FROM_ST[dtype])
    mapped = np.memmap(shard, dtype=storage, mode="r", offset=offset, shape=tuple(shape))
    try:
        raw = np.array(mapped[index])  # a copy: the mapping is closed below
    finally:
        del mapped
    if dtype == "BF16":
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    return raw if raw.dtype == want else raw.astype(want)


def shards_sha256(folder: Path) -> str:
    """sha256 over the shards' names and bytes, streamed (the source model's identity)."""
    import hashlib

    h = hashlib.sha256()
    for shard in sorted(Path(folder).glob("*.safetensors")):
        h.update(shard.name.encode())
        with open(shard, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def config_dict(folder: Path) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())
