"""The one fray integration: making clients, stopping them at exit, and the caller's view a job
restores. The executor (runners/fray) and the `remote()` step (steps/remote.py) both use it.

- `open_cluster`: a connection to an Iris cluster. For "iris-local" it is a whole cluster started
  in this process. Its owner closes it. An owned cluster still open at interpreter exit is shut
  down then, because its threads would otherwise keep the interpreter from exiting.
- `shared_client`: one fray client per (backend, controller) for the whole process (the `remote()`
  step); `shutdown_shared_clients` stops them.
- `enter_caller_view`: inside a job, restore the driver's `sys.path` and working directory, so
  modules of the workspace import as they do in the driver.

Importing this module does not import fray or iris.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

BACKENDS = ("local", "iris", "iris-local")


@dataclass(eq=False)
class Cluster:
    """An Iris connection: `iris` (iris's IrisClient) and `fray` (fray's client over it).

    `owned`: the cluster itself was started here (iris-local), and dies with close().
    """

    iris: Any
    fray: Any
    owned: bool = False
    closed: bool = field(default=False, repr=False)

    def close(self, wait: bool = False) -> None:
        """Disconnect; an owned cluster is shut down (its running tasks are killed)."""
        if self.closed:
            return
        self.closed = True
        _live.discard(self)
        try:
            self.iris.shutdown(wait=wait)
        except Exception:
            pass


def open_cluster(backend: str, controller: str | None = None, max_workers: int | None = None) -> Cluster:
    """Connect to the Iris cluster at `controller` ("iris"), or start one here ("iris-local",
    with at most `max_workers` workers). Raises RuntimeError if Iris is not installed."""
    try:
        from fray.iris_backend import FrayIrisClient
        from iris.client.client import IrisClient, LocalClientConfig
        from iris.client.local_client import make_local_client
    except ImportError as exc:
        raise RuntimeError(f"fray backend {backend!r} needs the Iris cluster support: install mbuild[cluster] ({exc})") from exc
    if backend == "iris-local":
        ic = make_local_client(LocalClientConfig(max_workers=max_workers) if max_workers else None)
        cluster = Cluster(ic, FrayIrisClient.from_iris_client(ic), owned=True)
        _live.add(cluster)
        _install_exit_hook()
        return cluster
    if backend != "iris" or not controller:
        raise ValueError(f"open_cluster needs backend 'iris' with a controller, or 'iris-local' (got {backend!r})")
    ic = IrisClient.remote(controller if "://" in controller else f"http://{controller}")
    return Cluster(ic, FrayIrisClient.from_iris_client(ic))


def local_client(max_threads: int) -> Any:
    """fray's LocalClient: jobs are threads of this process."""
    from fray.local_backend import LocalClient

    return LocalClient(max_threads=max_threads)


def is_in_process(client: Any) -> bool:
    """Whether a fray client runs its jobs as threads of this process (fray's LocalClient)."""
    from fray.local_backend import LocalClient

    return isinstance(client, LocalClient)


# --- clients shared by the whole process (the remote() step) ----------------------------------

_shared_lock = threading.Lock()
_shared: dict[tuple[str, str | None], Any] = {}
_shared_clusters: list[Cluster] = []


def shared_client(backend: str, controller: str | None = None) -> Any:
    """This process's fray client for a backend: "local", "iris" (at `controller`), "iris-local"
    (one cluster started on first use), or "current" (fray's `current_client()`)."""
    if backend == "current":
        from fray.current_client import current_client

        return current_client()
    key = (backend, controller if backend == "iris" else None)
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            if backend == "local":
                client = local_client(32)
            else:
                cluster = open_cluster(backend, controller)
                _shared_clusters.append(cluster)
                client = cluster.fray
            _shared[key] = client
        return client


def shutdown_shared_clients() -> None:
    """Stop the clients `shared_client` made (an iris-local cluster among them)."""
    with _shared_lock:
        clusters, _shared_clusters[:] = list(_shared_clusters), []
        fray_of_clusters = {id(c.fray) for c in clusters}
        others = [c for c in _shared.values() if id(c) not in fray_of_clusters]
        _shared.clear()
    for cluster in clusters:
        cluster.close(wait=cluster.owned)
    for client in others:
        try:
            client.shutdown(wait=False)
        except Exception:
            pass


# --- nothing outlives the interpreter's last chance -----------------------------------------------

_live: set[Cluster] = set()  # strong references: an unreachable owner's cluster still needs stopping
_hook_lock = threading.Lock()
_hooked = False


def _install_exit_hook() -> None:
    """Shut owned clusters (and the shared clients) down at interpreter exit, if nobody did.

    Registered with threading's pre-join hook when there is one: a live cluster's threads would
    otherwise keep the interpreter from exiting at all.
    """
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        _hooked = True
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_at_exit)
            return
        except RuntimeError:
            pass
    import atexit

    atexit.register(_at_exit)


def _at_exit() -> None:
    with quiet_interpreter_exit():
        shutdown_shared_clients()
        for cluster in list(_live):
            cluster.close()


@contextmanager
def quiet_interpreter_exit():
    """Mute what a local cluster's threads say when it is stopped at interpreter exit.

    By then no new thread can start, so its servers' shutdown paths fail loudly (harmlessly: the
    cluster does stop). Logging and the thread excepthook are silenced while it stops.
    """
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: None
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        threading.excepthook = previous_hook


# --- inside a job -------------------------------------------------------------------------------


def enter_caller_view(sys_path: list[str] | None, cwd: str | None) -> None:
    """Put the caller's `sys.path` first and enter its working directory (if it exists here).

    `sys_path` travels inside the job's pickled callable, where a local cluster's rewriting of
    /tmp/... environment values cannot touch it.
    """
    if sys_path is not None:
        sys.path[:] = list(sys_path) + [p for p in sys.path if p not in sys_path]
        importlib.invalidate_caches()
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
