"""Running one action: stage its inputs, call its rule, check and hash its outputs, publish the result.

This is what a worker process (or, later, a remote job) executes. The order is what makes a crash
at any moment safe: outputs are checked and every blob is stored before the action-cache entry
that names them is written, so a result is never visible before all of its bytes are.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib
import os
import shutil
import socket
import stat
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from mbuild import faults
from mbuild.action import sandbox
from mbuild.digests import digest_file
from mbuild.events import TransferProgress
from mbuild.errors import BlobUnavailableError, DiskFullError, StopRequested, disk_full
from mbuild.labels import Label
from mbuild.leases import Conflict, Heartbeat, Holder, Lease, LeaseLost, LeaseStore, LmdbObject, default_margin, open_leases
from mbuild.steps.primitives import LeaseBusy, StepAlreadyDone, single_flight, stop_on_loss
from mbuild.model.targets import Resources, Rule, map_labels
from mbuild.stores.results import ActionResult, OutputFile, OutputLink, check_link_target, json_value
from mbuild.stores import trees
from mbuild.stores.cas import LocalCAS
from mbuild.stores.localdb import LocalDB

if TYPE_CHECKING:  # the remote store (and asyncio) load only when a remote cache is configured
    from mbuild.stores.remote import RemoteConfig, RemoteStore

_LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class Input:
    """One dependency as the action receives it: a source file or a producer's output tree."""

    label: str
    digest: str  # file content digest, or the producer's tree digest
    relpath: str | None = None  # source files: path under the workspace root
    result: ActionResult | None = None  # output trees: the producer's result (what to stage)


@dataclass(frozen=True)
class ActionSpec:
    """Everything a worker needs to run an action, independent of the driver's state."""

    key: str
    label: str
    rule: str  # "module:qualname" of the rule (or its implementation function)
    config: dict[str, Any]
    deps: dict[str, Any]  # attribute -> structure of label strings
    inputs: dict[str, Input]  # label string -> Input
    outputs: tuple[str, ...]
    env: dict[str, str | None]
    resources: Resources | None = None
    trust_cache: bool = True  # False: a cached result proved unusable; run it, whatever entries say


@dataclass(frozen=True)
class ExecConfig:
    """Where a worker finds the workspace sources, the cache, and the leases; how it runs actions."""

    workspace_root: str
    cache_dir: str
    capture_output: bool = True  # redirect the action's stdout/stderr into its log file
    leases: str = ""  # lease store: a gs:// / s3:// URL or a directory ("" = the local cache's database)
    lease_ttl: float = 90.0
    lease_renew: float = 30.0
    storage_options: dict = field(default_factory=dict)  # fsspec options for a remote lease store
    in_process: bool = False  # run in the driver's process: a lost lease interrupts the thread, not exit
    remote: RemoteConfig | None = None  # the shared remote cache, if any
    build: str = ""  # the build's id: its processes share what they learn about the remote (LocalDB.remote_health)



@dataclass
class Ran:
    result: ActionResult
    log: str
    hit: bool = False  # found in the cache when the worker got to it (another builder made it)
    remote_hit: bool = False  # ... in the remote cache
    bytes_up: int = 0  # uploaded to the remote cache
    bytes_down: int = 0  # fetched from the remote cache (inputs)
    requests: int = 0  # requests this action made to the remote cache
    warnings: list[str] = field(default_factory=list)  # from the remote cache (e.g. it became unreachable)


@dataclass
class Failed:
    error: str  # one line
    detail: str  # traceback, or the tail of the log
    log: str


@dataclass
class InputUnavailable:
    """An input's bytes are missing or corrupt in the store: its producer must run again."""

    label: str
    reason: str


@dataclass
class Busy:
    """Another builder holds the action's lease (or took it from us: `fenced`). Try again later."""

    holder: Holder | None
    fenced: bool = False


Outcome = Ran | Failed | InputUnavailable | Busy


