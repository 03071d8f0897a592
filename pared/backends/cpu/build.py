"""Build (once) and load the sparse CPU kernel library: ``g++`` -> a shared library -> ctypes.

The kernels (``sparse_kernels.cpp``) are plain C++ with an ``extern "C"`` interface and no torch
headers, so one compile takes a few seconds with the g++ every machine has (no ninja, no
torch.utils.cpp_extension: its headers alone take ~40 s to compile on two cores). The library
is built for the machine it runs on (``-march=native``: AVX-512 and VNNI where the CPU has them)
and cached under ``$XDG_CACHE_HOME/pared/cpu_kernels/`` (``~/.cache`` by default), keyed by the
source, the compiler's version, the flags and the CPU's feature flags; later processes load it
in milliseconds. Concurrent builds (pytest workers) each write a private file and rename it in
place, so none reads a half-written library.

Without a working compiler, or when the build fails, :func:`library` returns None and warns once
per process with the compiler's message: the torch backend then keeps every sparse layer on its
dense lowering (never a crash). ``PARED_CPU_KERNELS=0`` (read when a lowering first asks, not at
import) turns the kernels off the same way.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

SOURCE = Path(__file__).with_name("sparse_kernels.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-fno-math-errno")
BUILD_TIMEOUT_S = 180

_lock = threading.Lock()
_state: dict = {}  # the one loaded library of this process (or the reason there is none)


class KernelLibrary:
    """The loaded library with typed entry points (see ``sparse_kernels.cpp`` for the arguments)."""

    def __init__(self, path: Path):
        # torch first: its libgomp.so.1 is then the one the library's DT_NEEDED resolves to
        import torch  # noqa: F401

        self.path = path
        self.lib = ctypes.CDLL(str(path))
        p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib = self.lib
        lib.pared_cpu_features.restype = i32
        lib.pared_plan_ell.restype = p
        lib.pared_plan_ell.argtypes = [p, p, i32, i64, i64, i64, i64, p, p, i32, i32, p]
        lib.pared_plan_nm8.restype = p
        lib.pared_plan_nm8.argtypes = [p, p, p, i64, i64, p]
        lib.pared_plan_free.restype = None
        lib.pared_plan_free.argtypes = [p]
        lib.pared_run.restype = i32
        lib.pared_run.argtypes = [p, p, i64, p, p, i32, i32]
        lib.pared_dsnot.restype = i64
        lib.pared_dsnot.argtypes = [p, p, i64, i64, i32, i32, i32, p, p, p, p, i32]
        self.features = int(self.lib.pared_cpu_features())

    @property
    def avx512(self) -> bool:
        return bool(self.features & 1)

    @property
    def nm8(self) -> bool:
        """The int8 4-of-8 kernel (AVX512-VBMI + VNNI) is in this build."""
        return bool(self.features & 2)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pared" / "cpu_kernels"


def _compiler() -> Optional[str]:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _key(cxx: str) -> str:
    ver = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), ver.encode(), " ".join(FLAGS).encode(), _cpu_flags().encode(),
                 platform.machine().encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def build(cxx: Optional[str] = None, out_dir: Optional[Path] = None) -> Path:
    """Compile the kernels (unless the cache has them) and return the library's path.

    Raises RuntimeError with the compiler's message when there is no compiler or the build fails.
    """
    cxx = cxx or _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (looked for $CXX, g++, c++, clang++)")
    out_dir = Path(out_dir) if out_dir is not None else cache_dir()
    target = out_dir / f"libpared_sparse_{_key(cxx)}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".so.tmp", dir=out_dir)
    os.close(fd)
    try:
        res = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                             timeout=BUILD_TIMEOUT_S)
        if res.returncode != 0:
            raise RuntimeError(f"{Path(cxx).name} failed (exit {res.returncode}): {res.stderr.strip()[-1500:]}")
        os.replace(tmp, target)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{Path(cxx).name} did not finish within {BUILD_TIMEOUT_S} s") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library() -> Optional[KernelLibrary]:
    """The kernel library, built on first use; None (with one warning per process) when it cannot be."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib, why = None, ""
        if os.environ.get("PARED_CPU_KERNELS", "1") == "0":
            why = "PARED_CPU_KERNELS=0"
        else:
            try:
                lib = KernelLibrary(build())
            except Exception as e:  # no compiler, a failed build, a library that does not load
                why = f"{type(e).__name__}: {e}"
        _state["lib"] = lib
        if lib is None:
            _state["why"] = why
            warnings.warn(f"pared: sparse CPU kernels unavailable ({why}); sparse layers run on their dense "
                          "lowering", RuntimeWarning, stacklevel=2)
        return lib


def unavailable_reason() -> str:
    """Why :func:`library` returned None ('' when it loaded or was not asked yet)."""
    return _state.get("why", "")


__all__ = ["KernelLibrary", "build", "cache_dir", "library", "unavailable_reason"]


def dsnot_runner():
    """DSnoT's compiled row loop as ``run(H, dH, W, R, hr, keep, m, cycles, settle) -> swaps``
    (arrays C-contiguous: float64, keep bool; updated in place), or None without the library."""
    lib = library()
    if lib is None:
        return None
    import numpy as np
    import torch

    def run(H, dH, W, R, hr, keep, m, cycles, settle):
        rows, k = W.shape
        kb = keep.view(np.uint8)
        return int(lib.lib.pared_dsnot(H.ctypes.data, dH.ctypes.data, rows, k, int(m), int(cycles), int(settle),
                                       W.ctypes.data, R.ctypes.data, hr.ctypes.data, kb.ctypes.data,
                                       max(1, torch.get_num_threads())))

    return run
