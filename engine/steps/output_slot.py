"""A step's output directory as a single-flight Slot: done = `<output_path>/.mbuild-success`
exists, lease = `<output_path>/.mbuild-lease`; the success marker (who, when, the JSON value) is
written last, create-if-absent, and the last failure is kept in `.mbuild-failed`."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from mbuild.leases import DEFAULT_TTL, Conflict, Lease, swap_object, open_leases
from mbuild.leases.objects import filesystem

log = logging.getLogger("mbuild.steps.primitives")


SUCCESS = ".mbuild-success"


FAILED = ".mbuild-failed"


LEASE = ".mbuild-lease"


_MAX_VALUE_BYTES = 1 << 20


class OutputSlot:
    """A step's output directory as a Slot: done = `<output_path>/.mbuild-success` exists, lease =
    `<output_path>/.mbuild-lease`. Works on local paths, file://, gs:// and s3:// (leases need one
    of these; markers work on any fsspec filesystem that supports `pipe_file(mode="create")`)."""

    def __init__(
        self,
        output_path: str | os.PathLike,
        *,
        storage_options: dict | None = None,
        ttl: float = DEFAULT_TTL,
        margin: float | None = None,
        note: str = "",
    ):
        self.output_path = output_path
        self.url = os.fspath(output_path).rstrip("/") or "/"
        self.storage_options = storage_options
        self.ttl, self.margin, self.note = ttl, margin, note
        proto, sep, rest = self.url.partition("://")
        if not sep or proto in ("file", "local"):
            self.local: Path | None = Path(rest if sep else self.url).expanduser().absolute()
            self.fs, self.proto, self.base = None, "", ""
        else:
            self.local = None
            self.proto = {"gcs": "gs", "s3a": "s3"}.get(proto, proto)
            self.fs = filesystem(self.proto, storage_options)
            self.base = rest.strip("/")

    def __repr__(self) -> str:
        return f"OutputSlot({self.url!r})"

    def __str__(self) -> str:
        return self.url

    # -- Slot
    def done(self) -> bool:
        return self._read(SUCCESS) is not None

    def lease(self) -> Lease:
        store = open_leases(self.url, ttl=self.ttl, margin=self.margin, storage_options=self.storage_options, fs=self.fs)
        return store.lease(LEASE, note=self.note)

    # -- records
    def success(self) -> dict | None:
        """The success record, or None when not done."""
        data = self._read(SUCCESS)
        if data is None:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def failure(self) -> dict | None:
        data = self._read(FAILED)
        try:
            return json.loads(data) if data is not None else None
        except ValueError:
            return None

    def publish(self, record: dict) -> bool:
        """Create the success marker if absent; False if it already existed (someone else published)."""
        return self._create(SUCCESS, json.dumps(record, separators=(",", ":")).encode())

    def record_failure(self, exc: BaseException) -> None:
        record = {**who(), "error": f"{type(exc).__name__}: {exc}", "traceback": "".join(traceback.format_exception(exc))}
        try:
            self._put(FAILED, json.dumps(record, separators=(",", ":")).encode())
        except Exception as err:  # recording is best effort; the step's own error is what matters
            log.warning("could not record the failure at %s: %s", self.url, err)

    def clear_failure(self) -> None:
        try:
            self._remove(FAILED)
        except Exception:
            pass

    def read(self, name: str) -> bytes | None:
        """The bytes of `<output_path>/<name>`, or None when it is absent (e.g. Marin's status file)."""
        return self._read(name)

    # -- storage
    def _remote(self, name: str) -> str:
        return f"{self.base}/{name}"

    def _read(self, name: str) -> bytes | None:
        if self.local is not None:
            try:
                return (self.local / name).read_bytes()
            except FileNotFoundError:
                return None
        try:
            return self.fs.cat_file(self._remote(name))
        except FileNotFoundError:
            return None

    def _create(self, name: str, data: bytes) -> bool:
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
            tmp = self.local / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            tmp.write_bytes(data)
            try:
                os.link(tmp, self.local / name)  # atomic create-if-absent
                return True
            except FileExistsError:
                return False
            finally:
                tmp.unlink()
        if self.proto in ("gs", "s3"):
            try:
                swap_object(f"{self.proto}://{self._remote(name)}", fs=self.fs).write(data, None)
                return True
            except Conflict:
                return False
        try:
            self.fs.pipe_file(self._remote(name), data, mode="create")
            return True
        except FileExistsError:
            return False

    def _put(self, name: str, data: bytes) -> None:
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
            tmp = self.local / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.local / name)
        else:
            self.fs.pipe_file(self._remote(name), data)

    def _remove(self, name: str) -> None:
        if self.local is not None:
            try:
                (self.local / name).unlink()
            except FileNotFoundError:
                pass
        else:
            try:
                self.fs.rm_file(self._remote(name))
            except FileNotFoundError:
                pass


def who() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


def json_value(value: Any) -> tuple[bool, Any]:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return False, None
    return (True, value) if len(text) <= _MAX_VALUE_BYTES else (False, None)
