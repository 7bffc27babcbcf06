"""Heartbeats: keep a held lease alive while work runs, and say so at once when it is lost.

Two threads per process (a renewer and a watchdog) serve every heartbeat, so an action costs no
thread start."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from mbuild.leases.holders import LeaseLost, clock
from mbuild.leases.lease import Lease

log = logging.getLogger("mbuild.leases")

# --------------------------------------------------------------------------------------------
# heartbeat


class Heartbeat:
    """Keep a held lease alive while work runs, and say so at once when it is lost.

    Renewals happen every `interval` (sooner after a failed attempt) and a watchdog wakes at our
    deadline. Both are two threads shared by every heartbeat of the process (starting and joining
    threads per action costs milliseconds on a loaded machine). On loss (LeaseLost from a
    renewal, or the deadline passing because renewals failed or hung, or the process was frozen)
    it sets `.lost`, marks the lease lost and calls every `on_lost` callback once, from the
    service thread. It does not release the lease: the caller does, after the work.
    """

    def __init__(self, lease: Lease, interval: float | None = None, on_lost: Callable[[], None] | None = None):
        self.lease = lease
        self.interval = lease.ttl / 3 if interval is None else interval
        if not 0 < self.interval < lease.ttl - lease.margin:
            raise ValueError(f"renew interval {self.interval}s must be below ttl - margin ({lease.ttl - lease.margin:.2f}s)")
        self.lost = threading.Event()
        self.renewals = 0
        self.last_error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = [on_lost] if on_lost else []
        self._mu = threading.Lock()
        self._stopped = False
        self._renewing = threading.Lock()  # held while a renewal of this lease is in flight
        self.next_renewal = 0.0

    def held(self) -> bool:
        return not self.lost.is_set() and self.lease.held()

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still held (call immediately before publishing)."""
        if not self.held():
            raise LeaseLost(f"lease {self.lease.where} is no longer held (epoch {self.lease.epoch})")

    def add_on_lost(self, callback: Callable[[], None]) -> None:
        """Another callback for the loss; called at once (in this thread) if it already happened."""
        with self._mu:
            if not self.lost.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def remove_on_lost(self, callback: Callable[[], None]) -> None:
        with self._mu:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def _fire(self) -> None:
        with self._mu:
            if self.lost.is_set():
                return
            self.lost.set()
            self.lease.mark_lost()
            callbacks = [] if self._stopped else list(self._callbacks)
        log.warning("lost lease %s (epoch %d)", self.lease.where, self.lease.epoch)
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("on_lost callback failed")

    def _renew(self) -> None:
        """One renewal (from the service's renewer thread)."""
        with self._renewing:
            if self._stopped:
                return
            try:
                self.lease.renew()
                self.renewals += 1
                self.last_error = None
                self.next_renewal = clock() + self.interval
            except LeaseLost:
                self.next_renewal = math.inf  # nothing left to renew
                if not self._stopped:
                    self._fire()
                return
            except Exception as exc:  # the store is unreachable: retry sooner, until the deadline
                self.last_error = exc
                log.warning("renewing lease %s failed: %s", self.lease.where, exc)
                self.next_renewal = clock() + min(self.interval, max(0.05, self.lease.remaining() / 4))
        if not self.lease.held():
            self.next_renewal = math.inf
            if not self._stopped:
                self._fire()

    def __enter__(self) -> Heartbeat:
        if not self.lease.held():
            raise LeaseLost(f"lease {self.lease.where} is not held")
        self.next_renewal = clock() + self.interval
        _service.add(self)
        return self

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    def stop(self) -> None:
        """Stop renewing. Waits for a renewal in flight (never for threads to end)."""
        with self._mu:
            self._stopped = True
        _service.remove(self)
        if self._renewing.acquire(timeout=1.0):  # a renewal stuck in I/O is left to finish on its own
            self._renewing.release()


class _HeartbeatService:
    """The two threads every Heartbeat of this process shares: a renewer (does the store I/O) and a
    watchdog (no I/O, so a hung renewal cannot delay noticing that a deadline passed)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._beats: set[Heartbeat] = set()
        self._started = False
        # When each thread will next wake on its own: a new heartbeat wakes them only if it is due sooner.
        self._renew_wake = self._watch_wake = math.inf

    def add(self, beat: Heartbeat) -> None:
        with self._cv:
            self._beats.add(beat)
            if not self._started:
                for target in (self._renewer, self._watchdog):
                    threading.Thread(target=target, name=f"lease-{target.__name__[1:]}", daemon=True).start()
                self._started = True
            if beat.next_renewal < self._renew_wake or clock() + beat.lease.remaining() < self._watch_wake:
                self._cv.notify_all()

    def remove(self, beat: Heartbeat) -> None:
        with self._cv:  # no wake-up: a thread that finds nothing to do goes back to sleep
            self._beats.discard(beat)

    def _renewer(self) -> None:
        while True:
            with self._cv:
                now = clock()
                due = [b for b in self._beats if b.next_renewal <= now]
                if not due:
                    self._renew_wake = min((b.next_renewal for b in self._beats), default=math.inf)
                    self._cv.wait(None if self._renew_wake == math.inf else max(0.0, self._renew_wake - now))
                    self._renew_wake = math.inf
                    continue
            for beat in due:
                beat._renew()

    def _watchdog(self) -> None:
        while True:
            with self._cv:
                now = clock()
                beats = [b for b in self._beats if not b.lost.is_set()]
                expired = [b for b in beats if b.lease.remaining() <= 0]
                if not expired:
                    self._watch_wake = min((now + b.lease.remaining() for b in beats), default=math.inf)
                    self._cv.wait(None if self._watch_wake == math.inf else self._watch_wake - now + 0.001)
                    self._watch_wake = math.inf
                    continue
            for beat in expired:
                if not beat._stopped:
                    beat._fire()


_service = _HeartbeatService()
