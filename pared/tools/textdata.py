"""Text for calibration and evaluation: the bundled Wikipedia sample, a text file, or literal text.

``wikipedia`` is the real English Wikipedia extract (CC BY-SA) that ships in gensim's test data
(installed with ``pip install --no-deps gensim==4.4.0``; gensim itself is never imported). Its
wiki markup is stripped with a few regular expressions, which is enough for calibration and
perplexity text. Calibration takes paragraphs from the front of the dump, evaluation from the back,
so the two never overlap.
"""

from __future__ import annotations

import bz2
import html
import importlib.util
import os
import re
from functools import lru_cache
from pathlib import Path

WIKI_FILE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
DATASETS = ("wikipedia", "builtin")

# A few plain sentences, used when no dataset is installed (and as a fast default in tests).
BUILTIN = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Neural network compression removes redundant weights without retraining the model.",
    "A compiler lowers a high-level program into instructions a machine can execute.",
    "The museum opened a new exhibition of medieval manuscripts and maps last spring.",
    "Heavy rain is expected across the northern region for the rest of the week.",
    "She learned to play the violin at the age of seven and later joined an orchestra.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The committee postponed its decision until the budget report is published.",
    "Quantization represents each weight with a few bits and a shared scale factor.",
    "The train to the airport leaves every twenty minutes from platform four.",
    "Mount Everest is the highest mountain above sea level on Earth.",
    "He wrote a short program that sorts a list of names alphabetically.",
    "Coffee prices rose sharply after a frost damaged crops in several countries.",
    "The children built a sandcastle with towers, walls and a moat around it.",
    "Sparse matrices store only their nonzero entries to save memory and time.",
    "The novel follows a detective who investigates a series of strange disappearances.",
)


class TextDataError(ValueError):
    """The requested text source does not exist or holds no text."""


def wikipedia_path() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise TextDataError("the 'wikipedia' text needs gensim's test data: pip install --no-deps gensim==4.4.0")
    p = Path(list(spec.submodule_search_locations)[0]) / WIKI_FILE
    if not p.is_file():
        raise TextDataError(f"gensim is installed but {p} is missing")
    return p


_MARKUP = [
    (re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S), " "),
    (re.compile(r"<!--.*?-->", re.S), " "),
    (re.compile(r"<[^>]+>"), " "),
    (re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]"), r"\1"),
    (re.compile(r"\[https?://\S+ ([^\]]*)\]"), r"\1"),
    (re.compile(r"'{2,}"), ""),
    (re.compile(r"={2,}[^=]*={2,}"), " "),
]


_INNER_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}|\{\|[^{}]*?\|\}")


def _strip_templates(s: str) -> str:
    """Remove ``{{...}}`` templates and ``{|...|}`` tables, innermost first (they nest)."""
    while True:
        s2 = _INNER_TEMPLATE.sub(" ", s)
        if s2 == s:
            return s
        s = s2


@lru_cache(maxsize=1)
def wikipedia_paragraphs() -> tuple[str, ...]:
    """Clean prose paragraphs (>= 200 characters) of the Wikipedia sample, in file order."""
    raw = bz2.open(wikipedia_path(), "rt", encoding="utf-8").read()
    paras = []
    for body in re.findall(r"<text[^>]*>(.*?)</text>", raw, re.S):
        text = html.unescape(body)
        if text.lstrip().upper().startswith("#REDIRECT"):
            continue
        text = _strip_templates(text)
        for rx, rep in _MARKUP:
            text = rx.sub(rep, text)
        for p in text.split("\n"):
            p = re.sub(r"\s+", " ", p).strip()
            if len(p) >= 200 and not p.startswith(("*", "|", "!", "#", ":", "[[", "{")) and "|" not in p:
                paras.append(p)
    if not paras:
        raise TextDataError(f"no prose found in {wikipedia_path()}")
    return tuple(paras)


def sentences(paragraphs, n: int, min_chars: int = 40) -> list[str]:
    out = []
    for p in paragraphs:
        for s in re.split(r"(?<=[.!?])\s+", p):
            if min_chars <= len(s) <= 400:
                out.append(s)
                if len(out) == n:
                    return out
    return out


def load_texts(source: str, *, split: str = "calibration") -> list[str]:
    """Paragraphs of text from ``source``: ``wikipedia``, ``builtin``, a path to a text file (one
    paragraph per blank-line separated block), or the literal text itself.

    ``split`` chooses the front (calibration) or back (evaluation) half of a dataset.
    """
    if source == "builtin":
        return list(BUILTIN)
    if source == "wikipedia":
        paras = wikipedia_paragraphs()
        half = len(paras) // 2
        return list(paras[:half] if split == "calibration" else paras[half:])
    if os.path.sep in source or source.endswith((".txt", ".md")):
        p = Path(source)
        if not p.is_file():
            raise TextDataError(f"calibration text file {source!r} not found (datasets: {', '.join(DATASETS)})")
        blocks = [re.sub(r"\s+", " ", b).strip() for b in re.split(r"\n\s*\n", p.read_text())]
        blocks = [b for b in blocks if b]
        if not blocks:
            raise TextDataError(f"{source}: no text")
        return blocks
    if not source.strip():
        raise TextDataError(f"empty calibration text; give a file, literal text, or one of {', '.join(DATASETS)}")
    return [source]
