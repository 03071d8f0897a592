"""Semantics-preserving cleanup passes: canonicalize, fold, cse, dce (preset ``cleanup``)."""

from .canonicalize import CANONICALIZE_RULES, Canonicalize
from .cse import CSE
from .dce import DCE, referenced_params
from .fold import Fold

__all__ = ["CANONICALIZE_RULES", "CSE", "Canonicalize", "DCE", "Fold", "referenced_params"]
