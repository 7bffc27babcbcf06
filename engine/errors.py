"""Typed errors. Every error a user can cause says which file, line, label or setting is at fault."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable


class MbuildError(Exception):
    """Base of all errors mbuild reports to users (exit code 2 for usage/config, 1 for failed builds)."""

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean ...?)' suffix naming the closest choices, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


class LabelError(MbuildError):
    """A label or target pattern that does not parse."""

    def __init__(self, text: str, reason: str):
        self.text = text
        self.reason = reason
        super().__init__(f"invalid label {text!r}: {reason}")


class WorkspaceError(MbuildError):
    """WORKSPACE.toml is missing or unreadable, or a setting (or the flag overriding it) is unknown, mistyped or out of range."""


class EncodingError(MbuildError):
    """A value that cannot be encoded deterministically into an action key."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"attribute {path!r}: {reason}")


class BuildFileError(MbuildError):
    """A BUILD file failed to evaluate or declared something invalid."""

    def __init__(self, file: str, line: int | None, message: str):
        self.file = file
        self.line = line
        self.message = message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")


class RuleDefinitionError(MbuildError):
    """A rule (or a call to it) is declared wrongly: unknown attribute, wrong type, bad outputs."""


class NoSuchPackageError(MbuildError):
    """A label names a package with no BUILD.py."""


class NoSuchTargetError(MbuildError):
    """A label names a target its package does not define (and no such source file exists)."""


class SourceFileError(MbuildError):
    """A source file that may not be used as an input (a symbolic link leading outside the workspace)."""


class OutputPathTaken(MbuildError):
    """Something mbuild did not create is where a requested target's outputs go; it is never replaced."""


class CycleError(MbuildError):
    """The dependency graph has a cycle; `cycle` lists it, first label repeated at the end."""

    def __init__(self, cycle: list[str]):
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join(cycle))


class CacheCorruptError(MbuildError):
    """A cache entry or blob failed verification. Callers treat it as a miss, never as a result."""


class InPlaceChanged(CacheCorruptError):
    """An in-place output's store no longer holds what its record's manifest says (a miss; it reruns)."""


class RecordKeyMismatch(CacheCorruptError):
    """A result record stored under one key answers another (copied or swapped): a miss, with a warning."""

    def __init__(self, key: str, named: str):
        self.key = key
        self.named = named
        super().__init__(f"the record stored under {key} answers another action ({named}); ignored")


class StaleRecordFormat(CacheCorruptError):
    """A record written by an older mbuild, before records named their key: a quiet miss."""


class BlobUnavailableError(CacheCorruptError):
    """A blob an action result names is missing or does not match its digest."""

    def __init__(self, digest: str, reason: str):
        self.digest = digest
        self.reason = reason
        super().__init__(f"blob {digest}: {reason}")


class DiskFullError(MbuildError):
    """A write failed because the disk is full (ENOSPC, or LMDB's "No space left on device")."""

    def __init__(self, directory: str):
        self.directory = directory
        super().__init__(
            f"no space left on device writing in {directory}: free space on that disk, "
            "or move [build].cache_dir (or outputs_dir) to a larger one"
        )

    @classmethod
    def of(cls, exc: BaseException, fallback: str) -> DiskFullError:
        """The error for `exc` (a full disk), naming the directory it was writing in if it says, else `fallback`."""
        for cause in _chain(exc):
            if isinstance(cause, OSError) and (cause.filename2 or cause.filename):
                return cls(os.path.dirname(os.fspath(cause.filename2 or cause.filename)) or fallback)
        return cls(fallback)


def disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from or while handling, is a full disk."""
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if not isinstance(cause, OSError) and "No space left on device" in str(cause):  # lmdb.DiskError carries no errno
            return True
    return False


def _chain(exc: BaseException | None, limit: int = 20):
    """`exc` and the exceptions behind it (__cause__, else __context__), at most `limit`."""
    while exc is not None and limit > 0:
        yield exc
        exc, limit = exc.__cause__ or exc.__context__, limit - 1


class StopRequested(SystemExit):
    """Not a user error: the driver stopped this worker (SIGTERM). The worker unwinds, releasing the
    action's lease, and exits; a SystemExit raised by a rule's own code is an action failure instead."""
