"""Entry point of a worker process: `python -m mbuild.runners.worker_process FD DRIVER_PID`. Runs tasks sent by the driver.

Tasks arrive over a socket from the driver that started this process (pickled by our own
process, never read from a cache): `(function, args)`; the answer is `("ok", result)` or
`("error", traceback)`. Before it, a running action may send any number of `("progress", record)`
messages (its ctx.progress, where its log is: action/progress.py), from any of its threads.

Nothing a worker starts outlives it, nor the driver (on Linux):
- the worker asks for SIGKILL when the driver dies (PR_SET_PDEATHSIG), then checks that its
  parent is still the driver: if the driver died before the request, the worker was already
  orphaned and would never get the signal, so it exits without reading a task (the socket may
  hold one, sent just before the driver died);
- a reaper, forked once at start, waits for the worker's death (its own parent-death signal)
  and then SIGKILLs the worker's process group: an action's shell and that shell's background
  children die even when the worker itself was SIGKILLed. A signal rather than a pipe from the
  worker: a pipe's end would be inherited by whatever an action forks without exec'ing, and
  the reaper would not see the worker die while that lives. A process that leaves the group
  (setsid, a shell's job control) is not followed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection

from mbuild.action import sandbox
from mbuild.action.services import process_services
from mbuild.errors import StopRequested
from mbuild.events import quiet_storage_logs

_PR_SET_PDEATHSIG = 1
_REAPER_SIGNAL = signal.SIGUSR1  # what the reaper gets when the worker dies; it waits for it, blocked


def _parent_death_signal(sig: int) -> bool:
    """Ask Linux to send `sig` to this process when its parent (thread) dies; False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig)) == 0
    except (OSError, AttributeError):
        return False  # not Linux: the worker still exits when the driver's socket closes


def _start_reaper() -> None:
    """Fork the process that SIGKILLs this worker's process group once the worker is gone."""
    worker = os.getpid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {_REAPER_SIGNAL})  # no moment where it would kill the reaper
    try:
        pid = os.fork()
    finally:
        if os.getpid() == worker:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {_REAPER_SIGNAL})
    if pid == 0:
        _reap(worker)


def _reap(worker: int) -> None:
    """The reaper: hold nothing of the worker's, wait for its death, kill its process group."""
    try:
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the driver must see the worker's socket close with it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the driver's stop request is for the worker
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if _parent_death_signal(_REAPER_SIGNAL) and os.getppid() == worker:
            signal.sigwait({_REAPER_SIGNAL})
        os.killpg(0, signal.SIGKILL)  # our group is the worker's: this ends the reaper too
    finally:
        os._exit(0)


def _stop(signum, frame) -> None:
    """Unwind once: a second SIGTERM must not interrupt the clean-up (releasing the lease)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise StopRequested(128 + signum)


def main(fd: int, driver: int) -> None:
    linux = _parent_death_signal(signal.SIGKILL)  # die with the driver from now on
    # The signal covers only a death after the prctl. A driver that died before it left this process
    # orphaned, its parent now init or a subreaper, for good: exit without reading the socket.
    if os.getppid() != driver:
        return
    if linux:  # the reaper learns of the worker's death through its own parent-death signal
        _start_reaper()
    quiet_storage_logs()
    sandbox.mark_worker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    # The driver stops an action with SIGTERM: unwind (the action's lease is released on the way out).
    signal.signal(signal.SIGTERM, _stop)
    conn = Connection(fd)
    sending = threading.Lock()  # progress comes from any thread of an action; answers from this one

    def report(record: dict) -> None:
        with sending:
            conn.send(("progress", record))

    process_services().reports = report
    sys.path[:] = conn.recv()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        fn, args = msg
        try:
            result = fn(*args)
        except StopRequested:
            raise  # stopped by the driver
        except BaseException:  # report, don't die: the next task reuses this process
            answer = ("error", traceback.format_exc())
        else:
            answer = ("ok", result)
        with sending:
            conn.send(answer)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
