"""Run one action once across every builder sharing the cache: what a worker (or a fray job) does
with each action it is given.

This is `single_flight` (the core of `disk_cached(distributed_lock(fn))`) with the action cache as
the slot: a published result is a hit; a live holder elsewhere is `Busy`; otherwise the action
runs under its lease, renewed by a heartbeat, and is published only if the lease is still ours
at that moment. A lost lease stops the action (a worker process exits, status 75).
"""

from __future__ import annotations

import time
from pathlib import Path

from mbuild.action import resume, sandbox
from mbuild.action.outputs import provenance_record
from mbuild.action.run import execute
from mbuild.action.services import Services, process_services
from mbuild.action.spec import ActionSpec, Busy, ExecConfig, Failed, Outcome, Produced, Ran
from mbuild.errors import DiskFullError, disk_full
from mbuild.leases import Heartbeat, Holder, LeaseLost, LeaseStore
from mbuild.leases.guarded import RemoteLeaseError
from mbuild.rebuild.publish import publish
from mbuild.rebuild.single_flight import LeaseBusy, StepAlreadyDone, single_flight
from mbuild.rebuild.slot import ActionSlot
from mbuild.stores.inplace.store import InPlaceStore


def run_action(spec: ActionSpec, config: ExecConfig, services: Services | None = None) -> Outcome:
    """The outcome of running `spec` once (see the module docstring); never raises for the action's
    own failures. `services`: this process's open stores (default: process_services())."""
    from mbuild.action.progress import Reporter  # here: the driver imports this module on its no-op path too

    services = services or process_services()
    began = time.time()
    reporter = Reporter(services.reports, spec.key, spans=config.trace)
    box = sandbox.for_actions() if not config.in_process else sandbox.Sandbox(False, "runs on a thread of the driver")
    cas, db = services.stores(config.cache_dir)
    remote = services.remote(config)
    local_leases = remote is None or not remote.available or not remote.may_upload
    requests_before = remote.stats.requests if remote is not None else 0
    places = services.places(config)
    slot = ActionSlot(spec, db, services.leases(config, local=local_leases), remote if spec.trust_cache else None, places)

    def work(heartbeat: Heartbeat) -> Outcome:
        outcome = execute(spec, config, services, heartbeat, box, reporter)
        if not isinstance(outcome, Produced):
            return outcome  # a resumable action's working directory stays for the next attempt
        publishing = time.time()
        ran = publish(spec, outcome, cas, db, remote, heartbeat)
        reporter.span("publish" if remote is None else "publish (upload)", publishing, time.time())
        if spec.resumable:
            resume.discard(resume.work_root(Path(config.cache_dir), config.places, config.fray_job).path, spec.key)  # published: it has served
        if ran.result.place is not None and places is not None:
            write_provenance(places, spec, ran)
        return ran

    try:
        try:
            outcome = single_flight(slot, work, renew=config.lease_renew, wait=False)
        except RemoteLeaseError:
            # The remote lease store failed before the action started (the remote cache is an
            # accelerator, never a dependency): this action takes a local lease. The failure counted
            # for the remote's breaker: once that opens, every action of the build does.
            slot.leases = services.leases(config, local=True)
            outcome = single_flight(slot, work, renew=config.lease_renew, wait=False)
    except StepAlreadyDone:
        outcome = Ran(slot.result, "", hit=True, remote_hit=slot.remote_hit)
    except LeaseBusy as busy:
        outcome = Busy(busy.holder)
    except LeaseLost:
        outcome = Busy(_holder_or_none(slot.leases, spec.key), fenced=True)
    except Exception as exc:  # staging or publishing hit a full disk: one line, not a worker traceback
        if not disk_full(exc):
            raise
        outcome = Failed(str(DiskFullError.of(exc, config.cache_dir)), "", "")
    reporter.span(spec.label, began, time.time())
    if isinstance(outcome, Ran):
        outcome.requests = remote.stats.requests - requests_before if remote is not None else 0
        outcome.warnings = [*outcome.warnings, *services.take_warnings()]
    return outcome


def write_provenance(places: InPlaceStore, spec: ActionSpec, ran: Ran) -> None:
    """The provenance record next to a published in-place output; a failure to write it is said in
    the warnings, never fails the action (it is for people, and nothing reads it)."""
    try:
        places.write_provenance(ran.result.place.url, provenance_record(spec, ran.result))
    except Exception as exc:  # the store refused or failed: the result stands
        ran.warnings.append(f"in-place provenance: could not write it at {ran.result.place.url}: {type(exc).__name__}: {exc}")


def _holder_or_none(leases: LeaseStore, key: str) -> Holder | None:
    """Who holds the lease now, if the lease store can say (a remote one may be down by now)."""
    try:
        return leases.holder(key)
    except RemoteLeaseError:
        return None
