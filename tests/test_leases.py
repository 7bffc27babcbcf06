"""Leases and the lock/cache primitives, on a local directory, the GCS emulator and moto S3.

Races use separate processes (a fleet of 4 long-lived children that receive commands on stdin and
start each race together on a "go" line). TTLs are about a second: the stale-lease tests wait one
out, which is inherent; everything else waits for a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import servers  # noqa: F401  (sets GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false before gcsfs is imported)
from mbuild.leases import Heartbeat, LeaseLost, swap_object, open_leases
from mbuild.steps.primitives import (
    OutputSlot,
    StepAlreadyDone,
    current_lease,
    disk_cached,
    distributed_lock,
    single_flight,
)

TTL = 1.0  # margin = TTL/6: a holder trusts its lease for ~0.83 s after each renewal
RENEW = 0.2
N = 4


# --------------------------------------------------------------------------------------------
# stores


@dataclass
class Store:
    kind: str
    root: str  # unique per test
    so: dict | None  # storage_options

    def leases(self, ttl: float = TTL, **kw):
        return open_leases(f"{self.root}/leases", ttl=ttl, storage_options=self.so, **kw)

    def url(self, name: str) -> str:
        return f"{self.root}/{name}"


@pytest.fixture(scope="session")
def gcs_bucket(gcs_server):
    gcs_server.make_bucket("mbuild-leases")
    return gcs_server


@pytest.fixture(scope="session")
def s3_bucket(s3_server):
    s3_server.make_bucket("mbuild-leases")
    return s3_server


@pytest.fixture(params=["local", "gcs", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store("local", str(tmp_path / "store"), None)
    server = request.getfixturevalue(f"{request.param}_bucket")
    scheme = "gs" if request.param == "gcs" else "s3"
    return Store(request.param, f"{scheme}://mbuild-leases/{uuid.uuid4().hex[:12]}", server.storage_options)


# --------------------------------------------------------------------------------------------
# child processes

CHILD = r"""
import json, os, sys, time, threading
from mbuild.leases import open_leases, Heartbeat, LeaseLost, swap_object
from mbuild.steps.primitives import disk_cached, distributed_lock

