"""Fusion passes: each turns groups of equations into ``fused`` region ops (one kernel each).

Kinds: ``elementwise``, ``reduction`` (last-axis reductions/norms with their elementwise
neighbours), ``gemm`` (linear GEMM + epilogue), ``dequant_gemm`` (weight dequantize in the GEMM
prologue + epilogue), ``int8_gemm`` (W8A8 + epilogue). ``fuse`` runs them all.
``fuse_attention`` is separate: it rewrites attention into the ``attention`` op (not a region).
"""

from .attention import FuseAttention
from .count import count_launches
from .dequant_prologue import FuseDequant
from .elementwise import FuseElementwise
from .fuse import Fuse
from .gemm_epilogue import FuseGemmEpilogue
from .reduction import FuseReductions

__all__ = [
    "Fuse",
    "FuseAttention",
    "FuseDequant",
    "FuseElementwise",
    "FuseGemmEpilogue",
    "FuseReductions",
    "count_launches",
]
