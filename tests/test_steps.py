"""The Python step front: StepSpec identities, StepRunner over the engine's scheduler and caches,
failures as Marin users expect them, and concurrency (real LMDB, real threads, real files)."""

from __future__ import annotations

import functools
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mbuild import Artifact, PreviousTaskFailedError, StepRunner, StepSpec, StepsFailed
from mbuild.errors import CycleError
from mbuild.events import Console
from mbuild.model.workspace import load_workspace
from tests import steps_lib as lib
from tests.steps_lib import log, make_ws, runs  # noqa: F401 (log is a fixture)


def runner(ws: Path, prefix: Path | None = None, console: Console | None = None, **kw) -> StepRunner:
    return StepRunner(workspace=ws, prefix=prefix or ws / "out", console=console or Console(io.StringIO()), **kw)


def text(name: str, value: str = "x", **kw) -> StepSpec:
    return StepSpec(name, functools.partial(lib.write_text, text=value), hash_attrs={"text": value}, **kw)


def concat(name: str, *deps: StepSpec) -> StepSpec:
    def fn(output_path: str) -> None:  # dependencies' paths are known while the step runs
        lib.concat(output_path, [d.output_path for d in deps], name)

    return StepSpec(name, fn, deps=deps, hash_attrs={"name": name}, code=["tests.steps_lib:concat"])


def test_identity_is_stable_across_prefixes_and_workspace_paths(tmp_path: Path, log: Path):
    one = runner(make_ws(tmp_path / "a" / "ws"), tmp_path / "p1")
    two = runner(make_ws(tmp_path / "elsewhere" / "deeper" / "ws"), tmp_path / "p2")
    r1, r2 = one.run([concat("c", text("t"))]), two.run([concat("c", text("t"))])
    for name in ("t", "c"):
        o1 = next(o for o in r1.outcomes if o.step.name == name)
        o2 = next(o for o in r2.outcomes if o.step.name == name)
        assert o1.key == o2.key
        assert Path(o1.path).name == Path(o2.path).name == f"{name}_{o1.key[:16]}"
        assert Path(o1.path).parent == tmp_path / "p1" and Path(o2.path).parent == tmp_path / "p2"


def test_only_hash_relevant_changes_change_the_path(tmp_path: Path, log: Path):
    r = runner(make_ws(tmp_path / "ws"))
    base = r.run([text("t", "x")])[text("t", "x")].key
    assert r.run([text("t", "x", env_vars={"A": "1"}, output_path_prefix=str(tmp_path / "other"))])[text("t", "x")].key == base
    assert r.run([text("t", "y")])[text("t", "y")].key != base
    assert r.run([text("u", "x")])[text("u", "x")].key != base


def test_identical_steps_are_one_step_and_run_in_dependency_order(tmp_path: Path, log: Path):
    a1, a2 = text("a"), text("a")
    assert a1 == a2 and a1 is not a2
    b = concat("b", a1)
    c = concat("c", b, a2)
    result = runner(make_ws(tmp_path / "ws")).run([c, a2, b, a1])
    assert [o.step.name for o in result.outcomes] == ["a", "b", "c"]
    assert runs(log) == ["write:x", "b", "c"]
    assert Path(result[c].path, "out.txt").read_text() == "c(b(x),x)"


def test_second_run_runs_nothing_and_vanished_outputs_rerun(tmp_path: Path, log: Path):
    r = runner(make_ws(tmp_path / "ws"))
    c = concat("c", concat("b", text("a")))
    r.run([c])
    again = r.run([c])
    assert again.count("hit") == 3 and again.count("ran") == 0 and runs(log) == ["write:x", "b", "c"]
    (Path(again[c].path) / ".mbuild-success").unlink()  # the final step's outputs are incomplete
    third = r.run([c])
    assert [o.state for o in third.outcomes] == ["hit", "hit", "ran"]  # its ancestors are not rebuilt
    assert (tmp_path / "ws" / "out" / ".gitignore").read_text().endswith("*\n")  # the prefix mbuild made is git-ignored


