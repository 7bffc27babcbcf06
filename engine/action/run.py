"""Run one action: stage its inputs, call the rule with its stdout and stderr in a log, check that
its inputs were left alone, and store its outputs (CAS, then the tree cache).

Publishing the result is not done here: the rebuilder does it under the action's lease
(rebuild/publish.py). A crash at any moment is safe: outputs are checked and every blob is stored
before the action-cache entry that names them can be written.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild import faults
from mbuild.action import resume, sandbox
from mbuild.action.context import invoke
from mbuild.action.inputs import InputGone, stage_inputs
from mbuild.action.logs import failure_line, keep_log, output_to, tail
from mbuild.action.outputs import OutputsMissing, action_meta, check_declared, check_declared_in_place, collect
from mbuild.action.services import Services
from mbuild.action.spec import ActionSpec, ExecConfig, Failed, InputUnavailable, Produced
from mbuild.errors import StopRequested
from mbuild.leases import Heartbeat, LeaseLost
from mbuild.leases.on_loss import stop_on_loss
from mbuild.stores import trees
from mbuild.stores.inplace.listing import ListingError
from mbuild.stores.inplace.manifest import Place
from mbuild.stores.inplace.store import InPlaceStore
from mbuild.stores.localdb import LocalDB
from mbuild.stores.results import ActionResult

if TYPE_CHECKING:
    from mbuild.action.progress import Reporter


def execute(
    spec: ActionSpec, config: ExecConfig, services: Services, heartbeat: Heartbeat, box: sandbox.Sandbox, reporter: Reporter | None = None,
) -> Produced | Failed | InputUnavailable:
    """Stage inputs, run the rule, check and store its outputs. A lost lease stops the rule
    (LeaseLost in this thread, or the process exits, as `config.in_process` says). `reporter`:
    where the rule's ctx.progress goes, and this action's phases when the build is profiled."""
    if reporter is None:
        from mbuild.action.progress import Reporter  # (not at the top: the driver's no-op path imports this module)

        reporter = Reporter(None, spec.key)
    staging = time.time()
    faults.point("acquired")
    cas, db = services.stores(config.cache_dir)
    remote = services.remote(config)
    cache = Path(config.cache_dir)
    scratch = services.scratch(cache)
    scratch.reset()
    box.cover_trees(cas)  # before staging: trees placed for this action are written through the cover
    try:
        paths, fetched, guard = stage_inputs(spec, cas, db, remote, Path(config.workspace_root))
    except InputGone as gone:
        return InputUnavailable(gone.label, gone.reason)
    faults.point("running")
    started = time.time()
    reporter.span("stage inputs", staging, started)
    places = services.places(config) if spec.in_place else None
    if spec.in_place and places is None:
        return failed(db, spec, f"{spec.label} is in_place but this build has no [outputs] settings", "", "")
    url = places.url_for(spec.label, spec.key) if places is not None else None
    protected = [str(paths[label]) for label in spec.inputs if "://" not in str(paths[label])]
    with output_to(scratch.log, config.capture_output) as log, stop_on_loss(heartbeat, "interrupt" if config.in_process else "exit"), box.read_only(protected):
        if config.capture_output:
            reporter.started(str(scratch.log))
        try:
            work = claim_work(spec, resume.work_root(cache, config.places, config.fray_job), heartbeat) if spec.resumable else None
            if places is not None:
                prepare_place(spec, places, url, heartbeat)
                value = invoke(spec, paths, scratch.out, scratch.tmp, work, url, places, reporter)
            else:
                value = invoke(spec, paths, scratch.out, scratch.tmp, work, places=services.places(config), reporter=reporter)
                check_declared(spec.outputs, scratch.out)
        except LeaseLost:
            raise
        except BaseException as exc:  # the rule's own failure (sys.exit and KeyboardInterrupt too): report it, cache nothing
            if isinstance(exc, StopRequested):
                raise  # the driver is stopping this worker: unwind, releasing the lease
            with contextlib.suppress(OSError):  # a full disk must not turn the failure into a crash
                print("".join(traceback.format_exception(exc)), file=sys.stderr, flush=True)
            failure = exc
        else:
            failure = None
    if failure is not None and not heartbeat.held():
        # fenced while it ran: a resumable action whose directory was handed on fails to find it;
        # that is the lost lease, not the action's own failure (nothing is recorded)
        raise LeaseLost(f"lease on {spec.label} lost while it ran ({type(failure).__name__}: {failure})")
    changed = guard.changed()
    if changed is not None:
        guard.drop_damaged(cas)
        label, path, source = changed
        what = (
            f"the workspace file {path} changed while the action ran" if source
            else f"input {label} changed while the action ran ({path}); its damaged copy was dropped and is rebuilt when needed"
        )
        print(f"mbuild: {what}", file=sys.stderr, flush=True)
        log_path = keep_log(scratch.log, cache, spec.key, log.size(), force=True)
        return failed(
            db, spec, f"{what}: actions must not write to their inputs (write outputs under ctx.out, scratch files under ctx.tmp)",
            tail(Path(log_path)), log_path,
        )
    log_path = keep_log(scratch.log, cache, spec.key, log.size(), force=failure is not None)
    if failure is not None:
        return failed(db, spec, failure_line(failure, scratch.out), tail(Path(log_path)), log_path)
    faults.point("hashing")
    hashing = time.time()
    reporter.span("run rule", started, hashing)
    if places is not None:
        return produced_in_place(spec, places, url, value, started, scratch.out, cas, db, log_path or "", fetched)
    try:
        result = collect(scratch.out, cas, value, action_meta(spec, started))
    except ValueError as exc:
        return failed(db, spec, str(exc), "", log_path or "")
    trees.adopt(scratch.out, result, cas)
    reporter.span("hash outputs", hashing, time.time())
    return Produced(result, log_path or "", bytes_down=fetched)


def claim_work(spec: ActionSpec, root: resume.Root, heartbeat: Heartbeat) -> Path:
    """Take the action's working directory under its lease (resume.py), saying in its log whether it resumes."""
    heartbeat.check()
    if root.note:
        print(f"mbuild: {spec.label}: {root.note}", flush=True)
    claimed = resume.claim(root.path, spec.key, heartbeat.lease.epoch, heartbeat.lease.owner)
    if claimed.resumed_from is not None:
        print(f"mbuild: resuming {spec.label} in {claimed.path} (left by lease epoch {claimed.resumed_from})", flush=True)
    return claimed.path


