"""The manifest of an in-place output: for every object under its URL, the relative path, the size
and the checksum the store itself keeps (GCS crc32c and md5, an S3 ETag, a local xxh3).

Its digest is what dependents' keys see (through the result's tree digest), so a rerun that writes
the same bytes leaves them hits (early cutoff). The digest is over the canonical encoding of the
entries sorted by path: independent of the order a listing returned them in, and different for
any difference of path, size or checksum. The URL is not in it (it holds the action key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mbuild.digests import digest_bytes
from mbuild.encoding import encode

MANIFEST_FORMAT = "mbuild-inplace/1"
# What mbuild itself writes under an in-place URL; never part of a manifest.
MARKER = ".mbuild-inplace.json"  # written before the action runs: this directory is mbuild's, for this key
PROVENANCE = ".mbuild-provenance.json"  # written after publish: what produced it and how to rebuild it
RESERVED = (MARKER, PROVENANCE)
# "kind=value" pairs, comma-separated: crc32c=..,md5=.. (GCS), etag=.. (S3), xxh3=.. (local)
_CHECKSUM = re.compile(r"[a-z0-9-]+=[A-Za-z0-9+/=._-]{1,200}(,[a-z0-9-]+=[A-Za-z0-9+/=._-]{1,200})*")


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    """One object of an in-place output."""

    path: str  # relative to the output's URL, '/'-separated
    size: int
    checksum: str  # what the store keeps, as "kind=value[,kind=value]"


def check_checksum(text: object) -> str:
    """`text` if it is a well-formed checksum string, else ValueError."""
    if type(text) is not str or len(text) > 512 or _CHECKSUM.fullmatch(text) is None:
        raise ValueError(f"bad checksum {text!r}")
    return text


def normalise(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    """The entries sorted by path; ValueError if one path appears twice."""
    ordered = tuple(sorted(entries, key=lambda e: e.path))
    for a, b in zip(ordered, ordered[1:]):
        if a.path == b.path:
            raise ValueError(f"in-place manifest names {a.path!r} twice")
    return ordered


def manifest_digest(entries: Iterable[Entry]) -> str:
    """The digest dependents see: xxh3-128 over the canonical encoding of the sorted entries."""
    return digest_bytes(encode([MANIFEST_FORMAT, [[e.path, e.size, e.checksum] for e in normalise(entries)]]))


def first_difference(recorded: Iterable[Entry], listed: Iterable[Entry]) -> str | None:
    """The first path (sorted) that differs between two manifests: missing, extra, or another size or
    checksum; None if they are the same."""
    a = {e.path: e for e in recorded}
    b = {e.path: e for e in listed}
    for path in sorted(a.keys() | b.keys()):
        if a.get(path) != b.get(path):
            return path
    return None


@dataclass(frozen=True)
class Place:
    """Where an in-place output is (its URL, or an absolute local path) and what was there at publish."""

    url: str
    entries: tuple[Entry, ...]

    @property
    def digest(self) -> str:
        return manifest_digest(self.entries)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def to_json(self) -> dict:
        return {"url": self.url, "entries": [[e.path, e.size, e.checksum] for e in self.entries]}

    @staticmethod
    def from_json(raw: object, check_path) -> Place:
        """Parse a recorded place; ValueError/TypeError/KeyError on anything unexpected. `check_path`
        validates each relative path (results.check_relpath)."""
        if not isinstance(raw, dict) or type(raw["url"]) is not str or not raw["url"]:
            raise ValueError("bad in-place url")
        entries = []
        for item in raw["entries"]:
            path, size, checksum = item
            if type(size) is not int or size < 0:
                raise ValueError(f"bad in-place entry {item!r}")
            entries.append(Entry(check_path(path), size, check_checksum(checksum)))
        return Place(raw["url"], normalise(entries))
