"""Named recipes (presets): the one place they are defined. ``pipeline.PRESETS`` is this dict.

A preset is usable anywhere a pass name is (``pared compress minilm --recipe sparse-2:4``,
``pared.backend(recipe="sparsegpt-50")``, ``@pared.jit(recipe=...)``). Each preset names only
passes that are registered; ``tests/compiler/test_cli.py`` parses every one against the registry,
so a pass that disappears or renames an option fails a test instead of leaving a silent gap.

"""

from __future__ import annotations

PRESETS: dict[str, str] = {
    "cleanup": "canonicalize,fold,cse,dce",
    # sparsity (pared.passes.sparsify); data-aware methods need calibration (--calib)
    "sparse-2:4": "sparsify{method=sparsegpt,pattern=2:4}",
    "sparsegpt-50": "sparsify{method=sparsegpt,sparsity=0.5}",
    "wanda-50": "sparsify{method=wanda,sparsity=0.5}",
    "magnitude-2:4": "sparsify{method=magnitude,pattern=2:4}",
    # weight-only quantization (pared.passes.quantize, round to nearest)
    "w8a16": "quantize{weights=int8}",
    "w4a16-g128": "quantize{weights=int4,group=128}",
    # sparse then quantized
    "2:4+w4": "sparsify{method=sparsegpt,pattern=2:4},quantize{weights=int4,group=128}",
    "2:4+w8": "sparsify{method=sparsegpt,pattern=2:4},quantize{weights=int8}",
    "gqsa-w4s50": "gqsa{sparsity=0.5,weights=int4}",
}
"""Preset name -> pipeline string."""

LOWERING: dict[str, str] = {
    "torch": "fuse_attention",  # attention -> F.scaled_dot_product_attention (flash kernels)
}
"""Target -> passes run after every recipe, just before lowering: rewrites into ops that target
has fast kernels for. They run on the recipe's output, so calibration and compression passes see
the plain graph. ``lowering=False`` (``pared.compress``, ``pared.backend``) skips them."""

def register_builtin_passes() -> list[str]:
    """Import pared's pass packages (registering their passes); returns the registered names."""
    from ..passes.base import available_passes

    return available_passes()
