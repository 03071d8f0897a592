"""Shared pytest setup. Keep imports light: no torch/jax here, so collection stays fast.

Markers (see pyproject.toml): ``slow`` (real-model runs, deselected by default; run with
``make test ARGS="-m slow"``) and ``gpu`` (needs a CUDA device).
"""

import os

import numpy as np

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a dev dependency; tests that need it import it themselves
    settings = None

if settings is not None:
    settings.register_profile(
        "ci",
        deadline=None,
        max_examples=50,
        derandomize=bool(os.environ.get("CI")),  # reproducible in CI, exploratory locally
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    )
    settings.register_profile("dev", deadline=None, max_examples=20)
    settings.register_profile("thorough", deadline=None, max_examples=500)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

np.set_printoptions(precision=5, suppress=True, linewidth=120)


def _has_cuda() -> bool:
    try:
        import torch  # imported lazily, only when a gpu-marked test was collected
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    gpu_items = [it for it in items if it.get_closest_marker("gpu") is not None]
    if gpu_items and not _has_cuda():
        import pytest

        skip = pytest.mark.skip(reason="needs a CUDA device")
        for it in gpu_items:
            it.add_marker(skip)
