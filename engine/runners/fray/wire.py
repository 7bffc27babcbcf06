"""The fray wire: what a job tells its driver (one typed record, JobReport), and the marker lines
of a job's log.

Fray jobs return no value. So a job ends by leaving a JobReport: which outcome its action had,
that outcome's fields, and a Ran's transfer counters. The same record travels three ways:
  - in process (LocalClient): the job hands the record itself to the driver, no bytes at all;
  - a file, <cache>/logs/<key>.ran.json, that the driver reads and removes: the job ran on this
    machine, or on a cache directory this machine shares;
  - a line of the job's log, `===== mbuild: job report {...}`: the job ran on another machine.
    The driver reads this line from the job's log (Iris only).
On the wire it is JSON (orjson), and it is checked field by field when read. It is never a
pickle. A job that dies before it leaves a report (killed, out of memory, or exit status 75
after losing its lease) is judged by its exit status and its Iris state instead (failures.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mbuild.action.spec import Busy, Failed, InputUnavailable, Outcome, Ran
from mbuild.leases import Holder

VERSION = 1
KINDS = ("ran", "failed", "input_unavailable", "busy")
REPORT_LINE = "===== mbuild: job report "  # followed by the record's JSON, to the end of the line
RUN_LINE = "===== mbuild: job run {run_id} ====="  # a job's first line: which submission this run is
LOG_BEGIN = "===== mbuild: action log of {label} ({key}) ====="
LOG_END = "===== mbuild: end of action log ====="
_RUN_PREFIX = RUN_LINE.split("{", 1)[0]
_LOG_BEGIN_PREFIX = LOG_BEGIN.split("{", 1)[0]
_DETAIL_LIMIT = 64 << 10  # characters of a failure's detail kept in a report (its tail)


class WireError(ValueError):
    """A job report that is not one: not JSON, the wrong version, a missing or mistyped field."""


@dataclass(frozen=True)
class JobReport:
    """What one run of a job says happened to its action. Only the fields of its `kind` are set."""

    run: str  # the run id of the submission it answers
    kind: str  # one of KINDS
    error: str = ""  # failed: the action's one-line error
    detail: str = ""  # failed: the tail of its log (the traceback)
    log: str = ""  # failed: the action's log file, on the job's machine
    label: str = ""  # input_unavailable: the input whose bytes are missing or corrupt
    reason: str = ""  # input_unavailable: what is wrong with them
    holder: dict[str, Any] | None = None  # busy: who holds the action's lease (Holder's fields), if known
    fenced: bool = False  # busy: the lease was taken from the job while it ran
    bytes_up: int = 0  # ran: uploaded to the remote cache
    bytes_down: int = 0  # ran: fetched from it
    requests: int = 0  # ran: requests made to it
    warnings: tuple[str, ...] = ()  # ran: the remote cache's warnings (e.g. it became unreachable)

    def counters(self) -> dict[str, Any]:
        """A Ran's fields that only the job knows (bytes moved, requests, warnings)."""
        return {"bytes_up": self.bytes_up, "bytes_down": self.bytes_down, "requests": self.requests, "warnings": list(self.warnings)}

    def outcome(self) -> Outcome | None:
        """The outcome this report stands for; None for "ran" (its result is read from the cache)."""
        if self.kind == "failed":
            return Failed(self.error, self.detail, self.log)
        if self.kind == "input_unavailable":
            return InputUnavailable(self.label, self.reason)
        if self.kind == "busy":
            return Busy(Holder(**self.holder) if self.holder is not None else None, fenced=self.fenced)
        return None


def report_of(outcome: Outcome, run: str) -> JobReport:
    """The report a job leaves for its action's outcome."""
    if isinstance(outcome, Ran):
        return JobReport(run, "ran", bytes_up=outcome.bytes_up, bytes_down=outcome.bytes_down, requests=outcome.requests, warnings=tuple(outcome.warnings))
    if isinstance(outcome, Failed):
        return JobReport(run, "failed", error=outcome.error, detail=outcome.detail[-_DETAIL_LIMIT:], log=outcome.log or "")
    if isinstance(outcome, InputUnavailable):
        return JobReport(run, "input_unavailable", label=outcome.label, reason=outcome.reason)
    if isinstance(outcome, Busy):
        holder = dataclasses.asdict(outcome.holder) if outcome.holder is not None else None
        return JobReport(run, "busy", holder=holder, fenced=outcome.fenced)
    raise TypeError(f"the action returned {type(outcome).__name__}, not an Outcome")


