"""The ``pared`` command line: compress a model once, then inspect, evaluate, benchmark and export it.

::

    pared compress MODEL --recipe R [--calib TEXT|DATASET] --out DIR
    pared inspect DIR            per-layer table and totals
    pared eval DIR               quality against the dense source model
    pared bench DIR              speed against the original (eager torch)
    pared export DIR --format hf|int-quantized|pack-quantized --out DIR2
    pared finetune DIR --steps N --out DIR2   distillation fine-tuning against the dense model
    pared passes                 every registered pass with its options, and the presets
    pared demo                   the `make demo` walk-through

MODEL: a bundled name (``minilm``, ``smollm2``), a local Hugging Face folder, or ``module:factory``.
R: a preset (``sparse-2:4``), a pipeline string (``sparsify{method=wanda,sparsity=0.5}``) or a
YAML recipe file. Errors a user can fix are one line on stderr and exit status 2; an interrupted
``compress`` (Ctrl-C, SIGTERM, a kill) never leaves a half-written output directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
import typing
from pathlib import Path
from typing import Optional, Sequence

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _user_errors() -> tuple:
    from ..compiler.instruments import PassError
    from ..compiler.pipeline import PipelineError
    from ..ir.errors import IRError
    from ..passes.base import PassOptionError
    from ..passes.calibration import CalibrationError
    from ..training import CheckpointError, FinetuneError
    from .artifact import ArtifactError
    from .decoding import DecodeError
    from .export import ExportError
    from .lazy_weights import LazyWeightsError
    from .models import ModelError
    from .offline import RecipeError
    from .safetensors_io import SafetensorsError
    from .textdata import TextDataError

    return (
        ArtifactError,
        DecodeError,
        CalibrationError,
        CheckpointError,
        LazyWeightsError,
        ExportError,
        FinetuneError,
        IRError,
        ModelError,
        PassError,
        PassOptionError,
        PipelineError,
        RecipeError,
        SafetensorsError,
        TextDataError,
    )


def _int_at_least(lo: int, what: str):
    """argparse type: an integer >= ``lo`` (``what`` says what it counts, for the docstring)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if n < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {n}")
        return n

    parse.__doc__ = f"argparse type: {what}, an integer >= {lo}"
    return parse


_positive_int = _int_at_least(1, "a count of samples, windows, tokens or repeats")


