"""Who holds a lease: the clock leases are judged by, this process's identity (host, boot, pid
namespace, start time), and the Holder record waiters are shown."""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------------------------
# clocks and process identity


def _clock_source() -> Callable[[], float]:
    """A clock for our own deadlines that never goes backwards and keeps counting while the
    process is stopped or the machine is suspended (CLOCK_BOOTTIME), so a holder that was frozen
    learns it overslept. Falls back to time.monotonic elsewhere."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        try:
            time.clock_gettime(boottime)
            return lambda: time.clock_gettime(boottime)
        except OSError:
            pass
    return time.monotonic


clock = _clock_source()


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _proc_start(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None if gone."""
    text = _read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    try:
        fields = text[text.rindex(")") + 2 :].split()
        return fields[0], int(fields[19])
    except (ValueError, IndexError):
        return None


def _this_machine() -> dict[str, Any]:
    """What identifies this process beyond host and pid: boot id, pid namespace, start time."""
    ident: dict[str, Any] = {}
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    if boot:
        ident["boot"] = boot.strip()
    try:
        ident["pidns"] = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pass
    return ident


HOST = socket.gethostname()
_START: dict[int, int | None] = {}


def own_start() -> int | None:
    """This process's start time (clock ticks since boot), cached per pid (fork-safe)."""
    pid = os.getpid()
    if pid not in _START:
        info = _proc_start(pid)
        _START[pid] = info[1] if info else None
    return _START[pid]
MACHINE = _this_machine()


def _get_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return str(os.getuid())


USER = _get_user()


def holder_is_dead_here(body: dict) -> bool:
    """True only when we can prove the writer of `body` is a process on this very machine (same
    host, boot and pid namespace) that no longer exists (gone, a zombie, or its pid reused).
    Anything uncertain counts as alive: the TTL decides then."""
    if body.get("host") != HOST or not MACHINE.get("boot"):
        return False
    proc = body.get("proc") or {}
    if proc.get("boot") != MACHINE.get("boot") or proc.get("pidns") != MACHINE.get("pidns"):
        return False
    pid, start = body.get("pid"), proc.get("start")
    if not isinstance(pid, int) or not isinstance(start, int):
        return False
    now = _proc_start(pid)
    if now is None:
        return True
    state, started = now
    return state in ("Z", "X") or started != start


# --------------------------------------------------------------------------------------------
# what users see


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lease. Times are the holder's wall clock (seconds since epoch)."""

    owner: str  # unique per acquisition (uuid4 hex)
    host: str
    pid: int
    since: float  # when this owner acquired it
    expires: float  # when it goes stale unless renewed
    epoch: int  # +1 on every change of owner: a fencing token
    user: str = ""
    note: str = ""  # what the holder is doing, e.g. the target label

    def describe(self, now: float | None = None) -> str:
        """E.g. 'alice@host7 pid 4242 since 14:03:07 (2m05s ago), expires in 71s [//p:train]'."""
        now = time.time() if now is None else now
        who = f"{self.user}@{self.host}" if self.user else self.host
        since = time.strftime("%H:%M:%S", time.localtime(self.since))
        left = self.expires - now
        state = f"expires in {left:.0f}s" if left >= 0 else f"stale for {-left:.0f}s"
        text = f"{who} pid {self.pid} since {since} ({_ago(now - self.since)} ago), {state}"
        return f"{text} [{self.note}]" if self.note else text


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LeaseLost(Exception):
    """We no longer hold the lease (someone else wrote it, or our own deadline passed): stop the
    work and do not publish its result."""
