"""This process's open stores, in one object: the local CAS and database of each cache directory,
the remote-cache client of each configuration (made anew for each build), the lease stores, and
each worker thread's scratch area.

A process makes one (`Services()`) at its entry point (the build, a worker process, a fray job)
and passes it down; `process_services()` is that one instance, made on first use, for entry
points that cannot be handed one (an action run on a thread of the local fray backend). Opening
is thread-safe: LMDB refuses a second open of one database in a process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild.action.scratch import Scratch
from mbuild.action.spec import ExecConfig
from mbuild.events import TransferProgress
from mbuild.leases import LeaseStore, LmdbObject, default_margin, open_leases
from mbuild.leases.guarded import GuardedLease
from mbuild.stores.cas import LocalCAS
from mbuild.stores.inplace.store import InPlaceStore
from mbuild.stores.localdb import LocalDB

if TYPE_CHECKING:  # the remote store (and asyncio) load only when a remote cache is configured
    from mbuild.action.progress import Sink
    from mbuild.stores.remote import RemoteCache


class Services:
    """Opened once per process and shared by its threads; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._stores: dict[str, tuple[LocalCAS, LocalDB]] = {}
        self._remotes: dict[str, tuple[str, RemoteCache]] = {}  # remote config -> (build, its client)
        self._leases: dict[tuple, tuple[str, LeaseStore]] = {}  # -> (build, store)
        self._scratch: dict[tuple[str, int], Scratch] = {}
        self._places: dict[str, InPlaceStore] = {}
        self._warnings: list[str] = []  # from remote-cache clients, handed to the driver with outcomes
        # Where actions run by this process send ctx.progress and the like (action/progress.py): a
        # worker's driver, or the scheduler itself for actions on its own threads; None: nobody.
        self.reports: Sink | None = None

    def stores(self, cache_dir: str) -> tuple[LocalCAS, LocalDB]:
        """The local CAS and database of `cache_dir`."""
        stores = self._stores.get(cache_dir)
        if stores is None:
            with self._lock:
                stores = self._stores.get(cache_dir)
                if stores is None:
                    root = Path(cache_dir)
                    stores = self._stores[cache_dir] = (LocalCAS(root), LocalDB(root / "db"))
        return stores

    def remote(self, config: ExecConfig) -> RemoteCache | None:
        """The client of the remote cache (one per configuration, made anew for each build), or None.
        With a build id, its breaker, refused uploads and corrupt objects are shared with the build's
        other processes through the local cache's database."""
        if config.remote is None:
            return None
        key = repr(config.remote)
        found = self._remotes.get(key)
        if found is None or found[0] != config.build:
            from mbuild.stores.remote import RemoteCache

            with self._lock:
                found = self._remotes.get(key)
                if found is None or found[0] != config.build:
                    health = self.stores(config.cache_dir)[1].remote_health(config.remote.url, config.build) if config.build else None
                    client = RemoteCache(config.remote, on_warning=self._warnings.append, on_progress=TransferProgress(), health=health)
                    found = self._remotes[key] = (config.build, client)
        return found[1]

    def leases(self, config: ExecConfig, local: bool = False) -> LeaseStore:
        """The lease store for `config`: the remote store's when one is configured (unless `local`),
        else records in the local cache's database. Remote lease objects go through the remote
        cache's client (its filesystem, its breaker: see GuardedLease)."""
        remote_leases = bool(config.leases) and not local
        key = (config.leases if remote_leases else "", config.cache_dir, config.lease_ttl, repr(sorted(config.storage_options.items())))
        build = config.build if remote_leases else ""  # remote ones go through the build's client
        found = self._leases.get(key)
        if found is not None and found[0] == build:
            return found[1]
        with self._lock:
            found = self._leases.get(key)
            if found is not None and found[0] == build:
                return found[1]
            if remote_leases:
                remote = self.remote(config)
                timeout = config.remote.timeout if config.remote else None
                store = open_leases(
                    config.leases, ttl=config.lease_ttl, storage_options=config.storage_options, timeout=timeout,
                    fs=remote.filesystem() if remote is not None else None,
                    guard=(lambda obj: GuardedLease(obj, remote)) if remote is not None else None,
                )
            else:
                _, db = self.stores(config.cache_dir)
                store = LeaseStore(
                    f"{config.cache_dir}#leases", lambda key: LmdbObject(db, key), ttl=config.lease_ttl,
                    margin=default_margin(config.lease_ttl), pid_check=True,
                )
            self._leases[key] = (build, store)
        return store

    def places(self, config: ExecConfig) -> InPlaceStore | None:
        """The in-place output store of `config` (one per configuration), or None without one."""
        if config.places is None:
            return None
        key = repr(config.places)
        with self._lock:
            store = self._places.get(key)
            if store is None:
                store = self._places[key] = InPlaceStore(config.places)
        return store

    def scratch(self, cache: Path) -> Scratch:
        """This thread's scratch area under `cache`."""
        key = (str(cache), threading.get_native_id())
        scratch = self._scratch.get(key)
        if scratch is None:
            scratch = self._scratch[key] = Scratch(cache)
        return scratch

    def take_warnings(self) -> list[str]:
        """The remote-cache warnings heard since the last call."""
        with self._lock:
            taken, self._warnings[:] = list(self._warnings), []
        return taken


_process: Services | None = None
_process_lock = threading.Lock()


def process_services() -> Services:
    """This process's Services, made on first use."""
    global _process
    if _process is None:
        with _process_lock:
            if _process is None:
                _process = Services()
    return _process
