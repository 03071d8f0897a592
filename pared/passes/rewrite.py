"""The one fixed-point engine for local rewrites (tinygrad's PatternMatcher, as a rule table).

A rule is ``(op name, fn)``. ``fn(eqn, view)`` receives an equation whose inputs are already
substituted (they name the *current* values) and a :class:`RewriteView` to look up producers and
use counts; it returns ``None`` (no match) or a replacement:

* an atom (Var, Literal or Param) to forward in place of the single output,
* a new :class:`Eqn` with as many outputs (its outputs replace the old ones, in order),
* a :class:`Replacement` of new equations plus the atoms that replace the outputs.

New equations are examined again right away, so rules compose within one sweep. Sweeps repeat
until one leaves the graph identical (by object identity, never by a flag the rules report).
Each sweep is linear in the number of equations; region bodies are rewritten recursively.
Like MLIR's greedy driver, the engine finally erases pure equations whose results are unused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

from ..ir import OPS, Eqn, Graph, IRError, Literal, Param, Var
from ..ir.core import Atom


class RewriteError(IRError):
    """A rule crashed, returned something malformed, or rules did not reach a fixed point.

    ``eqn`` is the equation being rewritten when it happened (None for non-convergence).
    """

    def __init__(self, message: str, eqn: Optional[Eqn] = None, rule: str = ""):
        self.eqn = eqn
        self.rule = rule
        if eqn is not None:
            from ..ir import format_eqn

            try:
                message += f"\n  at equation: {format_eqn(eqn)}"
            except Exception:  # never let formatting hide the real error
                message += f"\n  at equation: {eqn.op}(...)"
        super().__init__(message)


@dataclass(frozen=True)
class Replacement:
    """New equations (in topological order) and the atoms that replace the old outputs."""

    eqns: tuple[Eqn, ...]
    outputs: tuple[Atom, ...]

    def __init__(self, eqns: Sequence[Eqn], outputs: Union[Atom, Sequence[Atom]]):
        object.__setattr__(self, "eqns", tuple(eqns))
        outs = (outputs,) if isinstance(outputs, (Var, Literal, Param)) else tuple(outputs)
        object.__setattr__(self, "outputs", outs)


RuleResult = Union[None, Var, Literal, Param, Eqn, Replacement]
RuleFn = Callable[[Eqn, "RewriteView"], RuleResult]


class RuleTable:
    """Rules keyed by op name, tried in order; ``default`` rules are tried on every equation."""

    def __init__(self, rules: Iterable[tuple[str, RuleFn]] = (), default: Sequence[RuleFn] = ()):
        by_op: dict[str, list[RuleFn]] = {}
        for op, fn in rules:
            if not isinstance(op, str) or not callable(fn):
                raise TypeError(f"a rule is (op name, callable), got ({op!r}, {fn!r})")
            by_op.setdefault(op, []).append(fn)
        self._default = tuple([default] if callable(default) else default)
        self._by_op = {op: tuple(fns) + self._default for op, fns in by_op.items()}

    def rules_for(self, op: str) -> tuple[RuleFn, ...]:
        return self._by_op.get(op, self._default)

    @property
    def ops(self) -> frozenset[str]:
        return frozenset(self._by_op)

    def __add__(self, other: RuleTable) -> RuleTable:
        pairs = [(op, fn) for t in (self, other) for op, fns in t._by_op.items() for fn in fns if fn not in t._default]
        return RuleTable(pairs, self._default + other._default)

    def __repr__(self) -> str:
        return f"<RuleTable: {sum(len(v) for v in self._by_op.values())} rules on {len(self._by_op)} ops>"


class RewriteView:
    """What a rule may look at besides its equation: producers, use counts and the root graph."""

    __slots__ = ("root", "_producers", "_uses", "_parent")

    def __init__(self, root: Graph, uses: Counter, parent: Optional[RewriteView] = None):
        self.root = root
        self._producers: dict[Var, Eqn] = {}
        self._uses = uses
        self._parent = parent

    def producer(self, atom: Atom) -> Optional[Eqn]:
        """The (rewritten) equation defining ``atom``; None for inputs, literals and params."""
        if not isinstance(atom, Var):
            return None
        view: Optional[RewriteView] = self
        while view is not None:
            e = view._producers.get(atom)
            if e is not None:
                return e
            view = view._parent
        return None

    @property
    def in_region(self) -> bool:
        """Whether the equation being rewritten is inside a region body (e.g. of a ``fused`` op)."""
        return self._parent is not None

    def uses(self, atom: Atom) -> int:
        """How many equation inputs and graph outputs read ``atom`` (kept up to date as rules fire)."""
        return self._uses.get(atom, 0) if isinstance(atom, Var) else 0

    def weight(self, param: Param):
        """The root graph's value for ``param``, or None when the graph has none (e.g. parsed text)."""
        return self.root.weights.get(param.name)


