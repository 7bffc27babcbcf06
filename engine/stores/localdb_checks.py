"""Opening the local database safely: the checks that find damage before LMDB touches it (a
truncated file would be a SIGBUS, an assertion inside LMDB an abort), and the probe that reads a
suspect database through in a child process. See localdb.py for when each runs."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import lmdb


# Errors that mean the file's contents are damaged (as opposed to a full disk or a permission).
DAMAGE = (
    lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.VersionMismatchError,
    lmdb.PanicError, lmdb.BadValsizeError, lmdb.IncompatibleError, lmdb.BadChecksumError, lmdb.BadTxnError,
)


PROBE_TIMEOUT = 120.0


class Truncated(Exception):
    """data.mdb is shorter than its header says (found before touching a page)."""


# Bigger than LMDB's lock file for max_readers=1024 (64 bytes a reader slot plus a header); LMDB
# keeps a larger file as it is (and allows more readers).
LOCK_FILE_BYTES = 128 * 1024


def allocate_lock_file(directory: Path) -> None:
    """Create LMDB's lock file with every block written, unless it exists. LMDB makes it sparse and
    writes it through a memory map: on a full disk that is SIGBUS, here it is an OSError (ENOSPC).
    Made aside and hard-linked into place, so a process already using the file is never disturbed."""
    lock = directory / "lock.mdb"
    if lock.exists():
        return
    tmp = directory / f"lock.mdb.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(bytes(LOCK_FILE_BYTES))
        try:
            os.link(tmp, lock)
        except FileExistsError:
            pass  # another process made it first
    finally:
        tmp.unlink(missing_ok=True)


def boot_id() -> str:
    """This boot of the machine (Linux), or "" where unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def recorded_boot(directory: Path) -> str | None:
    try:
        with open(directory / "boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def record_boot(directory: Path, boot: str) -> None:
    if recorded_boot(directory) == boot:
        return
    tmp = directory / f".boot_id.{os.getpid()}"
    try:
        tmp.write_text(boot + "\n")
        os.replace(tmp, directory / "boot_id")
    except OSError:
        pass  # read-only: the check just runs again next time


def inode_of(directory: Path) -> int:
    try:
        return os.stat(directory / "data.mdb").st_ino
    except OSError:
        return -1


def not_a_database_dir(directory: Path) -> str | None:
    if os.path.lexists(directory) and (os.path.islink(directory) or not os.path.isdir(directory)):
        return "it is not a directory"
    return None


def truncated(env: lmdb.Environment, directory: Path) -> str | None:
    """Whether data.mdb is shorter than the pages its header says are in use (touching those would
    kill the process with SIGBUS)."""
    try:
        last = env.info()["last_pgno"]
        psize = env.stat()["psize"]
        size = os.path.getsize(directory / "data.mdb")
    except (lmdb.Error, OSError) as exc:
        return f"its header is unreadable ({describe(exc)})"
    if size < (last + 1) * psize:
        return f"data.mdb is {size} bytes but its header names {last + 1} pages of {psize} bytes (truncated)"
    return None


# Walks every table and every value, as a child process: LMDB may abort on damage it does not check.
PROBE_SCRIPT = """
import sys, lmdb
env = lmdb.open(sys.argv[1], map_size=1 << 40, max_dbs=16, readonly=True, lock=False)
with env.begin() as txn:
    names = [bytes(k) for k, _ in txn.cursor()]
for name in names:
    db = env.open_db(name, create=False)
    with env.begin(db=db) as txn:
        for key, value in txn.cursor():
            len(key) + len(value)
"""


def probe(directory: Path) -> str | None:
    """None if the whole database reads cleanly in a child process, else what went wrong."""
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, str(directory)], capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"reading it through took over {PROBE_TIMEOUT:.0f}s"
    except OSError:
        return None  # cannot run the check: keep the database
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        return f"reading it through killed the reader (signal {-proc.returncode})"
    return "reading it through failed: " + ((proc.stderr.strip().splitlines() or ["?"])[-1])[:200]


def is_permission(exc: BaseException) -> bool:
    if isinstance(exc, lmdb.ReadonlyError):
        return True
    code = getattr(exc, "errno", None)
    if code in (errno.EACCES, errno.EROFS, errno.EPERM):
        return True
    text = str(exc)
    return "Read-only file system" in text or "Permission denied" in text


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
