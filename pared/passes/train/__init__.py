"""Training-time passes (docs/training.md): a weight becomes (weight, mask) or (weight, grid) with a
straight-through forward and its method's backward, and comes back as a compressed weight.

Importing this package registers ``train_sparse``, ``train_quant`` and ``train_export``.
"""

from .export import TrainExport
from .patterns import MatrixView, TrainPattern, holds, parse_train_pattern, select_mask
from .quant import TrainQuant
from .schedules import MaskSchedule, rigl_update
from .sites import TrainSite, insert_transforms, trained_params, training_sites
from .sparse import TrainSparse

__all__ = ["MaskSchedule", "MatrixView", "TrainExport", "TrainPattern", "TrainQuant", "TrainSite", "TrainSparse",
           "holds", "insert_transforms", "parse_train_pattern", "rigl_update", "select_mask", "trained_params",
           "training_sites"]
