"""Remote execution through fray: actions as jobs on LocalClient and on real local Iris clusters.

Most Iris tests share one cluster that runs in its own process (module fixture), driven with
backend "iris" and its controller address: it outlives any driver, which the attach and restart
tests need. One test uses backend "iris-local" (the executor starts and stops its own cluster).
The actions are small ActionSpecs whose rules live in a throwaway module outside the project:
jobs import it only because the executor sends the driver's sys.path along.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from mbuild.action.services import process_services
from mbuild.action.spec import ActionSpec, Busy, ExecConfig, Failed, Input, InputUnavailable, Ran
from mbuild.leases import Holder
from mbuild.runners.fray import wire
from mbuild.runners.fray.executor import FrayExecutor, RemoteJobCancelled
from mbuild.runners.fray.failures import classify_iris_failure
from mbuild.runners.fray.submission import job_name, resource_config
from mbuild.model.attrs import Resources
from mbuild.stores.results import ActionResult, OutputFile

SMALL = Resources(cpu=0.25, ram="256m", disk="256m")  # what a local Iris worker (8 CPU, 16 GiB) fits 32 of

RULES = '''
import os, threading, time
from pathlib import Path


def _append(path, text):
    with open(path, "a") as f:
        f.write(text + "\\n")


def _lines(path):
    try:
        return open(path).read().split()
    except FileNotFoundError:
        return []


def record(ctx):
    a = ctx.attr
    if getattr(a, "count", None):
        _append(a.count, str(os.getpid()))
    parts = [a.text]
    src = getattr(ctx.inputs, "src", None)
    if src is not None:
        parts.append((src / "out.txt").read_text())
    print(f"record {a.text} in {os.getpid()}", flush=True)
    (ctx.out / "out.txt").write_text("+".join(parts))
    return {"pid": os.getpid(), "cwd": os.getcwd(), "env": os.environ.get("FX_PATH")}


def boom(ctx):
    print("about to fail", flush=True)
    raise ValueError("kaboom " + ctx.attr.msg)


def hold(ctx):
    """Count the execution, announce the pid; hang (to be killed) for the first `hang` executions,
    otherwise wait for the `go` file if one is named."""
    a = ctx.attr
    _append(a.count, str(os.getpid()))
    n = len(_lines(a.count))
    _append(a.started, str(os.getpid()))
    deadline = time.time() + a.timeout
    if n <= getattr(a, "hang", 0):
        while time.time() < deadline:
            time.sleep(0.05)
        raise TimeoutError("was not killed")
    go = getattr(a, "go", None)
    while go and not os.path.exists(go):
        if time.time() > deadline:
            raise TimeoutError("no go file")
        time.sleep(0.02)
    (ctx.out / "out.txt").write_text(f"held {n}")
    return {"pid": os.getpid(), "n": n}


def overlap(ctx):
    _append(ctx.attr.trace, "+")
    time.sleep(ctx.attr.seconds)
    _append(ctx.attr.trace, "-")
    (ctx.out / "out.txt").write_text(ctx.attr.text)


def write_pid(path):
    _append(path, str(os.getpid()))


def fail_step(path):
    raise RuntimeError("step failed at " + str(path))


def step(output_path):
    p = Path(output_path)
    p.mkdir(parents=True, exist_ok=True)
    _append(str(p.parent / (p.name + ".count")), str(os.getpid()))
    (p / "data.txt").write_text("done")
    return {"pid": os.getpid()}
'''

CLUSTER_SERVER = '''
import sys
from iris.cluster.local_cluster import LocalCluster, make_local_cluster_config
cluster = LocalCluster(make_local_cluster_config(1))
print(cluster.start(), flush=True)
try:
    sys.stdin.read()   # serve until the test closes our stdin (or dies)
finally:
    cluster.close()
'''

DRIVER = '''
import pickle, sys, time
spec, config, address = pickle.load(open(sys.argv[1], "rb"))
from mbuild.runners.fray.executor import FrayExecutor
ex = FrayExecutor("iris", controller=address, on_done=lambda *a: None)
ex.submit(spec, config, "x")
print("submitted", flush=True)
time.sleep(600)   # until the test kills us
'''


# --- helpers -------------------------------------------------------------------------------------


def wait_for(cond, timeout: float = 60.0, what: str = "a condition"):
    """Poll `cond` until it is truthy (returned) or the deadline passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


