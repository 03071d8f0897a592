"""The pass manager: runs a pipeline of passes with instruments around each pass."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from ..ir import Graph
from ..passes.base import Pass
from ..passes.context import PassContext
from . import native  # compiled helpers for the passes; BLAS worker spin while they run
from .context import with_defaults
from .instruments import DumpIR, Instrument, NumericsCheck, PassError, Timing, VerifyInstrument
from .pipeline import PipelineSpec, format_pipeline, parse_pipeline

DUMP_IR_ENV = "PARED_DUMP_IR"


class PassManager:
    """Runs passes in order; instruments verify, time, dump and check numerics around each.

    Args:
        passes: anything :func:`parse_pipeline` reads (a string, a list, a recipe, a Pass);
            parsed and validated here, before anything runs.
        instruments: extra :class:`Instrument` objects, called in order before a pass and in
            reverse order after it.
        verify: verify the input and every pass's result (``pared.ir.verify``).
        dump_ir: a directory for numbered IR dumps; ``None`` reads ``$PARED_DUMP_IR`` now (at
            construction, not import); ``False`` disables dumping even when the variable is set.
        timing: record seconds per pass (``self.timing.summary()``).
        numerics: True or a :class:`NumericsCheck` to compare each pass's outputs with the
            previous graph's on ``ctx.sample_inputs``.
    """

    def __init__(
        self,
        passes: PipelineSpec,
        instruments: Sequence[Instrument] = (),
        *,
        verify: bool = True,
        dump_ir: Union[str, os.PathLike, None, bool] = None,
        timing: bool = True,
        numerics: Union[bool, NumericsCheck, None] = None,
    ):
        self.passes: tuple[Pass, ...] = tuple(parse_pipeline(passes))
        insts: list[Instrument] = []
        if verify:
            insts.append(VerifyInstrument())
        if dump_ir is None:
            dump_ir = os.environ.get(DUMP_IR_ENV) or None
        if dump_ir:
            insts.append(DumpIR(dump_ir))
        if numerics:
            insts.append(numerics if isinstance(numerics, NumericsCheck) else NumericsCheck())
        insts.extend(instruments)
        if timing:
            insts.append(Timing())  # innermost: times the pass, not the other instruments
        self.instruments: tuple[Instrument, ...] = tuple(insts)

    def instrument(self, kind: type) -> Optional[Instrument]:
        """The first instrument of type ``kind``, or None."""
        return next((i for i in self.instruments if isinstance(i, kind)), None)

    @property
    def timing(self) -> Optional[Timing]:
        return self.instrument(Timing)

    @property
    def numerics(self) -> Optional[NumericsCheck]:
        return self.instrument(NumericsCheck)

    def run(self, graph: Graph, ctx: Optional[PassContext] = None) -> Graph:
        """Run every pass on ``graph``; returns the final graph (the input is never mutated)."""
        ctx = with_defaults(ctx if ctx is not None else PassContext())
        for inst in self.instruments:
            inst.before_pipeline(graph, ctx, self.passes)
        done: list[str] = []
        with native.brief_blas_spin():
            for i, p in enumerate(self.passes):
                new = self._run_one(i, p, graph, ctx, done)
                graph = new
                done.append(p.name)
        for inst in self.instruments:
            inst.after_pipeline(graph, ctx)
        return graph

    def _run_one(self, i: int, p: Pass, graph: Graph, ctx: PassContext, done: list[str]) -> Graph:
        try:
            for inst in self.instruments:
                inst.before_pass(i, p, graph, ctx)
            new = p.run(graph, ctx)
        except PassError as e:
            e.set_completed(done, i)
            raise
        except Exception as e:
            raise PassError(p.name, done, index=i, cause=e) from e
        if not isinstance(new, Graph):
            raise PassError(p.name, done, index=i, reason=f"run() returned {type(new).__name__}, not a Graph")
        for inst in reversed(self.instruments):
            try:
                inst.after_pass(i, p, new, ctx)
            except PassError as e:
                e.set_completed(done, i)
                raise
            except Exception as e:
                reason = f"its result failed the {type(inst).__name__} check: {type(e).__name__}: {e}"
                raise PassError(p.name, done, index=i, reason=reason, cause=e) from e
        return new

    def __repr__(self) -> str:
        return f"PassManager({format_pipeline(self.passes)!r})"


def run_pipeline(graph: Graph, spec: PipelineSpec, ctx: Optional[PassContext] = None, **opts) -> Graph:
    """Parse ``spec``, run it on ``graph`` with a :class:`PassManager` (``opts`` go to it)."""
    return PassManager(spec, **opts).run(graph, ctx)
