"""Typed query errors: syntax errors carry the column; evaluation errors name the function or variable."""

from __future__ import annotations

from mbuild.errors import MbuildError


class QueryError(MbuildError):
    """A query that parses but cannot be evaluated (undefined variable, bad regular expression)."""


class QuerySyntaxError(QueryError):
    """A query that does not parse. `column` is 1-based; the message shows the query with a caret under it."""

    def __init__(self, query: str, column: int, reason: str):
        self.query = query
        self.column = column
        self.reason = reason
        super().__init__(f"query syntax error at column {column}: {reason}\n  {query}\n  {' ' * (column - 1)}^")


class UnknownFunctionError(QuerySyntaxError):
    """A call to a function the query language does not have."""

    def __init__(self, query: str, column: int, name: str, hint: str):
        self.name = name
        super().__init__(query, column, f"unknown function {name!r}{hint}")


class ArityError(QuerySyntaxError):
    """A call with too few or too many arguments."""

    def __init__(self, query: str, column: int, name: str, usage: str, expected: str, got: int):
        self.name = name
        super().__init__(query, column, f"{usage} takes {expected}, got {got}")
