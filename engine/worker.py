"""Entry point of a worker process: `python -m mbuild.worker FD`. Runs tasks sent by the driver.

Tasks arrive over a socket from the driver that started this process (pickled by our own
process, never read from a cache): `(function, args)`; the answer is `("ok", result)` or
`("error", traceback)`.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import traceback
from multiprocessing.connection import Connection

from . import sandbox
from .errors import StopRequested
from .events import quiet_storage_logs


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the driver that started it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits when the driver's socket closes


def _stop(signum, frame) -> None:
    """Unwind once: a second SIGTERM must not interrupt the clean-up (releasing the lease)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise StopRequested(128 + signum)


def main(fd: int) -> None:
    quiet_storage_logs()
    sandbox.mark_worker()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    # The driver stops an action with SIGTERM: unwind (the action's lease is released on the way out).
    signal.signal(signal.SIGTERM, _stop)
    conn = Connection(fd)
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
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("ok", result))


if __name__ == "__main__":
    main(int(sys.argv[1]))
