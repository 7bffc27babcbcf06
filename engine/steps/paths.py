"""Where a step's outputs live: `{prefix}/{name}_{key16}` (Marin's layout), in place, and what of
them goes into the step's recorded result.

The one module that knows the layout, so in-place outputs on gs:// (another branch) can replace
the local-directory logic here without touching the runner: `output_path`, `outputs_present` and
`describe_outputs` are the whole interface.
"""

from __future__ import annotations

import os
from pathlib import Path

from mbuild.digests import digest_file
from mbuild.model.workspace import claim_directory
from mbuild.steps.output_slot import SUCCESS, OutputSlot

KEY_CHARS = 16  # of the action key, in the directory name
_BOOKKEEPING = (".mbuild-", ".executor_")  # mbuild's markers and leases, Marin's status files


def output_path(prefix: str, name: str, key: str) -> str:
    """The step's output directory for action `key` under `prefix`."""
    return f"{os.fspath(prefix).rstrip('/')}/{name}_{key[:KEY_CHARS]}"


def make_prefix(prefix: str) -> None:
    """Create a local prefix the first time a step writes under it, marked like mbuild's other
    directories (a `.gitignore` of `*`), so git ignores it. An existing directory is left as it is."""
    text = os.fspath(prefix)
    if "://" in text or os.path.isdir(text):
        return
    claim_directory(Path(os.path.expanduser(text)), "step outputs (StepRunner's prefix)")


def outputs_present(path: str) -> bool:
    """The step's outputs are complete at `path` (its success marker, written last, is there)."""
    text = os.fspath(path)
    if "://" not in text:
        return os.path.isfile(os.path.join(os.path.expanduser(text), SUCCESS))  # a stat: every no-op asks
    return OutputSlot(text).done()


def describe_outputs(path: str) -> dict:
    """What of the outputs at `path` goes into the step's result (and so into its dependents' keys):
    each file's relative path, size and content digest, so identical bytes give an identical
    description (early cutoff). Never the path itself: keys hold no prefix. A prefix that is not a
    local directory is described by nothing (no early cutoff there yet)."""
    root = Path(path)
    if "://" in os.fspath(path) or not root.is_dir():
        return {"files": {}}
    files: dict[str, list] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(_BOOKKEEPING))
        for fname in sorted(filenames):
            if fname.startswith(_BOOKKEEPING) or fname.startswith(".mbuild"):
                continue
            full = Path(dirpath) / fname
            if full.is_symlink():
                files[full.relative_to(root).as_posix()] = ["link", os.readlink(full)]
                continue
            digest, size = digest_file(full)
            files[full.relative_to(root).as_posix()] = [size, digest]
    return {"files": files}
