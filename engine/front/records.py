"""The history of builds and the commands that read it: `mbuild log` (the last builds; `--last`
replays a summary) and `mbuild info` (the cache: where, how big, what it holds, how often the last
builds hit it).

History: one JSON line per build in <cache>/history.jsonl, appended at the end of each build. One
`write()` of one line in append mode (tens of microseconds) and nothing per action: the no-op
path must not notice. For the same reason this is one module, cheap to import (every build
imports it), and records are plain JSON data typed by a TypedDict. Bounded: once the file passes
MAX_BYTES it is rewritten (to a temporary file, then renamed) with its last KEEP builds; a build
appending during that rewrite may lose its line. Lines are read back as untrusted data: a line
that is not a well-formed record is skipped.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import click
import orjson

from mbuild.model.workspace import load_workspace

if TYPE_CHECKING:
    from mbuild.model.workspace import Workspace

# --- the history file ---------------------------------------------------------------------------

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


# --- recording a build, and the commands ------------------------------------------------------------

_HIT_RATE_BUILDS = 10


def record_build(ws: Workspace, argv: list[str], result, lines: list[str]) -> None:
    """Append this build to the history: one line, one write."""
    summary = result.summary.record()["summary"]
    failures = [{"label": str(label), "error": (st.error or "").splitlines()[0] if st.error else ""} for label, st in result.failures]
    cwd = os.path.relpath(os.getcwd(), ws.root)
    append(ws.cache_dir, make(argv, cwd if not cwd.startswith("..") else os.getcwd(), summary, failures, lines))


@click.command(name="log")
@click.option("-n", "count", type=click.IntRange(min=1), default=10, show_default=True, help="How many of the last builds to list.")
@click.option("--last", is_flag=True, help="Replay the last build's summary, as it was printed.")
def log_command(count: int, last: bool) -> None:
    """The last builds: when, what was asked, counts, time, failures."""
    ws = load_workspace()
    records = read(ws.cache_dir, 1 if last else count)
    if not records:
        click.echo(f"no builds recorded in {ws.relpath(ws.cache_dir)} yet", err=True)
        return
    if last:
        r = records[-1]
        click.echo(f"{when(r)}  mbuild {' '.join(r['command'])}  (in {r['cwd']})")
        for line in r["lines"]:
            click.echo(line)
        return
    for r in records:
        seconds = float(r["summary"].get("seconds", 0.0))
        click.echo(f"{when(r)}  {outcome(r):<11} {seconds:8.2f}s  {counts(r)}  mbuild {' '.join(r['command'])}")
        for f in r["failures"][:3]:
            click.echo(f"    FAILED {f['label']}: {f['error']}")
        if len(r["failures"]) > 3:
            click.echo(f"    ... and {len(r['failures']) - 3} more failed")


@click.command()
def info() -> None:
    """The local cache: where it is, its size, its entries, and the hit rate of the last builds."""
    ws = load_workspace()
    cache = ws.cache_dir
    click.echo(f"workspace     {ws.root}")
    click.echo(f"cache         {cache}")
    if not (cache / "db" / "data.mdb").is_file():
        click.echo("              (empty: nothing built yet)")
    else:
        total, parts = _sizes(cache)
        click.echo(f"size          {_size(total)} ({', '.join(f'{name} {_size(n)}' for name, n in parts if n)})")
        entries = _entries(cache)
        blobs = _count_files(cache / "cas")
        click.echo(f"entries       {entries.get('ac', 0):,} action results, {blobs:,} blobs, {entries.get('labels', 0):,} targets remembered")
    remote = ws.settings.remote.url
    click.echo(f"remote cache  {remote or '(none)'}")
    records = read(cache, _HIT_RATE_BUILDS)
    if records:
        actions = sum(int(r["summary"].get("actions", 0)) for r in records)
        hits = sum(int(r["summary"].get("cache_hits", 0)) for r in records)
        rate = f"{100 * hits / actions:.1f}% cache hits ({hits:,} of {actions:,} actions)" if actions else "no actions"
        failed = sum(outcome(r) != "ok" for r in records)
        click.echo(f"last {len(records)} build{'s' if len(records) != 1 else ''}  {rate}, {failed} not ok; the last at {when(records[-1])}")
    else:
        click.echo("builds        none recorded yet")


def _sizes(cache: Path) -> tuple[int, list[tuple[str, int]]]:
    """Bytes on disk under the cache, each file counted once (output trees share the CAS's files)."""
    seen: set[tuple[int, int]] = set()
    parts = []
    for name in ("cas", "trees", "db", "logs", "resume", "exec", "buildc", "tmp", "dists"):
        parts.append((name, _walk(cache / name, seen)))
    rest = 0
    try:
        for entry in os.scandir(cache):
            if entry.is_file(follow_symlinks=False):
                rest += entry.stat(follow_symlinks=False).st_blocks * 512
    except OSError:
        pass
    parts.append(("other", rest))
    return sum(n for _, n in parts), parts


def _walk(root: Path, seen: set[tuple[int, int]]) -> int:
    total = 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _count_files(root: Path) -> int:
    count = 0
    try:
        for sub in os.scandir(root):
            if sub.is_dir(follow_symlinks=False):
                count += sum(1 for e in os.scandir(sub.path) if e.is_file(follow_symlinks=False))
    except OSError:
        pass
    return count


def _entries(cache: Path) -> dict[str, int]:
    from mbuild.stores.localdb import LocalDB

    return LocalDB(cache / "db").entries()


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def add_record_commands(group: click.Group) -> None:
    group.add_command(log_command)
    group.add_command(info)
