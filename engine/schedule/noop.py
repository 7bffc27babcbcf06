"""The no-op record: when nothing a build's answer depends on has changed since the last successful
build of the same request, the answer is the last one, and the build is a walk of stats.

After a build where every action was a hit or ran, the driver records, for its request (the
patterns, the directory they were given in, the remote and fray settings, the Python version and
sys.path):
- every file it read while loading BUILD files and computing keys (BUILD files, the modules they
  import, rule code, source files, WORKSPACE.toml) and every directory it listed (glob, the
  import system, distributions on sys.path), each with its stat stamp (inode, size, mtime, ctime);
- the environment variables BUILD files looked up and actions declare, with their values;
- the stamps of mbuild's own source files;
- each action's key and the digest of its action-cache record;
- each requested output: its mbuild-out link and the stamps of every entry of its tree.
The next build of the same request checks all of it: one stat per file, directory and output
entry, one read of each record (its bytes must still digest to what was recorded), the
environment. If anything differs, or was changed within the racy window when it was recorded,
the build runs the ordinary way (and records anew). A stamp cannot be set back: ctime changes
on every write, rename and chmod, so equal stamps mean equal bytes, as for the tree cache.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from mbuild.digests import digest_bytes
from mbuild.encoding import encode
from mbuild.events import CACHE_HIT, ActionEvent, EventsFile, Summary
from mbuild.labels import Label
from mbuild.model.reads import Reads
from mbuild.model.targets import SourceFile
from mbuild.model.workspace import Workspace
from mbuild.schedule.status import BuildOptions, BuildResult, NodeStatus, State
from mbuild.stores import trees
from mbuild.stores.localdb import LocalDB

FORMAT = 1
_RACY_NS = trees.RACY_NS
_VOLATILE = ("/proc/", "/sys/", "/dev/")  # read by lease and process checks; not inputs of the answer


def request_key(ws: Workspace, patterns: Sequence[str], options: BuildOptions) -> str:
    """What makes two builds the same request."""
    return digest_bytes(
        encode(
            [
                "mbuild-noop/1", str(ws.root), os.path.relpath(os.getcwd(), ws.root), list(patterns),
                options.remote_url, options.remote_upload, options.fray_backend, sys.version, list(sys.path),
            ]
        )
    )


def ignored(ws: Workspace, events: Path | None) -> tuple[str, ...]:
    """Path prefixes whose reads are not inputs of the answer (the cache and the outputs are
    checked on their own terms; the events file is this build's own output)."""
    extra = (str(events.absolute()),) if events is not None else ()
    return (os.path.join(str(ws.cache_dir), ""), os.path.join(str(ws.outputs_dir), ""), *_VOLATILE, *extra)


def _stamp_of(path: str) -> list[int]:
    """[ino, size, mtime, ctime] of `path`, or [] when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _stamp(path: str, now_ns: int) -> list[int] | None:
    """_stamp_of(path), or None when it changed within the racy window (it cannot vouch for it)."""
    stamp = _stamp_of(path)
    if stamp and max(stamp[2], stamp[3]) > now_ns - _RACY_NS:
        return None
    return stamp


def engine_stamp() -> str:
    """A digest of the stamps of mbuild's own source files: a changed engine is another request."""
    parts: list[Any] = []
    for dirpath, dirnames, filenames in os.walk(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                parts.append([name, *_stamp_of(os.path.join(dirpath, name))])
    return digest_bytes(orjson.dumps(parts))


def record(db: LocalDB, key: str, reads: Reads, ws: Workspace, order: Sequence[Any], result: BuildResult) -> bool:
    """Record the no-op answer of a build that succeeded (every action a hit or ran); False when
    something was too fresh to vouch for, or the build did not succeed (the next build records)."""
    if not result.ok or result.interrupted:
        return False
    now = time.time_ns()
    files = set(reads.files)
    files.add(str(ws.root / "WORKSPACE.toml"))
    env = dict(reads.env)
    targets: list[list] = []
    index: dict[Label, int] = {}
    for node in order:
        if isinstance(node, SourceFile):
            files.add(str(ws.root / node.relpath))
            continue
        st = result.statuses[node.label]
        if st.state not in (State.HIT, State.RAN) or st.key is None or st.result is None:
            return False
        for name in node.env:
            env[name] = os.environ.get(name)
        index[node.label] = len(targets)
        targets.append([node.label.package, node.label.name, st.key])
    dirs = set(reads.dirs) | {p for p in sys.path if p and os.path.isdir(p)}
    watched: dict[str, list] = {"files": [], "dirs": []}
    for kind, paths in (("files", files), ("dirs", dirs)):
        for path in sorted(paths):
            stamp = _stamp(path, now)
            if stamp is None:
                return False
            watched[kind].append([path, *stamp])
    for target, data in zip(targets, db.result_records_for([t[2] for t in targets])):
        if data is None:
            return False
        target.append(digest_bytes(data))
    placed = []
    for label, dest in result.outputs.items():
        st = result.statuses[label]
        try:
            link = os.readlink(dest)
        except OSError:
            return False
        tree_root = os.path.normpath(os.path.join(os.path.dirname(str(dest)), link))
        stamps = trees.stamps(tree_root, st.result)
        if stamps is None or trees.racy(stamps, now):
            return False
        placed.append([index[label], str(dest), link, tree_root, trees.entries(st.result), stamps])
    body = {"format": FORMAT, "engine": engine_stamp(), **watched, "env": env, "targets": targets, "outputs": placed}
    db.put_noop(key, orjson.dumps(body))
    return True


def answer(db: LocalDB, key: str, events: Path | None, started: float) -> BuildResult | None:
    """The last answer to this request if nothing it depends on changed (see the module
    docstring), else None. Every recorded fact is checked; nothing is trusted blindly."""
    data = db.get_noop(key)
    if data is None:
        return None
    try:
        memo = orjson.loads(data)
        if memo.get("format") != FORMAT or memo["engine"] != engine_stamp():
            return None
        for path, *stamp in (*memo["files"], *memo["dirs"]):
            if _stamp_of(path) != stamp:
                return None
        for name, value in memo["env"].items():
            if os.environ.get(name) != value:
                return None
        targets = memo["targets"]
        for (_, _, _, digest), data in zip(targets, db.result_records_for([t[2] for t in targets])):
            if data is None or digest_bytes(data) != digest:
                return None
        outputs: dict[Label, Path] = {}
        for i, dest, link, root, entries, stamps in memo["outputs"]:
            if os.readlink(dest) != link or trees.entry_stamps(root, entries) != stamps:
                return None
            package, name = targets[i][0], targets[i][1]
            outputs[Label(package, name)] = Path(dest)
    except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None  # a damaged record, or an output gone: the ordinary way
    return _result(targets, outputs, events, time.monotonic() - started)


def _result(targets: list[list], outputs: dict[Label, Path], events: Path | None, seconds: float) -> BuildResult:
    summary = Summary(actions=len(targets), cache_hits=len(targets), local_hits=len(targets), seconds=seconds)
    statuses = {Label(package, name): NodeStatus(state=State.HIT, key=key) for package, name, key, _ in targets}
    if events is not None:
        log = EventsFile(events)
        for package, name, key, _ in targets:
            log.write(ActionEvent(f"//{package}:{name}", key, CACHE_HIT, 0.0).record())
        log.write(summary.record())
        log.close()
    return BuildResult(summary, statuses, outputs, [], False)
