"""The pass manager, pipelines and recipes, instruments, and the torch.compile / JAX entry points."""

from .context import make_context, with_defaults
from .instruments import (
    DumpIR,
    Instrument,
    NumericsCheck,
    NumericsError,
    NumericsRecord,
    PassError,
    Timing,
    VerifyInstrument,
)
from .pass_manager import PassManager, run_pipeline
from .pipeline import (
    PRESETS,
    PipelineError,
    format_pipeline,
    load_pipeline_file,
    parse_pipeline,
    parse_pipeline_string,
    parse_yaml,
)

__all__ = [
    "PRESETS", "DumpIR", "Instrument", "NumericsCheck", "NumericsError", "NumericsRecord", "PassError",
    "PassManager", "PipelineError", "Timing", "VerifyInstrument", "format_pipeline", "load_pipeline_file",
    "make_context", "parse_pipeline", "parse_pipeline_string", "parse_yaml", "run_pipeline", "with_defaults",
]
