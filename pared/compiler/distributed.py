"""Data-parallel calibration: the reducers behind :mod:`pared.passes.calibration.reduce`.

Every process (or device) is handed the same calibration batches and runs the graph over its
share only (batch ``b`` goes to rank ``b % world``); each weight site's statistics are then
combined by a collective before the pass solves, so every process picks the same weights.

- torch: under ``torchrun --nproc-per-node N`` (or any initialised ``torch.distributed`` group
  of several processes), :class:`TorchDistributedReducer` all-reduces the float64 sums: on CPU
  tensors with gloo, on the rank's CUDA device with NCCL. :func:`init_from_env` starts the group
  from torchrun's environment (gloo without CUDA, nccl with); the compiler's
  :func:`~pared.compiler.context.with_defaults` picks the reducer up (:func:`active_reducer`).
- JAX: :class:`JaxMeshReducer` splits one process's share over the devices of a
  ``jax.sharding.Mesh``: each device computes the statistics products of its batches, and a
  ``psum``/``pmax`` under ``shard_map`` over the mesh combines the per-device partial sums.
  Across hosts it would enter through ``jax.distributed.initialize()`` and a mesh over the
  global devices (rank/world = ``jax.process_index()``/``jax.process_count()``, parts = the local
  devices); that path is untested here, so several JAX processes are refused.

Torch is imported only when a reducer is made, JAX only by :class:`JaxMeshReducer`.
"""

from __future__ import annotations

import os
import sys
from functools import reduce as _fold
from typing import Any, Optional, Sequence

import numpy as np


class TorchDistributedReducer:
    """All-reduces statistics over a ``torch.distributed`` process group (one part per process)."""

    parts = 1

    def __init__(self, group: Any = None):
        import torch
        import torch.distributed as dist

        self._dist, self._group = dist, group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.name = str(dist.get_backend(group))
        cuda = self.name == "nccl"
        self._device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")

    def executor(self, part: int, ex: Any) -> Any:
        return ex

    def sum(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return self._all_reduce(_fold(np.add, parts), self._dist.ReduceOp.SUM)

    def max(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return self._all_reduce(_fold(np.maximum, parts), self._dist.ReduceOp.MAX)

    def _all_reduce(self, local: np.ndarray, op) -> np.ndarray:
        import torch

        t = torch.from_numpy(np.array(local, np.float64)).to(self._device)  # a copy: collectives work in place
        self._dist.all_reduce(t, op=op, group=self._group)
        return t.cpu().numpy()


def active_reducer() -> Optional[TorchDistributedReducer]:
    """The reducer of the initialised default ``torch.distributed`` group when it has several
    processes, else None. Imports nothing: without ``torch.distributed`` loaded no group exists."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    return TorchDistributedReducer()


def init_from_env(log=None) -> Optional[TorchDistributedReducer]:
    """Start the default process group when launched by torchrun (``WORLD_SIZE`` > 1) and none is
    initialised yet (nccl on the ``LOCAL_RANK`` GPU when CUDA is available, else gloo); returns
    :func:`active_reducer`. Outside torchrun it does nothing and returns None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
                dist.init_process_group("nccl")
            else:
                dist.init_process_group("gloo")
            if log is not None and dist.get_rank() == 0:
                log(f"[pared] torch.distributed: {dist.get_world_size()} processes ({dist.get_backend()})")
    return active_reducer()


def is_main_process() -> bool:
    """True outside a process group and on rank 0 of one: the process that writes files and prints."""
    reducer = active_reducer()
    return reducer is None or reducer.rank == 0


def barrier() -> None:
    """Wait for every process of the active group (nothing without one)."""
    if active_reducer() is not None:
        sys.modules["torch.distributed"].barrier()


def shutdown() -> None:
    """Destroy the default process group, if one is initialised (the end of a torchrun command)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class JaxMeshReducer:
    """Splits one process's calibration batches over the devices of a JAX mesh.

    Part ``p`` (device ``mesh.devices.flat[p]``) takes local batches ``p, p + parts, ...``; its
    statistics products (``X^T X`` per batch, in float32) run on that device, summed in float64
    (on the host, as in one-device calibration). The per-device partial sums are then placed back
    on their devices as one array sharded over all mesh axes, and combined by ``psum``/``pmax``
    inside ``shard_map`` (with 64-bit types enabled for the call only, so the sums stay float64).
    """

    name = "jax mesh"

    def __init__(self, mesh: Any):
        import jax

        if jax.process_count() > 1:
            raise ValueError(
                f"pared: data-parallel calibration over a mesh of {jax.process_count()} JAX processes is not "
                "supported (only the devices of one process); calibrate in one process")
        self.mesh = mesh
        self.devices = list(np.asarray(mesh.devices).flat)
        self.rank, self.world, self.parts = 0, 1, len(self.devices)
        self._axes = tuple(mesh.axis_names)
        self._fns: dict[str, Any] = {}

    def executor(self, part: int, ex: Any) -> Any:
        return _OnDevice(ex, self.devices[part])

    def sum(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return self._collective("psum", parts)

    def max(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return self._collective("pmax", parts)

    def _collective(self, op: str, parts: Sequence[np.ndarray]) -> np.ndarray:
        import jax
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        if len(parts) != self.parts:
            raise ValueError(f"JaxMeshReducer: {len(parts)} partial sums for {self.parts} devices")
        with jax.enable_x64(True):
            shape = (self.parts, *np.shape(parts[0]))
            sharding = NamedSharding(self.mesh, P(self._axes))
            shards = [jax.device_put(np.asarray(x, np.float64)[None], d) for x, d in zip(parts, self.devices)]
            stacked = jax.make_array_from_single_device_arrays(shape, sharding, shards)
            if op not in self._fns:
                collective = getattr(jax.lax, op)
                self._fns[op] = jax.jit(jax.shard_map(lambda x: collective(x, self._axes), mesh=self.mesh,
                                                      in_specs=P(self._axes), out_specs=P()))
            return np.asarray(self._fns[op](stacked))[0]


class _OnDevice:
    """An executor's statistics ops, run as jax ops on one device (the engine's forward pass
    stays on the executor's own backend; only the blocks reaching a weight site move)."""

    def __init__(self, ex: Any, device: Any):
        self.ex, self.device = ex, device

    def as_float(self, x: Any) -> Any:
        import jax

        return jax.device_put(np.asarray(self.ex.to_numpy(self.ex.as_float(x)), np.float32), self.device)

    def absmax(self, x: Any) -> Any:
        import jax.numpy as jnp

        return jnp.max(jnp.abs(x), axis=0)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)
