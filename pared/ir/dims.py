"""Symbolic dimensions.

A dimension is either a plain ``int`` or a :class:`Sym`: a polynomial with integer
coefficients over named symbols (``B``, ``S``, ``B*S``, ``S+1``). That is enough for the
shapes frontends produce (flattening multiplies dims, a KV-cache concat adds them) while
keeping equality decidable: two dims are equal iff their canonical polynomials are equal.
"""

from __future__ import annotations

import re
from typing import Union

# A monomial is a sorted tuple of symbol names (with repetition for powers); () is the constant.
_Monomial = tuple[str, ...]

SYMBOL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Sym:
    """A canonical polynomial over named symbols; immutable and hashable."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: dict[_Monomial, int]):
        clean = tuple(sorted((m, c) for m, c in terms.items() if c != 0))
        object.__setattr__(self, "terms", clean)
        object.__setattr__(self, "_hash", hash(clean))

    def __setattr__(self, *_):
        raise AttributeError("Sym is immutable")

    @staticmethod
    def name(symbol: str) -> Sym:
        if not SYMBOL_RE.fullmatch(symbol):
            raise ValueError(f"invalid symbol name {symbol!r}: use letters, digits and '_'")
        return Sym({(symbol,): 1})

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(s for m, _ in self.terms for s in m)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sym):
            return self.terms == other.terms
        return False

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Sym({str(self)!r})"

    # arithmetic with ints and other Syms (B * S, S + 1), results canonical like add/mul below
    def __add__(self, other: Dim) -> Dim:
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other: Dim) -> Dim:
        return sub(self, other)

    def __rsub__(self, other: Dim) -> Dim:
        return sub(other, self)

    def __mul__(self, other: Dim) -> Dim:
        return mul(self, other)

    __rmul__ = __mul__

    def __str__(self) -> str:
        parts = []
        for mono, coef in sorted(self.terms, key=lambda t: (-len(t[0]), t[0])):
            factors = list(mono)
            if coef != 1 or not factors:
                factors = [str(coef), *factors]
            parts.append("*".join(factors))
        text = "+".join(parts).replace("+-", "-")
        return text or "0"


Dim = Union[int, Sym]


def _poly(d: Dim) -> dict[_Monomial, int]:
    if isinstance(d, Sym):
        return dict(d.terms)
    return {(): int(d)} if d else {}


def _make(terms: dict[_Monomial, int]) -> Dim:
    terms = {m: c for m, c in terms.items() if c}
    if not terms:
        return 0
    if list(terms) == [()]:
        return terms[()]
    return Sym(terms)


def add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    out = _poly(a)
    for m, c in _poly(b).items():
        out[m] = out.get(m, 0) + c
    return _make(out)


def sub(a: Dim, b: Dim) -> Dim:
    return add(a, mul(b, -1))


def mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    out: dict[_Monomial, int] = {}
    for ma, ca in _poly(a).items():
        for mb, cb in _poly(b).items():
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, 0) + ca * cb
    return _make(out)


def prod(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(out, d)
    return out


def exact_div(a: Dim, b: Dim) -> Dim | None:
    """``a / b`` when it is exact for every value of the symbols, else None.

    Handles division by an int and by a single monomial (``B*S / S == B``), which is what
    reshape inference needs.
    """
    if isinstance(b, int):
        if b == 0:
            return None
        if isinstance(a, int):
            return a // b if a % b == 0 else None
        if all(c % b == 0 for _, c in a.terms):
            return _make({m: c // b for m, c in a.terms})
        return None
    if len(b.terms) != 1:
        return 1 if a == b else None
    (bm, bc), = b.terms
    out: dict[_Monomial, int] = {}
    for m, c in _poly(a).items():
        rest = list(m)
        for s in bm:
            if s not in rest:
                return None
            rest.remove(s)
        if c % bc:
            return None
        out[tuple(rest)] = c // bc
    return _make(out)


def is_static(d: Dim) -> bool:
    return isinstance(d, int)


def evaluate(d: Dim, env: dict[str, int]) -> int:
    """The value of ``d`` given values for its symbols (KeyError names a missing one)."""
    if isinstance(d, int):
        return d
    total = 0
    for mono, coef in d.terms:
        v = coef
        for s in mono:
            v *= env[s]
        total += v
    return total


def parse_dim(text: str) -> Dim:
    """Parse ``384``, ``B``, ``B*S``, ``S+1``, ``2*B-1`` (sums of products, no parentheses)."""
    text = text.replace(" ", "")
    if not text:
        raise ValueError("empty dimension")
    tokens = re.findall(r"[+-]|[^+-]+", text)
    total: Dim = 0
    sign = 1
    expect_term = True
    for tok in tokens:
        if tok in "+-":
            if not expect_term:
                sign = 1 if tok == "+" else -1
                expect_term = True
                continue
            if tok == "-":
                sign = -sign
                continue
            continue
        term: Dim = sign
        for factor in tok.split("*"):
            if factor.isdigit():
                term = mul(term, int(factor))
            elif SYMBOL_RE.fullmatch(factor):
                term = mul(term, Sym.name(factor))
            else:
                raise ValueError(f"bad dimension {text!r}: {factor!r} is neither an int nor a symbol")
        total = add(total, term)
        sign, expect_term = 1, False
    if expect_term:
        raise ValueError(f"bad dimension {text!r}: dangling operator")
    return total

