"""Building from Python: `mbuild.front.build(["//experiments:train_llama"])`, what the CLI calls too."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from mbuild.errors import DiskFullError, MbuildError, disk_full
from mbuild.events import Console
from mbuild.model.graph import build_graph
from mbuild.labels import Label, absolute_pattern, parse_pattern
from mbuild.model.loader import Loader
from mbuild.model.targets import SourceFile
from mbuild.action.services import Services
from mbuild.model.reads import Reads, recording
from mbuild.schedule import noop
from mbuild.schedule.amend import amend
from mbuild.schedule.scheduler import Scheduler
from mbuild.schedule.uses import record_used
from mbuild.stores.gc.lock import shared
from mbuild.stores.gc.usage import touch_request
from mbuild.schedule.status import BuildOptions, BuildResult
from mbuild.model.workspace import Workspace, check_directories, check_fray_backend, check_jobs, load_workspace


def expand_patterns(loader: Loader, patterns: Sequence[str]) -> list[Label]:
    """Labels named by command-line patterns, in order, each once."""
    labels: dict[Label, None] = {}
    for text in patterns:
        for label in loader.expand(parse_pattern(text)):
            labels.setdefault(label)
    return list(labels)


def absolute_patterns(ws: Workspace, patterns: Sequence[str]) -> list[str]:
    """`patterns` with the relative ones made absolute in the package of the current directory
    (the way `mbuild query` reads them); unchanged when that directory is outside `ws`."""
    offset = ws.package_at(Path.cwd())
    return list(patterns) if offset is None else [absolute_pattern(p, offset) for p in patterns]


def build(
    patterns: Sequence[str],
    *,
    workspace: Workspace | Path | None = None,
    jobs: int | None = None,
    keep_going: bool | None = None,
    dry_run: bool = False,
    events: Path | None = None,
    retry_failed: bool = True,
    remote: str | None = None,
    remote_upload: bool | None = None,
    fray: str | None = None,
    remote_jobs: int | None = None,
    console: Console | None = None,
    profile: Path | None = None,
    checked: bool = False,
) -> BuildResult:
    """Build what `patterns` name; returns per-target outcomes, outputs and a summary.

    `remote`: a remote cache URL overriding [remote].url ("" for none); `remote_upload` overrides
    [remote].upload; `fray` overrides [fray].backend (where remote-tagged actions run);
    `remote_jobs` overrides [fray].remote_jobs. `profile`: write a Chrome trace of the build there
    (trace.py). `checked`: `workspace` came from load_workspace(), which checked its directories
    already (the command line; a check costs about half a millisecond). Relative patterns (`:name`, `name`, `:all`, `...`,
    `sub/...`) are relative to the package of the current directory, as on the command line.
    """
    ws = workspace if isinstance(workspace, Workspace) else load_workspace(workspace)
    patterns = absolute_patterns(ws, patterns)
    if isinstance(workspace, Workspace) and not checked:
        check_directories(ws)
    if jobs is not None:
        check_jobs(jobs, "--jobs")
    if remote_jobs is not None:
        check_jobs(remote_jobs, "--remote-jobs", minimum=1)
    check_fray_backend(ws.settings.fray, fray)
    options = BuildOptions(
        jobs=jobs or ws.jobs,
        keep_going=ws.settings.build.keep_going if keep_going is None else keep_going,
        dry_run=dry_run,
        events=events,
        retry_failed=retry_failed,
        remote_url=remote,
        remote_upload=remote_upload,
        fray_backend=fray,
        remote_jobs=remote_jobs,
        trace=_trace(profile),
    )
    try:
        with shared(ws.cache_dir):  # nothing this build reads or builds is collected meanwhile
            return _build(ws, patterns, options, console, dry_run, events)
    finally:
        if options.trace is not None:
            options.trace.write()


def _trace(profile: Path | None):
    """The build's trace (--profile), or None; the module loads only when one is asked for."""
    if profile is None:
        return None
    from mbuild.trace import Trace

    return Trace(profile)


def _build(ws: Workspace, patterns: list[str], options: BuildOptions, console: Console | None, dry_run: bool, events: Path | None) -> BuildResult:
    trace = options.trace
    started = time.monotonic()
    started_ns = time.time_ns()
    checking = time.time()
    services = Services()
    request = noop.request_key(ws, patterns, options)
    if (ws.cache_dir / "db" / "data.mdb").is_file():
        memo = noop.check(services.stores(str(ws.cache_dir))[1], request)
        if trace is not None:
            trace.span("no-op check", "driver", checking, time.time(), args={"answered": memo is not None})
        if memo is not None:
            found = amend(memo, ws, options, console, services, started)
            if found is not None:
                if not dry_run:
                    touch_request(ws.cache_dir, request, started_ns)  # the no-op path: no write per action
                    record_used(services.stores(str(ws.cache_dir))[1], found, started_ns, only_if_ran=True)
                return found
    reads = Reads(ignore=noop.ignored(ws, events))
    try:
        with recording(reads):
            loading = time.time()
            loader = Loader(ws, reads)
            requested = expand_patterns(loader, patterns)
            graph = build_graph(loader, requested)
            if trace is not None:
                trace.span("load BUILD files", "driver", loading, time.time(), args={"targets": len(graph.order)})
            _say_source_files(graph, requested, console)
            result = Scheduler(ws, graph, requested, options, console, services).run()
    except Exception as exc:  # a full disk under the driver (database, outputs): one line naming the directory
        if isinstance(exc, MbuildError) or not disk_full(exc):
            raise
        raise DiskFullError.of(exc, str(ws.cache_dir)) from None
    db = services.stores(str(ws.cache_dir))[1]
    if not dry_run:
        record_used(db, result, started_ns)
    if not dry_run and not db.read_only and not any(isinstance(graph.node(label), SourceFile) for label in requested):
        noop.record(db, request, reads, ws, graph, result)
    return result


def _say_source_files(graph, requested: Sequence[Label], console: Console | None) -> None:
    """A requested source file has nothing to build: say so rather than succeed silently."""
    for label in requested:
        node = graph.node(label)
        if isinstance(node, SourceFile):
            (console or Console()).line(f"{label} is a source file ({node.relpath}), not a rule target: nothing to build for it")
