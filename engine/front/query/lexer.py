"""Splitting query text into tokens: words (quoted or bare), keywords and punctuation, with columns."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mbuild.front.query.errors import QuerySyntaxError
from mbuild.front.query.syntax import KEYWORDS, UNQUOTED_WORD

_PUNCTUATION = frozenset("(),=+^-")
_SPACE = re.compile(r"\s*")


@dataclass(frozen=True, slots=True)
class Token:
    """`kind` is "word", "eof", a keyword ("let") or a punctuation character ("(")."""

    kind: str
    text: str
    column: int  # 1-based
    quoted: bool = False

    def __str__(self) -> str:
        if self.kind == "eof":
            return "the end of the query"
        return f"word {self.text!r}" if self.kind == "word" else f"{self.text!r}"


def tokenize(query: str) -> list[Token]:
    """The tokens of `query`, ending with an "eof" token. Quoted keywords are ordinary words."""
    tokens = []
    pos = _SPACE.match(query, 0).end()
    while pos < len(query):
        char = query[pos]
        if char in "\"'":
            end = query.find(char, pos + 1)
            if end < 0:
                raise QuerySyntaxError(query, pos + 1, f"unclosed quotation {char}")
            tokens.append(Token("word", query[pos + 1 : end], pos + 1, quoted=True))
            pos = end + 1
        elif char in _PUNCTUATION:
            tokens.append(Token(char, char, pos + 1))
            pos += 1
        elif m := UNQUOTED_WORD.match(query, pos):
            text = m.group()
            tokens.append(Token(text if text in KEYWORDS else "word", text, pos + 1))
            pos = m.end()
        else:
            raise QuerySyntaxError(query, pos + 1, f"unexpected character {char!r} (quote words that hold it)")
        pos = _SPACE.match(query, pos).end()
    tokens.append(Token("eof", "", len(query) + 1))
    return tokens
