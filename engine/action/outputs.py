"""An action's outputs: check the declared ones exist, then hash every file into the CAS (read-only
from then on) and describe the tree as an ActionResult."""

from __future__ import annotations

import functools
import getpass
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

from mbuild import faults
from mbuild.action.spec import ActionSpec
from mbuild.stores.cas import LocalCAS
from mbuild.stores.results import ActionResult, OutputFile, OutputLink, check_link_target


def check_declared(outputs: tuple[str, ...], out: Path) -> None:
    missing = []
    for decl in outputs:
        path = out / decl.rstrip("/")
        if decl.endswith("/"):
            if not path.is_dir():
                missing.append(f"{decl} (directory)")
        elif not (path.is_file() or path.is_symlink()):
            missing.append(decl + (" (is a directory; declare it as '" + decl + "/')" if path.is_dir() else ""))
    if missing:
        raise OutputsMissing("declared outputs were not created: " + ", ".join(missing))


class OutputsMissing(Exception):
    """The action returned normally but did not create every declared output."""


def collect(out: Path, cas: LocalCAS, value: Any, meta: dict) -> ActionResult:
    """Hash every file under `out`, make it read-only, store it in the CAS, and build the result."""
    files, links, dirs = [], [], []
    for dirpath, dirnames, filenames in os.walk(out):
        rel_dir = os.path.relpath(dirpath, out)
        prefix = "" if rel_dir == "." else Path(rel_dir).as_posix() + "/"
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                dirnames.remove(name)
                filenames.append(name)
            else:
                dirs.append(prefix + name)
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = prefix + name
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                links.append(OutputLink(rel, check_link_target(rel, os.readlink(full))))
            elif stat.S_ISREG(st.st_mode):
                executable = bool(st.st_mode & 0o111)
                digest, size = cas.adopt(full, executable)
                files.append(OutputFile(rel, digest, size, executable))
                faults.point("writing-blobs")
            else:
                raise ValueError(f"output {rel!r} is not a regular file, directory or symlink")
    return ActionResult.make(files, links, dirs, value, meta)


@functools.cache
def _who() -> tuple[str, str]:
    """(host, user) of this process: asked once, not per action."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = str(os.getuid())
    return socket.gethostname(), user


def action_meta(spec: ActionSpec, started: float) -> dict:
    host, user = _who()
    return {
        "label": spec.label,
        "rule": spec.rule,
        "host": host,
        "user": user,
        "pid": os.getpid(),
        "started": started,
        "seconds": round(time.time() - started, 6),
    }
