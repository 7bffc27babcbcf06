"""`distributed_lock` and `disk_cached`: run a step once across many builders, cache where it wrote.

The Python primitives Marin users know, on mbuild's leases (engine/leases.py, docs/leases.md)::

    def tokenize(output_path: str) -> dict:          # a step: writes under output_path
        ...
        return {"shards": 12}

    # Run once, however many processes call this at once; the others wait, then get the result:
    stats = disk_cached(distributed_lock(tokenize), "gs://bucket/tok-3f2a")
    # With an explicit format (`save` after fn, `load` on every hit):
    model = disk_cached(distributed_lock(train), out, save=save_model, load=load_model)
    # As a function of the output path (for `remote(...)`, a thread pool, a decorator):
    step = disk_cached(distributed_lock(tokenize))   # step(output_path)

Calling convention: every step is `fn(output_path)`; `output_path` is a directory (a local path,
file://, gs:// or s3:// URL) that fn fills. mbuild's bookkeeping lives next to fn's files:

    <output_path>/.mbuild-success   written last, create-if-absent: "done" (JSON: who, when, value)
    <output_path>/.mbuild-failed    the last failure (error and traceback); informative, never "done"
    <output_path>/.mbuild-lease     the lease (+ .mbuild-lease.lock on local disks)

- `disk_cached(fn, output_path, *, save=None, load=None)` runs fn once: a hit (success marker
  present) returns `load(output_path)`, or without `load` the JSON value fn returned (kept in the
  marker when it is JSON and under 1 MiB), else None. A failure is recorded in `.mbuild-failed` and
  re-raised, never cached: the next call runs fn again.
- `distributed_lock(fn)(output_path)` runs fn under the lease on output_path: raises
  `StepAlreadyDone` if the step is done (checked before and after acquiring), waits (polling
  with backoff) while another builder holds a live lease, takes over a stale one, renews it while fn
  runs, and publishes the success marker itself (so it is usable alone).
- Composed, `disk_cached(distributed_lock(fn), path, save=..., load=...)`, the lease covers fn, save
  and the marker, so a waiter never sees the lease free before the result is published (Marin
  released the lock before writing SUCCESS). `StepAlreadyDone` inside becomes a hit.

Fencing: if the lease is lost while fn runs (a stall past the TTL, or another builder took it over),
the result is not published: the lease is checked immediately before the marker is written, and
the marker is created only if absent. fn is also stopped: by default (`on_lost="interrupt"`) a
`LeaseLost` is raised inside fn's thread at its next Python instruction (a long C call finishes
first); `on_lost="exit"` ends the process (`os._exit(75)`), a callable is called from the
heartbeat thread, None only flags it (fn may poll `current_lease().held()`).

Engine-agnostic core: `single_flight(slot, work)` with a `Slot` ("is it done?", "its lease") is the
whole algorithm; the path primitives above are one Slot (`OutputSlot`), the engine's action cache
can be another (done = an action-cache entry exists for the key; lease = the key's lease).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mbuild.leases import (
    DEFAULT_TTL,
    Heartbeat,
    Holder,
    LeaseLost,
)
from mbuild.leases.on_loss import OnLost, stop_on_loss
from mbuild.steps.output_slot import OutputSlot, json_value, who
from mbuild.rebuild.single_flight import (
    LeaseBusy,
    Slot,
    StepAlreadyDone,
    current_lease,
    single_flight,
)

log = logging.getLogger("mbuild.steps.primitives")

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# output directories as slots


def _run_step(
    slot: OutputSlot,
    fn: Callable[[Any], T],
    heartbeat: Heartbeat | None,
    on_lost: OnLost,
    save: Callable[[T, Any], None] | None,
) -> T:
    """fn (and save) under `stop_on_loss`, a failure recorded, then the fenced publish."""
    started = time.time()
    try:
        with stop_on_loss(heartbeat, on_lost):
            result = fn(slot.output_path)
            if save is not None:
                save(result, slot.output_path)
    except (LeaseLost, StepAlreadyDone):
        raise
    except Exception as exc:
        slot.record_failure(exc)
        raise
    has_value, value = json_value(result) if save is None else (False, None)
    record = {"format": 1, **who(), "seconds": round(time.time() - started, 6), "has_value": has_value, "value": value}
    if heartbeat is not None:
        heartbeat.check()  # fencing: never publish from a lost lease
        record.update(epoch=heartbeat.lease.epoch, owner=heartbeat.lease.owner)
    if not slot.publish(record):
        log.info("%s was published by another builder first", slot.url)
    slot.clear_failure()
    return result


# --------------------------------------------------------------------------------------------
# the primitives


class Locked:
    """`distributed_lock(fn)`: call it with the output path. See the module docstring."""

    def __init__(
        self,
        fn: Callable[[Any], T],
        *,
        ttl: float = DEFAULT_TTL,
        renew: float | None = None,
        margin: float | None = None,
        on_lost: OnLost = "interrupt",
        storage_options: dict | None = None,
        timeout: float | None = None,
        poll: float = 0.05,
        max_poll: float | None = None,
        on_wait: Callable[[Holder | None], None] | None = None,
    ):
        self.fn = fn
        self.ttl, self.renew, self.margin, self.on_lost = ttl, renew, margin, on_lost
        self.storage_options, self.timeout, self.poll = storage_options, timeout, poll
        self.max_poll = max_poll if max_poll is not None else min(5.0, ttl / 6)
        self.on_wait = on_wait
        functools.update_wrapper(self, fn, updated=())

    def slot(self, output_path: str | os.PathLike, storage_options: dict | None = None) -> OutputSlot:
        name = getattr(self.fn, "__qualname__", None) or getattr(self.fn, "__name__", "")
        return OutputSlot(output_path, storage_options=self.storage_options or storage_options,
                          ttl=self.ttl, margin=self.margin, note=str(name))

    def run(self, slot: Slot, work: Callable[[Heartbeat], T]) -> T:
        """single_flight with this lock's settings (what disk_cached uses to cover save and marker)."""
        return single_flight(
            slot, work, renew=self.renew, on_wait=self.on_wait or _log_wait(str(slot)), poll=self.poll,
            max_poll=self.max_poll, timeout=self.timeout,
        )

    def __call__(self, output_path: str | os.PathLike) -> T:
        slot = self.slot(output_path)
        return self.run(slot, lambda hb: _run_step(slot, self.fn, hb, self.on_lost, None))