def rewrite(graph: Graph, rules: RuleTable, *, max_sweeps: int = 50, prune: bool = True) -> Graph:
    """Apply ``rules`` to a fixed point; returns ``graph`` itself when no rule fires."""
    for _ in range(max_sweeps):
        new = _Sweep(rules, graph).run()
        if new is graph:
            break
        graph = new
    else:
        raise RewriteError(
            f"rewrite rules did not reach a fixed point in {max_sweeps} sweeps; "
            "a rule probably rebuilds an equal equation instead of returning None"
        )
    return remove_dead_eqns(graph) if prune else graph


def is_pure(op: str) -> bool:
    """Whether ``op`` is registered and free of side effects (unknown ops are treated as impure)."""
    d = OPS.get(op)
    return d is not None and d.pure


def remove_dead_eqns(graph: Graph, live: Iterable[Var] = ()) -> Graph:
    """Drop pure equations whose outputs are never read, inside regions too (one backward pass)."""
    live_set = {a for a in graph.outputs if isinstance(a, Var)}
    live_set.update(live)
    kept: list[Eqn] = []
    changed = False
    for e in reversed(graph.eqns):
        if is_pure(e.op) and not any(v in live_set for v in e.outputs):
            changed = True
            continue
        if e.regions:
            e2 = e.replace(regions=tuple(remove_dead_eqns(r) for r in e.regions))
            changed = changed or e2 is not e
            e = e2
            for r in e.regions:
                live_set.update(_region_reads(r))
        live_set.update(a for a in e.inputs if isinstance(a, Var))
        kept.append(e)
    if not changed:
        return graph
    return graph.replace(eqns=tuple(reversed(kept)))


def _region_reads(g: Graph):
    for e in g.eqns:
        yield from (a for a in e.inputs if isinstance(a, Var))
        for r in e.regions:
            yield from _region_reads(r)
    yield from (a for a in g.outputs if isinstance(a, Var))


def count_uses(graph: Graph, counts: Optional[Counter] = None) -> Counter:
    """Var -> number of equation inputs (regions included) and outputs that read it."""
    counts = Counter() if counts is None else counts
    for e in graph.eqns:
        for a in e.inputs:
            if isinstance(a, Var):
                counts[a] += 1
        for r in e.regions:
            count_uses(r, counts)
    for a in graph.outputs:
        if isinstance(a, Var):
            counts[a] += 1
    return counts


def _rule_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


