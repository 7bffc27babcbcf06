r"""Parsing query text into syntax trees (syntax.py), by recursive descent over this grammar:

    expr    ::= primary (op primary)*              every operator: equal precedence, left-associative
    op      ::= 'union' | '+' | 'intersect' | '^' | 'except' | '-'
    primary ::= WORD                               a target pattern: //pkg:name :name //pkg/... //pkg:all
              | '$'NAME                            a variable, bound by an enclosing let
              | 'let' NAME '=' expr 'in' expr      the body reaches as far right as it can
              | '(' expr ')'
              | 'set' '(' WORD* ')'
              | FUNCTION '(' arg (',' arg)* ')'    the function's signature fixes the count and
    arg     ::= expr | WORD | INTEGER              the kind of each argument (syntax.FUNCTIONS)
    WORD    ::= "any text" | 'any text' | [A-Za-z0-9/@._:$~[\]][A-Za-z0-9*/@._:$~[\]-]*
    NAME    ::= [A-Za-z_][A-Za-z0-9_]*

Keywords (let in set union intersect except) are words only when quoted. As in Bazel, `x ^ y + z`
is `(x ^ y) + z` and `x - y - z` is `(x - y) - z`: write parentheses where that is not the intent.
"""

from __future__ import annotations

import re

from mbuild.errors import did_you_mean
from mbuild.front.query.errors import ArityError, QuerySyntaxError, UnknownFunctionError
from mbuild.front.query.lexer import Token, tokenize
from mbuild.front.query.syntax import FUNCTIONS, IDENTIFIER, SYMBOLS, Arg, BinOp, Call, Expr, Let, Op, SetOf, Var, Word

_OPERATORS: dict[str, Op] = {**SYMBOLS, **{op.value: op for op in Op}}
_INTEGER = re.compile(r"[0-9]+\Z")


def parse(query: str) -> Expr:
    """The syntax tree of `query`; raises QuerySyntaxError (or a subclass) naming the column."""
    return _Parser(query).query()


class _Parser:
    def __init__(self, query: str):
        self.text = query
        self.tokens = tokenize(query)
        self.pos = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def error(self, token: Token, reason: str) -> QuerySyntaxError:
        return QuerySyntaxError(self.text, token.column, reason)

    def expect(self, kind: str) -> Token:
        if self.token.kind != kind:
            raise self.error(self.token, f"expected {kind!r}, found {self.token}")
        return self.advance()

    def query(self) -> Expr:
        expr = self.expr()
        if self.token.kind != "eof":
            raise self.error(self.token, f"unexpected {self.token} after a complete expression")
        return expr

    def expr(self) -> Expr:
        left = self.primary()
        while (op := _OPERATORS.get(self.token.kind)) is not None:
            self.advance()
            left = BinOp(op, left, self.primary())
        return left

    def primary(self) -> Expr:
        token = self.advance()
        if token.kind == "word":
            if token.quoted:
                return Word(token.text)
            if self.token.kind == "(":
                return self.call(token)
            if token.text.startswith("$"):
                if not IDENTIFIER.match(token.text[1:]):
                    raise self.error(token, f"bad variable reference {token.text!r}: a name is a letter or '_', then letters, digits or '_'")
                return Var(token.text[1:])
            return Word(token.text)
        if token.kind == "(":
            expr = self.expr()
            self.expect(")")
            return expr
        if token.kind == "let":
            name = self.advance()
            if name.kind != "word" or name.quoted or not IDENTIFIER.match(name.text):
                raise self.error(name, f"expected a variable name after 'let', found {name}")
            self.expect("=")
            value = self.expr()
            self.expect("in")
            return Let(name.text, value, self.expr())
        if token.kind == "set":
            self.expect("(")
            words = []
            while self.token.kind == "word":
                words.append(self.advance().text)
            self.expect(")")
            return SetOf(tuple(words))
        raise self.error(token, f"expected an expression, found {token}")

    def call(self, name_token: Token) -> Call:
        name = name_token.text
        signature = FUNCTIONS.get(name)
        if signature is None:
            raise UnknownFunctionError(self.text, name_token.column, name, did_you_mean(name, FUNCTIONS))
        usage, expected = signature.usage(name), signature.expected()
        self.expect("(")
        args: list[Expr | str | int] = []
        if self.token.kind != ")":
            for i, (param, kind) in enumerate(signature.params):
                if i and self.token.kind != ",":
                    break
                if i:
                    self.advance()
                args.append(self.argument(name, param, kind))
            while signature.variadic and self.token.kind == ",":
                self.advance()
                args.append(self.argument(name, *signature.params[-1]))
            if self.token.kind == ",":
                raise ArityError(self.text, self.token.column, name, usage, expected, len(args) + self.count_extra_arguments())
        if len(args) < signature.required:
            raise ArityError(self.text, self.token.column, name, usage, expected, len(args))
        self.expect(")")
        return Call(name, tuple(args))

    def argument(self, function: str, param: str, kind: Arg) -> Expr | str | int:
        if kind is Arg.EXPR:
            return self.expr()
        token = self.token
        if kind is Arg.WORD:
            if token.kind != "word":
                raise self.error(token, f"{function}(): expected a word for {param}, found {token} (quote keywords)")
            return self.advance().text
        if token.kind != "word" or token.quoted or not _INTEGER.match(token.text):
            raise self.error(token, f"{function}(): {param} must be a non-negative integer, found {token}")
        return int(self.advance().text)

    def count_extra_arguments(self) -> int:
        """How many more top-level arguments follow (the current token is the ',' before the first)."""
        depth = count = 0
        for token in self.tokens[self.pos :]:
            if token.kind == "(":
                depth += 1
            elif token.kind == ")" and depth:
                depth -= 1
            elif token.kind in (")", "eof"):
                break
            elif token.kind == "," and not depth:
                count += 1
        return count
