"""Per-thread output for jobs that run on threads of the driver (fray's LocalClient).

Such a job cannot redirect file descriptors: they are the driver's. Instead, while a job's thread
is registered, its writes to sys.stdout / sys.stderr go to the job's own log file. Other threads
write where they always did.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class _ThreadRouter:
    """Stands in for sys.stdout / sys.stderr: writes of registered threads go to their own file."""

    def __init__(self, base: Any):
        self._base = base
        self.routes: dict[int, Any] = {}

    def write(self, text: str) -> int:
        f = self.routes.get(threading.get_ident())
        if f is None:
            return self._base.write(text)
        f.write(text)
        return len(text)

    def flush(self) -> None:
        f = self.routes.get(threading.get_ident())
        (self._base if f is None else f).flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


_route_lock = threading.Lock()
_route_users = 0
_routers: tuple[_ThreadRouter, _ThreadRouter] | None = None


@contextmanager
def thread_output_to(path: str):
    """Send this thread's Python-level output to `path` (truncated first) while the block runs."""
    global _route_users, _routers
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w", buffering=1, encoding="utf-8", errors="replace")
    ident = threading.get_ident()
    with _route_lock:
        if _route_users == 0:
            _routers = (_ThreadRouter(sys.stdout), _ThreadRouter(sys.stderr))
            sys.stdout, sys.stderr = _routers
        _route_users += 1
        for r in _routers:
            r.routes[ident] = f
    try:
        yield f
    finally:
        with _route_lock:
            for r in _routers:
                r.routes.pop(ident, None)
            _route_users -= 1
            if _route_users == 0:
                out, err = _routers
                if sys.stdout is out:
                    sys.stdout = out._base
                if sys.stderr is err:
                    sys.stderr = err._base
                _routers = None
        f.close()