def _memory_size(text: str) -> int:
    """``4G``, ``4GB``, ``512M``, ``1.5GiB`` or a byte count -> bytes (powers of 1024)."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size: write e.g. 4G, 512M or 1.5GiB")
    return int(float(m.group(1)) * 1024 ** "_KMGT".index(m.group(2) or "_"))
_non_negative_int = _int_at_least(0, "a size that may be 0 (none)")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _default_calib() -> str:
    from .textdata import TextDataError, wikipedia_path

    try:
        wikipedia_path()
        return "wikipedia"
    except TextDataError:
        return "builtin"


# --- commands ------------------------------------------------------------------------------------------


def cmd_compress(a: argparse.Namespace) -> int:
    """Under ``torchrun --nproc-per-node N`` every process calibrates on its share of the batches
    (docs/distributed.md); only rank 0 measures, writes the artifact and prints, the others wait."""
    from ..compiler.distributed import barrier, init_from_env, shutdown

    reducer = init_from_env(log=_log)
    if reducer is None:
        return _compress(a, _log, main=True)
    try:
        return _compress(a, _log if reducer.rank == 0 else (lambda msg: None), main=reducer.rank == 0)
    finally:
        barrier()  # the other ranks wait until rank 0 has written the artifact
        shutdown()


def _compress(a: argparse.Namespace, log, main: bool) -> int:
    if getattr(a, "max_memory", None) is not None:  # out of core: freed blocks go back at once
        from .out_of_core import return_freed_blocks

        return_freed_blocks()
    from ..compiler.distributed import barrier
    from ..compiler.instruments import PassError
    from .artifact import check_free_space, check_output_dir
    from .models import ModelError, resolve_model
    from .offline import compress_model, measure, parse_recipe, save_result
    from .report import format_bytes
    from .textdata import load_texts

    check_output_dir(a.out, a.overwrite)  # fail before any work
    parse_recipe(a.recipe)  # an unknown pass/key/option fails before the model loads
    barrier()  # data-parallel: every rank has checked the output folder before rank 0 may write it
    t0 = time.perf_counter()
    log(f"loading {a.model} ...")
    max_memory = getattr(a, "max_memory", None)
    lm = resolve_model(a.model, seq_len=a.seq_len, out_of_core=max_memory is not None)
    dense_bytes = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    check_free_space(a.out, dense_bytes + (16 << 20))  # never more than the dense weights + tokenizer files
    if a.calib not in (None, "none", "") and lm.tokenizer is None:
        raise ModelError(
            f"--calib {a.calib!r} is text, and model {a.model!r} has no tokenizer to turn it into inputs; "
            "drop --calib (data-free recipes), or pass calibration batches through the Python API: "
            "pared.compress(model, example, recipe=..., calibration=[...])"
        )
    calib = None if a.calib in ("none", "") else (a.calib or (_default_calib() if lm.tokenizer is not None else None))
    log(f"compressing {lm.name} ({type(lm.model).__name__}) with {a.recipe!r}")
    try:
        result = compress_model(lm, a.recipe, calib, n_calib=a.n_calib, log=log, context=a.context,
                                max_memory=max_memory)
    except PassError as e:
        if calib is None and "needs calibration data" in str(e):
            why = (
                "model has no tokenizer, so the CLI cannot make calibration inputs; use the Python API: "
                "pared.compress(model, example, recipe=..., calibration=[...])"
                if lm.tokenizer is None
                else "--calib none was given; drop it (the default calibrates on Wikipedia text)"
            )
            raise ModelError(f"recipe {a.recipe!r} needs calibration data: {why}") from None
        raise
    if not main:
        return 0
    metrics = {}
    if max_memory is not None and not a.no_eval:
        _log("out of core (--max-memory): no quality or speed measurement (it would load every weight)")
    elif not a.no_eval:
        eval_src = a.eval_text or (_default_calib() if lm.tokenizer is not None else "builtin")
        _log(f"measuring quality on {eval_src!r}" + ("" if a.no_bench else " and speed"))
        metrics = measure(
            result,
            load_texts(eval_src, split="evaluation") if lm.tokenizer is not None else [],
            n_eval=a.n_eval,
            bench=not a.no_bench,
        )
    metrics["seconds"] = {
        **{k: round(v, 3) for k, v in result.seconds.items()},
        "total": round(time.perf_counter() - t0, 3),
    }
    out = save_result(result, a.out, metrics, overwrite=a.overwrite)
    size = metrics["size"]
    print(
        f"wrote {out}  ({format_bytes(size['model_bytes_stored'])}, "
        f"{size['compression_model']:.2f}x smaller than dense; "
        f"layer weights {size['compression_layers']:.2f}x)"
    )
    if "quality" in metrics:
        print("quality: " + ", ".join(f"{k}={_num(v)}" for k, v in metrics["quality"].items()))
    if "speed" in metrics:
        s = metrics["speed"]
        print(
            f"speed: eager torch {s['eager_ms']:.1f} ms, pared {s['pared_compressed_ms']:.1f} ms "
            f"({s['speedup_vs_eager']:.2f}x) on {s['input']}"
        )
    print(f"report: {out / 'report.html'}")
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    from .artifact import DECODE_DIR, ArtifactError, load_artifact
    from .decoding import Sampling, generate_tokens, load_tokenizer, stream, zero_cache

    art = load_artifact(a.dir)
    dec = art.decode
    if dec is None:
        raise ArtifactError(f"{a.dir}: no {DECODE_DIR}/ graph: only causal LMs compressed with --context > 0 "
                            "store one; compress the model again")
    tok = load_tokenizer(a.dir)
    if tok is None:
        raise ArtifactError(f"{a.dir}: no tokenizer stored in model/: the prompt cannot be turned into tokens")
    ids = list(tok(a.prompt).input_ids)
    eos = getattr(tok, "eos_token_id", None)
    eos = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
    tokens = generate_tokens(dec.compile(a.backend), ids, zero_cache(dec.graph), max_new_tokens=a.max_new_tokens,
                             sampling=Sampling(a.temperature, a.top_p, a.seed), eos=eos)
    sys.stdout.write(a.prompt)
    stream(tokens, tok)
    return 0


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_inspect(a: argparse.Namespace) -> int:
    from .artifact import load_artifact
    from .report import format_table, format_totals, layer_table, totals

    art = load_artifact(a.dir)
    rows = layer_table(
        art.graph,
        art.report_rows,
        art.stored_bytes(),
        dense_bytes={k: v.get("dense_bytes") for k, v in art.manifest.get("tensors", {}).items()},
    )
    tot = totals(art.graph, rows, art.stored_bytes())
    if a.json:
        print(
            json.dumps(
                {
                    "manifest": {k: v for k, v in art.manifest.items() if k not in ("files", "tensors")},
                    "layers": [r.as_dict() for r in rows],
                    "totals": tot,
                },
                indent=1,
                default=str,
            )
        )
        return 0
    m = art.manifest
    src = m.get("source", {})
    print(f"artifact   {art.path}")
    print(f"pared      {m.get('pared_version')} (format {m.get('format_version')}), created {m.get('created')}")
    print(
        f"source     {src.get('model')} ({src.get('class')}, {src.get('parameters', '?')} params, "
        f"sha256 {str(src.get('sha256'))[:16]}...)"
    )
    print(f"recipe     {art.recipe}")
    print(
        f"graph      {len(art.graph.inputs)} inputs ({', '.join(art.input_names)}), {len(art.graph.eqns)} equations, "
        f"{len(art.graph.params)} params"
    )
    print()
    print(format_table(rows))
    print()
    print(format_totals(tot))
    q = m.get("metrics", {}).get("quality")
    if q:
        print("quality at compress time: " + ", ".join(f"{k}={_num(v)}" for k, v in q.items()))
    return 0


def _source_model(art, seq_len: int):
    from .models import resolve_model

    src = art.source
    name = src.get("model")
    if not name:
        raise ValueError("the artifact does not record its source model; eval/bench need it")
    lm = resolve_model(name, seq_len=seq_len)
    if src.get("sha256") and lm.sha256() != src["sha256"]:
        _log(f"warning: source model {name!r} changed since the artifact was written (sha256 differs)")
    return lm


def cmd_eval(a: argparse.Namespace) -> int:
    from .artifact import load_artifact
    from .textdata import load_texts

    art = load_artifact(a.dir)
    lm = _source_model(art, a.seq_len)
    fn = art.compile(a.backend)
    texts = load_texts(a.text or (_default_calib() if lm.tokenizer is not None else "builtin"), split="evaluation")
    q = lm.quality(lambda ins: fn(*ins) if a.backend == "torch" else fn(*[x.numpy() for x in ins]), texts, n=a.n)
    print(json.dumps({"artifact": str(art.path), "backend": a.backend, "recipe": art.recipe, "quality": q}, indent=1))
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    import torch

    from .artifact import load_artifact
    from .offline import bench_inputs, time_fn
    from .textdata import load_texts

    art = load_artifact(a.dir)
    lm = _source_model(art, a.seq_len)
    texts = load_texts(_default_calib() if lm.tokenizer is not None else "builtin", split="evaluation")
    kw = bench_inputs(lm, texts, batch=a.batch, seq_len=a.seq_len)
    ins = lm.graph_inputs(kw)
    fn = art.compile(a.backend)
    if a.backend == "torch":
        call = lambda: fn(*ins)
    else:
        np_ins = [x.numpy() for x in ins]
        call = lambda: fn(*np_ins)
        if a.backend == "xla":  # XLA dispatches asynchronously: time until the results exist
            import jax

            call = lambda: jax.block_until_ready(fn(*np_ins))
    with torch.no_grad():
        eager = time_fn(lambda: lm.call(kw), repeat=a.repeat)
    comp = time_fn(call, repeat=a.repeat)
    print(f"input { ({k: list(v.shape) for k, v in kw.items()}) }, {torch.get_num_threads()} threads")
    print(f"{'original (eager torch)':<28}{eager:>10.2f} ms")
    print(f"{'pared artifact (' + a.backend + ')':<28}{comp:>10.2f} ms   {eager / comp:.2f}x")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .artifact import load_artifact
    from .export import export

    art = load_artifact(a.dir)
    out = export(art, a.out, a.format, overwrite=a.overwrite)
    print(f"wrote {out} ({a.format})")
    return 0


def _random_batches(graph, n: int, batch: int, seed: int = 0) -> list[tuple]:
    """``n`` batches of random graph inputs (normal floats, small non-negative ints; symbolic dims = batch)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ins = []
        for v in graph.inputs:
            shape = tuple(d if isinstance(d, int) else batch for d in v.type.shape)
            dt = v.type.dtype
            if dt.is_float:
                ins.append(rng.standard_normal(shape).astype(np.float32))
            elif dt.kind == "bool":
                ins.append(np.ones(shape, bool))
            else:
                ins.append(rng.integers(0, 100, shape).astype(dt.np))
        out.append(tuple(ins))
    return out


