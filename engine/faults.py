"""Fault injection for crash tests: kill the builder at a named point of an action's life.

`MBUILD_FAULTS="hashing=0.2,writing-result=0.1"` makes each named point SIGKILL the builder (the
`mbuild` process and, through PR_SET_PDEATHSIG, its workers) with that probability. Points:
acquired (lease taken, nothing run), running (before the rule is called), hashing (outputs
written, not yet stored), writing-blobs (some blobs stored), writing-result (all blobs stored,
result not yet written), published (just after). Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import random
import signal

_SPEC = os.environ.get("MBUILD_FAULTS", "")
_POINTS: dict[str, float] = {}
for _item in filter(None, _SPEC.split(",")):
    _name, _, _p = _item.partition("=")
    _POINTS[_name.strip()] = float(_p or 1.0)


def point(name: str) -> None:
    """Maybe crash here (only when MBUILD_FAULTS names this point)."""
    p = _POINTS.get(name)
    if p is not None and random.random() < p:
        builder = int(os.environ.get("MBUILD_BUILDER_PID", os.getpid()))
        os.kill(builder, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
