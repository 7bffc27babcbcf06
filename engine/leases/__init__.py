"""Single-flight leases with fencing: at most one live holder per key in a shared store.

holders (who holds, by which clock) → objects (compare-and-swap, one per backend) → lease (the
protocol: acquire, renew, release, take over) → heartbeat (renewal while work runs). The
protocol, its guarantees and its limits are in docs/leases.md.
"""

from mbuild.leases.heartbeat import Heartbeat
from mbuild.leases.holders import Holder, LeaseLost
from mbuild.leases.lease import DEFAULT_RENEW, DEFAULT_TTL, LEASE_LOST_EXIT_CODE, Lease, LeaseStore, default_margin, open_leases
from mbuild.leases.objects import SwapObject, Conflict, LmdbObject, swap_object

__all__ = [
    "DEFAULT_RENEW", "DEFAULT_TTL", "LEASE_LOST_EXIT_CODE", "SwapObject", "Conflict", "Heartbeat", "Holder", "Lease",
    "LeaseLost", "LeaseStore", "LmdbObject", "swap_object", "default_margin", "open_leases",
]
