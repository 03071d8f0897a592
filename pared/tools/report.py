"""Compression reports: the per-layer table, totals, PNG plots and an HTML page.

:func:`layer_table` turns a compressed graph (plus the rows its passes reported) into one row per
layer weight: method, measured sparsity, bits, reconstruction error, stored and dense bytes, and
the kernel the cost model picked for it (its ``cost_model`` row, with the timings, stays in the
report rows).
:func:`totals` sums them (size, compression, predicted speed-up of weight-bound kernels, and the
measured numbers when there are some). :func:`write_plots` draws per-layer sparsity and error and
the quality-vs-compression trade-off with matplotlib (Agg, no display); :func:`write_html` puts
everything on one self-contained page (plots embedded as data URIs). :class:`Progress` is the
progress bar of long CLI steps.
"""

from __future__ import annotations

import base64
import html
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..backends.costmodel.choice import REPORT_PASS as COST_MODEL_PASS
from ..ir import Graph
from ..ir.types import Quant, SparseQuant
from .artifact import encode_weight, stored_raw_in_blocks

COMPANION_SEPARATORS = (".", "_", "::", ":")


@dataclass
class LayerRow:
    name: str
    shape: tuple
    method: str
    sparsity: float
    bits: int
    error: Optional[float]
    stored_bytes: int
    dense_bytes: int
    kernel: Optional[str] = None  # what the layer runs on, when a backend's cost model decided it

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": "x".join(map(str, self.shape)), "method": self.method,
                "sparsity": self.sparsity, "bits": self.bits, "error": self.error,
                "bytes": self.stored_bytes, "dense_bytes": self.dense_bytes, "kernel": self.kernel}


QUANT_SUFFIX = ".q"


def _base(name: str) -> str:
    """The layer weight's original name (quantization passes store ``<weight>.q`` + companions)."""
    return name[: -len(QUANT_SUFFIX)] if name.endswith(QUANT_SUFFIX) else name


def _quant_label(r: Mapping[str, Any]) -> str:
    g = r.get("group")
    return f"int{r['bits']}" + (f"-{r['scheme']}" if r.get("scheme") not in (None, "", "sym") else "") + (
        f"-g{g}" if isinstance(g, int) else "")


def _bits(param_type, value: np.ndarray) -> int:
    enc = param_type.encoding
    if isinstance(enc, SparseQuant):
        enc = enc.quant
    if isinstance(enc, Quant):
        return int(enc.bits)
    return int(value.dtype.itemsize * 8)


def _estimate_stored(value: np.ndarray, param_type) -> int:
    """Bytes the artifact stores for a weight (mirrors artifact.encode_weight)."""
    _, parts = encode_weight("w", value, param_type)
    return int(sum(a.nbytes for a in parts.values()))


