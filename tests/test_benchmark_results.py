"""benchmarks/results.py: a benchmark's new run replaces its section of RESULTS.md, and the text it
replaces moves verbatim to the top of history/<name>.md (no benchmark is run here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "benchmark_results", Path(__file__).resolve().parents[1] / "benchmarks" / "results.py"
)
results = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(results)

HEAD = "# Benchmark results\n\nIntro.\n\n## Headline figures\n\n| what | figure |\n|---|---|\n| x | 1.0x |\n"
OLD_X = "## x_speed\n\n- date 2026-01-01\n\n| row | ms |\n|---|---|\n| a | 1.0 |\n\nWhy it is so.\n"
CODE = "## y_cost\n\n```\n## not a heading inside code\n```\n"
SPLIT = "## z_quality\n\nIntro of z.\n\n### part A\n\nA old.\n\n### part B\n\nB old.\n"


@pytest.fixture
def md(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(HEAD + "\n" + OLD_X + "\n" + CODE + "\n" + SPLIT)
    return path


def test_replace_moves_the_old_section_to_history(md, capsys):
    new = "## x_speed\n\n- date 2026-02-02\n\n| row | ms |\n|---|---|\n| a | 0.5 |\n"
    hist = results.write_section("x_speed", new, results=md)
    assert hist == md.parent / "history" / "x_speed.md"
    assert (
        md.read_text() == HEAD + "\n" + new + "\n" + CODE + "\n" + SPLIT
    )  # the rest, headline table included, unchanged
    h = hist.read_text()
    assert h.startswith("# x_speed: superseded runs\n") and h.endswith("\n" + OLD_X)
    assert "headline table" in capsys.readouterr().out

    newer = new.replace("2026-02-02", "2026-03-03").replace("0.5", "0.4")
    results.write_section("x_speed", newer, results=md, quiet=True)
    h = hist.read_text()
    assert h.index(new) < h.index(OLD_X)  # newest first
    assert md.read_text().count("## x_speed") == 1 and "2026-03-03" in md.read_text()


def test_a_heading_inside_a_code_block_does_not_end_a_section(md):
    results.write_section("y_cost", "## y_cost\n\nnew\n", results=md, quiet=True)
    assert (md.parent / "history" / "y_cost.md").read_text().endswith("\n" + CODE)
    text = md.read_text()
    assert "## not a heading" not in text and "## y_cost\n\nnew\n\n## z_quality" in text


def test_replace_one_part_keeps_the_others(md):
    hist = results.write_section("z_quality", "### part B\n\nB new.\n", results=md, part="part B", quiet=True)
    assert md.read_text().endswith("## z_quality\n\nIntro of z.\n\n### part A\n\nA old.\n\n### part B\n\nB new.\n")
    assert hist.read_text().endswith("\n### part B\n\nB old.\n")
    results.write_section("z_quality", "### part A\n\nA new.\n", results=md, part="part A", quiet=True)
    assert "### part A\n\nA new.\n\n### part B\n\nB new.\n" in md.read_text()
    h = hist.read_text()
    assert h.index("A old.") < h.index("B old.")


def test_new_sections_and_parts_are_added_at_the_end(md, tmp_path):
    assert results.write_section("w_new", "## w_new\n\nfirst\n", results=md, quiet=True) is None
    assert md.read_text().endswith("B old.\n\n## w_new\n\nfirst\n")
    assert results.write_section("z_quality", "### part C\n\nC.\n", results=md, part="part C", quiet=True) is None
    assert "B old.\n\n### part C\n\nC.\n\n## w_new" in md.read_text()
    fresh = tmp_path / "sub" / "R.md"
    results.write_section("v", "### p\n\nv.\n", results=fresh, part="p", quiet=True)
    assert fresh.read_text() == "# Benchmark results\n\n## v\n\n### p\n\nv.\n"
    assert not (tmp_path / "history" / "w_new.md").exists()


def test_text_must_carry_its_own_heading_and_no_other(md):
    before = md.read_text()
    with pytest.raises(ValueError, match="must start with"):
        results.write_section("x_speed", "## x_speed: old style\n\nx\n", results=md)
    with pytest.raises(ValueError, match="another heading"):
        results.write_section("x_speed", "## x_speed\n\nx\n\n## y_cost\n", results=md)
    with pytest.raises(ValueError, match="must start with"):
        results.write_section("z_quality", "## z_quality\n\nx\n", results=md, part="part A")
    assert md.read_text() == before and not (md.parent / "history").exists()
