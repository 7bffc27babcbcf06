"""One request to the remote: its deadline, and what its outcome means for the circuit breaker.

Every request has a deadline: `timeout` seconds, plus one second per MiB moved (for a record, per
MiB received so far: a big record may take its time, a stalled one may not). A request past it,
or failing (unreachable, refused), counts against the breaker; "not found" and "already exists"
are answers, not failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mbuild.stores.remote import limits
from mbuild.stores.remote.config import RemoteConfig
from mbuild.stores.remote.health import Breaker, refused
from mbuild.stores.remote.outcomes import Corrupt, DeadlinePassed, Exists, Failed, Missing, describe
from mbuild.stores.remote.stats import TransferStats

if TYPE_CHECKING:
    from mbuild.stores.remote.backends import Backend
    from mbuild.stores.remote.transfers import Budget


@dataclass
class Link:
    """A connected backend and what every request through it shares (made again after a fork):
    the requests in flight, the memory for whole transfers, the large uploads at once."""

    backend: Backend
    config: RemoteConfig
    breaker: Breaker
    stats: TransferStats
    requests: asyncio.Semaphore
    budget: Budget
    large_uploads: asyncio.Semaphore

    def ac(self, key: str) -> str:
        return f"{self.backend.root}/ac/{key}"

    def blob(self, digest: str) -> str:
        return f"{self.backend.root}/cas/{digest[:2]}/{digest}"

    async def call(
        self, what: str, factory: Callable[[], Any], *, nbytes: int = 0, progress: Callable[[], int] | None = None,
        missing_ok: bool = True, exists_ok: bool = False, write: bool = False,
    ):
        """One request with its deadline. Raises Missing, Exists, Corrupt or Failed; counts failures."""
        breaker = self.breaker
        if breaker.is_open():
            raise Failed("remote cache unavailable")
        async with self.requests:
            if breaker.is_open():
                raise Failed("remote cache unavailable")
            try:
                result = await self._within_deadline(factory, nbytes, progress)
            except FileNotFoundError as exc:
                if not missing_ok:
                    breaker.failed(what, exc)
                    raise Failed(str(exc)) from None
                breaker.succeeded()
                raise Missing() from None
            except FileExistsError as exc:
                if not exists_ok:
                    breaker.failed(what, exc)
                    raise Failed(describe(exc)) from None
                breaker.succeeded()
                raise Exists() from None
            except Corrupt:
                breaker.succeeded()  # it answered
                raise
            except TimeoutError as exc:  # our deadline, or the transport's connect/read timeout
                why = str(exc) if isinstance(exc, DeadlinePassed) else f"timed out (the transport's limit, {self.config.timeout:g}s)"
                breaker.failed(what, TimeoutError(why))
                raise Failed(why) from exc
            except Exception as exc:
                if write and refused(exc):
                    breaker.refuse_uploads(what, exc)
                else:
                    breaker.failed(what, exc)
                raise Failed(describe(exc)) from None
            breaker.succeeded()
            return result

    async def _within_deadline(self, factory: Callable[[], Any], nbytes: int, progress: Callable[[], int] | None):
        """Await factory() for timeout + nbytes / MIN_RATE seconds. With `progress` (bytes received
        so far) the limit grows with what arrived: timeout + received / MIN_RATE."""
        timeout = self.config.timeout
        limit = timeout + nbytes / limits.MIN_RATE
        if progress is None:
            deadline = asyncio.timeout(limit)
            try:
                async with deadline:
                    return await factory()
            except TimeoutError:
                if deadline.expired():
                    raise DeadlinePassed(f"timed out (limit {limit:g}s)") from None
                raise
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(factory())
        start = loop.time()
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, start + limit - loop.time()))
                if done:
                    return task.result()
                grown = timeout + max(nbytes, progress()) / limits.MIN_RATE
                if grown <= limit:
                    raise DeadlinePassed(f"timed out (limit {limit:g}s)")
                limit = grown
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
