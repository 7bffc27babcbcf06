"""An action as a single-flight Slot: done = a valid result exists (local, or remote with every
blob present: rebuild.lookup), lease = its key's lease."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mbuild.action.spec import ActionSpec
from mbuild.leases import Lease, LeaseStore
from mbuild.rebuild.lookup import lookup_one
from mbuild.stores.inplace.store import InPlaceStore
from mbuild.stores.localdb import LocalDB
from mbuild.stores.results import ActionResult

if TYPE_CHECKING:
    from mbuild.stores.remote import RemoteCache


class ActionSlot:
    def __init__(self, spec: ActionSpec, db: LocalDB, leases: LeaseStore, remote: RemoteCache | None, places: InPlaceStore | None = None):
        self.spec, self.db, self.leases, self.remote, self.places = spec, db, leases, remote, places
        self.result: ActionResult | None = None  # the result `done` found
        self.remote_hit = False

    def done(self) -> bool:
        found = lookup_one(self.spec.key, self.db, self.remote, places=self.places)
        self.result = found.result if found is not None else None
        self.remote_hit = found is not None and found.remote
        return found is not None

    def lease(self) -> Lease:
        return self.leases.lease(self.spec.key, note=self.spec.label)
