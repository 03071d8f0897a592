"""Write one benchmark's current section of RESULTS.md; keep the runs it supersedes.

RESULTS.md holds one current section per benchmark script, headed exactly ``## <name>`` (the
script's name, e.g. ``## cpu_speed``); a section may be split into parts headed exactly
``### <part>`` (e.g. ``### MiniLM``). ``write_section`` replaces that section, or one part of it,
with the new run and moves the text it replaces, verbatim, to the top of ``history/<name>.md``
beside RESULTS.md (newest first). Nothing else in RESULTS.md changes: the headline table at its
top is kept as it is, so ``write_section`` prints a reminder to check it by hand.

    from results import write_section
    write_section("calibration_cost", "## calibration_cost\\n\\n- date ...\\n")
    write_section("cpu_speed", "### MiniLM\\n\\n- date ...\\n", part="MiniLM")
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line index, level, title) of every markdown heading outside fenced code blocks."""
    out, fenced = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or not line.startswith("#"):
            continue
        hashes = len(line) - len(line.lstrip("#"))
        if line[hashes : hashes + 1] == " ":
            out.append((i, hashes, line[hashes + 1 :].strip()))
    return out


def _span(lines: list[str], level: int, title: str, lo: int = 0, hi: int | None = None) -> tuple[int, int] | None:
    """Lines [start, end) of the heading ``level``/``title`` in lines[lo:hi], up to the next heading
    of the same or a higher level (or ``hi``)."""
    hi = len(lines) if hi is None else hi
    heads = [h for h in _headings(lines) if lo <= h[0] < hi]
    for k, (i, lv, t) in enumerate(heads):
        if lv == level and t == title:
            end = next((j for j, lv2, _ in heads[k + 1 :] if lv2 <= level), hi)
            return i, end
    return None


def _check(text: str, level: int, title: str) -> str:
    text = text.strip("\n") + "\n"
    lines = text.splitlines(keepends=True)
    want = "#" * level + " " + title
    if lines[0].rstrip() != want:
        raise ValueError(f"a section to write must start with the line {want!r}, not {lines[0].rstrip()!r}")
    inner = [h for h in _headings(lines)[1:] if h[1] <= level]
    if inner:
        raise ValueError(f"{want!r}: the text holds another heading of level <= {level}: {inner[0][2]!r}")
    return text


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _push_history(path: Path, name: str, old: str) -> None:
    """Put ``old`` (verbatim) above the entries already in ``path``."""
    if path.exists():
        text = path.read_text()
    else:
        text = (f"# {name}: superseded runs\n\nOlder runs of `benchmarks/{name}.py`, moved here verbatim from "
                "`benchmarks/RESULTS.md`, newest first.\n")
    lines = text.splitlines(keepends=True)
    first = next((i for i, lv, _ in _headings(lines) if lv >= 2), None)
    if first is None:
        text = text.rstrip("\n") + "\n\n" + old
    else:
        text = "".join(lines[:first]) + old + "\n" + "".join(lines[first:])
    _write(path, text)


def write_section(name: str, text: str, results: Path | str = RESULTS, part: str | None = None,
                  history: Path | str | None = None, quiet: bool = False) -> Path | None:
    """Make ``text`` the current ``## name`` section of ``results`` (or its ``### part`` when
    ``part`` is given; ``text`` then starts with ``### part``).

    The section or part it replaces goes, verbatim, to the top of ``history/<name>.md`` next to
    ``results`` (or ``history``, a folder); that path is returned, or None when there was nothing
    to replace (a new section is added at the end, a new part at the end of its section)."""
    results = Path(results)
    hist = (Path(history) if history is not None else results.parent / "history") / f"{name}.md"
    block = _check(text, 3, part) if part is not None else _check(text, 2, name)
    content = results.read_text() if results.exists() else "# Benchmark results\n"
    lines = content.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    sec = _span(lines, 2, name)
    span = sec if part is None or sec is None else _span(lines, 3, part, sec[0] + 1, sec[1])
    old = None
    if span is not None:
        start, end = span
        old = "".join(lines[start:end]).strip("\n") + "\n"
        after = "".join(lines[end:])
        content = "".join(lines[:start]) + block + ("\n" + after if after else "")
    elif sec is None:  # a new section at the end of the file
        if part is not None:
            block = f"## {name}\n\n" + block
        content = "".join(lines).rstrip("\n") + "\n\n" + block
    else:  # a new part at the end of its section
        end = sec[1]
        head = "".join(lines[:end]).rstrip("\n") + "\n\n" + block
        after = "".join(lines[end:])
        content = head + ("\n" + after if after else "")
    if old is not None:
        _push_history(hist, name, old)  # first, so that a failure never loses the old run
    _write(results, content)
    if not quiet:
        where = f"'## {name}'" + (f" / '### {part}'" if part is not None else "")
        moved = f"; the text it replaced is now at the top of {hist}" if old is not None else ""
        print(f"{results}: wrote {where}{moved}.\n"
              f"Reminder: the headline table at the top of {results.name} is not updated by the script; "
              "check its rows against this run by hand.")
    return hist if old is not None else None
