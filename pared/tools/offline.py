"""Offline rewriting: compress a model once with a recipe, measure it, save it as an artifact.

This is what ``pared compress`` and ``make demo`` run::

    lm = resolve_model("minilm")
    result = compress_model(lm, "sparse-2:4", calib="wikipedia")
    metrics = measure(result, eval_texts)           # quality, size, speed vs the dense model
    save_result(result, "out/minilm-24", metrics)   # atomic: complete or absent

Capture goes through the torch frontend (``torch.export``) once; the recipe's passes run on the
captured IR with calibration batches built from text; the torch backend runs the result.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..compiler.pipeline import PipelineError, format_pipeline, parse_pipeline
from ..compiler.presets import PRESETS, register_builtin_passes
from ..passes.base import Pass
from ..passes.context import Report
from ..passes.layer_patterns import LayerPatternError, no_match_message, unmatched
from .artifact import DECODE_DIR, save_artifact
from .decoding import cache_names, share_weights
from .models import TOKENIZER_FILES, LoadedModel
from .report import layer_table, totals, write_html, write_plots

INCLUDE_OPTIONS = ("targets", "include", "layers", "modules")
EXCLUDE_OPTIONS = ("exclude", "ignore")


class RecipeError(ValueError):
    """The recipe cannot be used with this model (unknown pass/key/option, or a layer pattern
    that matches nothing); raised before any pass runs."""


def parse_recipe(spec: Any) -> tuple[list[Pass], str]:
    """(passes, the recipe text as given). ``spec``: a preset name, a pipeline string, or a file:
    YAML (``.yaml``/``.yml``) or a pipeline string in any other file (``recipe.txt``)."""
    register_builtin_passes()
    path = Path(spec) if isinstance(spec, (str, Path)) else None
    is_file = path is not None and path.is_file()
    if path is not None and not is_file and path.suffix in (".yaml", ".yml", ".txt", ".recipe"):
        raise RecipeError(f"recipe file {str(path)!r} not found")
    if is_file and path.suffix not in (".yaml", ".yml"):
        source = path.read_text()
        spec = "".join(line.split("#", 1)[0].strip() for line in source.splitlines())  # one pipeline string
    elif is_file:
        source = path.read_text()
    else:
        source = str(spec) if isinstance(spec, (str, Path)) else repr(spec)
    try:
        passes = parse_pipeline(spec if not isinstance(spec, Path) else str(spec))
    except PipelineError as e:
        where = f" (in {str(path)!r})" if is_file else ""
        raise RecipeError(f"bad recipe{where}: {e}\n(presets: {', '.join(sorted(PRESETS))}; `pared passes` lists every "
                          "pass and its options)") from None
    if not passes:
        raise RecipeError(f"recipe {source!r} has no passes")
    return passes, source


def check_layer_patterns(passes: Sequence[Pass], graph) -> list[str]:
    """Every layer-selecting regex in the recipe must match some param of ``graph``.

    A ``targets``-like option that matches nothing raises :class:`RecipeError` (the user meant a
    layer that is not there: a typo, or a recipe written for another model); an ``exclude``-like
    one that matches nothing only returns a warning.
    """
    names = [p.name for p in graph.params]
    warnings_: list[str] = []
    for k, p in enumerate(passes):
        for opt in (*INCLUDE_OPTIONS, *EXCLUDE_OPTIONS):
            where = f"pass {k} ({p.name}): "
            try:
                bad = unmatched(
                    getattr(p, opt, None) if isinstance(getattr(p, opt, None), (str, tuple, list)) else None,
                    names,
                    opt,
                    where,
                )
            except LayerPatternError as e:
                raise RecipeError(str(e)) from None
            for rx in bad:
                msg = no_match_message(rx, names, opt, where)
                if opt in INCLUDE_OPTIONS:
                    raise RecipeError(msg)
                warnings_.append(msg)
    return warnings_


@dataclass
class CompressResult:
    """The outcome of :func:`compress_model` (everything :func:`save_result` and the report need)."""

    lm: LoadedModel
    passes: list
    recipe: str
    recipe_source: str
    dense: Any  # CompiledGraph of the captured graph, no passes
    compiled: Any  # CompiledGraph after the recipe
    calib_batches: int = 0
    seconds: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    decode: Any = None  # (decode-step Graph, context) for a causal LM: saved as the artifact's decode/

    @property
    def graph(self):
        return self.compiled.graph

    @property
    def report(self) -> Report:
        return self.compiled.report

    def run(self, inputs: Sequence[Any]) -> list:
        """The compressed model on the torch backend, on graph inputs."""
        import torch

        with torch.no_grad():
            return list(self.compiled.fn(*inputs))

    def run_dense(self, inputs: Sequence[Any]) -> list:
        import torch

        with torch.no_grad():
            return list(self.dense.fn(*inputs))


def compress_model(
    lm: LoadedModel,
    recipe: Any,
    calib: Optional[str] = None,
    *,
    n_calib: int = 32,
    log: Callable[[str], None] = print,
    verify: bool = True,
    context: int = 1024,
    max_memory: Optional[int] = None,
    staging_dir: Optional[str] = None,
) -> CompressResult:
    """Capture ``lm`` once, check the recipe against it, run the passes with calibration from text.

    For a causal LM, also build its decode step over a static KV cache of ``context`` positions
    with the compressed weights (:func:`pared.tools.decoding.build_decode_graph`; 0 skips it).

    Out of core (``lm.out_of_core`` or a ``max_memory`` budget in bytes; docs/out_of_core.md): the
    weights stay on disk until calibration reaches their layer, rewritten weights are staged in
    ``staging_dir`` (a temporary folder, removed with the result, when None), the graph is not
    lowered (nothing runs it: no quality/speed measurement) and no decode graph is built; a budget
    the streamed memory plan cannot meet raises :class:`~pared.passes.calibration.CalibrationError`
    before calibration starts."""
    from ..compiler.pipeline import unmatched_rewrites
    from ..compiler.torch_api import compress_torch
    from ..compiler.torch_backend import compile_imported
    from .textdata import load_texts

    passes, source = parse_recipe(recipe)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    dense = lm.captured
    out_of_core = lm.out_of_core or max_memory is not None
    if dense is None and out_of_core:
        from .out_of_core import capture

        dense = lm.captured = capture(lm)
    if dense is None:  # capture once per loaded model; every recipe starts from the same IR
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dense_module, _ = compress_torch(lm.model, lm.example_args, example_kwargs=lm.example_kwargs, recipe=None)
        dense = lm.captured = dense_module.compiled
    seconds["capture"] = time.perf_counter() - t0
    if dense.imported.opaque:
        raise RecipeError(
            f"{lm.name}: {len(dense.imported.opaque)} op(s) could not be captured into the IR "
            f"({', '.join(sorted({o.name for o in dense.imported.opaque.values()}))}); "
            "such a graph cannot be saved as an artifact"
        )
    warns = check_layer_patterns(passes, dense.graph)
    for w in warns:
        log(f"warning: {w}")
    batches = None
    if calib:
        t0 = time.perf_counter()
        texts = load_texts(calib, split="calibration")
        kw_batches = lm.calibration_batches(texts, n=n_calib)
        batches = [tuple(lm.graph_inputs(kw)) for kw in kw_batches]
        seconds["calibration_data"] = time.perf_counter() - t0
        log(f"calibration: {len(batches)} batch(es) from {calib!r}")
    t0 = time.perf_counter()
    if out_of_core:
        from .out_of_core import run_passes

        compiled = run_passes(dense.imported, passes, batches, max_memory=max_memory, staging_dir=staging_dir,
                              verify=verify)
        if lm.kind == "causal-lm" and context:
            log("out of core: no decode graph is built (`pared generate` will not work on this artifact)")
            context = 0
    else:
        compiled = compile_imported(dense.imported, recipe=passes, calibration=batches, target="torch",
                                    verify=verify)
    seconds["passes"] = time.perf_counter() - t0
    unmatched = unmatched_rewrites(passes, compiled.report, len(dense.graph.params))
    for w in unmatched:
        log(f"warning: {w}")
    warns = [*warns, *unmatched]
    decode = None
    if lm.kind == "causal-lm" and context:
        from ..passes.replay import ReplayError
        from .decoding import DecodeError, build_decode_graph, lower_for_torch

        t0 = time.perf_counter()
        try:
            graph, ctx_len = build_decode_graph(dense.imported.graph, compiled.graph, lm.model, context, log=log)
            decode = (lower_for_torch(graph), ctx_len)
        except (DecodeError, ReplayError) as e:
            msg = f"no decode graph stored (`pared generate` will not work on this artifact): {e}"
            log(f"warning: {msg}")
            warns.append(msg)
        seconds["decode_graph"] = time.perf_counter() - t0
    return CompressResult(
        lm, passes, format_pipeline(passes), source, dense, compiled, len(batches or []), seconds, warns, decode
    )


def bench_inputs(lm: LoadedModel, texts: Sequence[str], batch: int = 8, seq_len: int = 128) -> dict:
    """Model-level keyword inputs for timing: ``batch`` sequences of up to ``seq_len`` tokens."""
    if lm.tokenizer is None:  # a factory's example call: its keyword or positional tensors
        return dict(lm.example_kwargs) or {f"arg{k}": v for k, v in enumerate(lm.example_args)}
    if lm.kind == "causal-lm":
        wins = lm.windows(list(texts), batch, seq_len)
        import torch

        return {k: torch.cat([w[k] for w in wins]) for k in wins[0]}
    from .textdata import sentences

    return lm.encode(sentences(list(texts), batch) or list(texts)[:batch], seq_len)


def time_fn(fn: Callable[[], Any], *, repeat: int = 10, min_seconds: float = 0.5) -> float:
    """Median milliseconds of ``fn()`` after one warm-up call."""
    import statistics

    fn()
    times = []
    t_start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - t_start < min_seconds and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure(
    result: CompressResult, eval_texts: Sequence[str], *, n_eval: int = 64, bench: bool = True, repeat: int = 10
) -> dict:
    """Quality (vs dense, on ``eval_texts``), and speed of dense eager torch vs pared's torch backend."""
    import torch

    lm = result.lm
    metrics: dict[str, Any] = {"quality": lm.quality(result.run, list(eval_texts), n=n_eval)}
    if bench:
        kw = bench_inputs(lm, eval_texts)
        ins = lm.graph_inputs(kw)
        with torch.no_grad():
            eager = time_fn(lambda: lm.call(kw), repeat=repeat)
        dense = time_fn(lambda: result.run_dense(ins), repeat=repeat)
        comp = time_fn(lambda: result.run(ins), repeat=repeat)
        metrics["speed"] = {
            "input": {k: list(v.shape) for k, v in kw.items()},
            "threads": torch.get_num_threads(),
            "eager_ms": eager,
            "pared_dense_ms": dense,
            "pared_compressed_ms": comp,
            "speedup_vs_eager": eager / comp,
        }
    return metrics


