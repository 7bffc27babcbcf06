"""The no-op record (schedule/noop.py): a build whose inputs did not change answers from the last
build without loading anything, and any change a build depends on sends it the ordinary way."""

from __future__ import annotations

import json
import os

import pytest

from conftest import ran

# Stamps recorded this instant may be trusted at once (the racy window is for coarse clocks).
FRESH = {"MBUILD_RACY_WINDOW_MS": "0"}


@pytest.fixture
def noop_ws(ws, tmp_path):
    """A workspace whose BUILD file notes each evaluation in a file outside the workspace."""
    loads = tmp_path / "loads.txt"
    ws.write("p/src.txt", "one\n")
    ws.build_file(
        "p",
        f"""
        import os
        with open({str(loads)!r}, "a") as f:
            f.write("loaded\\n")
        MODE = os.environ.get("NOOP_MODE", "plain")
        genrule(name="a", srcs=["src.txt"], outs=["a.txt"], cmd="cat $(SRCS) > $@; echo " + MODE + " >> $@")
        step(name="b", deps=[":a"], text="b")
        """,
    )
    ws.loads = loads
    ws.events = tmp_path / "events"
    ws.events.mkdir()
    return ws


def build(ws, *extra, env=None):
    events = ws.events / f"{len(list(ws.events.iterdir()))}.jsonl"
    proc = ws.mbuild("build", "--events", str(events), *extra, "//p:all", env={**FRESH, **(env or {})}, check=True)
    records = [json.loads(line) for line in events.read_text().splitlines()]
    return records, proc


def loads(ws) -> int:
    return len(ws.loads.read_text().splitlines())


def test_a_no_op_answers_without_loading(noop_ws):
    ws = noop_ws
    first, _ = build(ws)
    assert ran(first) == {"//p:a", "//p:b"}
    build(ws)  # every action a hit: this build records the no-op answer
    before = loads(ws)
    records, proc = build(ws)
    assert loads(ws) == before  # the BUILD file was not evaluated
    assert ran(records) == set() and records[-1]["summary"]["cache_hits"] == 2
    assert "2 cache hits" in proc.stdout + proc.stderr
    assert (ws.root / "mbuild-out/p/a/a.txt").read_text() == "one\nplain\n"


@pytest.mark.parametrize(
    "change",
    ["source-same-size", "source-mtime-set-back", "build-file", "environment", "output-bytes", "record-gone", "new-package"],
)
def test_any_change_the_answer_depends_on_is_seen(noop_ws, change):
    ws = noop_ws
    build(ws)
    build(ws)
    env = None
    src = ws.root / "p/src.txt"
    out = ws.root / "mbuild-out/p/a/a.txt"
    if change == "source-same-size":
        src.write_text("two\n")
    elif change == "source-mtime-set-back":
        st = src.stat()
        src.write_text("six\n")
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only ctime tells
    elif change == "build-file":
        (ws.root / "p/BUILD.py").write_text((ws.root / "p/BUILD.py").read_text().replace('text="b"', 'text="b2"'))
    elif change == "environment":
        env = {"NOOP_MODE": "fancy"}
    elif change == "output-bytes":
        real = out.resolve()
        real.chmod(0o644)
        real.write_text("EVIL\n")
    elif change == "record-gone":
        import lmdb

        db = lmdb.open(str(ws.root / ".mbuild/cache/db"), max_dbs=16, map_size=1 << 30)
        with db.begin(write=True, db=db.open_db(b"ac")) as txn:
            for k in [k for k, _ in txn.cursor()]:
                txn.delete(k)
        db.close()
    elif change == "new-package":
        ws.build_file("q", 'genrule(name="c", outs=["c.txt"], cmd="echo c > $@")\n')
    before = loads(ws)
    records, proc = build(ws, env=env)
    # Only a source changed: the recorded graph is amended (schedule/amend.py), nothing is loaded;
    # anything else: the ordinary way, the BUILD file is evaluated.
    assert loads(ws) == before + (0 if change.startswith("source") else 1)
    expected = {
        "source-same-size": {"//p:a", "//p:b"},
        "source-mtime-set-back": {"//p:a", "//p:b"},
        "build-file": {"//p:b"},
        "environment": {"//p:a", "//p:b"},
        "output-bytes": {"//p:a"},  # the blob shares the inode: damaged too, so it reruns (b keeps its hit)
        "record-gone": {"//p:a", "//p:b"},
        "new-package": set(),  # //p:all does not name it, but the listing changed: loaded again
    }[change]
    assert ran(records) == expected
    text = out.read_text()
    assert text == {"source-same-size": "two\nplain\n", "source-mtime-set-back": "six\nplain\n", "environment": "one\nfancy\n"}.get(change, "one\nplain\n")


def test_a_requested_pattern_that_changes_meaning_is_another_request(noop_ws):
    ws = noop_ws
    build(ws)
    build(ws)
    before = loads(ws)
    proc = ws.mbuild("build", "//p:a", env=FRESH, check=True)
    assert loads(ws) == before + 1 and "1 cache hits" in proc.stdout + proc.stderr


def test_an_amended_build_runs_functions_from_the_workspaces_own_modules(ws, tmp_path):
    """The amended answer loads no BUILD file, yet actions still import the workspace's modules
    (a py_function's `fn`, custom rules): the workspace root is on the workers' path as when loading."""
    loads = tmp_path / "loads.txt"
    ws.write("steps_here.py", "def upper(config, inputs, out):\n    (out / 'u.txt').write_text(inputs['src'].read_text().upper())\n")
    ws.write("p/src.txt", "one\n")
    ws.build_file(
        "p",
        f"""
        with open({str(loads)!r}, "a") as f:
            f.write("loaded\\n")
        py_function(name="u", fn="steps_here:upper", inputs={{"src": "src.txt"}}, outs=["u.txt"])
        """,
    )
    here = ws.root / "p"  # run from the package: the interpreter's own path entry is not the root
    for _ in range(2):
        ws.mbuild("build", "//p:u", env=FRESH, check=True, cwd=here)
    before = len(loads.read_text().splitlines())
    (ws.root / "p/src.txt").write_text("two\n")
    ws.mbuild("build", "//p:u", env=FRESH, check=True, cwd=here)
    assert len(loads.read_text().splitlines()) == before  # amended: no BUILD file evaluated
    assert (ws.root / "mbuild-out/p/u/u.txt").read_text() == "TWO\n"