class ActionContext:
    """What a rule implementation receives.

    - `attr`: configuration attributes (`ctx.attr.vocab_size`)
    - `inputs`: dependency attributes as paths: a source file's path, or a target's output
      directory; lists and dicts of labels arrive as lists and dicts of paths
    - `values`: the same structure holding each dependency target's returned value (None for files)
    - `labels`: the same structure holding each dependency's label, as a string
    - `out`: the output directory (everything written here is an output); `tmp`: scratch space
    - `env`: declared environment variables (the only ones in the key)
    """

    def __init__(self, attr: dict, inputs: dict, values: dict, labels: dict, out: Path, tmp: Path, env: dict, resources):
        self.attr = SimpleNamespace(**attr)
        self.inputs = SimpleNamespace(**inputs)
        self.values = SimpleNamespace(**values)
        self.labels = SimpleNamespace(**labels)
        self.out = out
        self.tmp = tmp
        self.env = env
        self.resources = resources

    def log(self, message: str) -> None:
        print(message, flush=True)


_stores: dict[str, tuple[LocalCAS, LocalDB]] = {}


_open_lock = threading.RLock()  # LMDB refuses a second open of one database in a process


def open_stores(cache_dir: str) -> tuple[LocalCAS, LocalDB]:
    """This process's handles on the local CAS and database (opened once per process, thread-safe)."""
    stores = _stores.get(cache_dir)
    if stores is None:
        with _open_lock:
            stores = _stores.get(cache_dir)
            if stores is None:
                root = Path(cache_dir)
                stores = _stores[cache_dir] = (LocalCAS(root), LocalDB(root / "db"))
    return stores


class _Scratch:
    """A worker's reusable working area: `out/` (kept empty between actions), `tmp/`, and a log file.

    Creating and removing directories costs milliseconds on some file systems, so a worker makes
    them once and reuses them; a finished `out/` is renamed into the tree cache and replaced.
    """

    def __init__(self, cache: Path):
        self.root = cache / "exec" / f"{os.getpid()}.{threading.get_native_id()}"
        self.out = self.root / "out"
        self.tmp = self.root / "tmp"
        self.log = self.root / "log"
        for d in (self.out, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    def reset(self) -> None:
        """Make `out/` and `tmp/` empty again (cheap when the action left nothing behind)."""
        for d in (self.out, self.tmp):
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                d.mkdir(parents=True)
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)


_scratch: dict[tuple[str, int], _Scratch] = {}


def _scratch_for(cache: Path) -> _Scratch:
    key = (str(cache), threading.get_native_id())
    scratch = _scratch.get(key)
    if scratch is None:
        scratch = _scratch[key] = _Scratch(cache)
    return scratch


class ActionSlot:
    """An action as a single-flight slot: done = a valid result exists (local, or remote with every
    blob present: then it is copied into the local cache); lease = its key's lease."""

    def __init__(self, spec: ActionSpec, db: LocalDB, leases: LeaseStore, remote: RemoteStore | None):
        self.spec, self.db, self.leases, self.remote = spec, db, leases, remote
        self.result: ActionResult | None = None  # the result `done` found
        self.remote_hit = False

    def done(self) -> bool:
        self.result = self.db.valid_result(self.spec.key)
        if self.result is None and self.remote is not None:
            self.result = self.remote.lookup([self.spec.key]).get(self.spec.key)
            if self.result is not None:
                self.db.put_result(self.spec.key, self.result)
                self.remote_hit = True
        return self.result is not None

    def lease(self) -> Lease:
        return self.leases.lease(self.spec.key, note=self.spec.label)


_remotes: dict[str, tuple[str, RemoteStore]] = {}  # remote config -> (build, its client)
_remote_warnings: list[str] = []


def open_remote(config: ExecConfig) -> RemoteStore | None:
    """This process's client of the remote cache (one per configuration, made anew for each build),
    or None. With a build id, its breaker, refused uploads and corrupt objects are shared with the
    build's other processes through the local cache's database."""
    if config.remote is None:
        return None
    key = repr(config.remote)
    found = _remotes.get(key)
    if found is None or found[0] != config.build:
        from mbuild.stores.remote import RemoteStore

        with _open_lock:
            found = _remotes.get(key)
            if found is None or found[0] != config.build:
                health = open_stores(config.cache_dir)[1].remote_health(config.remote.url, config.build) if config.build else None
                found = _remotes[key] = (config.build, RemoteStore(config.remote, on_warning=_remote_warnings.append, on_progress=TransferProgress(), health=health))
    return found[1]


