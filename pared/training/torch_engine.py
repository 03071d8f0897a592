"""The torch side of the fine-tuner: the training graph lowered by the torch backend, trained with
``torch.optim``.

The graph is lowered once (:func:`pared.backends.torch.lower`); the trained weights are handed to
the lowering as the tensors of their params, then registered as ``nn.Parameter``s of the
GraphModule, so ``loss.backward()`` runs through the ``ste_mask``/``fake_quant`` autograd rules.
Masks stay buffers sharing storage with the engine's tensors: a mask update is an in-place copy.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ..ir import Graph
from .losses import torch_loss


class TorchEngine:
    """Forward, backward and optimizer step of a training graph on the torch backend."""

    framework = "torch"

    def __init__(self, graph: Graph, trained: Sequence[str], masks: Sequence[str], *, loss: str = "mse",
                 temperature: float = 1.0, optimizer: str = "adamw", lr: float = 1e-4, weight_decay: float = 0.0,
                 mask_grads: Sequence[str] = (), device=None):
        import torch

        from ..backends.torch import lower

        self.torch = torch
        self.device = torch.device(device or "cpu")
        self.trained = list(trained)
        self.masks = list(masks)
        self.params = {n: torch.nn.Parameter(self._tensor(graph.weight(n))) for n in self.trained}
        mask_src = {n: self._tensor(graph.weight(n)) for n in self.masks}
        self.gm = lower(graph, device=self.device, tensors={**self.params, **mask_src})
        by_ptr = {t.data_ptr(): n for n, t in {**self.params, **mask_src}.items()}
        self.mask_bufs, bound = {}, set()
        for target, buf in list(self.gm.named_buffers()):
            name = by_ptr.get(buf.data_ptr())
            if name in self.params:
                del self.gm._buffers[target]
                self.gm._non_persistent_buffers_set.discard(target)
                self.gm.register_parameter(target, self.params[name])
                bound.add(name)
            elif name in mask_src:
                self.mask_bufs[name] = buf
                bound.add(name)
        missing = [n for n in [*self.trained, *self.masks] if n not in bound]
        if missing:
            raise RuntimeError(f"torch lowering did not read params {missing[:3]} as tensors; cannot train them")
        for n in mask_grads:
            self.mask_bufs[n].requires_grad_(True)
        plist = [self.params[n] for n in self.trained]
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(plist, lr=lr, weight_decay=weight_decay)
        else:  # the fused CPU/GPU kernel: one pass over each weight instead of seven
            try:
                self.opt = torch.optim.AdamW(plist, lr=lr, weight_decay=weight_decay, fused=True)
            except (RuntimeError, TypeError):
                self.opt = torch.optim.AdamW(plist, lr=lr, weight_decay=weight_decay)
        self.loss_fn = torch_loss(loss, temperature)
        self._mask_grads: dict[str, np.ndarray] = {}

    def _tensor(self, value):
        t = value if isinstance(value, self.torch.Tensor) else self.torch.from_numpy(np.array(value, copy=True))
        return t.detach().clone().to(self.device)

    def as_inputs(self, inputs: Sequence) -> list:
        t = self.torch
        return [x.to(self.device) if isinstance(x, t.Tensor) else t.from_numpy(np.asarray(x)).to(self.device)
                for x in inputs]

    def step(self, inputs: Sequence, target, lr: float) -> float:
        """One forward/backward/optimizer step; returns the loss."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        for b in self.mask_bufs.values():
            b.grad = None
        out = self.gm(*self.as_inputs(inputs))[0]
        loss = self.loss_fn(out, self.as_target(target))
        loss.backward()
        self.opt.step()
        self._mask_grads = {n: b.grad.detach().cpu().numpy().copy() for n, b in self.mask_bufs.items()
                            if b.grad is not None}
        return float(loss.detach())

    def as_target(self, target):
        t = self.torch
        return target.to(self.device) if isinstance(target, t.Tensor) else t.from_numpy(np.asarray(target))

    def forward(self, inputs: Sequence) -> list:
        with self.torch.no_grad():
            return list(self.gm(*self.as_inputs(inputs)))

    def loss(self, inputs: Sequence, target) -> float:
        with self.torch.no_grad():
            return float(self.loss_fn(self.gm(*self.as_inputs(inputs))[0], self.as_target(target)))

    def mask_grads(self) -> Mapping[str, np.ndarray]:
        return self._mask_grads

    def get(self, name: str) -> np.ndarray:
        t = self.params[name] if name in self.params else self.mask_bufs[name]
        return t.detach().cpu().numpy().copy()

    def set(self, values: Mapping[str, np.ndarray]) -> None:
        with self.torch.no_grad():
            for n, v in values.items():
                t = self.params[n] if n in self.params else self.mask_bufs[n]
                t.copy_(self.torch.from_numpy(np.asarray(v, dtype=np.asarray(v).dtype)).to(t.dtype))

    def apply_masks(self, pairs: Sequence[tuple[str, str]]) -> None:
        """w *= mask for each (weight, mask): pruned weights of a masked method stay exactly zero."""
        with self.torch.no_grad():
            for w, m in pairs:
                self.params[w].mul_(self.mask_bufs[m])

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"w/{n}": self.get(n) for n in self.trained}
        out.update({f"m/{n}": self.get(n) for n in self.masks})
        sd = self.opt.state_dict()["state"]
        for idx, st in sd.items():
            for k, v in st.items():
                out[f"opt/{idx}/{k}"] = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        t = self.torch
        self.set({n: state[f"w/{n}"] for n in self.trained})
        self.set({n: state[f"m/{n}"] for n in self.masks})
        opt_state: dict[int, dict] = {}
        for key, v in state.items():
            if key.startswith("opt/"):
                _, idx, k = key.split("/", 2)
                opt_state.setdefault(int(idx), {})[k] = t.from_numpy(np.array(v))
        sd = self.opt.state_dict()
        sd["state"] = opt_state
        self.opt.load_state_dict(sd)


def torch_teacher(fn) -> Optional[object]:
    """``fn(*inputs)`` without autograd, first output (a torch model or function)."""
    import torch

    def run(inputs):
        with torch.no_grad():
            out = fn(*inputs)
        if isinstance(out, (tuple, list)):
            out = out[0]
        elif not isinstance(out, torch.Tensor) and hasattr(out, "__getitem__"):
            out = out[0]  # a transformers ModelOutput
        return out

    return run
