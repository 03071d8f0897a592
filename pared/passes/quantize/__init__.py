"""Quantization passes: each a weight transform plus a rewrite of linear layers into ``qlinear``.

Importing this package registers the passes: ``quantize`` (RTN weight-only int/fp8), ``w8a8``
(int8 weights and activations, dynamic or static), ``fp8`` (fp8 weights, optional fp8 dynamic
activations), ``gptq``, ``smoothquant``, ``adaround``, ``gqsa`` (group sparsity + int4) and
``fold_qdq`` (fold dequantize/quantize pairs). They share :class:`WeightQuantizer` (layer
selection, scheme, checks); the calibrated ones are a ``solve`` on :class:`CalibratedWeightQuantizer`.
See docs/quantization.md.
"""

from .adaround import AdaRound, adaround_quantize
from .calibrated import CalibratedWeightQuantizer, Solution, reconstruction_error
from .fold_qdq import FoldQDQ
from .fp8 import FP8
from .gptq import GPTQ, gptq_quantize
from .gqsa import GQSA
from .grid import rtn_quantize, weight_grid
from .quantizer import WeightQuantizer
from .rtn import QuantizeWeights
from .scheme import QuantizationError, WeightScheme
from .smoothquant import SmoothQuant
from .w8a8 import W8A8

__all__ = ["FP8", "AdaRound", "CalibratedWeightQuantizer", "FoldQDQ", "GPTQ", "GQSA", "QuantizationError",
           "QuantizeWeights", "SmoothQuant", "Solution", "W8A8", "WeightQuantizer", "WeightScheme", "adaround_quantize",
           "gptq_quantize", "reconstruction_error", "rtn_quantize", "weight_grid"]
