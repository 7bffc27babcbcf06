"""Who has the local database open: one mark file per open database, in `db/holders/`, placed by
the process when it opens the database and removed when it closes it or exits cleanly.

A mark whose process is gone says a process died with the database open: perhaps killed by a
damaged page, which would kill the next reader too. LMDB's own stale-reader check cannot say so
when the next process is the only one opening the database (LMDB resets its reader table under
its exclusive lock), so the marks do (localdb.py then reads the database through in a child).
A mark names its process by pid and start time, so a reused pid is not taken for the dead one.
"""

from __future__ import annotations

import atexit
import os
import uuid
from pathlib import Path

HOLDERS = "holders"


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), "" where /proc cannot say,
    or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()  # field 22 of stat(5), counted after the command name
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass
        return ""


class HolderMark:
    """This process's mark for one open database (see the module docstring)."""

    def __init__(self, directory: Path):
        pid = os.getpid()
        self.path = directory / HOLDERS / f"{pid}-{_started(pid) or ''}-{uuid.uuid4().hex[:8]}"
        self._placed = False

    def place(self) -> None:
        try:
            self.path.parent.mkdir(exist_ok=True)
            self.path.touch()
        except OSError:
            return  # without a mark, a crash of this process is found only by LMDB's own check
        self._placed = True
        atexit.register(self.remove)

    def remove(self) -> None:
        if self._placed:
            self._placed = False
            atexit.unregister(self.remove)
            try:
                self.path.unlink()
            except OSError:
                pass


def died_holding(directory: Path) -> bool:
    """Whether a process died with the database open since its mark was placed; the marks of dead
    processes are removed (they are mbuild's own files)."""
    try:
        names = os.listdir(directory / HOLDERS)
    except OSError:
        return False
    died = False
    for name in names:
        pid, _, rest = name.partition("-")
        started = rest.rpartition("-")[0]
        if not pid.isdigit():
            continue
        now = _started(int(pid))
        if now is None or (started and now and now != started):
            died = True
            try:
                os.unlink(directory / HOLDERS / name)
            except OSError:
                pass
    return died