class Driver:
    """A FrayExecutor whose outcomes land in a queue, keyed by tag; results come with the handle
    `submit` returned for the tag."""

    def __init__(self, backend: str, **kwargs):
        self.q: queue.Queue = queue.Queue()
        self.ex = FrayExecutor(backend, on_done=lambda tag, outcome, exc, source: self.q.put((tag, outcome, exc, source)), **kwargs)
        self.jobs: dict = {}

    def submit(self, spec: ActionSpec, config: ExecConfig, tag=None):
        job = self.ex.submit(spec, config, tag if tag is not None else spec.label)
        self.jobs[job.tag] = job
        return job

    def results(self, n: int, timeout: float = 90.0) -> dict:
        out = {}
        deadline = time.monotonic() + timeout
        while len(out) < n:
            tag, outcome, exc, source = self.q.get(timeout=max(0.1, deadline - time.monotonic()))
            job = self.jobs[tag]
            assert source == job.source
            out[tag] = (job, outcome, exc)
        return out

    def run(self, spec: ActionSpec, config: ExecConfig, timeout: float = 90.0):
        self.submit(spec, config, "only")
        job, outcome, exc = self.results(1, timeout)["only"]
        assert exc is None, exc
        return job, outcome

    def close(self) -> None:
        self.ex.close()


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    """A rule module outside the project, importable only through the driver's sys.path."""
    root = tmp_path_factory.mktemp("fxws")
    name = f"fxrules_{os.getpid()}"
    (root / f"{name}.py").write_text(textwrap.dedent(RULES))
    sys.path.insert(0, str(root))
    module = __import__(name)
    yield root, name, module
    sys.path.remove(str(root))


@pytest.fixture
def config(rules, tmp_path) -> ExecConfig:
    root, _, _ = rules
    return ExecConfig(str(root), str(tmp_path / "cache"))


