"""The out-of-core offline path: capture without weights, calibrate streaming, keep rewrites on disk.

:func:`pared.tools.offline.compress_model` takes it for a model loaded with ``out_of_core=True``
(``pared compress --max-memory``) or given a ``max_memory`` budget; docs/out_of_core.md.

- :func:`capture`: ``torch.export`` of the model (its parameters hold no memory,
  :func:`pared.tools.lazy_weights.empty_model`), imported into the IR; the graph's weights are
  lazy handles on the safetensors shards.
- :func:`run_passes`: the recipe and the torch lowering passes, with a context that streams
  calibration (``PassContext.staging_dir``) under the budget (``PassContext.max_memory``). The
  graph is NOT lowered to a torch callable (that would load every weight): the result can be
  saved, not run.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..passes.context import PassContext, Report


@dataclass
class Uncompiled:
    """What :class:`~pared.tools.offline.CompressResult` reads of a compiled graph, without a
    callable: the graph, the import it came from, the report (and the staging folder it reads)."""

    graph: Any
    imported: Any
    report: Report = field(default_factory=Report)
    staging: Optional[str] = None
    timings: dict = field(default_factory=dict)

    @property
    def fn(self):
        raise RuntimeError("an out-of-core compression result is not lowered (running it would load every weight); "
                           "save it and load the artifact (pared.load) to run it")


# glibc's malloc raises its mmap threshold to the size of each large block freed (up to 32 MiB);
# blocks under it then come from the heap and mostly stay in the process once freed. Streaming one
# layer after another frees and allocates such blocks all the time: on the ~100M-parameter test
# model (tests/compiler/test_out_of_core.py) the GPTQ run's peak RSS moved between 818 and 889 MiB
# over five runs; with the threshold fixed at 1 MiB, 772-774 MiB.
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def return_freed_blocks(threshold: int = 1 << 20) -> bool:
    """Make glibc serve blocks of ``threshold`` bytes and more by mmap, so that freeing them returns
    the memory at once (no dynamic threshold). Process-wide; only under ``--max-memory`` (out of core),
    and not when the user set MALLOC_MMAP_THRESHOLD_. False where it did nothing (not glibc)."""
    import ctypes
    import os

    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(getattr(libc, "mallopt", None) and libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))


def capture(lm: Any) -> Uncompiled:
    """Export and import ``lm``'s model; weights of an out-of-core model become lazy handles."""
    from ..compiler.torch_api import _export
    from ..frontends.torch.importer import import_exported
    from .lazy_weights import attach_lazy_weights

    if lm.out_of_core:
        return_freed_blocks()

    ep = _export(lm.model, tuple(lm.example_args), dict(lm.example_kwargs), True)
    imported = import_exported(ep)
    del ep
    if lm.out_of_core:
        imported.graph = attach_lazy_weights(imported.graph, lm.model, lm.hf_dir)
        imported.sources = {}  # the model's stand-in tensors hold no values
    return Uncompiled(imported.graph, imported, imported.report)


def run_passes(imported: Any, passes: Sequence[Any], batches: Optional[list], *, max_memory: Optional[int] = None,
               staging_dir: Optional[str] = None, verify: bool = True) -> Uncompiled:
    """The recipe plus the torch target's lowering passes on ``imported.graph``, calibrating
    streaming; rewritten weights go to ``staging_dir`` (a temporary folder removed with the result
    when None)."""
    from ..compiler.context import with_defaults
    from ..compiler.pass_manager import run_pipeline
    from ..compiler.pipeline import parse_pipeline
    from ..compiler.presets import LOWERING

    report = Report()
    for row in imported.report:
        report.add(row.pass_name, row.name, **row.fields)
    owned = staging_dir is None
    staging = staging_dir or tempfile.mkdtemp(prefix="pared-staging-")
    ctx = with_defaults(PassContext(calibration=batches, backend="torch", device="cpu", report=report,
                                    opaque=imported.opaque, max_memory=max_memory, staging_dir=staging))
    try:
        graph = run_pipeline(imported.graph, [*passes, *parse_pipeline(LOWERING.get("torch", ""))], ctx, verify=verify)
    except BaseException:
        if owned:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    out = Uncompiled(graph, imported, report, staging)
    if owned:
        weakref.finalize(out, shutil.rmtree, staging, True)
    return out
