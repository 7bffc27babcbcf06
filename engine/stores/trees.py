"""The tree cache: each action's output tree, whole, at `trees/<tree digest>/`.

A finished action's output directory is renamed here (its files are hard links shared with the
CAS), so dependents read their inputs in place instead of copying or linking them per action.
Every use verifies the tree against its manifest; a tree that fails is rebuilt from the CAS (whose
blobs are verified in turn), and a missing blob surfaces as BlobUnavailableError.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ..digests import digest_file
from ..errors import BlobUnavailableError
from ..results import ActionResult
from .cas import LocalCAS


def tree_path(cas: LocalCAS, tree: str) -> Path:
    return cas.root / "trees" / tree


def adopt(out: Path, result: ActionResult, cas: LocalCAS) -> None:
    """Move a finished output directory into the cache as the tree of `result` (if not there yet)."""
    dest = tree_path(cas, result.tree)
    try:
        os.rename(out, dest)
    except FileNotFoundError:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(out, dest)
        except OSError:
            pass
    except OSError:
        pass  # the same tree exists already (an identical rebuild, or another builder)


def ensure(result: ActionResult, cas: LocalCAS) -> Path:
    """The verified tree of `result`, rebuilt from the CAS if missing or damaged."""
    dest = tree_path(cas, result.tree)
    if dest.is_dir() and verify(dest, result):
        return dest
    from ..execute import materialize_tree

    tmp = dest.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        materialize_tree(result, cas, tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not verify(dest, result):  # damaged: swap the good copy in
                bad = dest.parent / f".bad-{uuid.uuid4().hex}"
                os.rename(dest, bad)
                os.rename(tmp, dest)
                shutil.rmtree(bad, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def verify(path: Path, result: ActionResult) -> bool:
    """Whether the directory holds exactly the result's files (by digest), links and directories."""
    expected = {f.path: f for f in result.files}
    links = {link.path: link.target for link in result.links}
    dirs = set(result.dirs)
    root = str(path)
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel + "/"
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                dirnames.remove(d)
                filenames.append(d)
            elif prefix + d not in dirs:
                return False
        for name in filenames:
            rel_path = prefix + name
            full = os.path.join(dirpath, name)
            if rel_path in links:
                if not os.path.islink(full) or os.readlink(full) != links.pop(rel_path):
                    return False
                continue
            f = expected.pop(rel_path, None)
            if f is None or os.path.islink(full):
                return False
            try:
                digest, size = digest_file(full)
            except OSError:
                return False
            if digest != f.digest or size != f.size:
                return False
    return not expected and not links


__all__ = ["BlobUnavailableError", "adopt", "ensure", "tree_path", "verify"]
