"""Run one piece of work once across every builder: the whole algorithm of `distributed_lock` and
of the engine's action cache, over a Slot ("is it done?", "its lease").

A result that exists is a hit; a live holder elsewhere is waited for (or reported as busy);
otherwise the work runs under the lease, renewed by a heartbeat, and is published only while the
lease is still ours (fencing)."""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from mbuild.leases import (
    Heartbeat,
    Holder,
    Lease,
)
from mbuild.leases.holders import clock

T = TypeVar("T")
class StepAlreadyDone(Exception):
    """The step's result is already published (by another builder, or an earlier run)."""


class LeaseBusy(Exception):
    """Another builder holds the step's live lease (raised by `single_flight(..., wait=False)`)."""

    def __init__(self, where: str, holder: Holder | None):
        self.holder = holder
        super().__init__(f"{where} is held by {holder.describe() if holder else 'another builder'}")


# --------------------------------------------------------------------------------------------
# the engine-agnostic core


class Slot(Protocol):
    """One unit of work that should run once: where "done" is recorded, and its lease."""

    def done(self) -> bool:
        """Is the result published? (Called before acquiring, after acquiring, and on every poll.)"""

    def lease(self) -> Lease:
        """A fresh Lease on this work's key (from a LeaseStore)."""


_current: contextvars.ContextVar[Heartbeat | None] = contextvars.ContextVar("mbuild_lease", default=None)


def current_lease() -> Heartbeat | None:
    """The heartbeat of the innermost lease this thread's work runs under (`.held()`, `.check()`,
    `.lease.holder()`), or None outside `distributed_lock` / `single_flight`."""
    return _current.get()


def single_flight(
    slot: Slot,
    work: Callable[[Heartbeat], T],
    *,
    renew: float | None = None,
    on_lost: Callable[[], None] | None = None,
    on_wait: Callable[[Holder | None], None] | None = None,
    poll: float = 0.05,
    max_poll: float = 5.0,
    timeout: float | None = None,
    wait: bool = True,
) -> T:
    """Run `work(heartbeat)` under the slot's lease, once across builders; StepAlreadyDone if done.

    With wait=False a live holder is not waited for: LeaseBusy(holder) is raised at once (the
    engine's scheduler waits itself, so it can show who holds what and keep its workers busy).

    1. done? -> StepAlreadyDone. 2. try to acquire the lease (fresh, released or stale); if someone
    else holds it live, call `on_wait(holder)` and poll again after a backoff (poll .. max_poll,
    never sleeping past the holder's expiry), until `timeout` (TimeoutError). 3. done again? (the
    previous holder may have just finished) -> StepAlreadyDone. 4. run work under a Heartbeat
    renewing every `renew` seconds (default ttl/3) that calls `on_lost` from its thread if the lease
    is lost. 5. release the lease, whatever happened.

    `work` must publish its result only after `heartbeat.check()` (raises LeaseLost) and with a
    create-if-absent write: that is the fencing contract. Its return value is returned.
    """
    lease = slot.lease()
    started = clock()
    delay = poll
    while True:
        if slot.done():
            raise StepAlreadyDone(lease.where)
        if lease.try_acquire():
            break
        holder = lease.seen
        if not wait:
            raise LeaseBusy(lease.where, holder)
        if on_wait is not None:
            on_wait(holder)
        nap = delay
        if holder is not None:  # wake up when it would go stale, not max_poll later
            nap = min(nap, max(0.01, holder.expires - time.time() + 0.01))
        if timeout is not None:
            left = timeout - (clock() - started)
            if left <= 0:
                who = f"; held by {holder.describe()}" if holder else ""
                raise TimeoutError(f"waited {timeout:.0f}s for {lease.where}{who}")
            nap = min(nap, left)
        time.sleep(nap * random.uniform(0.8, 1.0))  # polling the store, with jitter
        delay = min(delay * 1.5, max_poll)
    try:
        if slot.done():
            raise StepAlreadyDone(lease.where)
        with Heartbeat(lease, renew, on_lost) as heartbeat:
            token = _current.set(heartbeat)
            try:
                return work(heartbeat)
            finally:
                _current.reset(token)
    finally:
        lease.release()
