"""A worker's reusable working area, one per process and thread."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path


class Scratch:
    """A worker's reusable working area: `out/` (kept empty between actions), `tmp/`, and a log file.

    Creating and removing directories costs milliseconds on some file systems, so a worker makes
    them once and reuses them; a finished `out/` is renamed into the tree cache and replaced.
    """

    def __init__(self, cache: Path):
        self.root = cache / "exec" / f"{os.getpid()}.{threading.get_native_id()}"
        self.out = self.root / "out"
        self.tmp = self.root / "tmp"
        self.log = self.root / "log"
        for d in (self.out, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    def reset(self) -> None:
        """Make `out/` and `tmp/` empty again (cheap when the action left nothing behind)."""
        for d in (self.out, self.tmp):
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                d.mkdir(parents=True)
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