def prepare_place(spec: ActionSpec, places: InPlaceStore, url: str, heartbeat: Heartbeat) -> None:
    """Under the lease: clear what an earlier attempt left at the output's URL (a resumable action
    keeps it), saying so in the log. Raises InPlaceTaken for objects mbuild did not write there."""
    heartbeat.check()
    outcome = places.prepare(url, spec.key, spec.label, keep=spec.resumable)
    if outcome == "cleared":
        print(f"mbuild: cleared what an earlier attempt of {spec.label} left at {url}", flush=True)
    elif outcome == "resumed":
        print(f"mbuild: resuming {spec.label} in place at {url}", flush=True)


def produced_in_place(
    spec: ActionSpec, places: InPlaceStore, url: str, value, started: float, out: Path, cas, db: LocalDB, log: str, fetched: int,
) -> Produced | Failed:
    """The result of an in-place action: the store's listing of its URL (no byte read from a bucket)
    as the manifest, checked against its declared outputs."""
    try:
        entries = places.list(url)
        check_declared_in_place(spec.outputs, entries, out, url)
    except (ListingError, OutputsMissing) as exc:
        return failed(db, spec, str(exc), "", log)
    except Exception as exc:  # the store failed to list (network, permissions): nothing can be recorded
        return failed(db, spec, f"cannot list the in-place output at {url}: {type(exc).__name__}: {exc}", "", log)
    result = ActionResult.make((), (), (), value, action_meta(spec, started), Place(url, entries))
    trees.adopt(out, result, cas)  # an empty tree: dependents read the output at its URL
    return Produced(result, log, bytes_down=fetched)


def failed(db: LocalDB, spec: ActionSpec, error: str, detail: str, log: str) -> Failed:
    """Record a failure (so `--no-retry-failed` can name it); failures are never cached as results."""
    db.record_failure(spec.key, {"label": spec.label, "error": error, "log": log, "at": time.time(), "host": socket.gethostname(), "pid": os.getpid()})
    return Failed(error, detail, log)
