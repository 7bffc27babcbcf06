"""One batched listing of an in-place output as manifest entries, with the checksum each store keeps:

- gs://  `crc32c` (CRC-32C, always kept) and `md5Hash` (MD5, absent for composite objects), both
         base64 as GCS gives them; one `objects.list` walk (fsspec `find(detail=True)`).
- s3://  the ETag when it is the MD5 of the content (a single-part upload); a multipart upload's
         ETag (`<md5 of the parts' md5s>-<parts>`) is kept as `etag-mpu`: it changes with the bytes
         and with the part size, so identical bytes uploaded in other parts read as a change.
- local  xxh3-128 of each file, computed here (there is no store to keep one): the one backend
         whose listing reads the bytes, on the local disk.

No object's bytes are downloaded from a bucket. The names mbuild writes itself (manifest.RESERVED)
are left out.
"""

from __future__ import annotations

import os
from typing import Any

from mbuild.digests import digest_file
from mbuild.stores.inplace.manifest import RESERVED, Entry, check_checksum, normalise


class ListingError(Exception):
    """An object under an in-place output that no manifest can describe (no checksum, a special file)."""


def gcs_checksum(info: dict) -> str:
    parts = []
    if info.get("crc32c"):
        parts.append(f"crc32c={info['crc32c']}")
    if info.get("md5Hash"):
        parts.append(f"md5={info['md5Hash']}")
    if not parts:
        raise ListingError(f"{info.get('name')}: GCS keeps no checksum for it")
    return ",".join(parts)


def s3_checksum(info: dict) -> str:
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if not etag:
        raise ListingError(f"{info.get('name')}: S3 returned no ETag for it")
    return f"etag-mpu={etag}" if "-" in etag else f"etag={etag}"


CHECKSUMS = {"gs": gcs_checksum, "s3": s3_checksum}


def list_bucket(fs: Any, scheme: str, root: str) -> tuple[Entry, ...]:
    """The entries under `root` (bucket/prefix, no scheme), from one find(detail=True)."""
    fs.invalidate_cache(root)  # a listing must see the store now, never fsspec's memory of it
    found = fs.find(root, detail=True)
    checksum = CHECKSUMS[scheme]
    base = root.rstrip("/") + "/"
    entries = []
    for name, info in found.items():
        name = name.split("://", 1)[-1]
        if not name.startswith(base) or info.get("type") == "directory" or name.endswith("/"):
            continue
        rel = name[len(base):]
        if rel in RESERVED:
            continue
        entries.append(Entry(rel, int(info["size"]), check_checksum(checksum(info))))
    return normalise(entries)


def list_local(root: str) -> tuple[Entry, ...]:
    """The files under the local directory `root`, each hashed (xxh3-128); () if it does not exist.
    A symbolic link or special file is a ListingError: an in-place output holds plain files."""
    entries = []
    if not os.path.isdir(root):
        return ()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise ListingError(f"{prefix}{name}: a symbolic link (in-place outputs hold plain files)")
        for name in filenames:
            rel = prefix + name
            if rel in RESERVED:
                continue
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                raise ListingError(f"{rel}: not a regular file (in-place outputs hold plain files)")
            digest, size = digest_file(full)
            entries.append(Entry(rel, size, f"xxh3={digest}"))
    return normalise(entries)
