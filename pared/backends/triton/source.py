"""Turning generated Triton source into kernel objects.

Triton's ``@triton.jit`` reads a kernel's source with ``inspect``; generated source is registered
in ``linecache`` under a name derived from its hash (``<pared-triton-1a2b3c4d>``), so tracebacks
and Triton's error messages show the generated lines and the same source gets the same name.
"""

from __future__ import annotations

import hashlib
import linecache
from typing import Any, Mapping, Optional


def load_source(src: str, name: str, extra_globals: Optional[Mapping[str, Any]] = None):
    """Execute generated ``src`` (which imports triton itself) and return its object ``name``."""
    digest = hashlib.sha1(src.encode()).hexdigest()[:12]
    filename = f"<pared-triton-{name}-{digest}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": f"pared_triton_{digest}", **(extra_globals or {})}
    exec(compile(src, filename, "exec"), namespace)
    return namespace[name]


def interpreting() -> bool:
    """Whether Triton kernels run on the CPU interpreter (``TRITON_INTERPRET=1`` when triton
    decorated them); then kernels take CPU tensors and autotuning keeps one config."""
    import triton.knobs as knobs

    return bool(knobs.runtime.interpret)


def prune_for_interpreter(configs, named_args, **kwargs):
    """``early_config_prune``: keep every config on a GPU; under the interpreter (where timing
    means nothing and every program is slow Python) keep only the smallest tile."""
    if not interpreting():
        return configs

    def area(c):
        n = 1
        for k, v in c.kwargs.items():
            if k.startswith("BLOCK"):
                n *= v
        return n

    return [min(configs, key=area)]
