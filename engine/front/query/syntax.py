"""The query language's abstract syntax, its function signatures, and the printer.

`unparse(expr)` prints canonical text (nominal operators, the fewest parentheses, quotes only where
needed) such that `parse(unparse(expr)) == expr` for every expression the parser can produce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Op(Enum):
    """A set operator. All three have equal precedence and associate to the left, as in Bazel."""

    UNION = "union"
    INTERSECT = "intersect"
    EXCEPT = "except"


SYMBOLS = {"+": Op.UNION, "^": Op.INTERSECT, "-": Op.EXCEPT}
KEYWORDS = frozenset({"let", "in", "set", *(op.value for op in Op)})


@dataclass(frozen=True, slots=True)
class Word:
    """A target pattern: `//pkg:name`, `:name`, `//pkg/...`, `//pkg:all`."""

    text: str


@dataclass(frozen=True, slots=True)
class Var:
    """A reference `$name` to a variable bound by an enclosing `let`."""

    name: str


@dataclass(frozen=True, slots=True)
class Let:
    """`let name = value in body`."""

    name: str
    value: Expr
    body: Expr


@dataclass(frozen=True, slots=True)
class BinOp:
    op: Op
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class SetOf:
    """`set(a b c)`: the union of target patterns."""

    words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; each argument is an expression, a word (str) or an integer, per its signature."""

    name: str
    args: tuple[Expr | str | int, ...]


Expr = Word | Var | Let | BinOp | SetOf | Call


class Arg(Enum):
    EXPR = "expression"
    WORD = "word"
    INT = "integer"


@dataclass(frozen=True)
class Signature:
    """A function's parameters (name and kind, in order); the first `required` are mandatory.
    A `variadic` function takes its last parameter any number of times (at least once)."""

    params: tuple[tuple[str, Arg], ...]
    required: int
    variadic: bool = False

    def usage(self, name: str) -> str:
        """`rdeps(universe, x[, depth])`, `rbuildfiles(path, ...)`."""
        names = [p for p, _ in self.params]
        optional = "".join(f"[, {p}]" for p in names[self.required :])
        more = ", ..." if self.variadic else ""
        return f"{name}({', '.join(names[: self.required])}{optional}{more})"

    def expected(self) -> str:
        """`2 or 3 arguments`."""
        most = len(self.params)
        if self.variadic:
            return f"{self.required} or more arguments"
        count = str(most) if most == self.required else f"{self.required} or {most}"
        return f"{count} argument{'s' if most > 1 else ''}"


_X = ("x", Arg.EXPR)
FUNCTIONS: dict[str, Signature] = {
    "deps": Signature((_X, ("depth", Arg.INT)), 1),
    "rdeps": Signature((("universe", Arg.EXPR), _X, ("depth", Arg.INT)), 2),
    "allrdeps": Signature((_X, ("depth", Arg.INT)), 1),
    "somepath": Signature((("from", Arg.EXPR), ("to", Arg.EXPR)), 2),
    "allpaths": Signature((("from", Arg.EXPR), ("to", Arg.EXPR)), 2),
    "kind": Signature((("pattern", Arg.WORD), _X), 2),
    "attr": Signature((("name", Arg.WORD), ("pattern", Arg.WORD), _X), 3),
    "filter": Signature((("pattern", Arg.WORD), _X), 2),
    "labels": Signature((("attr", Arg.WORD), _X), 2),
    "buildfiles": Signature((_X,), 1),
    "siblings": Signature((_X,), 1),
    "same_pkg_direct_rdeps": Signature((_X,), 1),
    "some": Signature((_X, ("count", Arg.INT)), 1),
    "visible": Signature((("predicate", Arg.EXPR), ("input", Arg.EXPR)), 2),
    "loadfiles": Signature((_X,), 1),
    "rbuildfiles": Signature((("path", Arg.WORD),), 1, variadic=True),
}

# A word needs no quotes when it is made of these characters and does not start with '-' or '*'
# (Bazel's rule: '+' and '=' are operators, so labels holding them must be quoted).
UNQUOTED_WORD = re.compile(r"[A-Za-z0-9/@._:$~\[\]][A-Za-z0-9*/@.\-_:$~\[\]]*")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote_word(text: str) -> str:
    """`text` as a word token: bare when that reads back as the same word, else in quotes."""
    if UNQUOTED_WORD.fullmatch(text) and text not in KEYWORDS and not text.startswith("$"):
        return text
    if '"' not in text:
        return f'"{text}"'
    if "'" not in text:
        return f"'{text}'"
    raise ValueError(f"a query word cannot hold both kinds of quote: {text!r}")


def unparse(expr: Expr) -> str:
    """Canonical query text for `expr`."""
    match expr:
        case Word(text):
            return quote_word(text)
        case Var(name):
            return f"${name}"
        case Let(name, value, body):
            return f"let {name} = {unparse(value)} in {unparse(body)}"
        case BinOp(op, left, right):
            # Left-associative: a BinOp on the left needs no parentheses; a `let` swallows
            # everything after `in`, so it is wrapped wherever it is an operand.
            lhs = f"({unparse(left)})" if isinstance(left, Let) else unparse(left)
            rhs = f"({unparse(right)})" if isinstance(right, (BinOp, Let)) else unparse(right)
            return f"{lhs} {op.value} {rhs}"
        case SetOf(words):
            return f"set({' '.join(quote_word(w) for w in words)})"
        case Call(name, args):
            return f"{name}({', '.join(_unparse_arg(a) for a in args)})"
    raise TypeError(f"not a query expression: {expr!r}")


def _unparse_arg(arg: Expr | str | int) -> str:
    if isinstance(arg, int):
        return str(arg)
    if isinstance(arg, str):
        return quote_word(arg)
    return unparse(arg)
