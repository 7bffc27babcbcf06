"""Live progress (a real terminal, through a pty), plain lines elsewhere, ctx.progress in the events
file, `-v`, the build history (`mbuild log`, `mbuild info`) and the `--profile` trace file."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbuild.action.progress import ProgressError, Reporter
from mbuild.front import records as history

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")

# Rules whose actions wait for files the test writes (never for time): the test decides when
# an action may end, after it has seen what it expects on the screen.
RULES = '''
import os, time
from pathlib import Path
from mbuild import attr, rule

def wait_for(path, seconds=60):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)

@rule(attrs={"gate": attr.string(default=""), "steps": attr.int(default=2), "say": attr.string(default="")}, outputs=["o.txt"])
def reporting(ctx):
    if ctx.attr.say:
        print(ctx.attr.say, flush=True)
    ctx.progress(1, ctx.attr.steps, loss=0.5, tokens_per_s=1234)
    if ctx.attr.gate:
        Path(ctx.attr.gate + ".reached").write_text("")
        wait_for(ctx.attr.gate)
    ctx.progress(ctx.attr.steps, ctx.attr.steps, loss=0.25)
    (ctx.out / "o.txt").write_text(ctx.attr.say)

@rule(attrs={"me": attr.string(), "other": attr.string()}, outputs=["o.txt"])
def together(ctx):
    """Runs only while `other` runs too: both must be on a worker at once."""
    Path(ctx.attr.me).write_text("")
    wait_for(ctx.attr.other)
    (ctx.out / "o.txt").write_text(ctx.attr.me)

@rule(attrs={}, outputs=["o.txt"])
def bad_progress(ctx):
    ctx.progress("three")
'''


@pytest.fixture
def pws(ws):
    ws.write(f"{ws.rules}_progress.py", RULES)
    return ws


def _header(ws) -> str:
    return f"from {ws.rules}_progress import *\n"


class Terminal:
    """`mbuild` on the slave side of a pty (120 columns), its output read from the master side."""

    def __init__(self, root: Path, *args: str, env: dict | None = None):
        master, slave = pty.openpty()
        import fcntl
        import struct
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=root, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            env={**os.environ, "TERM": "xterm-256color", **(env or {})}, start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.raw = b""

    def text(self) -> str:
        return ANSI.sub(b"", self.raw).decode("utf-8", "replace")

    def read_until(self, pattern: str, timeout: float = 60) -> re.Match:
        """Read until the screen's text (escape sequences removed) matches `pattern`."""
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.text())) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"never saw {pattern!r}; the terminal showed:\n{self.text()[-3000:]}")
        return found

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the other side closed
            return False
        self.raw += data
        return bool(data)

    def finish(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass
        code = self.proc.wait(timeout=timeout)
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def test_live_display_shows_elapsed_time_and_progress_in_a_terminal(pws, tmp_path):
    gate = tmp_path / "gate"
    pws.build_file("p", _header(pws) + f'reporting(name="slow", gate={str(gate)!r}, steps=3)\n')
    term = Terminal(pws.root, "-m", "mbuild.front.cli", "build", "//p:slow")
    try:
        # The action's row: its label, its elapsed time (once a whole second has passed) and its report.
        row = term.read_until(r"//p:slow\s+([1-9]\d*)s\s+step 1/3 loss=0\.5 tokens_per_s=1234")
        assert (tmp_path / "gate.reached").exists()
        assert re.search(r"\[0/1\] 0 cache hits, 1 running", term.text())
        screen = term.text()
        gate.write_text("")
        assert term.finish() == 0
    finally:
        term.kill()
    assert int(row.group(1)) >= 1
    assert b"\x1b[" in term.raw  # drawn, not printed as lines
    assert "[0/1] running" not in screen  # the plain console's lines are not used on a terminal
    assert "Build succeeded: 1 action, 1 ran" in term.text()
    (tmp_path / "capture.txt").write_text(screen)

    # The next run of the same target knows how long the last one took.
    again = tmp_path / "again"
    pws.build_file("p", _header(pws) + f'reporting(name="slow", gate={str(again)!r}, steps=4)\n')
    term = Terminal(pws.root, "-m", "mbuild.front.cli", "build", "//p:slow")
    try:
        term.read_until(r"//p:slow\s+\d+s\s+step 1/4.*ETA \d+s \(last run \d+\.\ds\)")
        again.write_text("")
        assert term.finish() == 0
    finally:
        term.kill()


def test_a_no_op_in_a_terminal_never_loads_rich(pws):
    pws.build_file("p", _header(pws) + 'reporting(name="quick")\n')
    pws.mbuild("build", "//p:quick", check=True)
    probe = "import atexit, sys; atexit.register(lambda: print('rich loaded:', 'rich' in sys.modules)); " \
            "sys.argv = ['mbuild', 'build', '//p:quick']; from mbuild.front.cli import main; main()"
    term = Terminal(pws.root, "-c", probe)
    try:
        assert term.finish() == 0
    finally:
        term.kill()
    assert "1 cache hits" in term.text() and "rich loaded: False" in term.text()


def test_plain_lines_when_not_a_terminal_and_the_events_file(pws):
    pws.build_file("p", _header(pws) + 'reporting(name="x", say="hello from x", steps=2)\n')
    events = pws.build("//p:x", extra=("-v",))
    err = pws.last.stderr
    assert "\x1b[" not in err
    assert "[0/1] running //p:x" in err
    assert re.search(r"\[0/1\] //p:x: step 1/2 loss=0\.5 tokens_per_s=1234 \(\d+\.\d\ds", err)
    assert "//p:x> hello from x" in err  # -v: the action's own output, prefixed by its label
    progress = [e for e in events if e.get("status") == "progress"]
    assert [(e["step"], e["total"], e["metrics"]) for e in progress] == [
        (1, 2, {"loss": 0.5, "tokens_per_s": 1234}), (2, 2, {"loss": 0.25}),
    ]
    assert all(e["label"] == "//p:x" and e["key"] and e["seconds"] >= 0 for e in progress)
    assert events[-2]["status"] == "ran"

    pws.build_file("p", _header(pws) + 'reporting(name="x", say="again", steps=2)\n')
    quiet = pws.mbuild("build", "-q", "//p:x", check=True)
    assert "step" not in quiet.stderr and "running" not in quiet.stderr
    assert "took" not in quiet.stderr


def test_ctx_progress_refuses_what_is_not_a_number(pws):
    pws.build_file("p", _header(pws) + 'bad_progress(name="b")\n')
    proc = pws.mbuild("build", "//p:b")
    assert proc.returncode == 1
    assert "ProgressError: ctx.progress: step must be a finite number, got 'three'" in proc.stderr


def test_reports_are_rate_limited_at_the_source_but_the_last_step_always_goes():
    sent = []
    reporter = Reporter(sent.append, "k", interval=3600)
    for step in range(1, 11):
        reporter.progress(step, 10, loss=float(step))
    assert [(r["step"], r["metrics"]["loss"]) for r in sent] == [(1, 1.0), (10, 10.0)]
    assert all(r["key"] == "k" for r in sent)
    Reporter(None, "k").progress(1, 2)  # nobody listens: nothing to do
    with pytest.raises(ProgressError):
        Reporter(None, "k").progress(float("nan"))


def test_mbuild_log_and_info(pws):
    pws.build_file("p", _header(pws) + 'reporting(name="x")\nstep(name="y", text="y")\nfail(name="z", msg="kaput")\n')
    assert pws.mbuild("info", check=True).stdout.count("nothing built yet") == 1
    pws.mbuild("build", "//p:x", "//p:y", check=True)
    pws.mbuild("build", "//p:x", "//p:y", check=True)
    failed = pws.mbuild("build", "//p:all")
    assert failed.returncode == 1

    log = pws.mbuild("log", check=True).stdout.splitlines()
    assert len(log) == 4, log
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ok\s+\d+\.\d\ds  2 actions: 2 ran  mbuild build //p:x //p:y$", log[0])
    assert "2 actions: 2 cache hits" in log[1]
    assert "FAILED" in log[2] and "3 actions: 2 cache hits, 1 failed" in log[2] and log[2].endswith("mbuild build //p:all")
    assert log[3] == "    FAILED //p:z: RuntimeError: kaput"
    assert pws.mbuild("log", "-n", "1", check=True).stdout.splitlines()[0] == log[2]

    last = pws.mbuild("log", "--last", check=True).stdout
    assert "mbuild build //p:all  (in .)" in last.splitlines()[0]
    assert failed.stderr.splitlines()[-1].strip() in last  # the summary as it was printed
    assert "Build FAILED: 3 actions, 2 cache hits, 1 failed" in last

    info = pws.mbuild("info", check=True).stdout
    assert f"cache         {pws.root / '.mbuild' / 'cache'}" in info
    assert re.search(r"size          \d+\.\d [KM]B \(cas ", info)
    # 2 output blobs and the kept sources of the 2 keyed rule modules (explain names changed lines from them)
    assert "entries       2 action results, 4 blobs, 2 targets remembered" in info
    assert "last 3 builds  57.1% cache hits (4 of 7 actions), 1 not ok" in info


def test_history_is_bounded_and_skips_lines_that_are_not_records(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "MAX_BYTES", 4096)
    monkeypatch.setattr(history, "KEEP", 5)
    summary = {"actions": 1, "ran": 1, "cache_hits": 0, "failed": 0, "seconds": 0.1, "exit_code": 0}
    for i in range(100):
        history.append(tmp_path, history.make(["build", f"//p:{i}"], ".", summary, [], ["x" * 100]) | {"at": float(i)})
    assert (tmp_path / history.FILE).stat().st_size <= 4096 + 400
    with open(tmp_path / history.FILE, "ab") as f:
        f.write(b'not json\n{"at": "yesterday"}\n[1, 2]\n')
    kept = history.read(tmp_path)
    assert 1 <= len(kept) <= 40 and kept[-1]["command"] == ["build", "//p:99"]
    assert [r["at"] for r in kept] == sorted(r["at"] for r in kept)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from([1e300, -1.0, 7.5]) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["at", "command", "cwd", "summary", "failures", "lines", "label", "error", "actions"]), inner, max_size=6),
                    max_leaves=20))