def test_dry_run_creates_nothing_and_says_why(tmp_path: Path, log: Path):
    ws = make_ws(tmp_path / "ws")
    out = io.StringIO()
    r = runner(ws, tmp_path / "prefix", console=Console(out))
    c = concat("c", text("a"))
    result = r.run([c], dry_run=True)
    assert not (tmp_path / "prefix").exists() and runs(log) == []
    assert [o.state for o in result.outcomes] == ["would_run", "would_run"]
    assert "would run  a: never built" in out.getvalue()
    r.run([c])
    changed = concat("c", text("a", "y"))
    result = r.run([changed], dry_run=True)
    assert [o.state for o in result.outcomes] == ["would_run", "would_run"]
    assert result.outcomes[0].why == "changed text: 'x' -> 'y'"  # the field, from what the last run left


def test_a_failure_is_wrapped_and_independent_branches_keep_going(tmp_path: Path, log: Path):
    bad = StepSpec("bad", lib.fail)
    after = concat("after", bad)
    good = concat("good", text("a"))
    r = runner(make_ws(tmp_path / "ws"))
    with pytest.raises(StepsFailed, match=r"^1 step\(s\) failed$") as info:
        r.run([after, good], max_concurrent=1)
    (failure,) = info.value.failures
    assert isinstance(failure, RuntimeError) and str(failure) == "Step failed: bad"
    assert isinstance(failure.__cause__, ValueError) and str(failure.__cause__) == "boom"
    assert info.value.__cause__ is failure
    assert "good" in runs(log) and "after" not in runs(log)
    # force_run_failed=False: the same key failed before, so it is not retried
    with pytest.raises(PreviousTaskFailedError, match="bad"):
        r.run([bad], force_run_failed=False)
    assert runs(log).count("fail") == 1
    with pytest.raises(StepsFailed):
        r.run([bad])  # the default runs it again
    assert runs(log).count("fail") == 2


def test_ten_runners_in_threads_run_one_step_once(tmp_path: Path, log: Path):
    ws = make_ws(tmp_path / "ws")
    gate = tmp_path / "gate"
    s = StepSpec("slow", functools.partial(lib.slow_once, gate=str(gate)))
    errors: list[BaseException] = []
    started = threading.Barrier(11)

    def one() -> None:
        try:
            started.wait()
            runner(ws).run([s], max_concurrent=1)
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    started.wait()
    gate.touch()
    for t in threads:
        t.join(60)
    assert not errors
    assert runs(log) == ["slow"]


def test_independent_steps_run_concurrently(tmp_path: Path, log: Path):
    meet = tmp_path / "meet"
    meet.mkdir()
    one = StepSpec("one", functools.partial(lib.meet, me="one", other="two", rendezvous=str(meet)))
    two = StepSpec("two", functools.partial(lib.meet, me="two", other="one", rendezvous=str(meet)))
    result = runner(make_ws(tmp_path / "ws")).run([one, two], max_concurrent=2)
    assert result.count("ran") == 2  # each waited for the other to start


def test_a_lost_lease_publishes_nothing_and_the_step_runs_again(tmp_path: Path, log: Path):
    s = StepSpec("fenced", functools.partial(lib.loses_lease_once, flag=str(tmp_path / "flag")))
    out = io.StringIO()
    ws = make_ws(tmp_path / "ws")
    (ws / "WORKSPACE.toml").write_text("[lease]\nttl = 1.0\nrenew = 0.3\n")  # the lost lease lapses soon
    result = runner(ws, console=Console(out)).run([s])
    assert runs(log) == ["first", "retry"]
    assert "lost the lease on //steps:fenced" in out.getvalue()
    record = json.loads(Path(result[s].path, ".mbuild-success").read_text())
    assert record["value"] == {"attempt": "retry"}  # the fenced first run published nothing


