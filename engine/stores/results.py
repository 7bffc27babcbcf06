"""Action results: the output manifest and returned value of one action, as cached.

A result is stored as JSON (orjson), never pickle. Reading one validates everything before it is
believed: types, digest syntax, that every path stays inside the output directory, and that the
recorded `tree` digest matches the content. Any mismatch is a `CacheCorruptError` (a miss).

A stored record names the action key it answers, inside its checksum: a record copied or swapped
under another key (a sync mix-up, a bad `gsutil cp`) reads as `RecordKeyMismatch`, never as a hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from mbuild.digests import digest_bytes, is_digest
from mbuild.encoding import encode
from mbuild.errors import CacheCorruptError, MbuildError, RecordKeyMismatch, StaleRecordFormat
from mbuild.stores.inplace.manifest import Place

RESULT_FORMAT = 2  # 2: records carry their key (format 1 records read as misses)
PLACE_FORMAT = 3  # a record of an in-place output: format 2 plus "place" (older mbuilds read it as a miss)
MAX_VALUE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class OutputFile:
    path: str
    digest: str
    size: int
    executable: bool = False


@dataclass(frozen=True, slots=True)
class OutputLink:
    """A symbolic link inside the output directory; `target` is relative and stays inside."""

    path: str
    target: str


@dataclass(frozen=True)
class ActionResult:
    files: tuple[OutputFile, ...]
    links: tuple[OutputLink, ...] = ()
    dirs: tuple[str, ...] = ()  # directories, so empty ones survive
    value: Any = None  # what the rule returned (JSON)
    meta: dict = field(default_factory=dict)  # who ran it, when, how long: not part of `tree`
    tree: str = ""  # digest of files, links, dirs, value (and an in-place manifest): what dependents' keys see
    place: Place | None = None  # an in-place output: its URL and manifest (stores/inplace)

    @staticmethod
    def make(files, links=(), dirs=(), value=None, meta=None, place: Place | None = None) -> ActionResult:
        files = tuple(sorted(files, key=lambda f: f.path))
        links = tuple(sorted(links, key=lambda link: link.path))
        dirs = tuple(sorted(dirs))
        return ActionResult(files, links, dirs, value, meta or {}, tree_digest(files, links, dirs, value, place), place)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_record(self, key: str) -> bytes:
        """The stored form for action `key`: a 32-hex-digit checksum over the key and the JSON (which
        names the key too), a newline, the JSON."""
        data = self.to_json(key)
        return _checksum(key, data) + b"\n" + data

    @staticmethod
    def from_record(record: bytes, key: str, check_tree: bool = False) -> ActionResult:
        """Read the record stored for action `key`: the checksum must match this key, then the JSON is
        validated as in from_json (with check_tree for records from elsewhere: the local database is
        trusted not to lie about content, but not about which key a record answers).

        A record that answers another key raises RecordKeyMismatch; one from before records named
        their key, StaleRecordFormat; anything else unreadable, CacheCorruptError."""
        head, data = record[:32], record[33:]
        if len(record) < 33 or record[32:33] != b"\n":
            raise CacheCorruptError("action result record is truncated")
        if _checksum(key, data) != head:
            other = _named_key(data)
            if other is not None and other != key and _checksum(other, data) == head:
                raise RecordKeyMismatch(key, other)
            if digest_bytes(data).encode() == head:
                raise StaleRecordFormat("action result record is in an older format")
            raise CacheCorruptError("action result record is truncated or does not match its checksum")
        return ActionResult.from_json(data, check_tree=check_tree, key=key)

    def to_json(self, key: str | None = None) -> bytes:
        record = {
            "format": RESULT_FORMAT if self.place is None else PLACE_FORMAT,
            "key": key,
            "files": [[f.path, f.digest, f.size, f.executable] for f in self.files],
            "links": [[link.path, link.target] for link in self.links],
            "dirs": list(self.dirs),
            "value": self.value,
            "meta": self.meta,
            "tree": self.tree,
        }
        if self.place is not None:
            record["place"] = self.place.to_json()
        return orjson.dumps(record)

    @staticmethod
    def from_json(data: bytes, check_tree: bool = True, key: str | None = None) -> ActionResult:
        """Parse and validate a result; raises CacheCorruptError on anything unexpected.

        With check_tree the tree digest is recomputed from the content (for results from elsewhere);
        records whose checksum was verified skip that. With `key`, the JSON must name that key.
        """
        try:
            raw = orjson.loads(data)
            if not isinstance(raw, dict) or raw.get("format") not in (RESULT_FORMAT, PLACE_FORMAT):
                raise ValueError("unknown format")
            place = Place.from_json(raw["place"], check_relpath) if raw["format"] == PLACE_FORMAT else None
            if key is not None and raw.get("key") != key:
                raise ValueError(f"it names key {raw.get('key')!r}, not {key}")
            files = tuple(_file(entry) for entry in raw["files"])
            links = tuple(_link(entry) for entry in raw["links"])
            dirs = tuple(_path(d) for d in raw["dirs"])
            meta = raw["meta"]
            if not isinstance(meta, dict):
                raise ValueError("meta is not an object")
            value = raw["value"]
            tree = raw["tree"]
            if not is_digest(tree):
                raise ValueError("bad tree digest")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CacheCorruptError(f"unreadable action result: {exc}") from None
        if check_tree:
            try:
                result = ActionResult.make(files, links, dirs, value, meta, place)
            except MbuildError as exc:  # a value the key encoding refuses (e.g. nested too deep)
                raise CacheCorruptError(f"unreadable action result: {exc}") from None
            if result.tree != tree:
                raise CacheCorruptError("action result does not match its tree digest")
        else:
            result = ActionResult(files, links, dirs, value, meta, tree, place)
        paths = [f.path for f in files] + [link.path for link in links]
        if len(set(paths)) != len(paths):
            raise CacheCorruptError("action result names one path twice")
        return result


def _checksum(key: str, data: bytes) -> bytes:
    """The record checksum: over the key it answers and the JSON, so a record moved to another key fails."""
    return digest_bytes(key.encode() + b"\n" + data).encode()


def _named_key(data: bytes) -> str | None:
    """The key a record's JSON names, if it parses that far (to tell a moved record from a damaged one)."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    named = raw.get("key") if isinstance(raw, dict) else None
    return named if is_digest(named) else None


