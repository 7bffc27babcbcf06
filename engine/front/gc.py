"""`mbuild gc`: collect the local cache, least recently used first (stores/gc)."""

from __future__ import annotations

import re
import time
from datetime import datetime

import click

from mbuild.errors import MbuildError
from mbuild.front.records import _size as size_text
from mbuild.model.workspace import is_mbuild_dir, load_workspace

_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class GcUsageError(MbuildError):
    """A gc option that cannot be read (names the option and the value)."""


def parse_size(text: str) -> int:
    """`20G`, `500M`, `1.5G`, `4096` (bytes; K, M, G, T are powers of 1024) -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if m is None:
        raise GcUsageError(f"--max-size {text!r}: expected a size such as 20G, 500M or 4096 (bytes)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def parse_age(text: str) -> int:
    """`30d`, `12h`, `90m`, `45s`, `2w` -> nanoseconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m is None:
        raise GcUsageError(f"--max-age {text!r}: expected an age such as 30d, 12h, 90m, 45s or 2w")
    return int(float(m.group(1)) * _AGE_UNITS[m.group(2)] * 1_000_000_000)


@click.command(name="gc")
@click.option("--max-size", metavar="SIZE", help="Collect least recently used results until the cache is at most SIZE (e.g. 20G).")
@click.option("--max-age", metavar="AGE", help="Collect results not used for AGE (e.g. 30d, 12h).")
@click.option("--keep-builds", type=click.IntRange(min=0), default=0, metavar="N", help="Never collect what the last N builds used.")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be collected and how much it frees; delete nothing.")
def gc_command(max_size: str | None, max_age: str | None, keep_builds: int, dry_run: bool) -> None:
    """Collect the local cache: results (records, trees, blobs, logs) unused for --max-age, then the
    least recently used until it fits --max-size. Safe while builds run: each batch waits for
    running builds to end and holds new ones back while it deletes."""
    from mbuild.stores.cas import LocalCAS
    from mbuild.stores.gc.collect import collect
    from mbuild.stores.gc.plan import Policy, make_plan
    from mbuild.stores.localdb import LocalDB

    if max_size is None and max_age is None:
        raise GcUsageError("mbuild gc: give --max-size SIZE and/or --max-age AGE (e.g. mbuild gc --max-size 20G)")
    policy = Policy(parse_size(max_size) if max_size else None, parse_age(max_age) if max_age else None, keep_builds)
    ws = load_workspace()
    cache = ws.cache_dir
    if not (cache / "db" / "data.mdb").is_file():
        click.echo(f"{ws.relpath(cache)}: no local cache yet; nothing to collect")
        return
    if not is_mbuild_dir(cache):
        raise GcUsageError(f"refusing to collect {cache}: mbuild did not create it (no mbuild marker in it)")
    cas, db = LocalCAS(cache), LocalDB(cache / "db")
    try:
        if db.read_only and not dry_run:
            raise GcUsageError(f"cannot collect {cache}: it is read-only for this user (a dry run can still say what would go)")
        if dry_run:
            plan = make_plan(db, cas, policy, time.time_ns())
            for e in plan.victims:
                when = datetime.fromtimestamp(e.last_use / 1e9).strftime("%Y-%m-%d %H:%M:%S") if e.last_use else "never recorded"
                click.echo(f"would collect {e.label}  (key {e.key[:12]}, last used {when})")
            click.echo(
                f"would collect {len(plan.victims)} results ({len(plan.blobs)} blobs, {len(plan.trees)} trees), "
                f"freeing {size_text(plan.freed)}: {size_text(plan.total)} -> {size_text(plan.total - plan.freed)}; "
                f"{plan.kept} results kept"
            )
            return
        done = collect(db, cas, policy)
        db.sync()
        click.echo(
            f"collected {done.results} results ({done.blobs} blobs, {done.trees} trees, {done.logs} logs), "
            f"freed {size_text(done.freed)}: {size_text(done.before)} -> {size_text(max(done.before - done.freed, 0))}"
        )
    finally:
        db.close()
