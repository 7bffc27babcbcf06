"""Which command a command line asks for: `mbuild //x` builds, `mbuild bulid //x` is a typo.

A first word that is neither a command nor an option is a target pattern (and the command is
`build`) only when it looks like one: `//...`, `:name`, `@...`, or holding `/` or `:`, or `...`.
Any other bare word is an unknown command, reported with the closest command names.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection


class NoSuchCommand(Exception):
    """The first word names no command and does not look like a target pattern."""

    def __init__(self, word: str, commands: Collection[str]):
        self.word = word
        close = difflib.get_close_matches(word, sorted(commands), n=3, cutoff=0.6)
        if close:
            hint = f"did you mean {' or '.join(close)}?"
        else:
            hint = f"commands: {', '.join(sorted(commands))}; to build target {word!r} of this package, write :{word}"
        super().__init__(f"mbuild: no such command {word!r} ({hint})")


def looks_like_pattern(word: str) -> bool:
    """Whether `word` reads as a label or target pattern rather than as a command name."""
    return word.startswith(("//", ":", "@")) or "/" in word or ":" in word or word == "..."


def with_command(args: list[str], commands: Collection[str], group_options: Collection[str]) -> list[str]:
    """`args` with `build` put first when they start with a pattern or a build option;
    NoSuchCommand when the first word is a bare word that is no command."""
    if not args or args[0] in commands or args[0] in group_options or args[0].startswith("-C"):
        return args
    if args[0].startswith("-") or looks_like_pattern(args[0]):
        return ["build", *args]
    raise NoSuchCommand(args[0], commands)