# --- encoding ------------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(JobReport)}
_STR = ("run", "kind", "error", "detail", "log", "label", "reason")
_INT = ("bytes_up", "bytes_down", "requests")
_HOLDER = {f.name: getattr(f.type, "__name__", f.type) for f in dataclasses.fields(Holder)}


def encode(report: JobReport) -> bytes:
    """The record as one line of JSON (no newline inside): its version, then the fields that are set."""
    fields = {name: value for name, value in dataclasses.asdict(report).items() if name in ("run", "kind") or value != _FIELDS[name].default}
    return orjson.dumps({"v": VERSION, **fields})


def decode(data: bytes | str) -> JobReport:
    """The record in `data`, checked field by field; WireError if it is not a valid JobReport."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"a job report is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WireError("a job report is not a JSON object")
    if body.pop("v", None) != VERSION:
        raise WireError(f"a job report of another version (this driver reads version {VERSION})")
    unknown = set(body) - set(_FIELDS)
    if unknown:
        raise WireError(f"a job report with unknown fields: {', '.join(sorted(unknown))}")
    for name in _STR:
        if name in body and not isinstance(body[name], str):
            raise WireError(f"a job report's {name} is not a string")
    for name in _INT:
        if name in body and (not isinstance(body[name], int) or isinstance(body[name], bool) or body[name] < 0):
            raise WireError(f"a job report's {name} is not a count")
    if "run" not in body or body.get("kind") not in KINDS:
        raise WireError(f"a job report needs a run and a kind ({', '.join(KINDS)})")
    if not isinstance(body.get("fenced", False), bool):
        raise WireError("a job report's fenced is not a boolean")
    warnings = body.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise WireError("a job report's warnings are not a list of strings")
    body["warnings"] = tuple(warnings)
    _check_holder(body.get("holder"))
    return JobReport(**body)


def _check_holder(holder: Any) -> None:
    """A lease holder as a report carries it: Holder's fields, of Holder's types."""
    if holder is None:
        return
    if not isinstance(holder, dict):
        raise WireError("a job report's holder is not an object")
    types = {"str": str, "int": int, "float": (int, float)}
    for name, value in holder.items():
        kind = types.get(_HOLDER.get(name, ""))
        if kind is None or not isinstance(value, kind) or isinstance(value, bool):
            raise WireError(f"a job report's holder has a bad field {name!r}")
    try:
        Holder(**holder)
    except TypeError:
        raise WireError("a job report's holder lacks fields") from None


# --- the file ------------------------------------------------------------------------------------


def report_path(cache_dir: str, key: str) -> Path:
    """Where a job leaves its report for a driver on this machine: next to the action's log."""
    return Path(cache_dir) / "logs" / f"{key}.ran.json"


def leave(report: JobReport, path: Path) -> None:
    """Write the report atomically; a failure to write only costs the driver this channel."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(encode(report))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def take(path: Path, run: str) -> JobReport | None:
    """The report that run `run` left at `path`, removed once read; None if there is none.

    A report of another run is left alone (a driver attached to the same job may want it); an
    unreadable one is removed.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        report = decode(data)
    except WireError:
        report = None
    if report is not None and report.run != run:
        return None
    try:
        path.unlink()
    except OSError:
        pass
    return report


# --- the job's log -------------------------------------------------------------------------------


def report_line(report: JobReport) -> str:
    """The report as a log line. It has no detail: the action's log is in the job's log already."""
    return REPORT_LINE + encode(dataclasses.replace(report, detail="")).decode()


def report_in(lines: list[str]) -> JobReport | None:
    """The report of the latest run in a job's log lines: the last report line after the last
    run marker. None if that run left none (or an invalid one)."""
    for line in reversed(lines):
        if line.startswith(REPORT_LINE):
            try:
                return decode(line[len(REPORT_LINE):])
            except WireError:
                return None
        if line.startswith(_RUN_PREFIX):
            return None
    return None


def between_markers(lines: list[str]) -> list[str] | None:
    """The action's own log echoed inside a job's log, or None if there is none."""
    end = None
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(LOG_END):
            end = i
            break
    if end is None:
        return None
    for i in range(end - 1, -1, -1):
        if lines[i].startswith(_LOG_BEGIN_PREFIX):
            return lines[i + 1 : end]
    return None
