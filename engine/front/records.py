"""`mbuild log` (the last builds, `--last` replays a summary) and `mbuild info` (the cache: where,
how big, what it holds, how often the last builds hit it), and recording each build for them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mbuild.model.workspace import load_workspace

if TYPE_CHECKING:
    from mbuild.model.workspace import Workspace

_HIT_RATE_BUILDS = 10


def record_build(ws: Workspace, argv: list[str], result, lines: list[str]) -> None:
    """Append this build to the history (front/history.py): one line, one write."""
    from mbuild.front import history

    summary = result.summary.record()["summary"]
    failures = [{"label": str(label), "error": (st.error or "").splitlines()[0] if st.error else ""} for label, st in result.failures]
    cwd = os.path.relpath(os.getcwd(), ws.root)
    history.append(ws.cache_dir, history.make(argv, cwd if not cwd.startswith("..") else os.getcwd(), summary, failures, lines))


@click.command(name="log")
@click.option("-n", "count", type=click.IntRange(min=1), default=10, show_default=True, help="How many of the last builds to list.")
@click.option("--last", is_flag=True, help="Replay the last build's summary, as it was printed.")
def log_command(count: int, last: bool) -> None:
    """The last builds: when, what was asked, counts, time, failures."""
    from mbuild.front import history

    ws = load_workspace()
    records = history.read(ws.cache_dir, 1 if last else count)
    if not records:
        click.echo(f"no builds recorded in {ws.relpath(ws.cache_dir)} yet", err=True)
        return
    if last:
        r = records[-1]
        click.echo(f"{history.when(r)}  mbuild {' '.join(r['command'])}  (in {r['cwd']})")
        for line in r["lines"]:
            click.echo(line)
        return
    for r in records:
        seconds = float(r["summary"].get("seconds", 0.0))
        click.echo(f"{history.when(r)}  {history.outcome(r):<11} {seconds:8.2f}s  {history.counts(r)}  mbuild {' '.join(r['command'])}")
        for f in r["failures"][:3]:
            click.echo(f"    FAILED {f['label']}: {f['error']}")
        if len(r["failures"]) > 3:
            click.echo(f"    ... and {len(r['failures']) - 3} more failed")


@click.command()
def info() -> None:
    """The local cache: where it is, its size, its entries, and the hit rate of the last builds."""
    from mbuild.front import history

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
    records = history.read(cache, _HIT_RATE_BUILDS)
    if records:
        actions = sum(int(r["summary"].get("actions", 0)) for r in records)
        hits = sum(int(r["summary"].get("cache_hits", 0)) for r in records)
        rate = f"{100 * hits / actions:.1f}% cache hits ({hits:,} of {actions:,} actions)" if actions else "no actions"
        failed = sum(history.outcome(r) != "ok" for r in records)
        click.echo(f"last {len(records)} build{'s' if len(records) != 1 else ''}  {rate}, {failed} not ok; the last at {history.when(records[-1])}")
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
