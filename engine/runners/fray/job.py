"""What runs inside a fray job: one action, from the spec to its report.

The job does the whole action. `run_action` stages the inputs from the cache, runs the rule,
checks and hashes the outputs, stores the blobs and writes the action-cache entry. Then the job
leaves a JobReport for the driver (wire.py). If the action did not run, the job raises
RemoteActionFailed, so the job ends FAILED (Iris shows it so) with the reason in its log. The
driver learns the outcome from the report, not from the exception's text.

Two bodies, one per kind of backend:
  run_remote_action      a separate process (Iris): restores the driver's view first, echoes the
                         action's log into the job's log, leaves the report in the cache's logs/
                         and as the job's last log line.
  run_action_in_process  a thread of the driver (LocalClient): its output goes to its own log
                         file, and it hands the report over in process.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
from pathlib import Path

from mbuild.action.progress import Reporter
from mbuild.action.services import Services
from mbuild.action.spec import ActionSpec, ExecConfig, Failed, Outcome, Ran
from mbuild.rebuild.run_once import run_action
from mbuild.runners.fray import wire
from mbuild.runners.fray.clients import enter_caller_view
from mbuild.runners.fray.job_progress import ProgressLines
from mbuild.runners.fray.thread_output import thread_output_to

_ECHO_LIMIT = 1 << 20  # bytes of the action's log echoed into the job's log


class RemoteActionFailed(Exception):
    """Raised inside a job whose action did not run to a result, so that the job FAILS.

    Its message is one line for people reading the job's log (Iris keeps its traceback there);
    the driver reads the job's JobReport instead.
    """


def run_remote_action(payload: bytes, sys_path: list[str] | None = None, cwd: str | None = None, run_id: str = "") -> None:
    """The body of a fray job that runs one action in a separate process (Iris).

    - `payload`: `pickle.dumps((spec, config))`, unpickled only after the driver's `sys.path` is
      back, so that objects from workspace modules in the spec import as they do in the driver.
    - `sys_path`, `cwd`: the driver's (see clients.enter_caller_view).
    - `run_id`: printed first, so the driver can tell this run's log lines from those of an
      earlier job of the same name (Iris keeps them under the same job id).

    Everything goes to stderr, the stream the job's traceback uses, so the order of lines is kept.
    """
    if run_id:
        print(wire.RUN_LINE.format(run_id=run_id), file=sys.stderr, flush=True)
    enter_caller_view(sys_path, cwd)
    spec, config = pickle.loads(payload)
    _apply_declared_env(spec)
    services = Services()  # this job's process: its own open stores
    # ctx.progress as marker lines in the job's log; a copy of stderr, which the action's own
    # output redirection (to the action's log) leaves alone
    services.reports = ProgressLines(os.dup(2))
    outcome = run_action(spec, config, services)
    if isinstance(outcome, (Ran, Failed)) and outcome.log:
        _echo_log(spec, Path(outcome.log))
    report = wire.report_of(outcome, run_id)
    wire.leave(report, wire.report_path(config.cache_dir, spec.key))
    print(wire.report_line(report), file=sys.stderr, flush=True)
    _raise_unless_ran(outcome)


def run_action_in_process(
    spec: ActionSpec, config: ExecConfig, services: Services, log_path: str, run_id: str, reply: list[wire.JobReport],
) -> None:
    """The body of a fray job that runs in a thread of the driver (LocalClient).

    The action runs with `capture_output=False` (the file descriptors are the driver's), and a
    lost lease interrupts this thread instead of ending the process. Python-level output of the
    thread (the rule's prints, the failure's traceback) goes to `log_path`. `services`: the
    driver's open stores (one LMDB environment per process). The report is appended to `reply`,
    which the driver holds.
    """
    config = dataclasses.replace(config, capture_output=False, in_process=True)
    with thread_output_to(log_path):
        Reporter(services.reports, spec.key).started(log_path)  # for -v: the thread's output goes there
        outcome = run_action(spec, config, services)
    reply.append(wire.report_of(outcome, run_id))
    _raise_unless_ran(outcome)


def _raise_unless_ran(outcome: Outcome) -> None:
    if isinstance(outcome, Ran):
        return
    report = wire.report_of(outcome, "")
    if report.kind == "failed":
        raise RemoteActionFailed(report.error)
    if report.kind == "input_unavailable":
        raise RemoteActionFailed(f"input {report.label} unusable: {report.reason}")
    raise RemoteActionFailed("the action's lease was lost while it ran" if report.fenced else "another builder holds the action's lease")


def _apply_declared_env(spec: ActionSpec) -> None:
    """Make the process environment hold exactly the declared values (the ones in the key).

    The job's environment also carries them, but a local cluster rewrites values that start with
    /tmp/ and the like, and an unset variable cannot be expressed there at all.
    """
    for name, value in spec.env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _echo_log(spec: ActionSpec, path: Path) -> None:
    """Copy the action's log into the job's log, so that it is reachable from the driver."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size > _ECHO_LIMIT:
                f.seek(size - _ECHO_LIMIT)
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return
    out = sys.stderr
    out.write(wire.LOG_BEGIN.format(label=spec.label, key=spec.key) + "\n")
    if size > _ECHO_LIMIT:
        out.write(f"[... first {size - _ECHO_LIMIT} bytes left out; full log: {path}]\n")
    out.write(data if data.endswith("\n") or not data else data + "\n")
    out.write(wire.LOG_END + "\n")
    out.flush()
