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
from mbuild.stores.inplace.manifest import Entry
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


def check_declared_in_place(outputs: tuple[str, ...], entries: tuple[Entry, ...], out: Path, url: str) -> None:
    """An in-place action's declared outputs must be objects (or, with a trailing '/', prefixes of
    objects) of its listing, and it must have written nothing under ctx.out."""
    stray = sorted(p.name for p in out.iterdir())
    if stray:
        raise OutputsMissing(
            f"an in-place target writes its output at ctx.out_url ({url}), not under ctx.out; it wrote {', '.join(stray[:3])}"
        )
    paths = {e.path for e in entries}
    missing = [
        decl for decl in outputs
        if (not any(p.startswith(decl) for p in paths) if decl.endswith("/") else decl not in paths)
    ]
    if missing:
        raise OutputsMissing(f"declared outputs were not written under {url}: " + ", ".join(missing))


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


def provenance_record(spec: ActionSpec, result: ActionResult) -> dict:
    """What an in-place output's `.mbuild-provenance.json` says: what produced it and how to rebuild
    it (like Marin's `.executor_info`), for a person browsing the bucket. Never read by mbuild."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        mbuild_version = version("mbuild")
    except PackageNotFoundError:
        mbuild_version = "unknown"
    place = result.place
    return {
        "label": spec.label,
        "key": spec.key,
        "url": place.url if place else None,
        "rebuild": f"mbuild build {spec.label}",
        "key_parts": {
            "rule": spec.rule,
            "config": spec.config,
            "inputs": {label: inp.digest for label, inp in sorted(spec.inputs.items())},
            "outputs": list(spec.outputs),
            "env": sorted(spec.env),
        },
        "manifest_digest": place.digest if place else None,
        "objects": len(place.entries) if place else 0,
        "bytes": place.total_bytes if place else 0,
        "tree": result.tree,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "started": result.meta.get("started"),
        "seconds": result.meta.get("seconds"),
        "host": socket.gethostname(),
        "user": result.meta.get("user"),
        "pid": os.getpid(),
        "mbuild_version": mbuild_version,
    }
