"""InPlaceStore: where an action's in-place output goes, and everything mbuild does there.

    {prefix}/{package}/{name}-{key[:16]}/          the output, written by the action itself
        .mbuild-inplace.json                       mbuild's marker, written before the action runs
        .mbuild-provenance.json                    who made it and how, written after publish

Nothing under the URL counts until the action's result record is published. Before an attempt
runs (under the action's lease), a directory left at its URL by an earlier attempt is cleared, or
kept for a resumable action; it is touched only if it holds mbuild's marker naming this key
(mbuild never deletes what it did not create). A hit lists the URL again and compares it with the
recorded manifest: any difference is a miss.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from mbuild.stores.inplace.listing import ListingError, list_bucket, list_local
from mbuild.stores.inplace.manifest import MARKER, PROVENANCE, Entry, Place, first_difference

BUCKET_SCHEMES = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}


@dataclass(frozen=True)
class PlaceConfig:
    """`[outputs]` of WORKSPACE.toml, resolved: the prefix (gs://bucket/p, s3://bucket/p, or an
    absolute local directory) and the fsspec options for it."""

    prefix: str
    storage_options: dict = field(default_factory=dict)


class InPlaceTaken(Exception):
    """Something mbuild did not write (no marker for this key) is at an in-place output's URL."""


def split(url: str) -> tuple[str, str]:
    """(scheme: "gs" | "s3" | "", root: bucket/prefix or the local path) of an in-place URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", url
    scheme = scheme.lower()
    if scheme == "file":
        return "", rest
    if scheme not in BUCKET_SCHEMES:
        raise ValueError(f"in-place output {url!r}: only gs://, s3:// and local directories are supported")
    return ("gs" if BUCKET_SCHEMES[scheme] == "gcs" else "s3"), rest.strip("/")


class InPlaceStore:
    """One process's access to the in-place prefix (fsspec filesystems made on first use)."""

    def __init__(self, config: PlaceConfig):
        self.config = config
        self._fs: dict[str, Any] = {}

    def url_for(self, label: str, key: str) -> str:
        """`{prefix}/{package}/{name}-{key16}` for the target `//package:name` and action `key`."""
        package, _, name = label[2:].partition(":")
        rel = f"{package}/{name}-{key[:16]}" if package else f"{name}-{key[:16]}"
        return f"{self.config.prefix.rstrip('/')}/{rel}"

    def filesystem(self, url: str) -> Any:
        """The fsspec filesystem for `url` (the prefix's options apply to the prefix's scheme)."""
        scheme, _ = split(url)
        fs = self._fs.get(scheme)
        if fs is None:
            import fsspec

            own, _ = split(self.config.prefix)
            options = dict(self.config.storage_options) if own == scheme else {}
            if scheme == "gs":
                from mbuild.stores.remote.backends import gcs

                gcs.load()  # the bucket-type probe off, before gcsfs is imported
                fs = fsspec.filesystem("gcs", skip_instance_cache=True, **options)
            elif scheme == "s3":
                fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
            else:
                fs = fsspec.filesystem("file")
            self._fs[scheme] = fs
        return fs

    # --- listing and checking --------------------------------------------------------------------

    def list(self, url: str) -> tuple[Entry, ...]:
        """The manifest entries under `url` now: one batched listing (local: each file hashed)."""
        scheme, root = split(url)
        if not scheme:
            return list_local(root)
        return list_bucket(self.filesystem(url), scheme, root)

    def difference(self, place: Place) -> str | None:
        """Why `place` is not what is at its URL now (the first path that differs, or the listing's
        failure), or None when the listing matches the recorded manifest exactly."""
        try:
            listed = self.list(place.url)
        except (ListingError, OSError, ValueError) as exc:
            return f"cannot list it: {exc}"
        except Exception as exc:  # a client error of gcsfs/s3fs (HttpError, ClientError): cannot vouch for it
            return f"cannot list it: {type(exc).__name__}: {exc}"
        where = first_difference(place.entries, listed)
        return None if where is None else f"{where} differs from what was published"

    # --- before and after an attempt ------------------------------------------------------------

    def prepare(self, url: str, key: str, label: str, keep: bool) -> str:
        """Make `url` ready for an attempt of `key` (call it under the action's lease): "new" (nothing
        was there), "cleared" (an earlier attempt's leftovers removed) or "resumed" (kept: `keep`).
        InPlaceTaken if something there is not mbuild's for this key."""
        scheme, root = split(url)
        marker = orjson.dumps({"by": "mbuild", "key": key, "label": label})
        if not scheme:
            return self._prepare_local(root, key, keep, marker)
        fs = self.filesystem(url)
        fs.invalidate_cache(root)
        names = [n for n in fs.find(root) if n.rstrip("/") != root]
        if not names:
            fs.pipe(f"{root}/{MARKER}", marker)
            return "new"
        if not self._ours(lambda: fs.cat(f"{root}/{MARKER}"), key):
            raise InPlaceTaken(_taken(url, len(names)))
        if keep:
            return "resumed"
        fs.rm(names)
        fs.invalidate_cache(root)
        fs.pipe(f"{root}/{MARKER}", marker)
        return "cleared"

    def _prepare_local(self, root: str, key: str, keep: bool, marker: bytes) -> str:
        outcome = "new"
        if os.path.isdir(root) and os.listdir(root):
            if not self._ours(lambda: open(os.path.join(root, MARKER), "rb").read(), key):
                raise InPlaceTaken(_taken(root, len(os.listdir(root))))
            if keep:
                return "resumed"
            aside = f"{root}.mbuild-clearing-{uuid.uuid4().hex[:8]}"
            os.rename(root, aside)  # out of sight at once; then removed
            shutil.rmtree(aside, ignore_errors=True)
            outcome = "cleared"
        os.makedirs(root, exist_ok=True)
        _write_local(os.path.join(root, MARKER), marker)
        return outcome

    @staticmethod
    def _ours(read, key: str) -> bool:
        try:
            raw = orjson.loads(read())
        except (OSError, orjson.JSONDecodeError, ValueError):
            return False
        except Exception:  # the store's own "not found" and client errors
            return False
        return isinstance(raw, dict) and raw.get("by") == "mbuild" and raw.get("key") == key

    def write_provenance(self, url: str, record: dict) -> None:
        """The provenance record next to the data (after publish; never part of the manifest)."""
        data = orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str)
        scheme, root = split(url)
        if not scheme:
            _write_local(os.path.join(root, PROVENANCE), data)
        else:
            self.filesystem(url).pipe(f"{root}/{PROVENANCE}", data)


def _taken(url: str, count: int) -> str:
    return (
        f"{url} holds {count} object(s) mbuild did not write for this action (no {MARKER} naming its key); "
        "mbuild never deletes what it did not create: move them away, or set another [outputs].prefix"
    )


def _write_local(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".mbuild-tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
