"""Adopting outputs Marin already produced: a directory whose `.executor_status` says SUCCESS (the
plain word, or the last JSON event's "status") is taken as this step's output rather than
recomputed, when the runner is asked to (`StepRunner(adopt_marin=True)`, `--adopt_marin`)."""

from __future__ import annotations

import json
import os

from mbuild.steps.output_slot import OutputSlot, who

STATUS = ".executor_status"


def marin_succeeded(path: str) -> bool:
    """`path` holds a step Marin finished."""
    slot = OutputSlot(path)
    data = slot.read(STATUS)
    if data is None:
        return False
    text = data.decode("utf-8", "replace").strip()
    if text == "SUCCESS":
        return True
    for line in reversed(text.splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        return isinstance(event, dict) and event.get("status") == "SUCCESS"
    return False


def adopt(path: str) -> bool:
    """Mark a Marin-finished `path` done for mbuild (its success marker, create-if-absent); False
    when there is nothing to adopt. Nothing of Marin's is changed."""
    slot = OutputSlot(os.fspath(path))
    if slot.done() or not marin_succeeded(path):
        return False
    slot.publish({"format": 1, **who(), "seconds": 0.0, "has_value": False, "value": None, "adopted": "marin"})
    return True
