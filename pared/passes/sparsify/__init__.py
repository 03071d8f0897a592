"""Sparsification passes (docs/sparsity.md). Importing this package registers them."""

from .pattern import Pattern, parse_pattern
from .sparsify import Sparsify
from .targets import select_sites

__all__ = ["Pattern", "Sparsify", "parse_pattern", "select_sites"]
