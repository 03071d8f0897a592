"""Reports: the per-layer table and totals, PNG plots, the HTML page and the progress bar."""

from __future__ import annotations

import io

import pytest

from pared.compiler.pass_manager import run_pipeline
from pared.compiler.presets import register_builtin_passes
from pared.passes.context import PassContext
from pared.tools.report import Progress, format_table, format_totals, layer_table, totals, write_html, write_plots
from tests.compiler.mlp import build_mlp

register_builtin_passes()


@pytest.fixture
def compressed():
    ctx = PassContext()
    g = run_pipeline(build_mlp(), "cleanup,sparsify{method=magnitude,pattern=2:4}", ctx)
    return g, ctx.report.to_dicts()


def test_layer_table_and_totals(compressed):
    g, rows = compressed
    table = layer_table(g, rows)
    assert [r.name for r in table] == ["fc1.weight", "fc2.weight"]
    assert all(r.method == "magnitude 2:4" and r.sparsity == 0.5 and r.bits == 32 for r in table)
    assert all(r.stored_bytes < 0.6 * r.dense_bytes for r in table)
    t = totals(g, table, measured={"measured_speedup": 1.5})
    assert t["compressed_layers"] == 2 and 1.8 < t["compression_layers"] < 2.0
    assert t["model_bytes_dense"] > t["layer_bytes_dense"]  # biases count in the model size
    text = format_table(table) + "\n" + format_totals(t)
    assert "fc1.weight" in text and "magnitude 2:4" in text and "measured speedup" in text


def test_plots_and_html(compressed, tmp_path):
    g, rows = compressed
    pytest.importorskip("matplotlib")
    table = layer_table(g, rows)
    imgs = write_plots(tmp_path, table, [{"label": "dense", "compression": 1.0, "quality": 1.0},
                                         {"label": "2:4", "compression": 1.9, "quality": 0.9, "highlight": True}])
    for p in imgs.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    page = write_html(tmp_path / "r.html", title="t", summary={"model": "mlp"}, rows=table, total=totals(g, table),
                      images={"layers": imgs["layers"], "tradeoff": imgs["tradeoff"], "missing": None})
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 2 and "fc2.weight" in html and "<h1>t</h1>" in html


def test_progress_lines_when_not_a_tty():
    s = io.StringIO()
    bar = Progress(8, "eval", stream=s)
    for _ in range(8):
        bar.update()
    bar.close()
    lines = s.getvalue().splitlines()
    assert lines[0].startswith("eval: 1/8") and lines[-1].startswith("eval: 8/8 (100%)") and len(lines) == 5
