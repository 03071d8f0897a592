"""The Triton backend: generated kernels for fused regions, GEMM templates, a cost model.

Kernels are generated (and ``@triton.jit``-decorated) when a graph is lowered, never at import,
so importing this package needs no GPU. See docs/triton.md.
"""

from .cost import DEVICES, Choice, choose, gemm_time
from .emit import CodegenError
from .gemm import GemmKernel
from .lower import TritonUnavailableError, check_device, lower
from .packing import compress_24, compress_24_int4, pack_int4
from .pointwise import PointwiseKernel
from .source import interpreting

__all__ = [
    "DEVICES", "Choice", "CodegenError", "GemmKernel", "PointwiseKernel", "TritonUnavailableError",
    "check_device", "choose", "compress_24", "compress_24_int4", "gemm_time", "interpreting", "lower",
    "pack_int4",
]
