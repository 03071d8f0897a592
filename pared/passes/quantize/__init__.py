"""Quantization passes: each a weight transform plus a rewrite of linear layers into ``qlinear``.

Importing this package registers the passes: ``quantize`` (RTN weight-only int/fp8), ``w8a8``
(int8 weights and activations, dynamic or static), ``fp8`` (fp8 weights, optional fp8 dynamic
activations), ``gptq``, ``smoothquant``, ``adaround``, ``gqsa`` (group sparsity + int4) and
``fold_qdq`` (fold dequantize/quantize pairs). See docs/quantization.md.
"""

from .adaround import AdaRound, adaround_quantize
from .fold_qdq import FoldQDQ
from .fp8 import FP8
from .gptq import GPTQ, gptq_quantize
from .gqsa import GQSA
from .rtn import QuantizeWeights, rtn_quantize
from .scheme import QuantizationError, WeightScheme
from .smoothquant import SmoothQuant
from .w8a8 import W8A8

__all__ = ["FP8", "AdaRound", "FoldQDQ", "GPTQ", "GQSA", "QuantizationError", "QuantizeWeights", "SmoothQuant", "W8A8", "WeightScheme",
           "adaround_quantize", "gptq_quantize", "rtn_quantize"]
