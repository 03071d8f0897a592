"""Sparsification passes (docs/sparsity.md). Importing this package registers them."""

from .activation import ActivationSparsity
from .pattern import Pattern, parse_pattern
from .selection import select_sites
from .sparsify import Sparsify
from .structured import StructuredRemoval
from .sweep import SweepResult, essential_sparsity

__all__ = ["ActivationSparsity", "Pattern", "Sparsify", "StructuredRemoval", "SweepResult", "essential_sparsity",
           "parse_pattern", "select_sites"]
