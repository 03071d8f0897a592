"""The Triton backend: generated kernels for fused regions and GEMM templates.

Kernels are generated (and ``@triton.jit``-decorated) when a graph is lowered, never at import,
so importing this package needs no GPU. Which weight format a GEMM runs in is decided by the
roofline chooser of :mod:`pared.backends.costmodel`. See docs/triton.md.
"""

from .emit import CodegenError
from .gemm import GemmKernel
from .lower import TritonUnavailableError, check_device, lower
from .packing import compress_24, compress_24_int4, pack_int4
from .pointwise import PointwiseKernel
from .source import interpreting

__all__ = [
    "CodegenError", "GemmKernel", "PointwiseKernel", "TritonUnavailableError", "check_device", "compress_24",
    "compress_24_int4", "interpreting", "lower", "pack_int4",
]
