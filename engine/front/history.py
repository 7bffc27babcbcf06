"""The history of builds (`mbuild log`, `mbuild info`): one JSON line per build in
<cache>/history.jsonl, appended at the end of each build.

One `write()` of one line in append mode (tens of microseconds: the no-op path must not notice;
for the same reason records are plain JSON data, typed by a TypedDict, and this module is cheap
to import) and nothing per action. Bounded: once the file passes MAX_BYTES it is rewritten (to
a temporary file, then renamed) with its last KEEP builds; a build appending during that rewrite
may lose its line. Lines are read back as untrusted data: a line that is not a well-formed
record is skipped.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, TypedDict

import orjson

FILE = "history.jsonl"
KEEP = 200  # builds kept when the file is rewritten
MAX_BYTES = 1 << 20
_MAX_LINES = 60  # summary lines kept per build
_MAX_LINE = 400  # characters kept per summary line
_MAX_FAILURES = 20
_COUNTS = ("actions", "ran", "cache_hits", "failed", "seconds", "exit_code")


class BuildRecord(TypedDict):
    """One build as `mbuild log` shows it."""

    at: float  # time.time() at its end
    command: list[str]  # what was asked: the command line after `mbuild`
    cwd: str  # where it was asked (relative to the workspace root; "." for the root)
    summary: dict[str, Any]  # the events file's summary (actions, ran, cache_hits, failed, seconds, exit_code, ...)
    failures: list[dict[str, str]]  # {"label", "error"}
    lines: list[str]  # the summary as printed, for `mbuild log --last`


def make(command: list[str], cwd: str, summary: dict[str, Any], failures: list[dict[str, str]], lines: list[str]) -> BuildRecord:
    """A record of a build that just ended, cut to its bounds."""
    return BuildRecord(
        at=time.time(), command=list(command), cwd=cwd, summary=summary,
        failures=[{"label": f["label"], "error": f["error"][:_MAX_LINE]} for f in failures[:_MAX_FAILURES]],
        lines=[line[:_MAX_LINE] for line in lines[:_MAX_LINES]],
    )


def valid(data: Any) -> BuildRecord | None:
    """`data` if it is a well-formed record (a line of the file, not trusted), else None."""
    if not isinstance(data, dict):
        return None
    at, command, cwd, summary = data.get("at"), data.get("command"), data.get("cwd"), data.get("summary")
    failures, lines = data.get("failures", []), data.get("lines", [])
    if not (
        _number(at) and 0 <= at < 1e11 and isinstance(cwd, str) and isinstance(summary, dict)
        and _strings(command) and _strings(lines) and isinstance(failures, list)
        and all(isinstance(f, dict) and isinstance(f.get("label"), str) and isinstance(f.get("error"), str) for f in failures)
    ):
        return None
    if not all(_number(summary.get(k, 0)) and abs(summary.get(k, 0)) < 1e15 for k in _COUNTS):
        return None
    return BuildRecord(at=float(at), command=command, cwd=cwd, summary=summary, failures=failures, lines=lines)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def append(cache_dir: Path, record: BuildRecord) -> None:
    """Add a build to the history (silently not, where the cache cannot be written)."""
    path = cache_dir / FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return  # a read-only cache, or none: no history
    try:
        os.write(fd, orjson.dumps(record) + b"\n")
        size = os.fstat(fd).st_size
    except OSError:
        return
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        _rewrite(path)


def _rewrite(path: Path) -> None:
    """Keep the last KEEP builds (see the module docstring)."""
    try:
        kept = path.read_bytes().splitlines(keepends=True)[-KEEP:]
        tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)
    except OSError:
        pass


def read(cache_dir: Path, limit: int | None = None) -> list[BuildRecord]:
    """The recorded builds, oldest first (the last `limit` of them)."""
    try:
        data = (cache_dir / FILE).read_bytes()
    except OSError:
        return []
    records = []
    for line in data.splitlines():
        try:
            record = valid(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
        if record is not None:
            records.append(record)
    return records[-limit:] if limit else records


def outcome(record: BuildRecord) -> str:
    """ok / FAILED / interrupted, from a record's exit code."""
    code = record["summary"].get("exit_code", 0)
    return "ok" if code == 0 else "interrupted" if code == 130 else "FAILED"


def counts(record: BuildRecord) -> str:
    """`12 actions: 3 ran, 9 cache hits, 1 failed`."""
    s = record["summary"]
    n = int(s.get("actions", 0))
    words = (("ran", "ran"), ("cache_hits", "cache hits"), ("failed", "failed"), ("skipped", "skipped"), ("not_started", "not started"))
    parts = [f"{int(s[k])} {word}" for k, word in words if _number(s.get(k)) and abs(s[k]) < 1e15 and s[k]]
    return f"{n} action{'s' if n != 1 else ''}" + (f": {', '.join(parts)}" if parts else "")


def when(record: BuildRecord) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["at"]))
