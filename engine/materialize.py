"""Materialising outputs of requested targets: one stable directory per target under the outputs dir.

`mbuild-out/<package>/<name>/` holds the target's output tree as read-only hard links into the
CAS (verified on the way). A stamp remembers what was placed there, so a no-op build checks it
with a few `stat` calls instead of rehashing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import orjson

from .errors import MbuildError
from .execute import materialize_tree
from .labels import Label
from .results import ActionResult
from .stores.cas import LocalCAS
from .workspace import BUILD_FILE, Workspace

STAMPS = ".mbuild-stamps"


def output_dir(workspace: Workspace, label: Label) -> Path:
    base = workspace.outputs_dir / label.package if label.package else workspace.outputs_dir
    return base / label.name


def materialize(workspace: Workspace, label: Label, result: ActionResult, cas: LocalCAS) -> Path:
    """Make `output_dir(label)` hold exactly `result`'s tree; raises BlobUnavailableError if a blob is bad."""
    outputs = workspace.outputs_dir
    _ensure_outputs_dir(outputs)
    dest = output_dir(workspace, label)
    if (workspace.root / label.package / label.name / BUILD_FILE).exists():
        raise MbuildError(
            f"cannot materialise {label} at {workspace.relpath(dest)}: package //{label.package}/{label.name} "
            "has the same output path; rename the target"
        )
    stamp = outputs / STAMPS / (label.package or "_root") / f"{label.name}.json"
    if _up_to_date(stamp, dest, result):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = dest.parent / f".{dest.name}.tmp-{tag}"
    try:
        materialize_tree(result, cas, tmp)
        if dest.exists() or dest.is_symlink():
            old = dest.parent / f".{dest.name}.old-{tag}"
            os.replace(dest, old)
            os.replace(tmp, dest)
            _remove(old)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            _remove(tmp)
    _write_stamp(stamp, dest, result)
    return dest


def _ensure_outputs_dir(outputs: Path) -> None:
    if not (outputs / ".gitignore").exists():
        outputs.mkdir(parents=True, exist_ok=True)
        (outputs / ".gitignore").write_text("# written by mbuild: everything here is a build output\n*\n")


def _file_stamps(dest: Path, result: ActionResult) -> dict[str, list[int]]:
    stamps = {}
    for f in result.files:
        st = os.stat(dest / f.path)
        stamps[f.path] = [st.st_ino, st.st_size, st.st_mtime_ns]
    return stamps


def _up_to_date(stamp: Path, dest: Path, result: ActionResult) -> bool:
    try:
        recorded = orjson.loads(stamp.read_bytes())
        return recorded["tree"] == result.tree and recorded["files"] == _file_stamps(dest, result)
    except (OSError, ValueError, KeyError):
        return False


def _write_stamp(stamp: Path, dest: Path, result: ActionResult) -> None:
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(stamp.name + f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(orjson.dumps({"tree": result.tree, "files": _file_stamps(dest, result)}))
    os.replace(tmp, stamp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