def layer_table(
    graph: Graph,
    report_rows: Sequence[Mapping[str, Any]] = (),
    stored_bytes: Optional[Mapping[str, int]] = None,
    dense_bytes: Optional[Mapping[str, int]] = None,
) -> list[LayerRow]:
    """One row per layer weight (params of rank >= 2 read by a dot/conv or rewritten by a pass).

    Params named like ``<layer>.scale`` / ``<layer>_zero`` (quantization companions) are folded
    into their layer's bytes. ``dense_bytes`` gives a layer's size before compression (default:
    fp32 of its shape). A ``cost_model`` row (a backend's kernel decision) gives the layer's
    ``kernel``; it is not a compression method.
    """
    from ..passes.calibration import find_weight_sites

    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for r in report_rows:
        by_name.setdefault(str(r.get("name")), []).append(r)
        by_name.setdefault(str(r.get("name")) + QUANT_SUFFIX, []).append(r)
    site_params = {s.param for s in find_weight_sites(graph)}
    types = graph.param_types
    layers = [
        p.name
        for p in graph.params
        if p.name in graph.weights
        and len(p.type.shape) >= 2
        and (p.name in site_params or p.name in by_name or p.type.encoding is not None)
    ]
    layer_set = set(layers)
    companions: dict[str, list[str]] = {n: [] for n in layers}
    for p in graph.params:
        if p.name in layer_set or p.name not in graph.weights:
            continue
        owner = max(
            (n for n in layers if any(p.name.startswith(_base(n) + s) for s in COMPANION_SEPARATORS)),
            key=len,
            default=None,
        )
        if owner is not None:
            companions[owner].append(p.name)
    out = []
    for n in layers:
        t = types[n]
        value = graph.weights[n]
        zeros = None
        if stored_raw_in_blocks(value, t):  # out of core and stored as is: counted a block at a time
            zeros = sum(int(np.count_nonzero(b == 0)) for b in value.blocks()) if value.dtype.kind in "fiu" else 0
        else:
            value = np.asarray(value)
        rows = [r for r in by_name.get(n, []) if "skipped" not in r and r.get("pass") != COST_MODEL_PASS]
        kernel = next(
            (
                str(r["kernel"])
                for r in reversed(by_name.get(n, []))
                if r.get("pass") == COST_MODEL_PASS and "kernel" in r
            ),
            None,
        )
        methods = []
        for r in rows:
            m = r.get("method") or (f"{r.get('pass')}:{_quant_label(r)}" if "bits" in r else r.get("pass"))
            if m and str(m) not in methods:
                methods.append(str(m))
        if not methods:
            methods = ["dense"] if t.encoding is None else [type(t.encoding).__name__.lower()]
        pattern = next((str(r["pattern"]) for r in rows if r.get("pattern") not in (None, "unstructured")), "")
        method = "+".join(methods) + (f" {pattern}" if pattern else "")
        errors = [
            float(r.get("error", r.get("rel_err")))
            for r in rows
            if isinstance(r.get("error", r.get("rel_err")), (int, float))
        ]
        stored = (stored_bytes or {}).get(n)
        if stored is None:
            stored = value.nbytes if zeros is not None else _estimate_stored(value, t)
        stored += sum((stored_bytes or {}).get(c, np.asarray(graph.weights[c]).nbytes) for c in companions[n])
        shape = tuple(int(d) for d in value.shape)
        dense = (dense_bytes or {}).get(n, int(np.prod(shape, dtype=np.int64)) * 4)
        if zeros is not None:
            sparsity = zeros / value.size if value.size else 0.0
        else:
            sparsity = float(np.mean(value == 0)) if value.dtype.kind in "fiu" and value.size else 0.0
        out.append(
            LayerRow(
                _base(n),
                shape,
                method,
                sparsity,
                _bits(t, value),
                errors[-1] if errors else None,
                int(stored),
                int(dense),
                kernel,
            )
        )
    return out


