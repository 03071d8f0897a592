"""Sparse and quantization-aware training (docs/training.md): a distillation fine-tuner over the
training passes of :mod:`pared.passes.train`, on the torch backend (torch.optim) or the XLA
backend (optax).

Layering: ``training`` sits with ``tools``' inputs: it may import ``ir``, ``frontends``,
``passes``, ``backends`` and ``compiler``; ``tools`` (the CLI) imports it. Saving artifacts is the
caller's (``pared.finetune(..., out=DIR)``, ``pared finetune``).
"""

from .checkpoint import CheckpointError
from .finetune import ConstraintError, FinetuneError, FinetuneResult, default_recipe, finetune, lr_at

__all__ = ["CheckpointError", "ConstraintError", "FinetuneError", "FinetuneResult", "default_recipe", "finetune",
           "lr_at"]
