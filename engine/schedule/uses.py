"""Recording, at the end of a build, which results it used (stores/gc/usage.py): what `mbuild gc`
orders by and keeps."""

from __future__ import annotations

from mbuild.schedule.status import BuildResult, State
from mbuild.stores.gc.usage import record_uses
from mbuild.stores.localdb import LocalDB


def record_used(db: LocalDB, result: BuildResult, at_ns: int, only_if_ran: bool = False) -> None:
    """One write transaction naming every action the build found or ran (nothing with
    `only_if_ran` when it ran none: an amended no-op answer used only what its record names)."""
    used = [st.key for st in result.statuses.values() if st.key is not None and st.state in (State.HIT, State.RAN)]
    if only_if_ran and not any(st.state is State.RAN for st in result.statuses.values()):
        return
    record_uses(db, used, at_ns)
