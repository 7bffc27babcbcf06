"""Remote lease objects that respect the remote cache's health: the remote cache is an accelerator,
never a dependency, so once it is down for this build its leases are not asked at all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mbuild.leases.objects import Conflict

if TYPE_CHECKING:
    from mbuild.stores.remote import RemoteCache


class RemoteLeaseError(Exception):
    """A remote lease operation failed, or was not tried because the remote cache is down."""


class GuardedLease:
    """A remote lease object that is not asked once the remote cache is down for this build, and
    whose outcomes count for the remote's breaker (shared by the build's processes): renewals and
    releases of leases taken before an outage fail at once instead of waiting out a deadline each."""

    def __init__(self, obj, remote: RemoteCache):
        self.obj, self.remote, self.where = obj, remote, obj.where

    def read(self):
        return self._do("reading", self.obj.read, write=False)

    def write(self, data: bytes, expected: str | None) -> str:
        return self._do("writing", lambda: self.obj.write(data, expected), write=True)

    def _do(self, verb: str, op, write: bool):
        what = f"{verb} lease {self.where}"
        if not self.remote.available or (write and not self.remote.may_upload):
            raise RemoteLeaseError(f"{what}: the remote cache is not in use")
        try:
            result = op()
        except Conflict:
            self.remote.report(what)
            raise
        except Exception as exc:
            self.remote.report(what, exc, write=write)
            raise RemoteLeaseError(f"{what} failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
        self.remote.report(what)
        return result