def _copy_tokenizer(lm: LoadedModel, dest: Path) -> None:
    if lm.hf_dir is None:
        return
    files = [f for f in (*TOKENIZER_FILES, "config.json") if (lm.hf_dir / f).is_file()]
    if not files:
        return
    (dest / "model").mkdir(exist_ok=True)
    for f in files:
        shutil.copy2(lm.hf_dir / f, dest / "model" / f)


def save_result(
    result: CompressResult,
    out: Any,
    metrics: Optional[dict] = None,
    *,
    overwrite: bool = False,
    tradeoff: Sequence[dict] = (),
    html: bool = True,
) -> Path:
    """Save the compressed graph as an artifact with its report (table, plots, html), atomically."""
    lm = result.lm
    dense_bytes = {k: int(v.numel() * v.element_size()) for k, v in lm.model.state_dict().items()}
    rows = layer_table(result.graph, result.report.to_dicts(), dense_bytes=dense_bytes)
    tot = totals(result.graph, rows)
    metrics = metrics if metrics is not None else {}
    metrics["size"] = dict(tot)  # the caller's dict gains the sizes too
    q = metrics.get("quality", {})
    points = list(tradeoff) or (
        [_tradeoff_point("dense", 1.0, q, dense=True), _tradeoff_point(result.recipe, tot["compression_layers"], q)]
        if q
        else []
    )

    def extra(tmp: Path) -> None:
        _copy_tokenizer(lm, tmp)
        if result.decode is not None:
            graph, context = result.decode
            graph, shared = share_weights(graph, result.graph)
            names = cache_names(graph)
            save_artifact(tmp / DECODE_DIR, graph, recipe=result.recipe, recipe_source=result.recipe_source,
                          source={**lm.source(), "context": context}, input_names=["input_ids", "start", *names],
                          output_names=["logits", *names], shared=shared)
        if not html:
            return
        images = write_plots(tmp, rows, [p for p in points if p], title=f"{lm.name}: {result.recipe}")
        write_html(
            tmp / "report.html",
            title=f"pared report: {lm.name} with {result.recipe}",
            summary=_summary(result, metrics),
            rows=rows,
            total=tot,
            images={
                "per-layer sparsity and error": images.get("layers"),
                "quality vs compression": images.get("tradeoff"),
            }
            if images
            else {},
            extra_tables={},
        )

    return save_artifact(
        out,
        result.graph,
        recipe=result.recipe,
        recipe_source=result.recipe_source,
        source=lm.source(),
        input_names=lm.input_names,
        output_names=_output_names(lm),
        report_rows=result.report.to_dicts(),
        metrics=metrics,
        extra=extra,
        overwrite=overwrite,
        dense_bytes=dense_bytes,
    )