def totals(
    graph: Graph,
    rows: Sequence[LayerRow],
    stored_bytes: Optional[Mapping[str, int]] = None,
    measured: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Size of the whole model (layers + everything else), compression, predicted and measured speed.

    The predicted speed-up is the layers' dense/stored byte ratio: what a weight-bandwidth-bound
    kernel (batch-1 decoding) would gain at best, ignoring activations; the measured numbers come
    from :func:`pared.tools.cli` ``bench`` or the demo.
    """
    in_layers = {r.name for r in rows}
    other = 0
    for p in graph.params:
        if (
            p.name in graph.weights
            and _base(p.name) not in in_layers
            and not any(p.name.startswith(n + s) for n in in_layers for s in COMPANION_SEPARATORS)
        ):
            other += int((stored_bytes or {}).get(p.name, np.asarray(graph.weights[p.name]).nbytes))
    layer_stored = sum(r.stored_bytes for r in rows)
    layer_dense = sum(r.dense_bytes for r in rows)
    n_w = sum(int(np.prod(r.shape)) for r in rows)
    out = {
        "layers": len(rows),
        "compressed_layers": sum(1 for r in rows if r.method != "dense"),
        "layer_bytes_dense": layer_dense,
        "layer_bytes_stored": layer_stored,
        "model_bytes_dense": layer_dense + other,
        "model_bytes_stored": layer_stored + other,
        "compression_layers": layer_dense / max(layer_stored, 1),
        "compression_model": (layer_dense + other) / max(layer_stored + other, 1),
        "mean_sparsity": sum(r.sparsity * np.prod(r.shape) for r in rows) / max(n_w, 1),
        "predicted_speedup_weight_bound": layer_dense / max(layer_stored, 1),
    }
    out.update(dict(measured or {}))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def format_table(rows: Sequence[LayerRow]) -> str:
    """The per-layer table as aligned text (with a ``kernel`` column when a cost model chose kernels)."""
    head = ["layer", "shape", "method", "sparsity", "bits", "error", "bytes", "dense"]
    cells = [
        [
            r.name,
            "x".join(map(str, r.shape)),
            r.method,
            f"{r.sparsity:.3f}",
            str(r.bits),
            "-" if r.error is None else f"{r.error:.4f}",
            format_bytes(r.stored_bytes),
            format_bytes(r.dense_bytes),
        ]
        for r in rows
    ]
    if any(r.kernel is not None for r in rows):
        head.append("kernel")
        for c, r in zip(cells, rows):
            c.append(r.kernel or "-")
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def format_totals(t: Mapping[str, Any]) -> str:
    lines = [
        f"layers compressed   {t['compressed_layers']}/{t['layers']}",
        f"model size          {format_bytes(t['model_bytes_stored'])} (dense {format_bytes(t['model_bytes_dense'])}, "
        f"{t['compression_model']:.2f}x smaller)",
        f"layer weights       {format_bytes(t['layer_bytes_stored'])} (dense {format_bytes(t['layer_bytes_dense'])}, "
        f"{t['compression_layers']:.2f}x smaller)",
        f"mean sparsity       {t['mean_sparsity']:.3f}",
        f"predicted speed-up  {t['predicted_speedup_weight_bound']:.2f}x (weight-bandwidth bound, best case)",
    ]
    for k, v in t.items():
        if k.startswith("measured_"):
            lines.append(f"{k.replace('_', ' '):<19} {_fmt(v)}")
    return "\n".join(lines)


# --- plots ------------------------------------------------------------------------------------------


def _short(name: str) -> str:
    parts = name.replace(".weight", "").split(".")
    keep = [p for p in parts if p not in ("encoder", "layer", "layers", "model", "attention", "self")]
    return ".".join(keep[-3:])


def write_plots(
    out_dir: Path, rows: Sequence[LayerRow], tradeoff: Sequence[Mapping[str, Any]] = (), title: str = ""
) -> dict[str, Path]:
    """Write ``layers.png`` (per-layer sparsity and reconstruction error) and, given points, ``tradeoff.png``
    (quality vs compression: each point ``{"label", "compression", "quality", "quality_name"}``)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = {}
    if rows:
        x = np.arange(len(rows))
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 0.28 * len(rows) + 2), 7), sharex=True)
        colors = ["tab:blue" if r.method != "dense" else "tab:gray" for r in rows]
        ax1.bar(x, [r.sparsity for r in rows], color=colors)
        ax1.set_ylabel("sparsity (fraction of zeros)")
        ax1.set_ylim(0, 1)
        ax1.set_title(title or "per-layer sparsity and reconstruction error")
        for xi, r in zip(x, rows):
            if r.bits < 16:
                ax1.text(xi, min(r.sparsity + 0.03, 0.95), f"{r.bits}b", ha="center", fontsize=6)
        errs = [r.error if r.error is not None else 0.0 for r in rows]
        ax2.bar(x, errs, color="tab:red")
        ax2.set_ylabel("relative error ||WX-W'X||/||WX||")
        if not any(r.error is not None for r in rows):
            ax2.text(
                0.5, 0.5, "no reconstruction error reported (data-free method)", transform=ax2.transAxes, ha="center"
            )
        ax2.set_xticks(x)
        ax2.set_xticklabels([_short(r.name) for r in rows], rotation=90, fontsize=6)
        fig.tight_layout()
        p = out_dir / "layers.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written["layers"] = p
    if tradeoff:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        qname = next((t.get("quality_name") for t in tradeoff if t.get("quality_name")), "quality")
        for t in tradeoff:
            ax.scatter([t["compression"]], [t["quality"]], s=50, marker="*" if t.get("highlight") else "o")
            ax.annotate(
                str(t["label"]), (t["compression"], t["quality"]), textcoords="offset points", xytext=(5, 5), fontsize=8
            )
        ax.set_xlabel("compression (dense bytes / stored bytes, layer weights)")
        ax.set_ylabel(qname)
        ax.set_title("quality vs compression")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = out_dir / "tradeoff.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written["tradeoff"] = p
    return written


