"""What happens to work whose lease is lost while it runs: interrupt its thread, exit the process
(status LEASE_LOST_EXIT_CODE), or call back. Fencing stops the publish; this stops the work."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Iterator

from mbuild.leases.heartbeat import Heartbeat
from mbuild.leases.holders import LeaseLost
from mbuild.leases.lease import LEASE_LOST_EXIT_CODE

log = logging.getLogger("mbuild.leases")


class _Interrupt(LeaseLost):
    def __init__(self, *args):
        super().__init__(*(args or ("lease lost while the step ran: stopped, not published",)))


class _Interrupter:
    """Raise _Interrupt asynchronously in one thread, until disarmed (which also cancels one that
    was sent but not yet delivered)."""

    def __init__(self):
        self.tid = threading.get_ident()
        self.mu = threading.Lock()
        self.armed, self.sent = True, False

    def __call__(self) -> None:  # from the heartbeat thread
        with self.mu:
            if self.armed and not self.sent:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.tid), ctypes.py_object(_Interrupt))
                self.sent = True

    def disarm(self) -> None:
        with self.mu:
            self.armed = False
            if self.sent:  # NULL clears a pending (undelivered) async exception
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.tid), None)


def _exit_process() -> None:
    log.error("lease lost: exiting with status %d", LEASE_LOST_EXIT_CODE)
    os._exit(LEASE_LOST_EXIT_CODE)


OnLost = str | Callable[[], None] | None


@contextlib.contextmanager
def stop_on_loss(heartbeat: Heartbeat | None, how: OnLost = "interrupt") -> Iterator[None]:
    """While the block runs, stop it if the lease is lost: "interrupt" (LeaseLost raised in this
    thread), "exit" (the process exits with LEASE_LOST_EXIT_CODE), a callable, or None (nothing)."""
    if heartbeat is None or how is None:
        yield
        return
    if how == "interrupt":
        interrupter = _Interrupter()
        heartbeat.add_on_lost(interrupter)
        try:
            yield
        finally:
            interrupter.disarm()
            heartbeat.remove_on_lost(interrupter)
        return
    callback = _exit_process if how == "exit" else how
    if not callable(callback):
        raise ValueError(f"on_lost must be 'interrupt', 'exit', a callable or None, not {how!r}")
    heartbeat.add_on_lost(callback)
    try:
        yield
    finally:
        heartbeat.remove_on_lost(callback)
