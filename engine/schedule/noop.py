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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mbuild.digests import digest_bytes
from mbuild.encoding import encode
from mbuild.events import CACHE_HIT, ActionEvent, EventsFile, Summary
from mbuild.labels import Label
from mbuild.model.reads import Reads
from mbuild.model.graph import Graph
from mbuild.model.replay import Replayer
from mbuild.model.targets import SourceFile, Target, resolve_lines
from mbuild.model.workspace import Workspace
from mbuild.schedule.status import BuildOptions, BuildResult, NodeStatus, State
from mbuild.stores import trees
from mbuild.stores.localdb import LocalDB

FORMAT = 2
SOURCE, TARGET = "s", "t"  # node kinds: [s, relpath, stamp, digest, package, name], [t, package, name, key, record digest, deps]
PLAIN = "/plain"  # the record of request R has its targets as plain data under R + PLAIN
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


def settled_stamp(path: str, now_ns: int) -> list[int] | None:
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


@dataclass
class Memo:
    """A checked record: everything in it still holds except, maybe, its sources (changed_sources
    says which) and the outputs of the targets in `unplaced` (too fresh to stamp when recorded:
    they must be placed and checked again)."""

    key: str
    body: dict
    unplaced: list[int]

    @property
    def nodes(self) -> list[list]:
        return self.body["nodes"]


def record(db: LocalDB, key: str, reads: Reads, ws: Workspace, graph: Graph, result: BuildResult) -> bool:
    """Record the answer of a build that succeeded (every action a hit or ran); False when it did
    not succeed or something it read was too fresh to vouch for (the next build records)."""
    if not result.ok or result.interrupted:
        return False
    now = time.time_ns()
    env = dict(reads.env)
    replayer = Replayer()
    resolve_lines(n.location for n in graph.order if isinstance(n, Target))
    nodes: list[list] = []
    plain: list[list | None] = []  # each target as plain data (model/replay.py), kept apart: only amend reads it
    for i, node in enumerate(graph.order):
        if isinstance(node, SourceFile):
            plain.append(None)
            path = str(ws.root / node.relpath)
            nodes.append([SOURCE, node.relpath, settled_stamp(path, now), result.sources[node.label], node.label.package, node.label.name])
            continue
        st = result.statuses[node.label]
        if st.state not in (State.HIT, State.RAN) or st.key is None or st.result is None:
            return False
        if st.result.place is not None:
            return False  # an in-place output is checked by listing its store on every build, never by stamps
        for name in node.env:
            env[name] = os.environ.get(name)
        nodes.append([TARGET, node.label.package, node.label.name, st.key, None, graph.deps[i]])
        plain.append(replayer.to_plain(node))
    files = set(reads.files) | {str(ws.root / "WORKSPACE.toml")}
    dirs = set(reads.dirs) | {p for p in sys.path if p and os.path.isdir(p)}
    watched: dict[str, list] = {"files": [], "dirs": []}
    for kind, paths in (("files", files), ("dirs", dirs)):
        for path in sorted(paths):
            stamp = settled_stamp(path, now)
            if stamp is None:
                return False
            watched[kind].append([path, *stamp])
    body = {"format": FORMAT, "engine": engine_stamp(), **watched, "env": env, "nodes": nodes, "outputs": []}
    if not restamp(db, body, [i for i, n in enumerate(nodes) if n[0] == TARGET], graph.index, result.outputs, now):
        return False
    body["plain"] = digest_bytes(encoded := orjson.dumps(plain))
    db.put_noop(key + PLAIN, encoded)
    db.put_noop(key, orjson.dumps(body))
    return True


def plain_targets(db: LocalDB, memo: Memo) -> list[list | None] | None:
    """The recorded targets as plain data, if what is stored is what the record names."""
    data = db.get_noop(memo.key + PLAIN)
    if data is None or digest_bytes(data) != memo.body["plain"]:
        return None
    return orjson.loads(data)


def restamp(db: LocalDB, body: dict, targets: list[int], index: dict[Label, int], placed: dict[Label, Path], now: int) -> bool:
    """Note in `body` the record digests of `targets` (node indices) and the stamps of the outputs
    in `placed`; an output too fresh to stamp is noted unplaced. False when a record is gone."""
    nodes = body["nodes"]
    for i, data in zip(targets, db.result_records_for([nodes[i][3] for i in targets])):
        if data is None:
            return False
        nodes[i][4] = digest_bytes(data)
    outputs = {entry[0]: entry for entry in body["outputs"]}
    for label, dest in placed.items():
        i = index[label]
        result = db.valid_result(nodes[i][3])
        try:
            link = os.readlink(dest)
        except OSError:
            return False
        tree_root = os.path.normpath(os.path.join(os.path.dirname(str(dest)), link))
        stamps = trees.stamps(tree_root, result) if result is not None else None
        if stamps is not None and trees.racy(stamps, now):
            stamps = None
        outputs[i] = [i, str(dest), link, tree_root, trees.entries(result) if result is not None else [], stamps]
    body["outputs"] = sorted(outputs.values())
    return True


def check(db: LocalDB, key: str) -> Memo | None:
    """The record of this request if nothing its loading read changed (see the module docstring),
    with what did change among sources and outputs; None: the ordinary way. Nothing is trusted blindly."""
    data = db.get_noop(key)
    if data is None:
        return None
    try:
        body = orjson.loads(data)
        if body.get("format") != FORMAT or body["engine"] != engine_stamp():
            return None
        for path, *stamp in (*body["files"], *body["dirs"]):
            if _stamp_of(path) != stamp:
                return None
        for name, value in body["env"].items():
            if os.environ.get(name) != value:
                return None
        nodes = body["nodes"]
        targets = [i for i, n in enumerate(nodes) if n[0] == TARGET]
        for i, data in zip(targets, db.result_records_for([nodes[i][3] for i in targets])):
            if data is None or digest_bytes(data) != nodes[i][4]:
                return None
        unplaced = []
        for i, dest, link, tree_root, entries, stamps in body["outputs"]:
            if stamps is None:
                unplaced.append(i)
            elif os.readlink(dest) != link or trees.entry_stamps(tree_root, entries) != stamps:
                return None
    except (OSError, ValueError, KeyError, TypeError, IndexError, orjson.JSONDecodeError):
        return None  # a damaged record, or an output gone: the ordinary way
    return Memo(key, body, unplaced)


def changed_sources(memo: Memo, root: str) -> list[int]:
    """The sources (node indices) whose stamps differ from the recorded ones, or were too fresh to record."""
    return [
        i for i, n in enumerate(memo.nodes)
        if n[0] == SOURCE and (n[2] is None or _stamp_of(os.path.join(root, n[1])) != n[2])
    ]


def answer(memo: Memo, events: Path | None, started: float) -> BuildResult:
    """The recorded answer, when nothing changed at all."""
    nodes = memo.nodes
    targets = [(Label(n[1], n[2]), n[3]) for n in nodes if n[0] == TARGET]
    outputs = {Label(nodes[i][1], nodes[i][2]): Path(dest) for i, dest, *_ in memo.body["outputs"]}
    seconds = time.monotonic() - started
    summary = Summary(actions=len(targets), cache_hits=len(targets), local_hits=len(targets), seconds=seconds)
    statuses = {label: NodeStatus(state=State.HIT, key=key) for label, key in targets}
    if events is not None:
        log = EventsFile(events)
        for label, key in targets:
            log.write(ActionEvent(str(label), key, CACHE_HIT, 0.0).record())
        log.write(summary.record())
        log.close()
    return BuildResult(summary, statuses, outputs, [], False)
