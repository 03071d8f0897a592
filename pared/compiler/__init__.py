"""Frontends, the pass manager, pipelines and recipes, and the entry points built on them."""

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
    "parse_pipeline", "parse_pipeline_string", "parse_yaml", "run_pipeline",
]
