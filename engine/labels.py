"""Labels (`//pkg/sub:name`) and target patterns (`//pkg/...`, `//pkg:all`), parsed and printed.

Printing is canonical and `parse_label(str(label)) == label` for every valid label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from mbuild.errors import LabelError

# One path segment of a package or target name. Bazel allows a few more punctuation
# characters; this set is what file systems, shells and URLs all handle without quoting.
_SEGMENT = re.compile(r"[A-Za-z0-9_\-.+=,@~]+\Z")
# A whole valid path (no '.'/'..' segments): the fast check; _check_path explains failures.
_PATH = re.compile(r"(?!\.\.?(?:/|\Z))[A-Za-z0-9_\-.+=,@~]+(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9_\-.+=,@~]+)*\Z")


class Label(NamedTuple):
    """A target's name: the package (a directory under the workspace root) and a name in it.

    A named tuple: hashing and comparing labels is on every hot path of a build.
    """

    package: str
    name: str

    def __str__(self) -> str:
        return f"//{self.package}:{self.name}"

    def __repr__(self) -> str:
        return f"Label({str(self)!r})"

    def relative_to(self, package: str) -> str:
        """The shortest spelling of this label inside `package` (`:name` or `//pkg:name`)."""
        return f":{self.name}" if package == self.package else str(self)


def _check_path(text: str, path: str, what: str, allow_empty: bool) -> None:
    if _PATH.match(path):
        return
    if path == "":
        if allow_empty:
            return
        raise LabelError(text, f"empty {what}")
    if path.startswith("/") or path.endswith("/"):
        raise LabelError(text, f"{what} {path!r} must not start or end with '/'")
    for segment in path.split("/"):
        if segment == "":
            raise LabelError(text, f"{what} {path!r} contains an empty segment ('//')")
        if segment in (".", ".."):
            raise LabelError(text, f"{what} segment {segment!r} is not allowed")
        if not _SEGMENT.match(segment):
            bad = sorted({c for c in segment if not _SEGMENT.match(c)})
            raise LabelError(
                text, f"{what} segment {segment!r} has characters not allowed in labels: {''.join(bad)!r}"
            )


def _split_absolute(text: str) -> tuple[str, str | None]:
    """`//pkg:name` → ('pkg', 'name'); `//pkg` → ('pkg', None)."""
    if text.startswith("@"):
        raise LabelError(text, "external repositories (@repo//...) are not supported")
    body = text[2:]
    if ":" in body:
        package, name = body.split(":", 1)
        return package, name
    return body, None


_parsed: dict[tuple[str, str | None], Label] = {}


_SEG = r"(?!\.\.?(?:[/:]|\Z))[A-Za-z0-9_\-.+=,@~]+"
_ABSOLUTE = re.compile(rf"//((?:{_SEG}(?:/{_SEG})*)?):({_SEG}(?:/{_SEG})*)\Z")
_RELATIVE = re.compile(rf":?({_SEG}(?:/{_SEG})*)\Z")


def parse_label(text: str, package: str | None = None) -> Label:
    """Parse an absolute label, or a relative one (`:name` or `name`) inside `package`."""
    if type(text) is str:
        cached = _parsed.get((text, package))
        if cached is not None:
            return cached
        if m := _ABSOLUTE.match(text):
            label = Label(m.group(1), m.group(2))
        elif package is not None and not text.startswith("/") and (m := _RELATIVE.match(text)):
            label = Label(package, m.group(1))
        else:
            label = _parse_label(text, package)
    else:
        label = _parse_label(text, package)
    if len(_parsed) < 1_000_000:
        _parsed[(text, package)] = label
    return label


def _parse_label(text: str, package: str | None) -> Label:
    if not isinstance(text, str):
        raise LabelError(repr(text), f"a label must be a string, not {type(text).__name__}")
    if text == "":
        raise LabelError(text, "empty label")
    if text.strip() != text or any(c.isspace() for c in text):
        raise LabelError(text, "labels cannot contain whitespace")
    if text.startswith("//"):
        pkg, name = _split_absolute(text)
        _check_path(text, pkg, "package", allow_empty=True)
        if name is None:
            if pkg == "":
                raise LabelError(text, "'//' alone names no target (use '//:name' or a pattern like '//...')")
            name = pkg.rsplit("/", 1)[-1]
    elif text.startswith("@"):
        raise LabelError(text, "external repositories (@repo//...) are not supported")
    elif text.startswith("/"):
        raise LabelError(text, "absolute labels start with '//', not '/'")
    else:
        if package is None:
            raise LabelError(text, "a relative label needs a package; write it as //package:name")
        pkg = package
        name = text[1:] if text.startswith(":") else text
    if ":" in name:
        raise LabelError(text, "more than one ':'")
    _check_path(text, name, "target name", allow_empty=False)
    return Label(pkg, name)


class PatternKind(Enum):
    LABEL = "label"  # exactly one target
    ALL = "all"  # every rule target in one package
    RECURSIVE = "recursive"  # every rule target in a package and all packages below it


@dataclass(frozen=True, slots=True)
class TargetPattern:
    """What a command line names: one label, `//pkg:all` (`:*`), or `//pkg/...` (`//...`)."""

    kind: PatternKind
    package: str
    label: Label | None = None

    def __str__(self) -> str:
        if self.kind is PatternKind.LABEL:
            assert self.label is not None
            return str(self.label)
        if self.kind is PatternKind.ALL:
            return f"//{self.package}:all"
        return f"//{self.package}/..." if self.package else "//..."


_ALL_NAMES = ("all", "*", "all-targets")


def parse_pattern(text: str, package: str | None = None) -> TargetPattern:
    """Parse a label or a target pattern (`//pkg:all`, `//pkg:*`, `//pkg/...`, `//pkg/...:all`, `:all`)."""
    if not isinstance(text, str) or text == "":
        raise LabelError(str(text), "empty target pattern")
    relative = not text.startswith("//")
    if relative:
        if package is None:
            raise LabelError(text, "a relative pattern needs a package; write it as //package:name")
        pkg, name = package, (text[1:] if text.startswith(":") else text)
        if name in _ALL_NAMES:
            return TargetPattern(PatternKind.ALL, pkg)
        return TargetPattern(PatternKind.LABEL, pkg, parse_label(text, package))
    pkg, name = _split_absolute(text)
    if pkg == "..." or pkg.endswith("/..."):
        if name is not None and name not in _ALL_NAMES:
            raise LabelError(text, f"'...' can only be followed by ':all', not ':{name}'")
        base = "" if pkg == "..." else pkg[: -len("/...")]
        _check_path(text, base, "package", allow_empty=True)
        return TargetPattern(PatternKind.RECURSIVE, base)
    if name in _ALL_NAMES:
        _check_path(text, pkg, "package", allow_empty=True)
        return TargetPattern(PatternKind.ALL, pkg)
    return TargetPattern(PatternKind.LABEL, pkg, parse_label(text))


def absolute_pattern(word: str, offset: str) -> str:
    """A pattern word made absolute: `:x` and `x` name targets of the package at `offset`;
    `foo/...` and `foo:x` are below it. Absolute words (`//...`) are returned unchanged."""
    if not word or word.startswith(("//", "@")):
        return word
    if word.startswith(":"):
        return f"//{offset}{word}"
    if ":" in word or word == "..." or word.endswith("/..."):
        return f"//{offset}/{word}" if offset else f"//{word}"
    return f"//{offset}:{word}"
