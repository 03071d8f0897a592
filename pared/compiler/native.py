"""Wires compiled helpers from the backends into the passes that can use them.

Passes do not import backends (docs/architecture.md); the pass manager imports this module, which
hands the sparsify pass DSnoT's compiled row loop (:func:`pared.backends.cpu.build.dsnot_runner`).
Without it (a pass called outside the pass manager) the numpy loop runs: same results, slower.
"""

from __future__ import annotations

from ..backends.cpu import build
from ..passes.sparsify import dsnot

dsnot.native_loop = build.dsnot_runner
