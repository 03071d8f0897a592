"""Docs that list what the code registers stay equal to the registry."""

from __future__ import annotations

import re
from pathlib import Path

from pared.compiler.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]


def test_the_preset_table_in_docs_cli_is_the_registry():
    text = (ROOT / "docs" / "cli.md").read_text()
    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|$", text, flags=re.M))
    assert rows == PRESETS, "docs/cli.md's preset table differs from pared/compiler/presets.py: update the table"


def test_every_doc_path_exists():
    """A path like `pared/passes/fuse/ops.py` named in the docs is a file of the repository."""
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in re.findall(r"`(pared/[\w/]+\.py)", doc.read_text()):
            if not (ROOT / path).is_file():
                missing.append(f"{doc.name}: {path}")
    assert not missing, "docs name files that do not exist:\n  " + "\n  ".join(missing)
