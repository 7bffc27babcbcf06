"""Reading and writing a stage's data when it is in place (`in_place=True`, see BUILD.md): the same
library code runs on local directories either way.

A local [outputs].prefix needs nothing: the in-place output is a directory, and dependents get its
`Path`. In a bucket, a stage writes to a staging directory uploaded at the end, and a dependency
given as a URL is copied into ctx.tmp first (the library code reads local files).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from mbuild import ActionContext


def readable(ctx: ActionContext, value: Path | str) -> Path:
    """A dependency's output as a local directory: itself, or a copy in ctx.tmp of one in a bucket."""
    if not isinstance(value, str):
        return value
    fs = ctx.fs(value)
    root = value.split("://", 1)[1].rstrip("/")
    dest = ctx.tmp / "inputs" / hashlib.sha256(value.encode()).hexdigest()[:16]
    for name in fs.find(root):
        rel = name.split("://", 1)[-1][len(root) + 1:]
        if rel.startswith(".mbuild-"):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(name, str(dest / rel))
    return dest


@contextlib.contextmanager
def writable(ctx: ActionContext) -> Iterator[Path]:
    """The directory the stage writes its output in: ctx.out, the local in-place directory, or a
    staging directory uploaded to the in-place URL when the stage succeeds."""
    if ctx.out_url is None:
        yield ctx.out
        return
    if "://" not in ctx.out_url:
        yield Path(ctx.out_url)
        return
    staging = ctx.tmp / "in-place-staging"
    staging.mkdir(parents=True, exist_ok=True)
    yield staging
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        ctx.out_fs.put_file(str(path), f"{ctx.out_url}/{path.relative_to(staging).as_posix()}")
