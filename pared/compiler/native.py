"""Wires compiled helpers from the backends into the passes that can use them.

Passes do not import backends (docs/architecture.md); the pass manager imports this module, which
hands the sparsify pass DSnoT's compiled row loop (:func:`pared.backends.cpu.build.dsnot_runner`).
Without it (a pass called outside the pass manager) the numpy loop runs: same results, slower.
It also holds :func:`brief_blas_spin`, which the pass manager runs its passes under.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Optional

from ..backends.cpu import build
from ..passes.sparsify import dsnot

dsnot.native_loop = build.dsnot_runner


# numpy's and scipy's OpenBLAS keep their worker threads spinning for 2^28 CPU cycles (~75 ms)
# after every call before they sleep. Calibration alternates numpy solves with torch forward passes
# and OpenMP kernels: on the 2-core machine a torch GEMM issued right after a numpy one ran 2.7x
# slower (24 ms vs 9 ms) while the BLAS worker spun on the other core. While the pass manager runs,
# the workers spin 2^SPIN_LOG2 cycles instead (OpenBLAS's OPENBLAS_THREAD_TIMEOUT, read again and
# applied by restarting the workers: the next BLAS call starts them). PARED_BLAS_SPIN=keep, or
# OPENBLAS_THREAD_TIMEOUT set by the user, leaves OpenBLAS as it is; a program whose other threads
# call numpy's BLAS while pared compiles should set one of them (the restart assumes no BLAS call
# is in flight).
SPIN_LOG2 = 20


def _loaded_openblas() -> list:
    """ctypes handles of the OpenBLAS libraries this process has loaded that can re-read their
    settings (numpy's and scipy's wheels each bundle one); empty where /proc is unavailable."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return []
    libs = []
    for p in sorted(paths):
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        if hasattr(lib, "openblas_read_env") and hasattr(lib, "blas_thread_shutdown_"):
            libs.append(lib)
    return libs


def _set_blas_spin(value: Optional[str]) -> None:
    if value is None:
        os.environ.pop("OPENBLAS_THREAD_TIMEOUT", None)
    else:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = value
    for lib in _loaded_openblas():
        lib.openblas_read_env()
        lib.blas_thread_shutdown_()  # idle workers exit; the next call starts them with the new timeout


@contextmanager
def brief_blas_spin():
    """While inside, OpenBLAS worker threads sleep ~0.3 ms after a call instead of spinning ~75 ms."""
    if os.environ.get("PARED_BLAS_SPIN") == "keep" or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        yield
        return
    _set_blas_spin(str(SPIN_LOG2))
    try:
        yield
    finally:
        _set_blas_spin(None)
