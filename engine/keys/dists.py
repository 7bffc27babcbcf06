"""Installed distributions: which provide a top-level import name, and at which version.

Rule keys hold the versions of the third-party distributions that a rule's code imports (see
codeprint.py). Reading every installed distribution's metadata takes ~0.3 s (importing
importlib.metadata alone ~40 ms), too slow for a no-op build, so the table is kept in
`<cache>/dists/<digest of sys.path>.json` and reused while every directory on sys.path holds the
same metadata directories: an install, upgrade or removal adds or removes a
`<name>-<version>.dist-info` (or `.egg-info`, `.egg`) entry. Listing the directories costs well
under a millisecond. Not noticed: metadata edited in place (a legacy `setup.py develop` egg-info,
whose name holds no version, bumped without a reinstall).

The distribution that provides `mbuild` is left out: the engine is not in rule keys.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import orjson

from mbuild.digests import digest_bytes
from mbuild.encoding import encode

_FORMAT = 1
_METADATA_SUFFIXES = (".dist-info", ".egg-info", ".egg")
_ENGINE_PACKAGE = "mbuild"

Table = dict[str, list[tuple[str, str]]]  # top-level import name -> [(distribution, version)]


class Distributions:
    """The installed distributions of this interpreter, looked up by top-level import name.
    Loaded (or computed) once per process, on the first lookup; saved under `cache_dir`.
    `search_path`: the directories to look in (default: sys.path at the first lookup)."""

    def __init__(self, cache_dir: Path | None, search_path: list[str] | None = None):
        self._cache_dir = cache_dir
        self._search_path = search_path
        self._table: Table | None = None

    def providing(self, top: str) -> list[tuple[str, str]]:
        """(distribution, version) of each distribution that provides the import name `top`."""
        if self._table is None:
            self._table = self._load()
        return self._table.get(top, [])

    def _load(self) -> Table:
        paths = [entry or os.getcwd() for entry in (sys.path if self._search_path is None else self._search_path)]  # "": here
        stamp = [_metadata_entries(path) for path in paths]
        file = None
        if self._cache_dir is not None:
            file = self._cache_dir / "dists" / f"{digest_bytes(encode(paths))}.json"
            saved = _read(file, paths, stamp)
            if saved is not None:
                return saved
        table = scan(paths)
        if file is not None:
            _write(file, {"format": _FORMAT, "paths": paths, "stamp": stamp, "table": table})
        return table


def scan(paths: list[str]) -> Table:
    """Read every distribution on `paths`: the first of a name is the one Python imports."""
    import importlib.metadata  # slow to import: only when the table must be computed

    table: Table = {}
    seen: set[str] = set()
    for dist in importlib.metadata.distributions(path=paths):
        try:
            meta = dist.metadata
            name, version, tops = normalize(meta["Name"] or ""), meta["Version"] or "(no version)", _top_levels(dist)
        except (OSError, TypeError, ValueError):
            continue  # damaged metadata: Python cannot tell what it is either
        if not name or name in seen:
            continue
        seen.add(name)
        for top in tops:
            table.setdefault(top, []).append((name, version))
    engine = {name for name, _ in table.get(_ENGINE_PACKAGE, [])}
    table = {top: sorted(d for d in dists if d[0] not in engine) for top, dists in table.items()}
    return {top: dists for top, dists in table.items() if dists}


def normalize(name: str) -> str:
    """A distribution's name as PEP 503 compares it (`PyYAML`, `pyyaml` and `py.yaml` are one)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _top_levels(dist) -> set[str]:
    """The import names a distribution installs: top_level.txt, else the top of each file it lists
    (what importlib.metadata.packages_distributions does)."""
    declared = (dist.read_text("top_level.txt") or "").split()
    if declared:
        return set(declared)
    import inspect

    names = set()
    for file in dist.files or ():
        top = file.parts[0] if len(file.parts) > 1 else inspect.getmodulename(str(file)) or str(file)
        if "." not in top:
            names.add(top)
    return names


def _metadata_entries(path: str) -> list[str] | None:
    """The distribution metadata entries of one sys.path directory (None: not a directory)."""
    try:
        return sorted(name for name in os.listdir(path) if name.endswith(_METADATA_SUFFIXES))
    except OSError:
        return None


def _read(file: Path, paths: list[str], stamp: list) -> Table | None:
    """The saved table, if it was computed over these directories holding these entries."""
    try:
        saved = orjson.loads(file.read_bytes())
        if saved.get("format") != _FORMAT or saved.get("paths") != paths or saved.get("stamp") != stamp:
            return None
        return {str(top): [(str(name), str(version)) for name, version in dists] for top, dists in saved["table"].items()}
    except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None  # missing or damaged: computed afresh


def _write(file: Path, data: dict) -> None:
    """Replace the saved table atomically; a cache that cannot be written is only slower."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, file)
    except OSError:
        tmp.unlink(missing_ok=True)