def distributed_lock(
    fn: Callable[[Any], T] | None = None,
    *,
    ttl: float = DEFAULT_TTL,
    renew: float | None = None,
    margin: float | None = None,
    on_lost: OnLost = "interrupt",
    storage_options: dict | None = None,
    timeout: float | None = None,
    poll: float = 0.05,
    max_poll: float | None = None,
    on_wait: Callable[[Holder | None], None] | None = None,
):
    """Wrap `fn(output_path)` so that it runs under the lease on `<output_path>/.mbuild-lease`.

    The wrapper raises `StepAlreadyDone` when `<output_path>/.mbuild-success` exists (checked before
    and after acquiring), waits while another builder holds a live lease (polling from `poll` up to
    `max_poll` seconds, at most `timeout` seconds in all, `on_wait(holder)` on every poll; by default
    the holder is logged when it changes), takes over a stale lease, renews it every `renew`
    seconds (default ttl/3), and after fn returns checks the lease and creates the success marker
    (with fn's value when it is JSON). `on_lost`: see the module docstring. Usable as
    `@distributed_lock` or `@distributed_lock(ttl=...)`.

        result = disk_cached(distributed_lock(fn), output_path)   # run once, everyone gets the result
    """
    opts = dict(ttl=ttl, renew=renew, margin=margin, on_lost=on_lost, storage_options=storage_options,
                timeout=timeout, poll=poll, max_poll=max_poll, on_wait=on_wait)
    if fn is None:
        return lambda f: Locked(f, **opts)
    return Locked(fn, **opts)


class Cached:
    """`disk_cached(fn)` without an output path: call it with the output path."""

    def __init__(self, fn: Callable[[Any], T], *, save=None, load=None, storage_options: dict | None = None):
        self.fn, self.save, self.load, self.storage_options = fn, save, load, storage_options
        functools.update_wrapper(self, fn, updated=())

    def _hit(self, output_path: Any, record: dict) -> Any:
        if self.load is not None:
            return self.load(output_path)
        return record.get("value")

    def __call__(self, output_path: str | os.PathLike) -> Any:
        fn = self.fn
        if isinstance(fn, Locked):
            slot = fn.slot(output_path, self.storage_options)
        else:
            slot = OutputSlot(output_path, storage_options=self.storage_options)
        record = slot.success()
        if record is not None:
            log.info("disk_cached: hit %s", slot.url)
            return self._hit(output_path, record)
        try:
            if isinstance(fn, Locked):  # the lease covers fn, save and the marker
                return fn.run(slot, lambda hb: _run_step(slot, fn.fn, hb, fn.on_lost, self.save))
            return _run_step(slot, fn, None, None, self.save)
        except StepAlreadyDone:
            log.info("disk_cached: %s was completed by another builder", slot.url)
            return self._hit(output_path, slot.success() or {})


def disk_cached(
    fn: Callable[[Any], T] | None = None,
    output_path: str | os.PathLike | None = None,
    *,
    save: Callable[[T, Any], None] | None = None,
    load: Callable[[Any], T] | None = None,
    storage_options: dict | None = None,
):
    """Run `fn(output_path)` once and cache at `output_path`; on a hit return `load(output_path)`.

    - `disk_cached(fn, path)` runs now and returns the result; `disk_cached(fn)` (or
      `@disk_cached(save=..., load=...)`) returns a function of the output path.
    - With `save`, `save(result, output_path)` runs after fn, before the success marker. Without
      `load`, a hit returns the JSON value fn returned (None if it was not JSON): fn does its own
      reading and writing under output_path.
    - The success marker is written only after fn (and save) complete; a failure is recorded in
      `<output_path>/.mbuild-failed` and re-raised, never cached: calling again reruns fn.
    - No locking by itself: wrap fn in `distributed_lock` so concurrent builders run it once::

          @disk_cached(save=write_json, load=read_json)
          @distributed_lock(ttl=120)
          def tokenize(output_path): ...
          tokenize("gs://bucket/tokenized-3f2a")      # one runner; the rest wait and load
    """
    if fn is None:
        return lambda f: Cached(f, save=save, load=load, storage_options=storage_options)
    cached = Cached(fn, save=save, load=load, storage_options=storage_options)
    return cached if output_path is None else cached(output_path)


def _log_wait(what: str) -> Callable[[Holder | None], None]:
    last: list[str] = [""]

    def on_wait(holder: Holder | None) -> None:
        if holder is not None and holder.owner != last[0]:
            last[0] = holder.owner
            log.info("waiting for %s: held by %s", what, holder.describe())

    return on_wait


__all__ = [
    "Cached", "LeaseBusy", "Locked", "OutputSlot", "Slot", "StepAlreadyDone", "current_lease", "disk_cached", "distributed_lock",
    "single_flight", "stop_on_loss",
]