def cmd_finetune(a: argparse.Namespace) -> int:
    import shutil

    from ..training import finetune
    from .artifact import (
        GRAPH_FILE,
        MANIFEST,
        REPORT_FILE,
        WEIGHTS_FILE,
        check_output_dir,
        load_artifact,
        save_artifact,
    )
    from .models import ModelError
    from .textdata import load_texts

    check_output_dir(a.out, a.overwrite)
    art = load_artifact(a.dir)
    lm, teacher = None, None
    if a.teacher and Path(a.teacher, MANIFEST).is_file():
        teacher = load_artifact(a.teacher).graph
    else:
        from .models import resolve_model

        lm = resolve_model(a.teacher, seq_len=a.seq_len) if a.teacher else _source_model(art, a.seq_len)
        names = list(lm.example_kwargs)

        def teacher(*ins):
            return lm.model(**dict(zip(names, ins))) if names else lm.model(*ins)

    eval_fn = None
    if a.data == "random" or lm is None or lm.tokenizer is None:
        if a.data not in (None, "random"):
            raise ModelError(f"--data {a.data!r} is text, and the teacher has no tokenizer; use --data random")
        data = _random_batches(art.graph, a.n_train, a.batch)
        eval_data = _random_batches(art.graph, 2, a.batch, seed=1)
    else:
        texts = load_texts(a.data or _default_calib(), split="calibration")
        data = [tuple(lm.graph_inputs(kw)) for kw in lm.calibration_batches(texts, n=a.n_train, batch=a.batch)]
        held = load_texts(a.data or _default_calib(), split="evaluation")
        eval_data = None

        def eval_fn(run):
            q = lm.quality(lambda ins: run(ins), held, n=a.n_eval)
            return q.get("cosine_mean", q.get("ppl_ratio", q.get("relative_error")))

    ckpt = a.checkpoint or str(Path(a.out).with_name(Path(a.out).name + ".checkpoint"))
    _log(f"finetuning {a.dir} for {a.steps} steps on {len(data)} batch(es) ({a.backend}); checkpoints in {ckpt}")
    result = finetune(art.graph, teacher, data, steps=a.steps, lr=a.lr, recipe=a.recipe, backend=a.backend,
                      lr_schedule=a.lr_schedule, eval_fn=eval_fn, eval_data=eval_data,
                      eval_every=max(a.steps // 5, 1), checkpoint=ckpt, checkpoint_every=a.checkpoint_every)
    if result.resumed_from is not None:
        _log(f"resumed from the checkpoint at step {result.resumed_from}")
    standard = {MANIFEST, GRAPH_FILE, WEIGHTS_FILE, REPORT_FILE}
    extras = [f for f in art.manifest.get("files", {}) if f not in standard]

    def copy_extras(tmp: Path) -> None:  # tokenizer files and the like travel with the artifact
        for f in extras:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(art.path / f, tmp / f)

    last = result.history[-1]
    recipe = (art.recipe + " + " if art.recipe else "") + f"finetune{{steps={a.steps}}}"
    save_artifact(a.out, result.graph, recipe=recipe, source=art.source, input_names=art.input_names,
                  output_names=art.output_names, report_rows=list(art.report_rows) + result.report.to_dicts(),
                  metrics={**art.manifest.get("metrics", {}), "finetune": last}, extra=copy_extras,
                  overwrite=a.overwrite)
    shutil.rmtree(ckpt, ignore_errors=True)
    figure = f", held-out {last['eval']:.4f}" if "eval" in last else ""
    _log(f"wrote {a.out}: loss {last['loss']:.4g}{figure} after {last['seconds']:.0f} s")
    return 0


def describe_pass(cls) -> list[str]:
    doc = (cls.__doc__ or "").strip().splitlines()
    lines = [f"{cls.name}: {doc[0] if doc else ''}"]
    hints = typing.get_type_hints(cls)
    from ..passes.base import describe_type

    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        )
        lines.append(f"    {f.name:<18} {describe_type(hints[f.name]):<36} default {default!r}")
    return lines


def cmd_passes(a: argparse.Namespace) -> int:
    from ..compiler.presets import PRESETS, register_builtin_passes
    from ..passes.base import available_passes, get_pass

    register_builtin_passes()
    for name in available_passes():
        print("\n".join(describe_pass(get_pass(name))))
    print("\npresets:")
    for k, v in PRESETS.items():
        print(f"    {k:<16} {v}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from . import demo

    return demo.main([] if a.fast is False else ["--fast"])


# --- argument parsing ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pared", description="pared: compress a model once, save it, load it anywhere.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("compress", help="compress MODEL with a recipe and save the artifact")
    c.add_argument("model", metavar="MODEL", help="bundled name (minilm, smollm2), HF folder, or module:factory")
    c.add_argument("--recipe", "-r", required=True, help="preset, pipeline string, or YAML recipe file")
    c.add_argument(
        "--calib",
        help="calibration text: 'wikipedia', 'builtin', a text file, literal text, or 'none' "
        "(default: wikipedia when installed)",
    )
    c.add_argument("--n-calib", type=_positive_int, default=32, help="calibration samples (sentences or windows)")
    c.add_argument("--out", "-o", required=True, help="output artifact directory")
    c.add_argument("--overwrite", action="store_true", help="replace an existing artifact at --out")
    c.add_argument("--eval-text", help="evaluation text source (default: the held-out half of wikipedia)")
    c.add_argument("--n-eval", type=_positive_int, default=64)
    c.add_argument("--seq-len", type=_positive_int, default=128)
    c.add_argument("--no-eval", action="store_true", help="skip the quality and speed measurement")
    c.add_argument("--no-bench", action="store_true", help="skip the speed measurement")
    c.add_argument("--context", type=_non_negative_int, default=1024,
                   help="causal LMs: KV-cache positions of the stored decode graph (prompt + new tokens; "
                   "0: store none)")
    c.add_argument("--max-memory", type=_memory_size, metavar="SIZE",
                   help="compress out of core within SIZE (e.g. 4G, 512M): weights stay in the model folder's "
                   "safetensors shards until calibration reaches them; refused before calibration when the "
                   "printed memory plan does not fit (docs/out_of_core.md). No quality/speed measurement")
    c.set_defaults(fn=cmd_compress)

    g = sub.add_parser("generate", help="generate text from a compressed causal LM (its decode graph)")
    g.add_argument("dir", help="artifact directory (from `pared compress` of a causal LM)")
    g.add_argument("prompt")
    g.add_argument("--max-new-tokens", "-n", type=_positive_int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--backend", choices=("torch", "reference"), default="torch")
    g.set_defaults(fn=cmd_generate)

    i = sub.add_parser("inspect", help="per-layer table and totals of an artifact")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_inspect)

    e = sub.add_parser("eval", help="quality of an artifact against its dense source model")
    e.add_argument("dir")
    e.add_argument("--backend", default="torch", choices=("torch", "reference", "xla"))
    e.add_argument("--text", help="evaluation text source")
    e.add_argument("-n", type=_positive_int, default=64, help="sentences (encoders) or 8x windows (causal LMs)")
    e.add_argument("--seq-len", type=_positive_int, default=128)
    e.set_defaults(fn=cmd_eval)

    b = sub.add_parser("bench", help="speed of an artifact against the original model")
    b.add_argument("dir")
    b.add_argument("--backend", default="torch", choices=("torch", "reference", "xla"))
    b.add_argument("--batch", type=_positive_int, default=8)
    b.add_argument("--seq-len", type=_positive_int, default=128)
    b.add_argument("--repeat", type=_positive_int, default=10)
    b.set_defaults(fn=cmd_bench)

    x = sub.add_parser("export", help="export an artifact: HF checkpoint (dense) or compressed-tensors")
    x.add_argument("dir")
    x.add_argument("--format", "-f", required=True, choices=("hf", "int-quantized", "pack-quantized"))
    x.add_argument("--out", "-o", required=True)
    x.add_argument("--overwrite", action="store_true")
    x.set_defaults(fn=cmd_export)

    f = sub.add_parser("finetune", help="distillation fine-tuning of an artifact against its dense model")
    f.add_argument("dir", help="a compressed artifact (one-shot sparse), or a dense one with --recipe")
    f.add_argument("--steps", type=_positive_int, required=True)
    f.add_argument("--out", "-o", required=True, help="output artifact directory")
    f.add_argument("--recipe", "-r", help="training passes, e.g. 'train_sparse{pattern=2:4,schedule=dynamic}' "
                   "(default: keep the artifact's sparse masks)")
    f.add_argument("--teacher", help="the dense model: an artifact directory or MODEL (default: the source model)")
    f.add_argument("--data", help="training text ('wikipedia', 'builtin', a file) or 'random' inputs")
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--lr-schedule", default="cosine", choices=("constant", "cosine"))
    f.add_argument("--batch", type=_positive_int, default=8)
    f.add_argument("--n-train", type=_positive_int, default=256, help="training samples (sentences or windows)")
    f.add_argument("--n-eval", type=_positive_int, default=64)
    f.add_argument("--seq-len", type=_positive_int, default=128)
    f.add_argument("--backend", default="torch", choices=("torch", "xla"))
    f.add_argument("--checkpoint", help="checkpoint directory (default: OUT.checkpoint; a rerun resumes from it)")
    f.add_argument("--checkpoint-every", type=_positive_int, default=50)
    f.add_argument("--overwrite", action="store_true")
    f.set_defaults(fn=cmd_finetune)

    ps = sub.add_parser("passes", help="list every pass with its options, and the presets")
    ps.set_defaults(fn=cmd_passes)

    d = sub.add_parser("demo", help="compress all-MiniLM-L6-v2 and report quality, size and speed")
    d.add_argument("--fast", action="store_true", help="fewer samples (for tests)")
    d.set_defaults(fn=cmd_demo)
    return p


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        previous = signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        extra = f"; {args.out} was not written" if getattr(args, "out", None) and not Path(args.out).exists() else ""
        _log(f"pared {args.command}: interrupted{extra}")
        return EXIT_INTERRUPTED
    except _user_errors() as e:
        _log(f"pared {args.command}: error: {e}")
        return EXIT_USER_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
