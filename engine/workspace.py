"""The workspace: the directory holding WORKSPACE.toml, and the settings read from it.

Settings are typed dataclasses, one per TOML table. An unknown table or key, or a value of the
wrong type, is a `WorkspaceError` naming the file and the key (with a "did you mean").
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import WorkspaceError, did_you_mean

WORKSPACE_FILE = "WORKSPACE.toml"
BUILD_FILE = "BUILD.py"


@dataclass(frozen=True)
class WorkspaceSection:
    """[workspace]"""

    name: str = ""
    # Mixed into every action key: changing it disowns every cache entry made before.
    salt: str = ""


@dataclass(frozen=True)
class BuildSection:
    """[build]"""

    # Local actions at once; 0 means the number of cores.
    jobs: int = 0
    # Local action cache (LMDB) and content-addressed store. Relative to the workspace root.
    cache_dir: str = ".mbuild/cache"
    # Where outputs of requested targets are materialised, one stable directory per target.
    outputs_dir: str = "mbuild-out"
    keep_going: bool = False


@dataclass(frozen=True)
class RemoteSection:
    """[remote]: a shared cache in a bucket (gs://, s3://) or a shared directory (file://)."""

    url: str = ""  # empty: no remote cache
    # False makes a read-only client: it never writes anything to the remote.
    upload: bool = True
    timeout: float = 5.0  # seconds per request (plus 1 s per MiB moved)
    max_failures: int = 3  # consecutive failures before the client stops asking
    options: dict = field(default_factory=dict)  # fsspec storage options (endpoint_url, token, ...)


@dataclass(frozen=True)
class FraySection:
    """[fray]: where remote-tagged actions (those asking for resources) run."""

    backend: str = "local"  # local (fray's LocalClient, in process) | iris | iris-local
    controller: str = ""  # the Iris controller URL, for backend = "iris"
    remote_jobs: int = 4  # remote-tagged actions at once
    retries: int = 2  # resubmissions of a job lost to its worker dying


@dataclass(frozen=True)
class LeaseSection:
    """[lease]: the single-flight lease every action is run under."""

    ttl: float = 90.0  # a lease not renewed for this long is stale and is taken over
    renew: float = 30.0  # heartbeat interval


@dataclass(frozen=True)
class Settings:
    workspace: WorkspaceSection = field(default_factory=WorkspaceSection)
    build: BuildSection = field(default_factory=BuildSection)
    remote: RemoteSection = field(default_factory=RemoteSection)
    fray: FraySection = field(default_factory=FraySection)
    lease: LeaseSection = field(default_factory=LeaseSection)


@dataclass(frozen=True)
class Workspace:
    """A workspace root and its settings, with the derived absolute directories."""

    root: Path
    settings: Settings

    @property
    def cache_dir(self) -> Path:
        return self._resolve(self.settings.build.cache_dir)

    @property
    def outputs_dir(self) -> Path:
        return self._resolve(self.settings.build.outputs_dir)

    @property
    def jobs(self) -> int:
        return self.settings.build.jobs or (os.cpu_count() or 1)

    def _resolve(self, setting: str) -> Path:
        path = Path(os.path.expanduser(setting))
        return path if path.is_absolute() else self.root / path

    def relpath(self, path: Path) -> str:
        """`path` relative to the root, for messages (absolute if outside)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def find_root(start: Path) -> Path:
    """Walk up from `start` to the nearest directory holding WORKSPACE.toml."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / WORKSPACE_FILE).is_file():
            return directory
    raise WorkspaceError(
        f"no {WORKSPACE_FILE} found in {start} or any parent directory; "
        f"create one at your project's root (it may be empty)"
    )


def load_workspace(start: Path | None = None) -> Workspace:
    root = find_root(start or Path.cwd())
    return Workspace(root=root, settings=read_settings(root / WORKSPACE_FILE))


_CHOICES = {("fray", "backend"): ("local", "iris", "iris-local")}


def read_settings(path: Path) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise WorkspaceError(f"{path.name}: {exc}") from None
    except OSError as exc:
        raise WorkspaceError(f"{path}: cannot read: {exc.strerror}") from None
    settings = _build(Settings, data, path.name, "")
    for (table, key), choices in _CHOICES.items():
        value = getattr(getattr(settings, table), key)
        if value not in choices:
            raise WorkspaceError(f"{path.name}: [{table}].{key} must be one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}")
    _check_remote(settings.remote, path.name)
    if settings.fray.backend == "iris" and not settings.fray.controller:
        raise WorkspaceError(f"{path.name}: [fray].backend = \"iris\" needs [fray].controller{_CONTROLLER_HINT}")
    if not 0 < settings.lease.renew < settings.lease.ttl * 5 / 6:
        raise WorkspaceError(
            f"{path.name}: [lease].renew ({settings.lease.renew}) must be positive and below 5/6 of [lease].ttl ({settings.lease.ttl}): "
            "a holder stops trusting its lease ttl/6 before others may take it over"
        )
    return settings


REMOTE_SCHEMES = ("gs", "gcs", "s3", "s3a", "file")  # gcs:// and s3a:// are other names of gs:// and s3://
_CONTROLLER_HINT = ' (the Iris controller\'s address, e.g. "http://host:port")'


def check_remote_url(url: str, where: str) -> None:
    """A remote cache URL must be gs://bucket[/prefix], s3://bucket[/prefix] or file:///absolute/dir;
    WorkspaceError naming `where` (the setting or flag) otherwise."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in REMOTE_SCHEMES:
        hint = f" (for a directory: file://{url})" if not sep and os.path.isabs(url) else ""
        raise WorkspaceError(f"{where} must be a gs://, s3:// or file:// URL, got {url!r}{hint}")
    if scheme.lower() == "file":
        path = rest[len("localhost"):] if rest.startswith("localhost/") else rest
        if not path.startswith("/"):
            raise WorkspaceError(f"{where}: a file:// URL needs an absolute path (file:///shared/dir), got {url!r}")
    elif not rest.strip("/"):
        raise WorkspaceError(f"{where}: {url!r} names no bucket")


def check_fray_backend(fray: FraySection, backend: str | None) -> None:
    """`--fray iris` needs a controller address: one error before anything runs."""
    if backend == "iris" and not fray.controller:
        raise WorkspaceError(f"--fray iris needs [fray].controller in {WORKSPACE_FILE}{_CONTROLLER_HINT}")


def _check_remote(remote: RemoteSection, file: str) -> None:
    if remote.url:
        check_remote_url(remote.url, f"{file}: [remote].url")
    if not (remote.timeout > 0 and math.isfinite(remote.timeout)):
        raise WorkspaceError(f"{file}: [remote].timeout must be a positive number of seconds, got {remote.timeout!r}")
    if remote.max_failures < 1:
        raise WorkspaceError(f"{file}: [remote].max_failures must be at least 1, got {remote.max_failures!r}")


def _build(cls: type, data: dict, file: str, prefix: str):
    """Construct dataclass `cls` from a TOML table, checking keys and types."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in known:
            kind = "table" if not prefix else "setting"
            shown = f"[{key}]" if not prefix else f"[{prefix}].{key}"
            raise WorkspaceError(f"{file}: unknown {kind} {shown}{did_you_mean(key, known)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise WorkspaceError(f"{file}: [{where}] must be a table, got {type(value).__name__}")
            values[key] = _build(hint, value, file, where)
        else:
            values[key] = _check_type(value, hint, file, prefix, key)
    return cls(**values)


def _check_type(value, hint, file: str, table: str, key: str):
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    allowed_types = tuple(type(None) if a is None else typing.get_origin(a) or a for a in allowed)
    ok = isinstance(value, allowed_types) and not (isinstance(value, bool) and bool not in allowed_types)
    if float in allowed_types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        names = " or ".join("none" if a is type(None) else a.__name__ for a in allowed_types)
        raise WorkspaceError(
            f"{file}: [{table}].{key} must be {names}, got {type(value).__name__} {value!r}"
        )
    return value