def tree_digest(files, links, dirs, value, place: Place | None = None) -> str:
    """The digest dependents see. An in-place output adds its manifest's digest (not its URL, which
    holds the action key: a rerun at another key that wrote the same bytes must digest the same)."""
    parts = [
        [[f.path, f.digest, f.size, f.executable] for f in files],
        [[link.path, link.target] for link in links],
        list(dirs),
        value,
    ]
    if place is not None:
        parts.append(["in-place", place.digest])
    return digest_bytes(encode(parts))


def check_relpath(path: str) -> str:
    """`path` if it is a plain relative path that stays inside its directory, else ValueError."""
    if type(path) is not str or path == "" or "\\" in path or "\0" in path:
        raise ValueError(f"bad path {path!r}")
    if path[0] == "/" or any(part in ("..", ".", "") for part in path.split("/")):
        raise ValueError(f"path {path!r} leaves the output directory or is not normalised")
    return path


def check_link_target(path: str, target: str) -> str:
    """A link's target must be relative and resolve inside the output directory."""
    if not isinstance(target, str) or target == "" or target.startswith("/") or "\0" in target:
        raise ValueError(f"link {path!r} -> {target!r} is absolute or empty")
    depth = len(path.split("/")) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise ValueError(f"link {path!r} -> {target!r} leaves the output directory")
        elif part not in ("", "."):
            depth += 1
    return target


def _path(path: Any) -> str:
    return check_relpath(path)


def _file(entry: Any) -> OutputFile:
    path, digest, size, executable = entry
    if not is_digest(digest) or type(size) is not int or size < 0 or type(executable) is not bool:
        raise ValueError(f"bad file entry {entry!r}")
    return OutputFile(_path(path), digest, size, executable)


def _link(entry: Any) -> OutputLink:
    path, target = entry
    return OutputLink(_path(path), check_link_target(path, target))


def json_value(value: Any, where: str) -> Any:
    """A rule's return value as it will read back from the cache (checks it is JSON and small)."""
    try:
        data = orjson.dumps(value)
    except TypeError as exc:
        raise TypeError(f"{where} returned a value that is not JSON: {exc}") from None
    if len(data) > MAX_VALUE_BYTES:
        raise TypeError(f"{where} returned {len(data)} bytes of value; keep it under {MAX_VALUE_BYTES} (write big data to an output file)")
    return orjson.loads(data)