def ensure_tree(
    result: ActionResult, cas: LocalCAS, remote: RemoteStore | None, db: LocalDB | None = None, on_damage=None
) -> tuple[Path, int]:
    """(the checked local tree of `result`, bytes fetched): blobs missing or corrupt locally come
    from the remote cache (verified before use); BlobUnavailableError if neither has them."""
    try:
        return trees.ensure(result, cas, db, on_damage), 0
    except BlobUnavailableError:
        if remote is None:
            raise
    fetched = remote.fetch_blobs(cas, [(f.digest, f.size) for f in result.files if not cas.has(f.digest)])
    return trees.ensure(result, cas, db), fetched


_lease_stores: dict[tuple, tuple[str, LeaseStore]] = {}  # -> (build, store)


def lease_store(config: ExecConfig, local: bool = False) -> LeaseStore:
    """This process's lease store for `config` (opened once per process): the remote store's when
    one is configured (unless `local`), else records in the local cache's database. Remote lease
    objects go through the remote cache's client (its filesystem, its breaker: see _GuardedLease)."""
    remote_leases = bool(config.leases) and not local
    key = (config.leases if remote_leases else "", config.cache_dir, config.lease_ttl, repr(sorted(config.storage_options.items())))
    build = config.build if remote_leases else ""  # remote ones go through the build's client
    store = _lease_stores.get(key)
    if store is not None and store[0] == build:
        return store[1]
    with _open_lock:
        store = _lease_stores.get(key)
        if store is not None and store[0] == build:
            return store[1]
        if remote_leases:
            remote = open_remote(config)
            timeout = config.remote.timeout if config.remote else None
            store = open_leases(
                config.leases, ttl=config.lease_ttl, storage_options=config.storage_options, timeout=timeout,
                fs=remote.filesystem() if remote is not None else None,
                guard=(lambda obj: _GuardedLease(obj, remote)) if remote is not None else None,
            )
        else:
            _, db = open_stores(config.cache_dir)
            store = LeaseStore(f"{config.cache_dir}#leases", lambda key: LmdbObject(db, key), ttl=config.lease_ttl, margin=default_margin(config.lease_ttl), pid_check=True)
        _lease_stores[key] = (build, store)
    return store


class RemoteLeaseError(Exception):
    """A remote lease operation failed, or was not tried because the remote cache is down."""


