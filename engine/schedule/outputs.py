"""Materialising outputs of requested targets: one stable path per target under the outputs dir.

`mbuild-out/<package>/<name>` is a symbolic link to the target's tree in the tree cache (like
Bazel's `bazel-bin`): placing it is one `readlink` when it is in place already. Its tree is
checked on every build, by one `lstat` per entry against the stamps recorded when its bytes last
hashed right (stores/trees.py): a byte changed through the link, by any program, is noticed. Only
links mbuild made are ever replaced; a file or directory put there by hand is left alone and reported.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

from mbuild.errors import MbuildError, OutputPathTaken
from mbuild.stores.trees import ensure_from
from mbuild.labels import Label
from mbuild.stores.results import ActionResult
from mbuild.stores import trees
from mbuild.stores.cas import LocalCAS

if TYPE_CHECKING:
    from mbuild.stores.localdb import LocalDB
    from mbuild.stores.remote import RemoteCache
from mbuild.model.workspace import BUILD_FILE, OUTPUTS_NOTE, Workspace, claim_directory


class Materializer:
    def __init__(
        self, workspace: Workspace, cas: LocalCAS, remote: RemoteCache | None = None, db: LocalDB | None = None,
        on_warning: Callable[[str], None] | None = None,
    ):
        self.ws = workspace
        self.cas = cas
        self.db = db
        self.on_warning = on_warning
        self.remote = remote
        self.outputs = str(workspace.outputs_dir)
        self.root = str(workspace.root)
        self.trees = str(trees.tree_path(cas, "")) + "/"
        self._link_prefix: dict[str, str] = {}  # directory holding a link -> how the link names trees/
        self._checked_dir = False

    def _prefix(self, parent: str) -> str:
        prefix = self._link_prefix.get(parent)
        if prefix is None:
            relative = Path(self.trees).parts[:2] == Path(self.outputs).parts[:2]  # survives moving both
            prefix = self._link_prefix[parent] = os.path.relpath(self.trees, parent) + "/" if relative else self.trees
        return prefix

    def place(self, label: Label, result: ActionResult) -> tuple[Path, int]:
        """Point the target's output path at its verified tree; (the path, bytes fetched from the remote).

        Only a link mbuild made (one into a tree cache) is ever replaced: anything else at the path
        is an OutputPathTaken error naming it. Blobs missing here come from the remote cache;
        BlobUnavailableError if neither has them good."""
        parent = f"{self.outputs}/{label.package}" if label.package else self.outputs
        dest = f"{parent}/{label.name}"
        if "/" in label.name:
            parent = os.path.dirname(dest)
        tree = self.trees + result.tree
        target = self._prefix(parent) + result.tree
        try:
            current: str | None = os.readlink(dest)
        except FileNotFoundError:
            current = None
        except OSError:  # not a link: something mbuild did not make is in the way
            raise self._taken(label, dest) from None
        if current == target and trees.check(Path(tree), result, self.db):
            return Path(dest), 0
        if current is not None and not _TREE_LINK.search(current):
            raise self._taken(label, dest)
        if os.path.exists(os.path.join(self.root, label.package, label.name, BUILD_FILE)):
            raise MbuildError(
                f"cannot materialise {label} at {self.ws.relpath(Path(dest))}: package "
                f"//{label.package}/{label.name} has the same output path; rename the target"
            )
        def damaged(entry: str) -> None:
            if self.on_warning is not None:
                self.on_warning(f"warning: the cached output of {label} was changed on disk ({entry}); restoring it from the verified store")

        _, fetched = ensure_from(result, self.cas, self.remote, self.db, damaged)
        self._ensure_outputs_dir()
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".mbuild-tmp-{uuid.uuid4().hex[:12]}")  # short: the name may be 255 long
        os.symlink(target, tmp)
        try:
            os.replace(tmp, dest)  # a link replaces a link (or nothing); a directory that appeared meanwhile stays
        except OSError:
            os.unlink(tmp)
            if os.path.isdir(dest) and not os.path.islink(dest):
                raise self._taken(label, dest) from None
            raise
        return Path(dest), fetched

    def _taken(self, label: Label, dest: str) -> OutputPathTaken:
        kind = "a directory" if os.path.isdir(dest) and not os.path.islink(dest) else "a file" if not os.path.islink(dest) else "a link"
        return OutputPathTaken(
            f"cannot materialise {label} at {self.ws.relpath(Path(dest))}: {kind} mbuild did not create is there; "
            "mbuild never replaces it: move it away (or rename the target)"
        )

    def _ensure_outputs_dir(self) -> None:
        if not self._checked_dir:
            claim_directory(Path(self.outputs), OUTPUTS_NOTE)
            self._checked_dir = True


# What mbuild's output links point at: a tree of the tree cache (of this cache or an earlier one).
_TREE_LINK = re.compile(r"(?:\A|/)trees/[0-9a-f]{32}\Z")
