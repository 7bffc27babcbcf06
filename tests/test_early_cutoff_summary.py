"""The build summary says when early cutoff stopped a rebuild: how many actions a dependency's
rerun to identical outputs left as cache hits, and which reruns they were."""

from __future__ import annotations

import json

from conftest import ran, statuses


def chain(ws, log: str) -> None:
    # `log` is in x's key but not in its output: changing it reruns x to the same bytes.
    ws.build_file("p", f"""
        step(name="x", text="1", log={log!r})
        step(name="y", deps=[":x"])
        step(name="z", deps=[":y"])
        step(name="w", text="other")
    """)


def summary(events: list[dict]) -> dict:
    return next(e["summary"] for e in events if "summary" in e)


def test_the_summary_counts_what_early_cutoff_skipped(ws):
    chain(ws, str(ws.root / "a.log"))
    first = ws.build("//p:all")
    assert summary(first)["early_cutoff"] == 0 and "early cutoff" not in ws.last.stderr
    chain(ws, str(ws.root / "b.log"))
    events = ws.build("//p:all")
    assert ran(events) == {"//p:x"} and statuses(events)["//p:z"] == "cache_hit"
    assert summary(events)["early_cutoff"] == 2  # y and z; w is a hit that nothing upstream touched
    assert "  2 actions skipped by early cutoff: //p:x reran to identical outputs\n" in ws.last.stderr


def test_no_cutoff_when_the_rerun_changes_its_outputs(ws):
    chain(ws, "")
    ws.build("//p:z")
    ws.build_file("p", 'step(name="x", text="2")\nstep(name="y", deps=[":x"])\nstep(name="z", deps=[":y"])\n')
    events = ws.build("//p:z")
    assert ran(events) == {"//p:x", "//p:y", "//p:z"}
    assert summary(events)["early_cutoff"] == 0 and "early cutoff" not in ws.last.stderr


def test_a_noop_build_reports_no_cutoff(ws):
    chain(ws, "")
    ws.build("//p:z")
    events = ws.build("//p:z")
    assert ran(events) == set() and summary(events)["early_cutoff"] == 0
    assert json.dumps(summary(events))  # the record stays JSON