class _GuardedLease:
    """A remote lease object that is not asked once the remote cache is down for this build, and
    whose outcomes count for the remote's breaker (shared by the build's processes): renewals and
    releases of leases taken before an outage fail at once instead of waiting out a deadline each."""

    def __init__(self, obj, remote: RemoteStore):
        self.obj, self.remote, self.where = obj, remote, obj.where

    def read(self):
        return self._do("reading", self.obj.read, write=False)

    def write(self, data: bytes, expected: str | None) -> str:
        return self._do("writing", lambda: self.obj.write(data, expected), write=True)

    def _do(self, verb: str, op, write: bool):
        what = f"{verb} lease {self.where}"
        if not self.remote.available or (write and not self.remote.may_upload):
            raise RemoteLeaseError(f"{what}: the remote cache is not in use")
        try:
            result = op()
        except Conflict:
            self.remote.report(what)
            raise
        except Exception as exc:
            self.remote.report(what, exc, write=write)
            raise RemoteLeaseError(f"{what} failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
        self.remote.report(what)
        return result


def run_action(spec: ActionSpec, config: ExecConfig) -> Outcome:
    """Run one action once across every builder sharing the cache; never raises for its own failures.

    This is `single_flight` (the core of `disk_cached(distributed_lock(fn))`) with the action cache
    as the slot: a published result is a hit; a live holder elsewhere is `Busy`; otherwise the
    action runs under its lease, renewed by a heartbeat, and is published only if the lease is
    still ours at that moment. A lost lease stops the action (the worker process exits, status 75).
    """
    box = sandbox.for_actions() if not config.in_process else sandbox.Sandbox(False, "runs on a thread of the driver")
    cas, db = open_stores(config.cache_dir)
    remote = open_remote(config)
    local_leases = remote is None or not remote.available or not remote.may_upload
    requests_before = remote.stats.requests if remote is not None else 0
    slot = ActionSlot(spec, db, lease_store(config, local=local_leases), remote if spec.trust_cache else None)
    try:
        outcome = _single_flight(spec, config, cas, db, remote, slot, box)
    except StepAlreadyDone:
        outcome = Ran(slot.result, "", hit=True, remote_hit=slot.remote_hit)
    except LeaseBusy as busy:
        outcome = Busy(busy.holder)
    except LeaseLost:
        outcome = Busy(_holder_or_none(slot.leases, spec.key), fenced=True)
    except Exception as exc:  # staging or publishing hit a full disk: one line, not a worker traceback
        if not disk_full(exc):
            raise
        outcome = Failed(str(DiskFullError.of(exc, config.cache_dir)), "", "")
    if isinstance(outcome, Ran):
        outcome.requests = remote.stats.requests - requests_before if remote is not None else 0
        if _remote_warnings:
            outcome.warnings, _remote_warnings[:] = list(_remote_warnings), []
    return outcome


def _holder_or_none(leases: LeaseStore, key: str) -> Holder | None:
    """Who holds the lease now, if the lease store can say (a remote one may be down by now)."""
    try:
        return leases.holder(key)
    except RemoteLeaseError:
        return None


def _single_flight(spec: ActionSpec, config: ExecConfig, cas: LocalCAS, db: LocalDB, remote: RemoteStore | None, slot: ActionSlot, box: sandbox.Sandbox) -> Outcome:
    """single_flight over the slot; if the remote lease store fails before the action starts (the
    remote cache is an accelerator, never a dependency), this action takes a local lease. The
    failure counted for the remote's breaker: once that opens, every action of the build does."""
    work = lambda hb: _execute(spec, config, cas, db, remote, hb, box)  # noqa: E731
    try:
        return single_flight(slot, work, renew=config.lease_renew, wait=False)
    except RemoteLeaseError:
        slot.leases = lease_store(config, local=True)
        return single_flight(slot, work, renew=config.lease_renew, wait=False)


def _execute(spec: ActionSpec, config: ExecConfig, cas: LocalCAS, db: LocalDB, remote: RemoteStore | None, heartbeat: Heartbeat, box: sandbox.Sandbox) -> Outcome:
    """Stage inputs, run the rule, check and store its outputs, publish (if the lease is still ours)."""
    faults.point("acquired")
    cache = Path(config.cache_dir)
    scratch = _scratch_for(cache)
    scratch.reset()
    try:
        paths, fetched, guard = _stage_inputs(spec, cas, db, remote, Path(config.workspace_root))
    except _InputGone as gone:
        return InputUnavailable(gone.label, gone.reason)
    faults.point("running")
    started = time.time()
    protected = [str(paths[label]) for label in spec.inputs]
    with _output_to(scratch.log, config.capture_output) as log, stop_on_loss(heartbeat, "interrupt" if config.in_process else "exit"), box.read_only(protected):
        try:
            value = _invoke(spec, paths, scratch.out, scratch.tmp)
            _check_declared(spec.outputs, scratch.out)
        except LeaseLost:
            raise
        except BaseException as exc:  # the rule's own failure (sys.exit and KeyboardInterrupt too): report it, cache nothing
            if isinstance(exc, StopRequested):
                raise  # the driver is stopping this worker: unwind, releasing the lease
            with contextlib.suppress(OSError):  # a full disk must not turn the failure into a crash
                print("".join(traceback.format_exception(exc)), file=sys.stderr, flush=True)
            failure = exc
        else:
            failure = None
    changed = guard.changed()
    if changed is not None:
        guard.drop_damaged(cas)
        label, path, source = changed
        what = (
            f"the workspace file {path} changed while the action ran" if source
            else f"input {label} changed while the action ran ({path}); its damaged copy was dropped and is rebuilt when needed"
        )
        print(f"mbuild: {what}", file=sys.stderr, flush=True)
        log_path = _keep_log(scratch.log, cache, spec.key, log.size(), force=True)
        return _failed(
            db, spec, f"{what}: actions must not write to their inputs (write outputs under ctx.out, scratch files under ctx.tmp)",
            _tail(Path(log_path)), log_path,
        )
    log_path = _keep_log(scratch.log, cache, spec.key, log.size(), force=failure is not None)
    if failure is not None:
        return _failed(db, spec, _failure_line(failure, scratch.out), _tail(Path(log_path)), log_path)
    faults.point("hashing")
    try:
        result = _collect(scratch.out, cas, value, _meta(spec, started))
    except ValueError as exc:
        return _failed(db, spec, str(exc), "", log_path or "")
    trees.adopt(scratch.out, result, cas)
    faults.point("writing-result")
    heartbeat.check()  # fencing: publish only while the lease is still ours (raises LeaseLost)
    db.put_result(spec.key, result)
    db.clear_failure(spec.key)
    uploaded = 0
    if remote is not None and remote.may_upload:
        before = remote.stats.bytes_up
        remote.publish(cas, spec.key, result)  # every blob first, then the record (create-if-absent)
        uploaded = remote.stats.bytes_up - before
    faults.point("published")
    return Ran(result, log_path or "", bytes_up=uploaded, bytes_down=fetched)


def _failed(db: LocalDB, spec: ActionSpec, error: str, detail: str, log: str) -> Failed:
    """Record a failure (so `--no-retry-failed` can name it); failures are never cached as results."""
    db.record_failure(spec.key, {"label": spec.label, "error": error, "log": log, "at": time.time(), "host": socket.gethostname(), "pid": os.getpid()})
    return Failed(error, detail, log)


def _keep_log(scratch_log: Path, cache: Path, key: str, size: int, force: bool) -> str | None:
    """Move a non-empty (or failed) action's log to logs/<key>.log; empty logs are not kept."""
    if size == 0 and not force:
        return None
    dest = cache / "logs" / f"{key}.log"
    try:
        os.replace(scratch_log, dest)
    except FileNotFoundError:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(scratch_log, dest)
    return str(dest)


def _stage_inputs(spec: ActionSpec, cas: LocalCAS, db: LocalDB, remote: RemoteStore | None, root: Path) -> tuple[dict[str, Path], int, InputGuard]:
    """(local paths for every input, bytes fetched, the guard that sees whether they changed):
    source files in place, output trees from the tree cache (checked), fetched from the remote
    cache when they are not here."""
    paths: dict[str, Path] = {}
    fetched = 0
    for label, inp in spec.inputs.items():
        if inp.result is None:
            paths[label] = root / inp.relpath
            continue
        try:
            paths[label], n = ensure_tree(inp.result, cas, remote, db)
        except BlobUnavailableError as exc:
            raise _InputGone(label, str(exc)) from None
        fetched += n
    return paths, fetched, InputGuard.snapshot(spec, paths)


@dataclass
class _Watched:
    label: str
    path: str
    inp: Input
    before: list[int] | None


class InputGuard:
    """What an action's inputs looked like when it started, to tell afterwards whether it (or anything
    else) wrote to them: one lstat per entry before and after; a changed or racy entry is hashed
    again and compared with the recorded digest, so a byte that differs is always noticed."""

    def __init__(self, watched: list[_Watched], started_ns: int):
        self.watched, self.started_ns = watched, started_ns
        self.damaged: list[_Watched] = []

    @staticmethod
    def snapshot(spec: ActionSpec, paths: dict[str, Path]) -> InputGuard:
        now = time.time_ns()
        watched = []
        for label, inp in spec.inputs.items():
            path = str(paths[label])
            before = trees.stamps(path, inp.result) if inp.result is not None else _file_stamp(path)
            watched.append(_Watched(label, path, inp, before))
        return InputGuard(watched, now)

    def changed(self) -> tuple[str, str, bool] | None:
        """(label, path, is a source file) of the first input whose bytes or entries changed since
        the snapshot."""
        first = None
        for w in self.watched:
            where = self._difference(w)
            if where is not None:
                self.damaged.append(w)
                first = first or (w.label, where, w.inp.result is None)
        return first

    def _difference(self, w: _Watched) -> str | None:
        if w.inp.result is None:  # a source file of the workspace
            now = _file_stamp(w.path)
            if now == w.before and now is not None and not trees.racy(now, self.started_ns):
                return None
            try:
                digest, _ = digest_file(w.path)
            except OSError:
                return w.inp.relpath
            return None if digest == w.inp.digest else w.inp.relpath
        now = trees.stamps(w.path, w.inp.result)
        if now == w.before and now is not None and not trees.racy(now, self.started_ns):
            return None
        rel = trees.first_difference(Path(w.path), w.inp.result)
        return rel

    def drop_damaged(self, cas: LocalCAS) -> None:
        """Move damaged input trees aside and drop corrupt blobs (a shared inode is damaged too), so
        the producer reruns the next time its output is needed."""
        for w in self.damaged:
            if w.inp.result is None:
                continue
            trees.discard(Path(w.path))
            for f in w.inp.result.files:
                try:
                    cas.verify(f.digest, f.size)
                except BlobUnavailableError:
                    pass


def _file_stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]