class _Sweep:
    """One pass over a graph (and its regions) applying rules, with a shared substitution."""

    def __init__(self, rules: RuleTable, root: Graph):
        self.rules = rules
        self.root = root
        self.uses = count_uses(root)
        self.subst: dict[Var, Atom] = {}
        self.fired: Counter = Counter()
        self.budget = 20 * sum(1 for _ in root.walk()) + 1000

    def run(self) -> Graph:
        return self.graph(self.root, None)

    def resolve(self, a: Atom) -> Atom:
        subst = self.subst
        while isinstance(a, Var) and a in subst:
            a = subst[a]
        return a

    def graph(self, g: Graph, parent: Optional[RewriteView]) -> Graph:
        view = RewriteView(self.root, self.uses, parent)
        out: list[Eqn] = []
        for e in g.eqns:
            pending = [e]
            while pending:
                self.visit(pending.pop(), view, out, pending)
        outputs = tuple(self.resolve(a) for a in g.outputs)
        if len(out) == len(g.eqns) and all(a is b for a, b in zip(out, g.eqns)):
            return g.replace(outputs=outputs)
        return g.replace(eqns=tuple(out), outputs=outputs)

    def visit(self, e: Eqn, view: RewriteView, out: list[Eqn], pending: list[Eqn]) -> None:
        ins = tuple(self.resolve(a) for a in e.inputs)
        changed = any(a is not b for a, b in zip(ins, e.inputs))
        regs = e.regions
        if regs:
            regs = tuple(self.graph(r, view) for r in regs)
            changed = changed or any(a is not b for a, b in zip(regs, e.regions))
        if changed:
            e = e.replace(inputs=ins, regions=regs)
        for fn in self.rules.rules_for(e.op):
            try:
                result = fn(e, view)
            except RewriteError:
                raise
            except Exception as exc:
                raise RewriteError(
                    f"rewrite rule {_rule_name(fn)} failed: {type(exc).__name__}: {exc}", e, _rule_name(fn)
                ) from exc
            if result is None or result is e:
                continue
            self.apply(e, fn, self.normalize(e, fn, result), pending)
            return
        for v in e.outputs:
            view._producers[v] = e
        out.append(e)

    def normalize(self, e: Eqn, fn: RuleFn, result) -> Replacement:
        if isinstance(result, (Var, Literal, Param)):
            result = Replacement((), (result,))
        elif isinstance(result, Eqn):
            result = Replacement((result,), result.outputs)
        if not isinstance(result, Replacement):
            raise RewriteError(
                f"rewrite rule {_rule_name(fn)} returned {result!r}; expected None, an atom, an Eqn or a Replacement", e
            )
        if len(result.outputs) != len(e.outputs):
            raise RewriteError(
                f"rewrite rule {_rule_name(fn)} gave {len(result.outputs)} replacement(s) "
                f"for {len(e.outputs)} output(s)",
                e,
            )
        for old, new in zip(e.outputs, result.outputs):
            if not isinstance(new, (Var, Literal, Param)):
                raise RewriteError(f"rewrite rule {_rule_name(fn)} replaced an output with {new!r}, not an atom", e)
            if new.type != old.type:
                raise RewriteError(
                    f"rewrite rule {_rule_name(fn)} changed a type: {old.type} became {new.type}", e, _rule_name(fn)
                )
        return result

    def apply(self, e: Eqn, fn: RuleFn, r: Replacement, pending: list[Eqn]) -> None:
        self.fired[_rule_name(fn)] += 1
        self.budget -= 1
        if self.budget < 0:
            top = ", ".join(f"{k} x{n}" for k, n in self.fired.most_common(3))
            raise RewriteError(f"rewrite rules keep firing without converging ({top})", e)
        uses = self.uses
        for a in e.inputs:
            if isinstance(a, Var):
                uses[a] -= 1
        for ne in r.eqns:
            for a in ne.inputs:
                if isinstance(a, Var):
                    uses[a] += 1
        for old, new in zip(e.outputs, r.outputs):
            if new is not old:
                self.subst[old] = new
                if isinstance(new, Var):
                    uses[new] += uses.get(old, 0)
        pending.extend(reversed(r.eqns))


def substitute_uses(graph: Graph, mapping: Mapping[Var, Atom]) -> Graph:
    """Replace reads of the Vars in ``mapping`` everywhere (regions and outputs included)."""
    if not mapping:
        return graph
    return _Subst(mapping).graph(graph)


class _Subst:
    def __init__(self, mapping: Mapping[Var, Atom]):
        self.m = mapping

    def atom(self, a: Atom) -> Atom:
        while isinstance(a, Var) and a in self.m:
            a = self.m[a]
        return a

    def graph(self, g: Graph) -> Graph:
        eqns = tuple(
            e.replace(inputs=tuple(self.atom(a) for a in e.inputs), regions=tuple(self.graph(r) for r in e.regions))
            for e in g.eqns
        )
        return g.replace(eqns=eqns, outputs=tuple(self.atom(a) for a in g.outputs))
