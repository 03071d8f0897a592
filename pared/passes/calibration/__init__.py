"""Calibration: the engine that runs a graph over calibration data, and the API passes use.

:mod:`.sites` holds what a pass describes (weight sites, statistics, the request, the rewrite);
:mod:`.engine` walks the graph and calls the pass back; :mod:`.reduce` combines the statistics of
data-parallel processes. Passes import from this package.
"""

from .engine import Executor, calibrate, memory_plan, run_calibration
from .reduce import LocalReducer, Reducer, local_share
from .sites import (
    STATISTICS,
    CalibrationError,
    CalibrationRequest,
    CalibrationResult,
    ErrorMeter,
    Rewrite,
    Statistic,
    Stats,
    WeightSite,
    check_finite_weights,
    dense_target,
    find_weight_sites,
    hessian_norm2,
    normalize_batches,
    relative_error,
    retype_params,
)

__all__ = [
    "STATISTICS", "CalibrationError", "CalibrationRequest", "CalibrationResult", "ErrorMeter", "Executor",
    "LocalReducer",
    "Reducer", "Rewrite", "Statistic", "Stats", "WeightSite", "calibrate", "check_finite_weights", "dense_target",
    "find_weight_sites", "hessian_norm2", "local_share", "memory_plan", "normalize_batches", "relative_error",
    "retype_params", "run_calibration",
]