class _InputGone(Exception):
    def __init__(self, label: str, reason: str):
        self.label, self.reason = label, reason


def _invoke(spec: ActionSpec, paths: dict[str, Path], out: Path, tmp: Path) -> Any:
    impl = resolve_rule(spec.rule)
    inputs = {k: map_labels(_as_labels(v), lambda lab: paths[str(lab)]) for k, v in spec.deps.items()}
    values = {
        k: map_labels(_as_labels(v), lambda lab: r.value if (r := spec.inputs[str(lab)].result) else None)
        for k, v in spec.deps.items()
    }
    ctx = ActionContext(spec.config, inputs, values, dict(spec.deps), out, tmp, dict(spec.env), spec.resources)
    return json_value(impl(ctx), spec.label)


def resolve_rule(identity: str):
    """The implementation function named by a rule identity 'module:qualname'."""
    module_name, _, qualname = identity.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj.impl if isinstance(obj, Rule) else obj


def _as_labels(value: Any) -> Any:
    """Dependency structures travel as strings; turn them back into Labels for map_labels."""
    if isinstance(value, str):
        return Label(*value[2:].split(":", 1))
    if isinstance(value, list):
        return [_as_labels(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_labels(v) for k, v in value.items()}
    return value


def _check_declared(outputs: tuple[str, ...], out: Path) -> None:
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


def _collect(out: Path, cas: LocalCAS, value: Any, meta: dict) -> ActionResult:
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


def _meta(spec: ActionSpec, started: float) -> dict:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = str(os.getuid())
    return {
        "label": spec.label,
        "rule": spec.rule,
        "host": socket.gethostname(),
        "user": user,
        "pid": os.getpid(),
        "started": started,
        "seconds": round(time.time() - started, 6),
    }


class _output_to:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to a log file for a while."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def size(self) -> int:
        return os.fstat(self.log.fileno()).st_size if not self.log.closed else os.path.getsize(self.path)

    def __enter__(self):
        self.log = open(self.path, "ab")
        self.log.truncate(0)
        if self.enabled:
            sys.stdout.flush()
            sys.stderr.flush()
            self.saved = (os.dup(1), os.dup(2))
            os.dup2(self.log.fileno(), 1)
            os.dup2(self.log.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self.saved[0], 1)
            os.dup2(self.saved[1], 2)
            os.close(self.saved[0])
            os.close(self.saved[1])
        self.log.close()
        return False


def _failure_line(exc: BaseException, out: Path) -> str:
    """What the summary says about a rule's own exception."""
    if disk_full(exc):
        return str(DiskFullError.of(exc, str(out)))
    if isinstance(exc, SystemExit):
        return f"the rule called sys.exit({exc.code!r}); a rule returns to succeed and raises an exception to fail"
    if isinstance(exc, KeyboardInterrupt):
        return "the rule raised KeyboardInterrupt (a Ctrl-C at the terminal stops the whole build instead)"
    return _first_lines(exc)


def _first_lines(exc: BaseException, lines: int = 3) -> str:
    """The exception's type and the first lines of its message (what a summary shows)."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    more = " ..." if len(text) > lines else ""
    return f"{type(exc).__name__}: " + "\n".join(text[:lines]) + more


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        data = path.read_bytes()[-64 * 1024 :]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