def _tradeoff_point(label: str, compression: float, quality: dict, dense: bool = False) -> Optional[dict]:
    name, value = quality_value(quality, dense)
    if value is None:
        return None
    return {"label": label, "compression": compression, "quality": value, "quality_name": name, "highlight": not dense}


def quality_value(q: dict, dense: bool = False) -> tuple[str, Optional[float]]:
    """(name, value) of the headline quality number (1.0 for the dense model)."""
    m = q.get("metric")
    if m == "cosine":
        return "embedding cosine vs dense", 1.0 if dense else q.get("cosine_mean")
    if m == "perplexity":
        return "perplexity ratio to dense", 1.0 if dense else q.get("ppl_ratio")
    if m == "relative_error":
        return "relative output error", 0.0 if dense else q.get("relative_error")
    return "quality", None


def _summary(result: CompressResult, metrics: dict) -> dict:
    lm = result.lm
    s = {
        "model": lm.name,
        "class": type(lm.model).__name__,
        "recipe": result.recipe,
        "calibration batches": result.calib_batches,
    }
    for k, v in metrics.get("quality", {}).items():
        s[f"quality: {k}"] = v
    for k, v in metrics.get("speed", {}).items():
        s[f"speed: {k}"] = v
    for k, v in result.seconds.items():
        s[f"seconds: {k}"] = round(v, 2)
    return s


def _output_names(lm: LoadedModel) -> list[str]:
    if lm.kind == "encoder":
        return ["last_hidden_state", "pooler_output"]
    if lm.kind == "causal-lm":
        return ["logits"]
    return []
