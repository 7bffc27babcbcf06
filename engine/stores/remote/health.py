"""The remote's health as this build sees it: consecutive failures and the circuit breaker, writes
refused for permissions, and objects found corrupt.

A request that fails (unreachable, timed out) counts against the breaker; after `max_failures`
consecutive failures the store stops asking, reports once, and every later call is a miss or a
no-op. "Not found" is a normal miss, never a failure. A write refused for permissions (HTTP
401/403, a read-only file system) is no outage: uploads stop, reads go on. `SharedHealth` shares
all of it between the processes of one build (LocalDB.remote_health); `ProcessHealth` keeps it in
one process.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from mbuild.stores.remote.config import RemoteConfig
from mbuild.stores.remote.outcomes import describe
from mbuild.stores.remote.stats import TransferStats


class SharedHealth(Protocol):
    """What a store learns about its remote, shared with the other processes of the same build
    (LocalDB.remote_health is the one on the local cache's database). Reasons are one line each."""

    def down(self) -> str | None:
        """Why the build stopped using the remote, or None while it is in use."""

    def mark_down(self, reason: str) -> None: ...

    def failed(self) -> int:
        """Count one failed request; the consecutive failures now (every process's)."""

    def succeeded(self) -> None: ...

    def uploads_refused(self) -> str | None:
        """Why the remote refuses this build's writes, or None."""

    def refuse_uploads(self, reason: str) -> None: ...

    def mark_bad(self, kind: str, name: str, reason: str) -> None:
        """Remember a corrupt remote object: kind "blob" (a digest) or "ac" (an action key)."""

    def bad(self, kind: str, names: Iterable[str]) -> set[str]:
        """Those of `names` remembered as corrupt."""

    def any_bad(self) -> bool: ...

    def healed(self, kind: str, names: Iterable[str]) -> None:
        """Forget those of `names` (replaced by verified bytes)."""


class ProcessHealth:
    """SharedHealth for a store on its own: the same bookkeeping, in this process only."""

    def __init__(self):
        self._down: str | None = None
        self._refused: str | None = None
        self._failures = 0
        self._bad: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def down(self) -> str | None:
        return self._down

    def mark_down(self, reason: str) -> None:
        self._down = self._down or reason

    def failed(self) -> int:
        with self._lock:
            self._failures += 1
            return self._failures

    def succeeded(self) -> None:
        self._failures = 0

    def uploads_refused(self) -> str | None:
        return self._refused

    def refuse_uploads(self, reason: str) -> None:
        self._refused = self._refused or reason

    def mark_bad(self, kind: str, name: str, reason: str) -> None:
        with self._lock:
            self._bad.add((kind, name))

    def bad(self, kind: str, names: Iterable[str]) -> set[str]:
        with self._lock:
            return {n for n in names if (kind, n) in self._bad}

    def any_bad(self) -> bool:
        return bool(self._bad)

    def healed(self, kind: str, names: Iterable[str]) -> None:
        with self._lock:
            self._bad.difference_update((kind, n) for n in names)


class Breaker:
    """This process's circuit breaker on one remote, kept in step with the build's `health`: each
    outcome is counted here and there, and each change (down, uploads refused) is reported once
    through `warn`."""

    def __init__(self, config: RemoteConfig, health: SharedHealth, stats: TransferStats, warn: Callable[[str], None]):
        self.config, self.health, self.stats = config, health, stats
        self._warn_fn = warn
        self._failures = 0  # consecutive, in this process
        self._open = False  # the breaker, as this process last saw it
        self._no_uploads = False  # writes were refused (this process knows)
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child: a lock held by another thread of the parent is not ours."""
        self._lock = threading.Lock()

    def is_open(self) -> bool:
        """Is the breaker open? Here, or in another process of the build (then it opens here too)."""
        if self._open:
            return True
        reason = self.health.down()
        if reason is None:
            return False
        with self._lock:
            if self._open:
                return True
            self._open = True
        self.warn(f"remote cache unreachable: {reason}; continuing without it")
        return True

    def uploads_off(self) -> bool:
        if not self.config.upload or self._no_uploads:
            return True
        reason = self.health.uploads_refused()
        if reason is None:
            return False
        self._no_uploads = True
        self.warn(refused_message(reason))
        return True

    def mark_unreachable(self, reason: str) -> None:
        """Stop using the remote for the rest of the build, in every process of it; say so once."""
        with self._lock:
            if self._open:
                return
            self._open = True
        self.health.mark_down(reason)
        self.warn(f"remote cache unreachable: {reason}; continuing without it")

    def succeeded(self) -> None:
        self._failures = 0
        self.health.succeeded()

    def failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self.stats.errors += 1
            self._failures += 1
            if self._open:
                return
            count = self._failures
        count = max(count, self.health.failed())
        if count >= self.config.max_failures:
            self.mark_unreachable(f"{what} on {self.config.url} failed {count} times in a row (last: {describe(exc)})")

    def refuse_uploads(self, what: str, exc: BaseException) -> None:
        with self._lock:
            if self._no_uploads:
                return
            self._no_uploads = True
        reason = f"{what} on {self.config.url} was refused ({describe(exc)})"
        self.health.refuse_uploads(reason)
        self.warn(refused_message(reason))

    def report(self, what: str, exc: BaseException | None, write: bool) -> None:
        """The outcome of one request: a success resets the count, a refused write stops uploads,
        any other failure counts."""
        if exc is None:
            self.succeeded()
        elif write and refused(exc):
            self.refuse_uploads(what, exc)
        else:
            self.failed(what, exc)

    def corrupt(self, kind: str, name: str, message: str) -> None:
        """A corrupt remote object: counted, remembered for the build, reported."""
        self.stats.corrupt += 1
        self.health.mark_bad(kind, name, message)
        self.warn(message)

    def warn(self, message: str) -> None:
        try:
            self._warn_fn(message)
        except Exception:  # a reporter's bug must not break a transfer
            pass


def refused(exc: BaseException) -> bool:
    """Does a failed write say this client may not write there (permissions, a read-only file system)?"""
    if isinstance(exc, PermissionError):  # file:// EACCES/EPERM, s3fs AccessDenied
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return True
    if getattr(exc, "code", None) in (401, 403):  # gcsfs HttpError
        return True
    return isinstance(exc, OSError) and str(exc).startswith("Forbidden")  # gcsfs's HTTP 403


def refused_message(reason: str) -> str:
    return f"remote cache uploads refused: {reason}; no more uploads in this build (reads go on; --no-remote-upload does not try)"
