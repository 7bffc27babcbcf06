"""An action's log: its stdout and stderr sent to a file while it runs, kept under logs/<key>.log
when it printed something or failed, and the lines a failure report quotes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mbuild.errors import DiskFullError, disk_full

_LOG_TAIL_LINES = 30


class output_to:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to a log file for a while."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def size(self) -> int:
        return os.fstat(self.log.fileno()).st_size if not self.log.closed else os.path.getsize(self.path)

    def __enter__(self):
        self.log = open(self.path, "ab")
        self.log.truncate(0)
        if self.enabled:
            sys.stdout.flush()
            sys.stderr.flush()
            self.saved = (os.dup(1), os.dup(2))
            os.dup2(self.log.fileno(), 1)
            os.dup2(self.log.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self.saved[0], 1)
            os.dup2(self.saved[1], 2)
            os.close(self.saved[0])
            os.close(self.saved[1])
        self.log.close()
        return False


def keep_log(scratch_log: Path, cache: Path, key: str, size: int, force: bool) -> str | None:
    """Move a non-empty (or failed) action's log to logs/<key>.log; empty logs are not kept."""
    if size == 0 and not force:
        return None
    dest = cache / "logs" / f"{key}.log"
    try:
        os.replace(scratch_log, dest)
    except FileNotFoundError:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(scratch_log, dest)
    return str(dest)


def tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        data = path.read_bytes()[-64 * 1024 :]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def failure_line(exc: BaseException, out: Path) -> str:
    """What the summary says about a rule's own exception."""
    if disk_full(exc):
        return str(DiskFullError.of(exc, str(out)))
    if isinstance(exc, SystemExit):
        return f"the rule called sys.exit({exc.code!r}); a rule returns to succeed and raises an exception to fail"
    if isinstance(exc, KeyboardInterrupt):
        return "the rule raised KeyboardInterrupt (a Ctrl-C at the terminal stops the whole build instead)"
    return _first_lines(exc)


def _first_lines(exc: BaseException, lines: int = 3) -> str:
    """The exception's type and the first lines of its message (what a summary shows)."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    more = " ..." if len(text) > lines else ""
    return f"{type(exc).__name__}: " + "\n".join(text[:lines]) + more