def test_reading_history_never_trusts_a_line(data):
    _check_record(data)


_number = st.integers(-5, 10**6) | st.floats(allow_nan=True, allow_infinity=True) | st.booleans()


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries(
    {"at": _number, "command": st.lists(st.text(max_size=5), max_size=3), "cwd": st.text(max_size=5),
     "summary": st.dictionaries(st.sampled_from(["actions", "ran", "cache_hits", "failed", "seconds", "exit_code", "skipped"]), _number)},
    optional={"failures": st.lists(st.fixed_dictionaries({"label": st.text(max_size=5), "error": st.text(max_size=5)}), max_size=2),
              "lines": st.lists(st.text(max_size=5), max_size=2)},
))
def test_reading_history_takes_records_that_are_well_formed(data):
    _check_record(data)


def _check_record(data):
    record = history.valid(data)
    assert record is None or isinstance(record["summary"], dict) and all(isinstance(c, str) for c in record["command"])
    if record is not None:
        assert history.valid(json.loads(json.dumps(record))) == record
        assert history.counts(record) and history.outcome(record) and history.when(record)


def test_profile_writes_a_chrome_trace_with_a_row_per_worker(pws, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    pws.build_file("p", _header(pws) + f'together(name="a", me={str(a)!r}, other={str(b)!r})\ntogether(name="b", me={str(b)!r}, other={str(a)!r})\n')
    trace = tmp_path / "trace.json"
    pws.mbuild("build", "-j", "2", "--profile", str(trace), "//p:all", check=True)
    events = json.loads(trace.read_text())["traceEvents"]
    assert all(e["ph"] in ("X", "M") and isinstance(e["pid"], int) and isinstance(e["tid"], int) for e in events)
    spans = [e for e in events if e["ph"] == "X"]
    assert all(isinstance(e["ts"], (int, float)) and e["dur"] >= 0 and e["name"] and e["cat"] for e in spans)
    rows = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert rows[0] == "mbuild driver" and {e["tid"] for e in spans} <= set(rows)

    actions = {e["name"]: e for e in spans if e["cat"] == "action"}
    assert set(actions) == {"//p:a", "//p:b"}
    assert actions["//p:a"]["tid"] != actions["//p:b"]["tid"]  # they ran at once, on two workers
    assert {rows[e["tid"]] for e in actions.values()} == {"worker 1", "worker 2"}
    for action in actions.values():  # its phases, inside it on its row
        phases = {e["name"]: e for e in spans if e["cat"] == "phase" and e["args"]["label"] == action["name"]}
        assert {"stage inputs", "run rule", "hash outputs", "publish"} <= set(phases)
        for p in phases.values():
            assert p["tid"] == action["tid"] and action["ts"] <= p["ts"] and p["ts"] + p["dur"] <= action["ts"] + action["dur"] + 1
    lookups = [e for e in spans if e["name"] == "cache lookup"]
    assert len(lookups) == 2 and all(e["tid"] == 0 and e["args"]["hit"] is False for e in lookups)
    assert {e["args"]["label"] for e in spans if e["cat"] == "transfer"} == {"//p:a", "//p:b"}  # placing the outputs

    # A build with nothing to run: the no-op check (it may answer, or hand over to the ordinary
    # way when the files are too fresh for their stamps to vouch for them), and only hits.
    pws.mbuild("build", "--profile", str(trace), "//p:all", check=True)
    spans = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    assert spans[0]["name"] == "no-op check" and spans[0]["tid"] == 0
    assert not [e for e in spans if e["cat"] == "action"]
    assert all(e["args"]["hit"] for e in spans if e["name"] == "cache lookup")


def test_a_remote_tagged_action_reports_progress_through_fray(pws):
    """fray's default in-process backend hands reports over directly; -v follows the job's log."""
    pws.build_file("p", _header(pws) + 'reporting(name="r", say="from the job", steps=2, resources={"cpu": 1})\n')
    events = pws.build("//p:r", extra=("-v",))
    assert [e["source"] for e in events if e.get("status") == "ran"][0].startswith("fray:local/")
    progress = [(e["step"], e["metrics"]) for e in events if e.get("status") == "progress"]
    assert progress == [(1, {"loss": 0.5, "tokens_per_s": 1234}), (2, {"loss": 0.25})]
    assert "//p:r> from the job" in pws.last.stderr


def test_job_progress_lines_round_trip_and_bad_lines_are_skipped():
    from mbuild.runners.fray.job_progress import PROGRESS_LINE, ProgressLines, progress_in

    read, write = os.pipe()
    sink = ProgressLines(write, every=3600)
    sink({"key": "k", "at": 1.0, "step": 1, "total": 3, "metrics": {"loss": 0.5}})
    sink({"key": "k", "at": 2.0, "step": 2, "total": 3, "metrics": {}})  # within the interval: dropped
    sink({"key": "k", "at": 3.0, "step": 3, "total": 3, "metrics": {"loss": 0.1}})  # the last step: kept
    sink({"key": "k", "at": 4.0, "log": "/x/log"})
    sink({"key": "k", "span": "run rule", "start": 0, "end": 1})  # spans stay in the job
    os.close(write)
    lines = os.read(read, 1 << 16).decode().splitlines()
    os.close(read)
    lines += [PROGRESS_LINE + "{not json", PROGRESS_LINE + '{"key": 1, "at": 5}', PROGRESS_LINE + '{"key": "k", "at": 6, "step": "x", "total": null, "metrics": {}}']
    assert [(r.get("step"), r.get("log")) for r in progress_in(lines, after=0)] == [(1, None), (3, None), (None, "/x/log")]
    assert [r["at"] for r in progress_in(lines, after=3.0)] == [4.0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40).map(lambda t: "===== mbuild: progress " + t) | st.text(max_size=20), max_size=5))
def test_reading_job_progress_never_raises(lines):
    from mbuild.runners.fray.job_progress import progress_in

    assert all(isinstance(r["key"], str) for r in progress_in(lines, after=0))