def write_html(
    path: Path,
    *,
    title: str,
    summary: Mapping[str, Any],
    rows: Sequence[LayerRow],
    total: Mapping[str, Any],
    images: Mapping[str, Path] = (),
    extra_tables: Mapping[str, Sequence[Mapping]] = (),
) -> Path:
    """A self-contained HTML page: summary, totals, the plots (embedded) and the per-layer table."""
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;border:1px solid #eee}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    parts.append("<h2>Summary</h2><table>")
    for k, v in summary.items():
        parts.append(f"<tr><th>{e(str(k))}</th><td>{e(_fmt(v))}</td></tr>")
    parts.append("</table><h2>Totals</h2><table>")
    for k, v in total.items():
        shown = format_bytes(v) if "bytes" in k and isinstance(v, (int, float)) else _fmt(v)
        parts.append(f"<tr><th>{e(str(k))}</th><td>{e(shown)}</td></tr>")
    parts.append("</table>")
    for name, table in dict(extra_tables).items():
        if not table:
            continue
        cols = list(table[0])
        parts.append(f"<h2>{e(name)}</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
        for r in table:
            parts.append("<tr>" + "".join(f"<td>{e(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    for name, img in dict(images).items():
        if img is None:
            continue
        data = base64.b64encode(Path(img).read_bytes()).decode()
        parts.append(f"<h2>{e(name)}</h2><img alt='{e(name)}' src='data:image/png;base64,{data}'>")
    kernels = any(r.kernel is not None for r in rows)
    parts.append(
        "<h2>Per-layer table</h2><table><tr>"
        + "".join(
            f"<th>{h}</th>"
            for h in ("layer", "shape", "method", "sparsity", "bits", "error", "bytes", "dense bytes")
            + (("kernel",) if kernels else ())
        )
        + "</tr>"
    )
    for r in rows:
        parts.append(
            f"<tr><td>{e(r.name)}</td><td>{'x'.join(map(str, r.shape))}</td><td>{e(r.method)}</td>"
            f"<td>{r.sparsity:.3f}</td><td>{r.bits}</td><td>{'-' if r.error is None else f'{r.error:.4f}'}</td>"
            f"<td>{format_bytes(r.stored_bytes)}</td><td>{format_bytes(r.dense_bytes)}</td>"
            + (f"<td>{e(r.kernel or '-')}</td>" if kernels else "")
            + "</tr>"
        )
    parts.append("</table></body></html>")
    path = Path(path)
    path.write_text("\n".join(parts))
    return path


# --- progress -----------------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one line per ~25% otherwise."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, stream=None):
        self.total, self.desc, self.n, self.enabled = max(int(total), 1), desc, 0, enabled
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_quarter = -1

    def update(self, k: int = 1, note: str = "") -> None:
        self.n = min(self.n + k, self.total)
        if not self.enabled:
            return
        frac = self.n / self.total
        el = time.perf_counter() - self.t0
        if self._tty:
            bar = "#" * int(30 * frac)
            self.stream.write(f"\r{self.desc}: [{bar:<30}] {self.n}/{self.total} {el:.1f}s {note[:40]:<40}")
            self.stream.flush()
        elif int(frac * 4) != self._last_quarter:
            self._last_quarter = int(frac * 4)
            self.stream.write(f"{self.desc}: {self.n}/{self.total} ({frac:.0%}) {el:.1f}s\n")

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(items: Iterable, desc: str, total: Optional[int] = None, enabled: bool = True):
    """Iterate ``items`` with a :class:`Progress` bar."""
    items = list(items) if total is None else items
    bar = Progress(total if total is not None else len(items), desc, enabled=enabled)
    try:
        for it in items:
            yield it
            bar.update()
    finally:
        bar.close()