@pytest.fixture
def spec(rules):
    _, name, _ = rules

    def make(rule: str, *, resources=SMALL, env=None, deps=None, inputs=None, key=None, **attrs) -> ActionSpec:
        return ActionSpec(
            key=key or uuid.uuid4().hex, label=f"//fx:{rule}", rule=f"{name}:{rule}", config=attrs, deps=deps or {},
            inputs=inputs or {}, outputs=("out.txt",), env=env or {}, resources=resources,
        )

    return make


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Iris cluster in its own process (it outlives drivers); yields its controller address."""
    d = tmp_path_factory.mktemp("cluster")
    script = d / "cluster_server.py"
    script.write_text(textwrap.dedent(CLUSTER_SERVER))
    err = open(d / "server.err", "w")
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, cwd=d)
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("http"), f"cluster did not start: {(d / 'server.err').read_text()[-2000:]}"
        yield address
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


def cached(config: ExecConfig, key: str) -> ActionResult | None:
    _, db = process_services().stores(config.cache_dir)  # the executors' default: this process's stores
    return db.valid_result(key)


def tree_text(config: ExecConfig, result: ActionResult, name: str = "out.txt") -> str:
    return (Path(config.cache_dir) / "trees" / result.tree / name).read_text()


# --- pure parts ----------------------------------------------------------------------------------


def test_importing_the_modules_does_not_import_fray_or_iris():
    modules = ", ".join(f"mbuild.runners.fray.{m}" for m in ("executor", "backend", "local", "iris", "job", "job_logs", "wire", "failures", "clients", "submission", "thread_output"))
    code = f"import sys, {modules}, mbuild.steps.remote; print([m for m in sys.modules if m.split('.')[0] in ('fray', 'iris')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_resources_map_onto_schedulable_fray_resource_configs():
    from fray.types import CpuConfig, GpuConfig, TpuConfig

    r = resource_config(Resources(cpu=0.5, ram="2g", disk="3g"))
    assert (r.cpu, r.ram, r.disk, type(r.device)) == (0.5, "2g", "3g", CpuConfig)
    assert resource_config(None).disk == "1g"  # never fray's unschedulable 64g default
    assert isinstance(resource_config(Resources(accelerator="v4-8")).device, TpuConfig)
    assert resource_config(Resources(accelerator="tpu:v5litepod-16")).device.variant == "v5litepod-16"
    gpu = resource_config(Resources(accelerator="gpu:H100:8")).device
    assert isinstance(gpu, GpuConfig) and (gpu.variant, gpu.count) == ("H100", 8)
    assert resource_config({"cpu": 2, "accelerator": "A100x4"}).device.count == 4


def test_job_names_derive_from_the_key_and_the_cache():
    a = ExecConfig("/ws", "/ws/.mbuild/cache")
    b = ExecConfig("/ws", "/elsewhere/cache")
    key = "0123456789abcdef0123456789abcdef"
    assert job_name(key, a) == job_name(key, a) and job_name(key, a).startswith(f"mbuild-{key}-")
    assert job_name(key, a) != job_name(key, b)
    assert job_name(key, a, namespace="gs://bucket/cache") == job_name(key, b, namespace="gs://bucket/cache")


def test_job_reports_cross_the_wire_as_checked_records(tmp_path):
    holder = Holder("owner1", "host7", 4242, 1.0, 91.0, 3, user="alice", note="//p:a")
    for outcome in (Failed("ValueError: boom", "Traceback ...", "/c/logs/k.log"), InputUnavailable("//p:a", "blob x is missing"),
                    Busy(holder), Busy(None, fenced=True)):
        report = wire.report_of(outcome, "run1")
        assert wire.decode(wire.encode(report)) == report and report.outcome() == outcome
    result = ActionResult.make([OutputFile("out.txt", "f" * 32, 3)], value=None)
    ran = wire.report_of(Ran(result, "", bytes_up=5, bytes_down=7, requests=2, warnings=["the remote cache is down"]), "run1")
    assert wire.decode(wire.encode(ran)).counters() == {"bytes_up": 5, "bytes_down": 7, "requests": 2, "warnings": ["the remote cache is down"]}
    failed = wire.report_of(Failed("ValueError: boom", "Traceback ...", ""), "run1")
    for bad in (b"", b"[1]", pickle.dumps(failed), b'{"v":2,"run":"r","kind":"ran"}', b'{"v":1,"run":"r","kind":"exploded"}',
                b'{"v":1,"kind":"ran"}', b'{"v":1,"run":"r","kind":"ran","bytes_up":"5"}', b'{"v":1,"run":"r","kind":"ran","extra":1}',
                b'{"v":1,"run":"r","kind":"busy","holder":{"pid":"x"}}', b'{"v":1,"run":"r","kind":"busy","holder":{"pid":1}}'):
        with pytest.raises(wire.WireError):
            wire.decode(bad)
    # in a job's log: the report of the latest run only, without the detail (the log has it)
    run_a, run_b = wire.RUN_LINE.format(run_id="a"), wire.RUN_LINE.format(run_id="b")
    assert wire.report_in([run_a, "x", wire.report_line(failed), "Traceback", "RemoteActionFailed: boom"]) == wire.JobReport("run1", "failed", error="ValueError: boom")
    assert wire.report_in([run_a, wire.report_line(failed), run_b, "Exit code: -9"]) is None
    # in the cache's logs/: taken (and removed) by the run that left it only
    path = wire.report_path(str(tmp_path), "k")
    wire.leave(ran, path)
    assert wire.take(path, "another run") is None and path.exists()
    assert wire.take(path, "run1") == ran and not path.exists()


def test_iris_failures_are_classified():
    pre = "Cumulative failed task attempts exceeded max_task_failures: failures=1, limit=0; "
    # a job that raised after leaving its report: the report is awaited in its log, not parsed from the message
    f = classify_iris_failure("failed", pre + "Exit code: 1. stderr: mbuild.runners.fray.job.RemoteActionFailed: ValueError: boom")
    assert not f.lost and f.log_wait > 0 and f.last_line == "mbuild.runners.fray.job.RemoteActionFailed: ValueError: boom"
    assert f.reported(wire.JobReport("r", "failed", error="ValueError: boom")).error == "ValueError: boom"
    f = classify_iris_failure("failed", "Exit code: 75. stderr: mbuild.leases: lease lost: exiting with status 75")
    assert f.fenced and not f.lost
    assert classify_iris_failure("failed", pre + "Exit code: -9. stderr: ===== mbuild: job run 0123abcd =====").reason == "task killed: Exit code: -9"
    assert classify_iris_failure("failed", "Exit code 137: killed by SIGKILL (possibly OOM or resource limit)").lost
    assert not classify_iris_failure("failed", "Exit code 137: OOM killed (container exceeded memory limit)").lost
    assert classify_iris_failure("worker_failed", "worker died").lost
    assert classify_iris_failure("missing", "").lost
    assert classify_iris_failure("killed", "Terminated by user").lost
    assert not classify_iris_failure("killed", "Terminated by user", cancelled_by_us=True).lost
    f = classify_iris_failure("failed", "Exit code: 1. stderr: ModuleNotFoundError: No module named 'x'")
    assert not f.lost and "ModuleNotFoundError" in f.error


# --- LocalClient ---------------------------------------------------------------------------------


def test_local_client_runs_actions_in_process_and_publishes(config, spec):
    d = Driver("local")
    try:
        a = spec("record", text="A")
        _, ra = d.run(a, config)
        assert isinstance(ra, Ran) and ra.result.meta["pid"] == os.getpid()
        b = spec("record", text="B", deps={"src": "//fx:record"}, inputs={"//fx:record": Input("//fx:record", ra.result.tree, result=ra.result)})
        job, rb = d.run(b, config)
        assert isinstance(rb, Ran)
        assert tree_text(config, rb.result) == "B+A"
        assert cached(config, a.key) is not None and cached(config, b.key).tree == rb.result.tree
        assert job.source.startswith("fray:local/local-mbuild-" + b.key) and rb.source == job.source
        assert "record B in" in Path(rb.log).read_text()  # the rule's prints, routed to its own log
    finally:
        d.close()


def test_local_client_failure_carries_the_traceback(config, spec):
    d = Driver("local")
    try:
        s = spec("boom", msg="local-xyz")
        _, out = d.run(s, config)
        assert isinstance(out, Failed)
        assert out.error == "ValueError: kaboom local-xyz"
        assert "Traceback" in out.detail and 'raise ValueError("kaboom "' in out.detail and "about to fail" in out.detail
        assert "kaboom local-xyz" in Path(out.log).read_text()
        assert cached(config, s.key) is None
    finally:
        d.close()


def test_local_client_respects_max_jobs(config, spec, tmp_path):
    trace = tmp_path / "trace"
    d = Driver("local", max_jobs=3)
    try:
        for i in range(9):
            d.submit(spec("overlap", trace=str(trace), seconds=0.1, text=str(i)), config, i)
        res = d.results(9)
        assert all(isinstance(o, Ran) for _, o, _ in res.values())
        running = peak = 0
        for mark in lines(trace):
            running += 1 if mark == "+" else -1
            peak = max(peak, running)
        assert 2 <= peak <= 3  # concurrent, and never more than max_jobs
        assert [t.name for t in threading.enumerate() if t.name.startswith("mbuild-fray")] == ["mbuild-fray-poller"]
    finally:
        d.close()


# --- a local Iris cluster ------------------------------------------------------------------------


def test_iris_actions_run_in_other_processes_and_publish_to_the_cache(cluster, config, spec, tmp_path):
    d = Driver("iris", controller=cluster)
    try:
        env = {"FX_PATH": str(tmp_path / "declared")}  # a /tmp/... value: the local cluster would rewrite it in the job env
        a = spec("record", text="A", env=env)
        job, ra = d.run(a, config)
        assert isinstance(ra, Ran), ra
        assert ra.result.meta["pid"] != os.getpid()
        assert ra.result.value["env"] == env["FX_PATH"]
        assert ra.result.value["cwd"] == os.getcwd()
        assert job.source == "fray:iris/" + job.job_id.lstrip("/") and job.job_id.endswith(job_name(a.key, config))
        b = spec("record", text="B", deps={"src": "//fx:record"}, inputs={"//fx:record": Input("//fx:record", ra.result.tree, result=ra.result)})
        _, rb = d.run(b, config)
        assert isinstance(rb, Ran) and rb.result.meta["pid"] not in (os.getpid(), ra.result.meta["pid"])
        assert tree_text(config, rb.result) == "B+A"  # the job staged its input from the cache
        assert cached(config, b.key).tree == rb.result.tree
        assert "record B in" in Path(rb.log).read_text()
    finally:
        d.close()


def test_iris_failure_reports_the_traceback_and_keeps_the_job_log(cluster, config, spec):
    d = Driver("iris", controller=cluster)
    try:
        marker = uuid.uuid4().hex[:8]
        s = spec("boom", msg=marker)
        _, out = d.run(s, config)
        assert isinstance(out, Failed)
        assert out.error == f"ValueError: kaboom {marker}"
        assert "Traceback (most recent call last)" in out.detail and f"ValueError: kaboom {marker}" in out.detail
        assert "about to fail" in out.detail and "RemoteActionFailed" not in out.detail  # the action's log, not the wrapper's
        assert f"kaboom {marker}" in Path(out.log).read_text()
        job_log = Path(config.cache_dir) / "logs" / f"{s.key}.job.log"
        assert "RemoteActionFailed: ValueError: kaboom" in job_log.read_text()
        assert cached(config, s.key) is None
    finally:
        d.close()


def test_iris_job_on_a_cache_the_driver_cannot_read_reports_through_its_log(cluster, config, spec):
    """A job on another machine leaves its report in that machine's cache: the driver reads the
    copy in the job's log. Here this cache's report file cannot be written (it is a directory)."""
    marker = uuid.uuid4().hex[:8]
    failing = spec("boom", msg=marker)
    gone = ActionResult.make([OutputFile("out.txt", "e" * 32, 3)], value=None)
    starved = spec("record", text="X", deps={"src": "//fx:producer"}, inputs={"//fx:producer": Input("//fx:producer", gone.tree, result=gone)})
    for s in (failing, starved):
        wire.report_path(config.cache_dir, s.key).mkdir(parents=True)
    d = Driver("iris", controller=cluster)
    try:
        _, out = d.run(failing, config)
        assert isinstance(out, Failed) and out.error == f"ValueError: kaboom {marker}" and "about to fail" in out.detail
        _, out = d.run(starved, config)
        assert isinstance(out, InputUnavailable) and out.label == "//fx:producer"
        assert not [p for p in (Path(config.cache_dir) / "logs").iterdir() if p.name.startswith(".")]  # no half-written report left
    finally:
        d.close()


def test_iris_job_with_unusable_input_asks_for_its_producer(cluster, config, spec):
    gone = OutputFile("out.txt", "f" * 32, 3)
    result = ActionResult.make([gone], value=None)
    s = spec("record", text="X", deps={"src": "//fx:producer"}, inputs={"//fx:producer": Input("//fx:producer", result.tree, result=result)})
    d = Driver("iris", controller=cluster)
    try:
        _, out = d.run(s, config)
        assert isinstance(out, InputUnavailable) and out.label == "//fx:producer"
    finally:
        d.close()


def test_iris_lost_job_is_retried(cluster, config, spec, tmp_path):
    count, started = tmp_path / "count", tmp_path / "started"
    s = spec("hold", count=str(count), started=str(started), hang=1, timeout=60)
    d = Driver("iris", controller=cluster, retries=2)
    try:
        d.submit(s, config, "x")
        pid = int(wait_for(lambda: lines(started), what="the job to start")[0])
        os.kill(pid, signal.SIGKILL)  # the task process dies: lost, not failed
        job, out, exc = d.results(1)["x"]
        what = f"{out!r} {exc!r} attempts={job.attempts} lost={job.lost} executions={lines(count)} killed={pid}"
        assert exc is None and isinstance(out, Ran), what
        assert job.attempts == 2 and "Exit code: -9" in job.lost[0], what
        assert out.result.value["n"] == 2 and len(lines(count)) == 2, what
    finally:
        d.close()


def test_iris_lost_job_fails_when_retries_run_out(cluster, config, spec, tmp_path):
    count, started = tmp_path / "count", tmp_path / "started"
    s = spec("hold", count=str(count), started=str(started), hang=5, timeout=60)
    d = Driver("iris", controller=cluster, retries=0)
    try:
        d.submit(s, config, "x")
        os.kill(int(wait_for(lambda: lines(started), what="the job to start")[0]), signal.SIGKILL)
        job, out, _ = d.results(1)["x"]
        assert isinstance(out, Failed) and "was lost 1 time(s)" in out.error and "gave up after 0 retries" in out.error
        assert job.attempts == 1 and len(lines(count)) == 1
    finally:
        d.close()


def test_second_driver_attaches_to_the_running_job(cluster, config, spec, tmp_path):
    count, started, go = tmp_path / "count", tmp_path / "started", tmp_path / "go"
    s = spec("hold", count=str(count), started=str(started), go=str(go), timeout=60)
    first, second = Driver("iris", controller=cluster), Driver("iris", controller=cluster)
    try:
        ja = first.submit(s, config, "a")
        wait_for(lambda: lines(started), what="the job to start")
        jb = second.submit(s, config, "b")
        wait_for(lambda: jb.job_id, what="the second submission")
        assert jb.job_id == ja.job_id
        go.touch()
        (_, oa, _), (_, ob, _) = first.results(1)["a"], second.results(1)["b"]
        assert isinstance(oa, Ran) and isinstance(ob, Ran) and oa.result.tree == ob.result.tree
        assert len(lines(count)) == 1  # ran once
    finally:
        first.close()
        second.close()


def test_restarted_driver_reunites_with_its_running_job(cluster, config, spec, tmp_path):
    count, started, go = tmp_path / "count", tmp_path / "started", tmp_path / "go"
    s = spec("hold", count=str(count), started=str(started), go=str(go), timeout=90)
    args = tmp_path / "driver.pkl"
    args.write_bytes(pickle.dumps((s, config, cluster)))
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    driver = subprocess.Popen([sys.executable, str(script), str(args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        job_pid = int(wait_for(lambda: lines(started), timeout=90, what="the first driver's job to start")[0])
        driver.send_signal(signal.SIGKILL)  # the driver dies mid-build; its job keeps running on the cluster
        driver.wait(timeout=10)
        os.kill(job_pid, 0)  # still alive
        d = Driver("iris", controller=cluster)
        try:
            job = d.submit(s, config, "again")
            wait_for(lambda: job.job_id, what="the new driver's submission")
            go.touch()
            _, out, _ = d.results(1)["again"]
            assert isinstance(out, Ran) and out.result.meta["pid"] == job_pid  # the first driver's job did the work
            assert len(lines(count)) == 1 and job.attempts == 1
        finally:
            d.close()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_many_concurrent_jobs_are_watched_by_one_thread(cluster, config, spec, tmp_path):
    count, started, go = tmp_path / "count", tmp_path / "started", tmp_path / "go"
    n = 20
    d = Driver("iris", controller=cluster, max_jobs=n)
    try:
        before = threading.active_count()
        for i in range(n):
            d.submit(spec("hold", count=str(count), started=str(started), go=str(go), timeout=120), config, i)
        wait_for(lambda: len(lines(started)) == n, timeout=120, what=f"{n} jobs running at once")
        assert d.ex.in_flight == n
        assert [t.name for t in threading.enumerate() if t.name.startswith("mbuild-fray")] == ["mbuild-fray-poller"]
        assert threading.active_count() - before < 5  # no thread per job
        go.touch()
        res = d.results(n, timeout=120)
        assert all(isinstance(o, Ran) for _, o, _ in res.values())
        assert len({o.result.meta["pid"] for _, o, _ in res.values()}) == n
    finally:
        d.close()


def test_cancel_all_stops_running_jobs(cluster, config, spec, tmp_path):
    count, started, go = tmp_path / "count", tmp_path / "started", tmp_path / "go"
    s = spec("hold", count=str(count), started=str(started), go=str(go), timeout=60)
    d = Driver("iris", controller=cluster)
    try:
        job = d.submit(s, config, "x")
        pid = int(wait_for(lambda: lines(started), what="the job to start")[0])
        d.ex.cancel_all()
        _, out, exc = d.results(1)["x"]
        assert out is None and isinstance(exc, RemoteJobCancelled)

        def gone():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(gone, timeout=30, what="the task process to be stopped")
        assert cached(config, s.key) is None and job.job_id
    finally:
        d.close()


def test_iris_local_backend_starts_and_stops_its_own_cluster(config, spec):
    d = Driver("iris-local", max_jobs=2)
    try:
        s = spec("record", text="L")
        job, out = d.run(s, config, timeout=120)
        assert isinstance(out, Ran) and out.result.meta["pid"] != os.getpid()
        assert job.source.startswith("fray:iris-local/") and cached(config, s.key) is not None
    finally:
        d.close()
    wait_for(lambda: not [t for t in threading.enumerate() if t.name in ("controller-server", "control-loop")],
             timeout=30, what="the cluster's threads to stop")


@pytest.mark.parametrize("backend", ["local", "iris"])
def test_action_held_by_another_builder_comes_back_busy(backend, request, config, spec):
    kwargs = {"controller": request.getfixturevalue("cluster")} if backend == "iris" else {}
    s = spec("record", text="held")
    lease = process_services().leases(config).lease(s.key, note="another builder")
    assert lease.try_acquire()
    d = Driver(backend, **kwargs)
    try:
        _, out = d.run(s, config)
        assert isinstance(out, Busy) and not out.fenced
        assert out.holder is not None and out.holder.pid == os.getpid() and out.holder.note == "another builder"
        assert cached(config, s.key) is None
    finally:
        lease.release()
        d.close()


# --- remote() ------------------------------------------------------------------------------------


def test_remote_runs_a_function_as_a_job(cluster, rules, tmp_path):
    from mbuild.steps.remote import RemoteJobFailed, remote

    _, _, mod = rules
    local_out, iris_out = tmp_path / "local.pids", tmp_path / "iris.pids"
    assert remote(mod.write_pid)(str(local_out)) is None
    assert lines(local_out) == [str(os.getpid())]  # LocalClient: a thread of this process
    remote(mod.write_pid, backend="iris", controller=cluster, resources=SMALL)(str(iris_out))
    assert lines(iris_out) and lines(iris_out)[0] != str(os.getpid())
    with pytest.raises(RemoteJobFailed) as failed:
        remote(mod.fail_step, backend="iris", controller=cluster, resources=SMALL)(str(tmp_path / "f"))
    assert "step failed at" in str(failed.value) and "Traceback" in failed.value.log_tail
    with pytest.raises(RemoteJobFailed, match="step failed at"):
        remote(mod.fail_step)(str(tmp_path / "g"))


def test_remote_composes_with_disk_cached_and_distributed_lock(cluster, rules, tmp_path):
    from mbuild.steps.primitives import disk_cached, distributed_lock
    from mbuild.steps.remote import remote

    _, _, mod = rules
    out = tmp_path / "step-out"
    run = remote(disk_cached(distributed_lock(mod.step)), backend="iris", controller=cluster, resources=SMALL)
    run(str(out))
    run(str(out))  # the finished job is re-run, and finds the step done
    assert (out / "data.txt").read_text() == "done" and (out / ".mbuild-success").exists()
    runs = lines(tmp_path / "step-out.count")
    assert len(runs) == 1 and runs[0] != str(os.getpid())
    assert disk_cached(mod.step)(str(out)) == {"pid": int(runs[0])}  # read back here as a hit


def test_a_step_with_resources_is_one_iris_job(cluster, tmp_path):
    """The Python step front: a StepSpec asking for resources runs as one job on the cluster
    (remote(disk_cached(distributed_lock(fn)))); the next run is a hit and submits nothing."""
    import io

    from mbuild import StepRunner, StepSpec
    from mbuild.events import Console
    from tests import steps_lib

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "WORKSPACE.toml").write_text(f'[fray]\nbackend = "iris"\ncontroller = "{cluster}"\n')
    step = StepSpec("on_iris", steps_lib.record_pid, resources={"cpu": 0.25, "ram": "256m", "disk": "256m"})
    runner = StepRunner(workspace=ws, prefix=tmp_path / "out", console=Console(io.StringIO()))
    result = runner.run([step])
    pids = lines(Path(result[step].path) / "pids.txt")
    assert len(pids) == 1 and pids[0] != str(os.getpid())  # one job, in the cluster's process
    assert runner.load(step) == {"pid": int(pids[0])}
    assert runner.run([step]).count("hit") == 1
    assert lines(Path(result[step].path) / "pids.txt") == pids