def reply(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

def step_fn(counter, work):
    def step(output_path):
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(work)  # the work itself
        return {"made_by": os.getpid()}
    return step

def save_json(so):
    def save(result, output_path):
        import fsspec
        with fsspec.open(f"{output_path}/result.json", "w", **(so or {})) as f:
            json.dump(result, f)
    return save

def load_json(so):
    def load(output_path):
        import fsspec
        with fsspec.open(f"{output_path}/result.json", "r", **(so or {})) as f:
            return json.load(f)
    return load

held = []
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd = json.loads(line)
    op = cmd["op"]
    try:
        if op == "race":
            lease = open_leases(cmd["location"], ttl=cmd["ttl"], storage_options=cmd["so"]).lease(cmd["key"])
            lease.holder()  # warm up the connection
            reply(ready=True)
            sys.stdin.readline()  # "go"
            won = lease.try_acquire()
            reply(won=won, epoch=lease.epoch if won else 0, owner=lease.owner if won else "")
            if won:
                held.append(lease)
        elif op == "step":
            so = cmd["so"]
            seen = []
            fn = distributed_lock(step_fn(cmd["counter"], cmd["work"]), ttl=cmd["ttl"], renew=cmd["renew"],
                                  storage_options=so, on_wait=lambda h: seen.append(h.pid if h else None))
            open_leases(cmd["path"], ttl=cmd["ttl"], storage_options=so).lease(".mbuild-lease").holder()  # warm up
            reply(ready=True)
            sys.stdin.readline()  # "go"
            result = disk_cached(fn, cmd["path"], save=save_json(so), load=load_json(so))
            reply(result=result, waited_for=sorted({p for p in seen if p}))
        elif op == "hold":  # take leases with a heartbeat and keep them; then wait for "publish"
            store = open_leases(cmd["location"], ttl=cmd["ttl"], storage_options=cmd["so"])
            lost = threading.Event()
            leases = [store.lease(k, note="held by a test child") for k in cmd["keys"]]
            assert all(lease.try_acquire() for lease in leases)
            beats = [Heartbeat(lease, interval=cmd["renew"], on_lost=lost.set).__enter__() for lease in leases]
            lease = leases[0]
            reply(acquired=True, owner=lease.owner, epoch=lease.epoch, since=lease.since)
            sys.stdin.readline()  # "publish": what an executor does when the action finished
            was_held = lease.held()
            published = False
            if was_held:
                try:
                    swap_object(cmd["marker"], storage_options=cmd["so"]).write(b"from the old holder", None)
                    published = True
                except Exception:
                    pass
            lost.wait(5)
            try:
                lease.renew()
                renew = "ok"
            except LeaseLost:
                renew = "LeaseLost"
            lease.release()
            reply(held=was_held, published=published, on_lost=lost.is_set(), renew=renew)
        elif op == "exit":
            break
    except Exception as exc:
        import traceback
        reply(error=traceback.format_exc())
"""


class Child:
    def __init__(self):
        env = {**os.environ, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.pid = self.proc.pid
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True).start()

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line)

    def send(self, cmd: dict | str) -> None:
        self.proc.stdin.write((cmd if isinstance(cmd, str) else json.dumps(cmd)) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float = 30.0) -> dict:
        try:
            msg = json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"child {self.pid} said nothing in {timeout}s; stderr:\n{''.join(self.stderr[-30:])}") from None
        if "error" in msg:
            raise AssertionError(f"child {self.pid} failed:\n{msg['error']}")
        return msg

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"op": "exit"})
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def fleet():
    children = [Child() for _ in range(N)]
    yield children
    for child in children:
        child.close()


@pytest.fixture
def child():
    made: list[Child] = []

    def make() -> Child:
        made.append(Child())
        return made[-1]

    yield make
    for c in made:
        if c.proc.poll() is None:
            os.kill(c.pid, signal.SIGCONT)
            c.proc.kill()
            c.proc.wait()


def together(children: list[Child], cmd: dict, timeout: float = 30.0) -> list[dict]:
    """Send a command to every child, wait until all are ready, release them at once, collect answers."""
    for c in children:
        c.send(cmd)
    for c in children:
        assert c.recv(timeout).get("ready")
    for c in children:
        c.send("go")
    return [c.recv(timeout) for c in children]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # polling a condition, with a deadline


# --------------------------------------------------------------------------------------------
# leases


def test_fresh_lease_race_has_one_winner(store, fleet):
    answers = together(fleet, {"op": "race", "location": f"{store.root}/leases", "key": "fresh", "ttl": 30, "so": store.so})
    winners = [a for a in answers if a["won"]]
    assert len(winners) == 1, answers
    assert winners[0]["epoch"] == 1
    assert store.leases().lease("fresh").holder().owner == winners[0]["owner"]


def test_stale_lease_race_has_one_winner(store, fleet):
    leases = store.leases()
    old = leases.lease("stale")
    assert old.try_acquire()  # and never renewed
    for c in fleet:
        c.send({"op": "race", "location": f"{store.root}/leases", "key": "stale", "ttl": 30, "so": store.so})
    for c in fleet:
        assert c.recv()["ready"]
    observer = leases.lease("stale")
    wait_until(lambda: observer.holder() is None, TTL + 3, "the lease to go stale")
    for c in fleet:
        c.send("go")
    answers = [c.recv() for c in fleet]
    winners = [a for a in answers if a["won"]]
    assert len(winners) == 1, answers
    assert winners[0]["epoch"] == 2  # a takeover
    assert not old.held()


def test_heartbeat_keeps_the_lease(store):
    leases = store.leases()
    mine, other = leases.lease("kept"), leases.lease("kept")
    assert mine.try_acquire()
    with Heartbeat(mine, interval=RENEW) as beat:
        start = time.monotonic()
        while time.monotonic() - start < 1.5 * TTL:  # past the TTL
            assert not other.try_acquire()
            assert mine.held()
            time.sleep(0.1)  # sampling over a fixed period is the point of this test
    assert beat.renewals >= 4 and not beat.lost.is_set()
    mine.release()
    assert other.try_acquire() and other.epoch == 2  # released: taken at once


def test_blocked_heartbeat_is_fenced(store):
    leases = store.leases()
    old = leases.lease("blocked")
    assert old.try_acquire()
    gate = threading.Event()
    old.renew = lambda: gate.wait(20)  # the heartbeat thread hangs in its first renewal
    lost = threading.Event()
    try:
        with Heartbeat(old, interval=RENEW, on_lost=lost.set) as beat:
            assert lost.wait(TTL + 2), "on_lost was not called"
            assert beat.lost.is_set() and not old.held()
            new = store.leases(ttl=30).lease("blocked")  # the new owner may use its own TTL
            wait_until(new.try_acquire, TTL + 3, "a takeover")
            assert new.epoch == old.epoch + 1
            gate.set()
    finally:
        gate.set()
        del old.renew
    with pytest.raises(LeaseLost):
        old.renew()
    old.release()  # a CAS on its old version: must leave the new owner alone
    assert new.holder().owner == new.owner
    new.renew()
    assert new.held()
    with pytest.raises(LeaseLost):
        old.check()


def test_renew_and_release_are_cas_on_our_own_version(store):
    leases = store.leases(ttl=30)
    mine = leases.lease("cas")
    assert mine.try_acquire()
    intruder = leases.lease("cas")
    data, version = intruder.obj.read()
    intruder.obj.write(data.replace(b'"rev":"', b'"rev":"x'), version)  # anyone else's write
    with pytest.raises(LeaseLost):
        mine.renew()
    assert not mine.held()
    before = intruder.obj.read()
    mine.release()
    assert intruder.obj.read() == before  # untouched


def test_unreadable_lease_is_taken_over(store):
    lease = store.leases().lease("torn")
    lease.obj.write(b'{"state": "held", "own', None)  # e.g. a truncated file after an OS crash
    assert lease.holder() is None and lease.last_holder() == (None, "unreadable")
    assert lease.try_acquire() and lease.epoch == 1


def _proc_state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


def test_stopped_holder_is_fenced_and_does_not_publish(store, child):
    holder = child()
    marker = store.url("result")
    holder.send({"op": "hold", "location": f"{store.root}/leases", "keys": ["stopped"], "ttl": TTL, "renew": RENEW,
                 "so": store.so, "marker": marker})
    got = holder.recv()
    os.kill(holder.pid, signal.SIGSTOP)
    wait_until(lambda: _proc_state(holder.pid) == "T", 5, "the holder to stop")
    new = store.leases(ttl=30).lease("stopped")
    wait_until(new.try_acquire, TTL + 3, "the stopped holder's lease to be taken over")
    assert new.epoch == got["epoch"] + 1
    holder.send("publish")  # it finished its action while stopped, and tries to publish on waking
    os.kill(holder.pid, signal.SIGCONT)
    report = holder.recv()
    assert report == {"held": False, "published": False, "on_lost": True, "renew": "LeaseLost"}
    assert new.held() and new.holder().owner == new.owner  # its release() left us alone
    assert swap_object(marker, storage_options=store.so).read() is None  # nothing published
    new.renew()


def test_killed_holder_is_taken_over(store, child):
    holder = child()
    holder.send({"op": "hold", "location": f"{store.root}/leases", "keys": ["killed-ttl", "killed-pid"], "ttl": TTL,
                 "renew": RENEW, "so": store.so, "marker": store.url("unused")})
    got = holder.recv()
    # users see who holds it
    seen = store.leases().lease("killed-ttl").holder()
    assert (seen.host, seen.pid, seen.owner) == (socket.gethostname(), holder.pid, got["owner"])
    assert seen.since == got["since"] and seen.expires > time.time()
    assert f"pid {holder.pid}" in seen.describe() and "held by a test child" in seen.describe()

    os.kill(holder.pid, signal.SIGKILL)
    holder.proc.wait()
    # Without the same-host liveness check, only the TTL frees it.
    ttl_only = store.leases(pid_check=False).lease("killed-ttl")
    expires = ttl_only.last_holder()[0].expires
    assert not ttl_only.try_acquire()
    wait_until(ttl_only.try_acquire, TTL + 3, "the dead holder's lease to go stale")
    assert time.time() >= expires and ttl_only.epoch == 2
    # With it (the default), a dead process on this machine holds nothing.
    assert store.leases().lease("killed-pid").try_acquire()


def test_holder_names_host_pid_and_since(store):
    lease = store.leases().lease("who", note="//pkg:target")
    before = time.time()
    assert lease.try_acquire()
    holder = store.leases().lease("who").holder()
    assert holder.host == socket.gethostname() and holder.pid == os.getpid()
    assert before <= holder.since <= time.time() and holder.epoch == 1 and holder.note == "//pkg:target"
    assert holder.expires == pytest.approx(holder.since + TTL, abs=0.05)
    assert "//pkg:target" in holder.describe()
    lease.release()
    assert store.leases().lease("who").holder() is None
    assert store.leases().lease("who").last_holder()[1] == "released"


def test_lease_keys_are_checked(tmp_path):
    leases = open_leases(tmp_path)
    for bad in ["", "/abs", "a/../b", "a//b", "sp ace"]:
        with pytest.raises(ValueError):
            leases.lease(bad)
    with pytest.raises(ValueError):
        open_leases("memory://x")


# --------------------------------------------------------------------------------------------
# primitives


def test_disk_cached_runs_once_then_loads(store):
    calls = []

    def fn(output_path):
        calls.append(output_path)
        return {"answer": 42}

    saved = {}
    path = store.url("cached")
    save = lambda result, p: saved.setdefault(p, result)  # noqa: E731
    load = lambda p: {"loaded": saved[p]}  # noqa: E731
    so = store.so
    assert disk_cached(fn, path, save=save, load=load, storage_options=so) == {"answer": 42}
    assert disk_cached(fn, path, save=save, load=load, storage_options=so) == {"loaded": {"answer": 42}}
    assert disk_cached(fn, path, storage_options=so) is None  # a hit: the marker holds no value when save was used
    assert len(calls) == 1
    # without save/load, fn's JSON return value comes back on a hit
    plain = store.url("plain")
    assert disk_cached(fn, plain, storage_options=so) == disk_cached(fn, plain, storage_options=so) == {"answer": 42}
    assert len(calls) == 2


def test_failure_is_recorded_not_cached(store):
    attempts = []

    def flaky(output_path):
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    path = store.url("flaky")
    with pytest.raises(RuntimeError):
        disk_cached(distributed_lock(flaky, ttl=TTL, renew=RENEW), path, storage_options=store.so)
    slot = OutputSlot(path, storage_options=store.so)
    assert not slot.done() and "first attempt fails" in slot.failure()["error"]
    assert slot.lease().holder() is None  # released on failure
    assert disk_cached(distributed_lock(flaky, ttl=TTL, renew=RENEW), path, storage_options=store.so) == "ok"
    assert slot.done() and slot.failure() is None and len(attempts) == 2


def test_step_already_done(store):
    def fn(output_path):
        return 7

    locked = distributed_lock(fn, ttl=TTL, renew=RENEW, storage_options=store.so)
    path = store.url("done")
    assert locked(path) == 7  # alone, it publishes the marker itself
    with pytest.raises(StepAlreadyDone):
        locked(path)
    assert disk_cached(locked, path) == 7  # StepAlreadyDone inside disk_cached is a hit


def test_lock_and_cache_compose_across_processes(store, fleet, tmp_path):
    counter = tmp_path / "ran"
    answers = together(fleet, {"op": "step", "path": store.url("composed"), "counter": str(counter), "work": 0.5,
                               "ttl": TTL, "renew": RENEW, "so": store.so})
    runs = counter.read_text().split()
    assert len(runs) == 1, runs  # fn ran exactly once
    runner = int(runs[0])
    assert all(a["result"] == {"made_by": runner} for a in answers), answers  # everyone got the result
    waiters = [a for a in answers if a["waited_for"]]
    assert waiters and all(a["waited_for"] == [runner] for a in waiters)  # and saw who they waited for


def test_lost_lease_stops_the_step_and_does_not_publish(store):
    stopped = []

    def stalls(output_path):
        beat = current_lease()
        gate = threading.Event()
        beat.lease.renew = lambda: gate.wait(20)  # its heartbeat hangs
        try:
            while True:  # a long Python loop: interrupted by LeaseLost once the lease is lost
                time.sleep(0.01)
        finally:
            stopped.append(beat.lost.is_set())
            gate.set()

    path = store.url("stalls")
    with pytest.raises(LeaseLost):
        disk_cached(distributed_lock(stalls, ttl=TTL, renew=RENEW, storage_options=store.so), path)
    slot = OutputSlot(path, storage_options=store.so)
    assert stopped == [True] and not slot.done() and slot.failure() is None
    # the next attempt runs it (after the lapsed lease goes stale, or at once: we released it)
    assert disk_cached(distributed_lock(lambda p: "second", ttl=TTL, renew=RENEW), path, storage_options=store.so) == "second"


def test_published_only_if_still_held(tmp_path):
    """The fencing check sits between the work and the marker: a lease lost after the work but
    before publishing (nothing could interrupt it) still publishes nothing."""
    path = tmp_path / "late"

    def fn(output_path):
        current_lease().lease.mark_lost()
        return 1

    with pytest.raises(LeaseLost):
        distributed_lock(fn, ttl=TTL, renew=RENEW, on_lost=None)(path)
    assert not OutputSlot(path).done()


def test_disk_cached_forms(tmp_path):
    calls = []

    @disk_cached(load=lambda p: "loaded")
    @distributed_lock(ttl=TTL, renew=RENEW)
    def step(output_path):
        calls.append(output_path)
        Path(output_path, "file.txt").write_text("x")
        return "computed"

    assert step(tmp_path / "a") == "computed" and step(tmp_path / "a") == "loaded"
    assert step.__name__ == "step" and len(calls) == 1 and (tmp_path / "a" / "file.txt").exists()


def test_single_flight_waits_for_the_holder_and_reports_it(tmp_path):
    """The engine-facing core: a Slot is (done?, lease); waiters see the holder, then StepAlreadyDone."""
    leases = open_leases(tmp_path / "leases", ttl=TTL)
    done = threading.Event()

    class Slot:
        def done(self):
            return done.is_set()

        def lease(self):
            return leases.lease("k", note="//p:x")

    started = threading.Event()

    def work(beat):
        started.set()
        time.sleep(0.3)  # the work
        beat.check()
        done.set()
        return "ran"

    results, seen = [], []
    runner = threading.Thread(target=lambda: results.append(single_flight(Slot(), work, renew=RENEW)))
    runner.start()
    assert started.wait(5)
    with pytest.raises(StepAlreadyDone):
        single_flight(Slot(), work, renew=RENEW, on_wait=seen.append, poll=0.02)
    runner.join()
    assert results == ["ran"] and seen and all(h.note == "//p:x" and h.pid == os.getpid() for h in seen)
    with pytest.raises(TimeoutError):
        blocker = leases.lease("k")
        assert blocker.try_acquire()
        done.clear()
        single_flight(Slot(), work, timeout=0.2, poll=0.02)
