"""The package layering of docs/architecture.md, checked on every import statement.

Every ``import``/``from ... import`` in pared (function-level ones included, and
``importlib.import_module("pared...")`` with a literal name) is an edge between modules. The test
fails on an upward import between layers, on an import the rule forbids (frontends see only ``ir``
and ``passes.context``), on ``import pared`` from inside the package, and on any import cycle.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "pared"

# layer -> the layers it may import (besides itself)
ALLOWED = {
    "version": set(),
    "ir": {"version"},
    "frontends": {"ir", "version"},
    "passes": {"ir", "version"},
    "backends": {"ir", "version"},
    "compiler": {"ir", "frontends", "passes", "backends", "version"},
    "training": {"ir", "frontends", "passes", "backends", "compiler", "version"},
    "tools": {"ir", "frontends", "passes", "backends", "compiler", "training", "version"},
}
# single modules a layer may use across the rule: frontends record rows in the pass report
EXCEPTIONS = {"frontends": {"pared.passes.context"}}
# the only back edges allowed: ``Graph.__str__`` and ``TensorType.__str__`` print through the
# printer (a function-level import at the printing site), which itself reads the IR classes
PRINTING_EDGES = {("pared.ir.core", "pared.ir.printer"), ("pared.ir.types", "pared.ir.printer")}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str) -> str:
    """The pared module an imported dotted name lives in (``a.b.func`` -> ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> dict[str, int]:
    """pared modules imported by ``module`` -> the first line that imports each."""
    path = MODULES[module]
    is_pkg = path.name == "__init__.py"
    out: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        target = _resolve(name)
        if target and target != module:
            out.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "pared" or alias.name.startswith("pared."):
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - (0 if is_pkg else 1)]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "pared" and not target.startswith("pared."):
                continue
            names = [f"{target}.{a.name}" for a in node.names]
            submodules = [n for n in names if n in MODULES]
            for n in submodules:
                add(n, node.lineno)
            if len(submodules) < len(names):
                add(target, node.lineno)
        elif (
            isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        ):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("pared"):
                add(str(arg.value), node.lineno)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pared"


def test_every_module_is_in_a_layer():
    stray = sorted(m for m in MODULES if m != "pared" and layer(m) not in ALLOWED)
    assert not stray, f"modules outside the layers of docs/architecture.md: {stray}"


def test_no_upward_or_sideways_import():
    bad = []
    for m, targets in GRAPH.items():
        if m == "pared":
            continue  # the public API may reach any layer
        for t, line in targets.items():
            if t == "pared":
                bad.append(f"{m}:{line} imports the package root")
                continue
            src, dst = layer(m), layer(t)
            if src == dst or dst in ALLOWED[src] or t in EXCEPTIONS.get(src, ()):
                continue
            bad.append(f"{m}:{line} ({src}) imports {t} ({dst})")
    assert not bad, "imports against the layering of docs/architecture.md:\n  " + "\n  ".join(sorted(bad))


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, {})))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles():
    graph = {m: {t: n for t, n in ts.items() if (m, t) not in PRINTING_EDGES} for m, ts in GRAPH.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles (function-level imports count):\n  " + "\n  ".join(
        " <-> ".join(c) for c in cycles
    )


@pytest.mark.parametrize(
    "source, expect",
    [
        ("from ..compiler import pass_manager\n", "imports pared.compiler.pass_manager (compiler)"),
        ("def f():\n    from ..backends.torch import lower\n", "imports pared.backends.torch.lower (backends)"),
        ("import pared\n", "imports the package root"),
    ],
)
def test_the_checker_sees_violations(tmp_path, monkeypatch, source, expect):
    """The checker itself: a planted upward import in a pass is reported."""
    fake = PKG / "passes" / "_layering_probe.py"
    monkeypatch.setitem(MODULES, "pared.passes._layering_probe", fake)
    monkeypatch.setattr(
        pathlib.Path,
        "read_text",
        lambda self, *a, _orig=pathlib.Path.read_text, **k: source if self == fake else _orig(self, *a, **k),
    )
    monkeypatch.setitem(GRAPH, "pared.passes._layering_probe", imports_of("pared.passes._layering_probe"))
    with pytest.raises(AssertionError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        test_no_upward_or_sideways_import()


def test_the_checker_sees_cycles():
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
