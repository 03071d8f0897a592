"""Parse the text form written by :mod:`pared.ir.printer` back into a Graph.

Errors are :class:`ParseError` with a 1-based line and column, for syntax (truncated text, a
stray token) and for meaning (unknown op, undefined or duplicate value, undeclared param, bad
attribute, a declared type that the op's rule does not produce). Nothing else escapes.
"""

from __future__ import annotations

import difflib
import gc
import json
import re
from typing import Any, Optional

from . import dims as D
from .core import Atom, Attrs, Eqn, Graph, Literal, Param, Var
from .dtypes import ALL as DTYPES
from .errors import IRError, ParseError
from .opdef import OPS
from .types import QUANT_SCHEMES, SPARSE_FORMATS, Quant, Sparse, SparseQuant, TensorType

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
  | (?P<var>%[A-Za-z0-9_.]+)
  | (?P<param>@"(?:[^"\\]|\\.)*"|@[A-Za-z0-9_./\-]+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<punct>[()\[\]{},=:#*+\-])
    """,
    re.VERBOSE,
)


class _Tok:
    __slots__ = ("kind", "text", "line", "col")

    def __init__(self, kind, text, line, col):
        self.kind, self.text, self.line, self.col = kind, text, line, col

    def __repr__(self):
        return "end of input" if self.kind == "eof" else repr(self.text)


def _tokenize(src: str, lines: list[str]):
    """Yield tokens lazily (then an ``eof`` token), so only a few are alive at once."""
    pos, line, line_start = 0, 1, 0
    match = _TOKEN.match
    while pos < len(src):
        m = match(src, pos)
        if not m:
            raise ParseError(f"unexpected character {src[pos]!r}", line, pos - line_start + 1, _line(lines, line))
        kind, text = m.lastgroup, m.group()
        if kind != "ws":
            yield _Tok(kind, text, line, pos - line_start + 1)
        nl = text.count("\n")
        if nl:
            line += nl
            line_start = pos + text.rfind("\n") + 1
        pos = m.end()
    while True:
        yield _Tok("eof", "", line, pos - line_start + 1)


def _line(lines: list[str], n: int) -> str:
    return lines[n - 1] if 0 < n <= len(lines) else ""


class _Parser:
    def __init__(self, src: str):
        self.lines = src.splitlines()
        self._stream = _tokenize(src, self.lines)
        self._buf: list[_Tok] = [next(self._stream)]  # current token and any peeked ones
        self.params: dict[str, Param] = {}
        self.defined: set[str] = set()

    # -- token helpers -------------------------------------------------------------------------
    @property
    def tok(self) -> _Tok:
        return self._buf[0]

    def peek(self, k: int) -> _Tok:
        """The token ``k`` places after the current one."""
        while len(self._buf) <= k:
            self._buf.append(next(self._stream))
        return self._buf[k]

    def error(self, msg: str, tok: Optional[_Tok] = None) -> ParseError:
        t = tok or self.tok
        return ParseError(msg, t.line, t.col, _line(self.lines, t.line))

    def next(self) -> _Tok:
        t = self._buf[0]
        if len(self._buf) > 1:
            del self._buf[0]
        else:
            self._buf[0] = next(self._stream)
        return t

    def at(self, text: str) -> bool:
        t = self.tok
        return t.text == text and t.kind in ("punct", "ident")

    def expect(self, text: str, what: str = "") -> _Tok:
        if not self.at(text):
            raise self.error(f"expected {text!r}{' ' + what if what else ''}, found {self.tok!r}")
        return self.next()

    def expect_kind(self, kind: str, what: str) -> _Tok:
        if self.tok.kind != kind:
            raise self.error(f"expected {what}, found {self.tok!r}")
        return self.next()

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.next()
            return True
        return False

    # -- grammar -------------------------------------------------------------------------------
    def graph(self) -> Graph:
        self.expect("graph", "at the start of a graph")
        scope: dict[str, Var] = {}
        inputs = self.decls(scope)
        self.expect("{")
        while self.at("param"):
            self.next()
            t = self.expect_kind("param", "a param name like @layer.weight")
            name = _param_name(t.text)
            if name in self.params:
                raise self.error(f"duplicate param @{name}", t)
            self.expect(":")
            self.params[name] = Param(name, self.type())
        eqns, outputs = self.block(scope)
        self.expect("}", "to close the graph")
        if self.tok.kind != "eof":
            raise self.error(f"unexpected {self.tok!r} after the end of the graph")
        return Graph(inputs, eqns, outputs, tuple(self.params.values()))

    def decls(self, scope: dict[str, Var]) -> list[Var]:
        self.expect("(")
        out = []
        if not self.at(")"):
            while True:
                out.append(self.define(scope))
                if not self.accept(","):
                    break
        self.expect(")")
        return out

    def define(self, scope: dict[str, Var], type_: Optional[TensorType] = None) -> Var:
        t = self.expect_kind("var", "a value name like %3")
        if t.text in self.defined:
            raise self.error(f"duplicate definition of {t.text}", t)
        self.expect(":")
        v = Var(self.type())
        self.defined.add(t.text)
        scope[t.text] = v
        return v

    def block(self, scope: dict[str, Var]) -> tuple[list[Eqn], list[Atom]]:
        eqns = []
        while not self.at("return"):
            if self.tok.kind == "eof":
                raise self.error("unexpected end of input: missing 'return'")
            eqns.append(self.eqn(scope))
        self.next()
        outputs = [self.atom(scope)]
        while self.accept(","):
            outputs.append(self.atom(scope))
        return eqns, outputs

    def eqn(self, scope: dict[str, Var]) -> Eqn:
        out_toks, out_types = [], []
        while True:
            t = self.expect_kind("var", "a value name like %3 (or 'return')")
            if t.text in self.defined:
                raise self.error(f"duplicate definition of {t.text}", t)
            self.expect(":")
            out_toks.append(t)
            out_types.append(self.type())
            if not self.accept(","):
                break
        self.expect("=")
        op_tok = self.expect_kind("ident", "an op name")
        if op_tok.text not in OPS:
            close = difflib.get_close_matches(op_tok.text, OPS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise self.error(f"unknown op {op_tok.text!r}{hint}", op_tok)
        opdef = OPS[op_tok.text]
        self.expect("(")
        inputs: list[Atom] = []
        if not self.at(")"):
            while True:
                inputs.append(self.atom(scope))
                if not self.accept(","):
                    break
        self.expect(")")
        attr_tok = self.tok
        raw = self.attr_dict() if self.at("{") else {}
        loc = ""
        if self.accept("loc"):
            self.expect("(")
            loc = json.loads(self.expect_kind("string", "a quoted location").text)
            self.expect(")")
        regions = []
        while self.at("region"):
            self.next()
            inner = dict(scope)
            rin = self.decls(inner)
            self.expect("{")
            r_eqns, r_out = self.block(inner)
            self.expect("}", "to close the region")
            regions.append(Graph(rin, r_eqns, r_out))
        try:
            attrs = opdef.normalize_attrs(raw)
        except IRError as e:
            raise self.error(str(e), attr_tok) from None
        try:
            inferred = opdef.infer_types([a.type for a in inputs], attrs, regions)
        except IRError as e:
            raise self.error(f"type error: {e}", op_tok) from None
        if len(inferred) != len(out_types):
            raise self.error(f"{opdef.name} has {len(inferred)} result(s), {len(out_types)} declared", out_toks[0])
        for t, declared, want in zip(out_toks, out_types, inferred):
            if declared != want:
                from .printer import format_type

                raise self.error(
                    f"type mismatch: {t.text} is declared {format_type(declared)} "
                    f"but {opdef.name} gives {format_type(want)}",
                    t,
                )
        outs = []
        for t, ty in zip(out_toks, out_types):
            v = Var(ty)
            scope[t.text] = v
            self.defined.add(t.text)
            outs.append(v)
        return Eqn(opdef.name, tuple(inputs), attrs, tuple(outs), tuple(regions), loc)

    def atom(self, scope: dict[str, Var]) -> Atom:
        t = self.tok
        if t.kind == "var":
            self.next()
            if t.text not in scope:
                raise self.error(f"undefined value {t.text}", t)
            return scope[t.text]
        if t.kind == "param":
            self.next()
            name = _param_name(t.text)
            if name not in self.params:
                raise self.error(f"undeclared param @{name}: declare it with 'param @{name}:<type>'", t)
            return self.params[name]
        if t.kind == "number" or t.text in ("-", "true", "false", "inf", "nan"):
            value = self.scalar()
            self.expect(":", "and a type after the literal")
            ty = self.type()
            if ty.shape != ():
                raise self.error(f"a literal must have a scalar type, got shape {list(ty.shape)}", t)
            if isinstance(value, bool) != (ty.dtype.kind == "bool"):
                raise self.error(f"literal {t.text} does not fit type {ty.dtype}", t)
            if isinstance(value, float) and ty.dtype.is_int:
                raise self.error(f"float literal {value!r} with integer type {ty.dtype}", t)
            return Literal(value, ty)
        raise self.error(f"expected a value (%name, @param or literal), found {t!r}")

    def scalar(self):
        t = self.tok
        if t.text in ("true", "false"):
            self.next()
            return t.text == "true"
        neg = self.accept("-")
        t = self.tok
        if t.text in ("inf", "nan"):
            self.next()
            v = float(t.text)
        elif t.kind == "number":
            self.next()
            v = float(t.text) if any(c in t.text for c in ".eE") else int(t.text)
        else:
            raise self.error(f"expected a number, found {t!r}")
        return -v if neg else v

    def type(self) -> TensorType:
        t = self.expect_kind("ident", "a dtype like f32")
        if t.text not in DTYPES:
            raise self.error(f"unknown dtype {t.text!r}; valid: {', '.join(DTYPES)}", t)
        self.expect("[", "to open the shape")
        shape = []
        if not self.at("]"):
            while True:
                shape.append(self.dim())
                if not self.accept(","):
                    break
        self.expect("]", "to close the shape")
        encs = []
        while self.at("#"):
            encs.append(self.encoding())
        try:
            if not encs:
                enc = None
            elif len(encs) == 1:
                enc = encs[0]
            elif len(encs) == 2 and isinstance(encs[0], Sparse) and isinstance(encs[1], Quant):
                enc = SparseQuant(encs[0], encs[1])
            else:
                raise self.error("a type takes #quant, #sparse, or #sparse followed by #quant", t)
            return TensorType(tuple(shape), DTYPES[t.text], enc)
        except (TypeError, ValueError) as e:
            raise self.error(str(e), t) from None

    def encoding(self):
        self.expect("#")
        t = self.expect_kind("ident", "an encoding name (quant or sparse)")
        cls = {"quant": Quant, "sparse": Sparse}.get(t.text)
        if cls is None:
            raise self.error(f"unknown encoding {t.text!r}; valid: quant, sparse", t)
        self.expect("(")
        fields: dict[str, Any] = {}
        if not self.at(")"):
            while True:
                k = self.expect_kind("ident", "a field name")
                if k.text not in cls.__dataclass_fields__:
                    raise self.error(
                        f"unknown {t.text} field {k.text!r}; valid: {', '.join(cls.__dataclass_fields__)}", k
                    )
                self.expect("=")
                fields[k.text] = self.value()
                if not self.accept(","):
                    break
        self.expect(")")
        try:
            enc = cls(**fields)
        except TypeError as e:
            raise self.error(f"bad #{t.text} encoding: {e}", t) from None
        if isinstance(enc, Sparse) and enc.format not in SPARSE_FORMATS:
            raise self.error(f"unknown sparse format {enc.format!r}; valid: {', '.join(SPARSE_FORMATS)}", t)
        if isinstance(enc, Quant) and enc.scheme not in QUANT_SCHEMES:
            raise self.error(f"unknown quant scheme {enc.scheme!r}; valid: {', '.join(QUANT_SCHEMES)}", t)
        return enc

    def dim(self) -> D.Dim:
        start = self.tok
        total: D.Dim = 0
        sign = 1
        while True:
            term: D.Dim = sign
            while True:
                f = self.tok
                if f.kind == "number" and f.text.isdigit():
                    term = D.mul(term, int(f.text))
                elif f.kind == "ident":
                    term = D.mul(term, D.Sym.name(f.text))
                else:
                    raise self.error(f"expected a dimension (int or symbol), found {f!r}", f)
                self.next()
                if not self.accept("*"):
                    break
            total = D.add(total, term)
            if self.at("+") or self.at("-"):
                sign = 1 if self.next().text == "+" else -1
                continue
            break
        if isinstance(total, int) and total < 0:
            raise self.error(f"negative dimension {total}", start)
        return total

    def attr_dict(self) -> dict[str, Any]:
        self.expect("{")
        out: dict[str, Any] = {}
        if not self.at("}"):
            while True:
                k = self.expect_kind("ident", "an attribute name")
                if k.text in out:
                    raise self.error(f"attribute {k.text!r} given twice", k)
                self.expect("=")
                out[k.text] = self.value()
                if not self.accept(","):
                    break
        self.expect("}", "to close the attributes")
        return out

    def value(self) -> Any:
        t = self.tok
        if t.kind == "string":
            self.next()
            return json.loads(t.text)
        if t.text in ("none", "true", "false") and t.kind == "ident":
            self.next()
            return {"none": None, "true": True, "false": False}[t.text]
        if t.text == "(":
            self.next()
            items = []
            while not self.at(")"):
                items.append(self.value())
                if not self.accept(","):
                    break
            self.expect(")", "to close the tuple")
            return tuple(items)
        if t.text == "{":
            return Attrs(self.attr_dict())
        nxt = self.peek(1)
        is_expr = nxt.text in ("*", "+") or (nxt.text == "-" and self.peek(2).kind in ("number", "ident"))
        if t.kind == "ident" and t.text in DTYPES and not is_expr:
            self.next()
            return DTYPES[t.text]
        if t.text == "-" or t.text in ("inf", "nan") or (t.kind == "number" and not t.text.isdigit()):
            return self.scalar()
        if t.kind in ("number", "ident"):
            return self.dim() if is_expr or t.kind == "ident" else int(self.next().text)
        raise self.error(f"expected an attribute value, found {t!r}")


def _param_name(text: str) -> str:
    body = text[1:]
    return json.loads(body) if body.startswith('"') else body


def parse(text: str) -> Graph:
    """Parse IR text into a Graph (without weight values). Raises ParseError only."""
    p = None
    # Everything parsed stays alive (no garbage, no cycles), so the cyclic collector would only
    # rescan the growing graph again and again (measured: 1.7x the per-equation cost at 20,000
    # equations); it is paused for the parse and restored after.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        p = _Parser(text)
        return p.graph()
    except ParseError:
        raise
    except RecursionError:
        t = p.tok if p else None
        raise ParseError("nesting too deep", t.line if t else 1, t.col if t else 1) from None
    except Exception as e:  # a bug or an odd input in a rule: still a positioned ParseError
        t = p._buf[0] if p and p._buf else None
        raise ParseError(f"{type(e).__name__}: {e}", t.line if t else 1, t.col if t else 1) from None
    finally:
        if gc_was_enabled:
            gc.enable()
