"""Publishing an action's result, in the one order that is safe: the lease is still ours (fencing)
→ the local action-cache record (create-if-absent) → the failure record cleared → the remote
cache (every blob first, then the record, create-if-absent).

Early cutoff needs nothing here: a dependent's key holds this result's tree digest, so a rerun
that produced identical bytes leaves every dependent's key, and hit, as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mbuild import faults
from mbuild.action.spec import ActionSpec, Produced, Ran
from mbuild.leases import Heartbeat
from mbuild.stores.cas import LocalCAS
from mbuild.stores.localdb import LocalDB

if TYPE_CHECKING:
    from mbuild.stores.remote import RemoteCache


def publish(spec: ActionSpec, produced: Produced, cas: LocalCAS, db: LocalDB, remote: RemoteCache | None, heartbeat: Heartbeat) -> Ran:
    """Publish `produced` as the result of `spec` (LeaseLost, publishing nothing, if the lease is no
    longer ours)."""
    faults.point("writing-result")
    heartbeat.check()  # fencing: publish only while the lease is still ours (raises LeaseLost)
    db.put_result(spec.key, produced.result)
    db.clear_failure(spec.key)
    uploaded = 0
    if remote is not None and remote.may_upload:
        before = remote.stats.bytes_up
        remote.publish(cas, spec.key, produced.result)
        uploaded = remote.stats.bytes_up - before
    faults.point("published")
    return Ran(produced.result, produced.log, bytes_up=uploaded, bytes_down=produced.bytes_down)