RUNNER_SCRIPT = """
import functools, io, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from mbuild import StepRunner, StepSpec
from mbuild.events import Console
from tests import steps_lib as lib
Path({ready!r}, str(__import__("os").getpid())).touch()
s = StepSpec("slow", functools.partial(lib.slow_once, gate={gate!r}))
StepRunner(workspace=Path({ws!r}), prefix=Path({ws!r}) / "out", console=Console(io.StringIO())).run([s], max_concurrent=1)
"""


def test_runners_in_processes_run_one_step_once(tmp_path: Path, log: Path):
    ws, ready, gate = make_ws(tmp_path / "ws"), tmp_path / "ready", tmp_path / "gate"
    ready.mkdir()
    script = tmp_path / "run.py"
    repo = str(Path(__file__).resolve().parents[1])
    script.write_text(RUNNER_SCRIPT.format(repo=repo, ready=str(ready), gate=str(gate), ws=str(ws)))
    procs = [subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for _ in range(6000):  # every process is up (imports done) before the step may finish
            if len(list(ready.iterdir())) == 3 or any(p.poll() is not None for p in procs):
                break
            threading.Event().wait(0.01)
        gate.touch()
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in procs:
            p.kill()
    assert runs(log) == ["slow"]


def test_typed_results_are_kept_as_artifacts(tmp_path: Path, log: Path):
    typed, model = StepSpec("count", lib.count), StepSpec("model", lib.count_model)
    r = runner(make_ws(tmp_path / "ws"))
    first = r.run([typed, model])
    assert r.load(typed) == lib.Stats(tokens=3, shards=["data.txt"]) and isinstance(r.load(typed), lib.Stats)
    assert r.load(model) == lib.StatsModel(tokens=4, name="m")
    record = json.loads(Path(first[typed].path, "artifact.json").read_text())
    assert record["type"] == "tests.steps_lib.Stats" and record["value"]["tokens"] == 3  # JSON, never a pickle
    again = runner(make_ws(tmp_path / "ws")).run([typed, model])
    assert again.count("hit") == 2 and sorted(runs(log)) == ["count", "count_model"]
    assert Artifact.load(again[typed].path, lib.Stats).shards == ["data.txt"]


def test_outputs_marin_produced_are_adopted_when_asked(tmp_path: Path, log: Path):
    marin_dir = tmp_path / "marin" / "tokenized-3f2a1c"
    marin_dir.mkdir(parents=True)
    (marin_dir / "out.txt").write_text("from marin")
    (marin_dir / ".executor_status").write_text('{"status": "RUNNING"}\n{"status": "SUCCESS"}\n')
    s = text("tok", override_output_path=str(marin_dir))
    runner(make_ws(tmp_path / "ws"), adopt_marin=True).run([s])
    assert runs(log) == [] and (marin_dir / "out.txt").read_text() == "from marin"  # not recomputed, not touched
    assert (marin_dir / ".executor_status").read_text().endswith('"SUCCESS"}\n')
    other = tmp_path / "marin" / "failed-1"
    other.mkdir()
    (other / ".executor_status").write_text("FAILED")
    runner(make_ws(tmp_path / "ws"), adopt_marin=True).run([text("tok2", override_output_path=str(other))])
    assert runs(log) == ["write:x"]  # a failed Marin step is computed


CTRL_C_SCRIPT = """
import functools, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from mbuild import StepSpec, executor_main
from tests import steps_lib as lib
sys.exit(executor_main([StepSpec("forever", functools.partial(lib.forever, started={started!r}))], argv=["--prefix", {prefix!r}]))
"""


def test_ctrl_c_stops_running_steps_and_publishes_nothing(tmp_path: Path, log: Path):
    ws, started = make_ws(tmp_path / "ws"), tmp_path / "started"
    script = tmp_path / "run.py"
    script.write_text(CTRL_C_SCRIPT.format(repo=str(Path(__file__).resolve().parents[1]), started=str(started), prefix=str(tmp_path / "out")))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ws, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(6000):
            if started.exists() or proc.poll() is not None:
                break
            threading.Event().wait(0.01)
        assert started.exists(), proc.stderr.read() if proc.poll() is not None else "the step did not start"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Interrupted" in err
    (out,) = (tmp_path / "out").glob("forever_*")
    assert not (out / ".mbuild-success").exists()


def test_a_step_whose_lease_lapses_is_stopped_while_it_runs(tmp_path: Path, log: Path):
    s = StepSpec("stalls", functools.partial(lib.stalls_once, flag=str(tmp_path / "flag")))
    ws = make_ws(tmp_path / "ws")
    (ws / "WORKSPACE.toml").write_text("[lease]\nttl = 1.0\nrenew = 0.2\n")
    result = runner(ws).run([s])
    assert runs(log) == ["first", "stopped", "retry"]
    assert json.loads(Path(result[s].path, ".mbuild-success").read_text())["value"] == "retry"


def test_cycles_are_named(tmp_path: Path):
    a = text("a")
    b = StepSpec("b", lib.fail, deps=[a])
    object.__setattr__(a, "deps", (b,))  # frozen specs cannot form a cycle any other way
    with pytest.raises(CycleError, match="dependency cycle: b -> a -> b"):
        runner(make_ws(tmp_path / "ws")).run([b])


def test_a_generator_is_consumed_lazily(tmp_path: Path, log: Path):
    events = tmp_path / "events.jsonl"
    r = runner(make_ws(tmp_path / "ws"), batch=2, events=events)
    seen_before: list[list[str]] = []

    def steps():
        for i in range(5):
            seen_before.append(runs(log))
            yield text(f"s{i}", str(i))

    r.run(steps())
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert sorted(rec["label"] for rec in records if "label" in rec) == [f"//steps:s{i}" for i in range(5)]  # every batch's
    assert sorted(seen_before[2]) == ["write:0", "write:1"]  # the third step was asked for after the first two ran
    assert sorted(runs(log)) == [f"write:{i}" for i in range(5)]


def test_a_later_batch_does_not_rerun_an_earlier_failure(tmp_path: Path, log: Path):
    bad = StepSpec("bad", lib.fail)
    r = runner(make_ws(tmp_path / "ws"), batch=1)
    with pytest.raises(StepsFailed, match=r"^1 step\(s\) failed$"):
        r.run(iter([bad, concat("after", bad), text("fine")]))
    assert sorted(runs(log)) == ["fail", "write:x"]  # "after" was skipped, "bad" ran once


EARLY = '''
from pathlib import Path
def upstream(output_path):
    # a comment
    Path(output_path, "out.txt").write_text("same")
'''


def test_early_cutoff_between_steps(tmp_path: Path, log: Path, monkeypatch):
    ws = make_ws(tmp_path / "ws")
    (ws / "early_mod.py").write_text(EARLY)
    monkeypatch.syspath_prepend(str(ws))
    import early_mod

    up = StepSpec("up", early_mod.upstream)
    down = concat("down", up)
    r = runner(ws)
    first = r.run([down])
    (ws / "early_mod.py").write_text(EARLY.replace("# a comment", "# another comment"))
    second = runner(ws).run([down])
    assert second[up].state == "ran" and second[up].key != first[up].key
    assert second[down].state == "hit" and second[down].key == first[down].key
    assert second.summary.early_cutoff == 1
    sys.modules.pop("early_mod", None)


def test_max_concurrent_none_is_the_number_of_cores(tmp_path: Path, log: Path):
    out = io.StringIO()
    runner(make_ws(tmp_path / "ws"), console=Console(out)).run([text("a")])
    assert f"running at most {os.cpu_count()} at once (max_concurrent=None: the number of cores)" in out.getvalue()
    assert load_workspace(tmp_path / "ws").root == (tmp_path / "ws").resolve()
