"""Tracing pipelines written as Python calls (@step, deferred, output, StepRef), and the command
line of a pipeline script (executor_main). Hypothesis builds random step DAGs through @step calls
and checks the traced graph against an independent reference."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbuild import StepRef, StepRunner, StepSpec, deferred, executor_main, output
from mbuild.events import Console
from mbuild.steps.plan import expand
from mbuild.steps.tracing import OutputPath, OutsideStep
from tests import steps_lib as lib
from tests.steps_lib import log, make_ws, runs  # noqa: F401 (log is a fixture)


@st.composite
def dags(draw):
    """A random DAG: node i depends on a subset of the nodes before it."""
    n = draw(st.integers(1, 12))
    return [sorted(draw(st.sets(st.integers(0, i - 1), max_size=i))) if i else [] for i in range(n)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(), st.booleans())
def test_traced_dags_have_exactly_the_reference_graph(dag, twice):
    refs: list[StepRef] = []
    for i, deps in enumerate(dag):
        ref = lib.node(f"n{i}", [refs[d] for d in deps])
        if twice:  # the same step with the same arguments again: the same step
            again = lib.node(f"n{i}", [refs[d] for d in deps])
            assert again.step == ref.step and again.step.trace_id == ref.step.trace_id
        refs.append(ref)
    entry = lib.group(refs)
    steps = expand([entry.step])
    assert len(steps) == len(dag) + 1
    by_name = {s.name: s for s in steps}
    for i, deps in enumerate(dag):
        assert sorted(d.name for d in by_name[f"node/n{i}"].deps) == sorted(f"node/n{d}" for d in deps)
    assert {d.name for d in by_name["all"].deps} == {f"node/n{i}" for i in range(len(dag))}
    position = {s.name: k for k, s in enumerate(steps)}
    for s in steps:
        assert all(position[d.name] < position[s.name] for d in s.deps)


def test_a_traced_pipeline_runs_with_paths_resolved(tmp_path: Path, log: Path):
    a = lib.node("a", [])
    b = lib.node("b", [a])
    c = lib.node("c", [a, b])
    r = StepRunner(workspace=make_ws(tmp_path / "ws"), prefix=tmp_path / "out", console=Console(io.StringIO()))
    result = r.run([lib.group([c]).step])
    assert Path(r.output_path(c), "out.txt").read_text() == "c(a(),b(a()))"
    assert result[c].path == r.output_path(c) and Path(result[c].path).parent == tmp_path / "out" / "node"
    assert sorted(runs(log)) == ["a", "b", "c"]
    assert r.run([c]).count("ran") == 0


def test_subpaths_nonblocking_and_with_output_path(tmp_path: Path, log: Path):
    a = lib.node("a", [])
    sub = a / "out.txt" / "more"
    assert sub.subpath == "out.txt/more" and sub.step is a.step
    nb = lib.node("nb", [a.nonblocking()])
    assert nb.step.deps == () and nb.step.nonblocking == (a.step,)
    assert nb.step.trace_id != lib.node("nb", [a]).step.trace_id  # in the key, but not a wait
    pinned = a.with_output_path(str(tmp_path / "pinned"))
    r = StepRunner(workspace=make_ws(tmp_path / "ws"), prefix=tmp_path / "out", console=Console(io.StringIO()))
    r.run([lib.node("b", [pinned]).step])
    assert (tmp_path / "pinned" / "out.txt").read_text() == "a()"
    result = r.run([nb.step])  # its nonblocking reference is run too, and its path resolved while nb runs
    assert result[nb].state == "ran" and result[a].state in ("ran", "hit")


def test_a_step_name_naming_no_parameter_is_one_clear_error():
    from mbuild import step
    from mbuild.steps.spec import StepDefinitionError

    @step(name="tokenize/{nme}")
    def tokenize(name: str):
        return None

    with pytest.raises(StepDefinitionError, match=r"name 'tokenize/\{nme\}' names 'nme' but the function's parameters are name"):
        tokenize("x")


def test_output_and_deferred_outside_a_step():
    with pytest.raises(OutsideStep, match=r"output\(\) .* inside a @step function"):
        output()
    assert deferred(lambda x: x + 1)(1) == 2  # outside a step: an ordinary call
    assert OutputPath() / "a" / "b" == OutputPath("a/b")


def test_a_step_with_resources_runs_as_one_fray_job(tmp_path: Path, log: Path):
    s = StepSpec("remote", lib.where, resources={"cpu": 1, "ram": "1g", "disk": "1g"})
    r = StepRunner(workspace=make_ws(tmp_path / "ws"), prefix=tmp_path / "out", console=Console(io.StringIO()), fray="local")
    result = r.run([s])
    (line,) = runs(log)
    assert not line.startswith("where:mbuild-step")  # it ran in the job's thread, not the runner's
    assert Path(result[s].path, "out.txt").read_text() == "remote"
    assert r.run([s]).count("hit") == 1 and len(runs(log)) == 1


def test_executor_main_dry_run_and_run_only(tmp_path: Path, log: Path, monkeypatch, capsys):
    ws = make_ws(tmp_path / "ws")
    monkeypatch.chdir(ws)
    a, b = lib.node("a", []), lib.node("b", [])
    entry = lib.group([a, b])
    prefix = str(tmp_path / "out")
    assert executor_main([entry], argv=["--dry_run", "--prefix", prefix]) == 0
    err = capsys.readouterr().err
    assert "would run  node/a: never built" in err and not Path(prefix).exists()
    assert executor_main([entry], argv=["--prefix", prefix, "--run_only", "node/a", "--max_concurrent", "1"]) == 0
    assert runs(log) == ["a"]
    assert executor_main([entry], argv=["--prefix", prefix, "--run_only", "nothing"]) == 2
    assert "no step matches" in capsys.readouterr().err
    bad = StepSpec("bad", lib.fail)
    assert executor_main([bad], argv=["--prefix", prefix]) == 1
    assert "error: Step failed: bad: ValueError: boom" in capsys.readouterr().err
