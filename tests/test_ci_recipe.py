"""The CI recipe (docs/ci.md, docs/ci/build.sh, docs/ci/github-actions.yml) against the GCS
emulator: the main branch uploads, a pull request gets remote hits and writes nothing, a rotated
salt misses. The script run here is the one the workflow and the docs call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ran
from test_remote_build import remote_toml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docs" / "ci" / "build.sh"
CHAIN = 'step(name="a", text="A")\nstep(name="b", text="B", deps=[":a"])\nstep(name="c", text="C", deps=[":b"])\n'


def ci_build(clone: Path, mode: str, *patterns: str) -> tuple[list[dict], subprocess.CompletedProcess]:
    """Run docs/ci/build.sh in a clone as CI would, with this interpreter's mbuild."""
    events = clone / f"ci-events-{len(list(clone.glob('ci-events-*')))}.jsonl"
    env = {**os.environ, "MBUILD": f"{sys.executable} -m mbuild.front.cli", "MBUILD_EVENTS": str(events)}
    proc = subprocess.run(["bash", str(SCRIPT), mode, *patterns], cwd=clone, env=env, capture_output=True, text=True, timeout=120)
    records = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []
    return records, proc


def set_salt(clone: Path, salt: str) -> None:
    path = clone / "WORKSPACE.toml"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(f"salt = {json.dumps(salt)}" if line.startswith("salt =") else line for line in lines) + "\n")


def test_main_uploads_pull_requests_hit_read_only_and_a_new_salt_misses(ws, tmp_path, gcs_server):
    import fsspec

    root = gcs_server.make_bucket(f"mbuild-ci-recipe-{os.getpid() % 100000}")
    url = f"{root}/mbuild-cache"
    fs = fsspec.filesystem("gs", **gcs_server.storage_options)

    def objects() -> list[str]:
        return sorted(fs.find(url, refresh=True))

    ws.build_file("p", CHAIN)
    # The committed WORKSPACE.toml, as docs/ci.md has it: a salt, and a read-only [remote] by
    # default (the emulator's storage options stand in for Application Default Credentials).
    ws.write("WORKSPACE.toml", '[workspace]\nsalt = "2026-12"\n\n' + remote_toml(url, gcs_server.storage_options, upload=False))

    def fresh_clone(name: str) -> Path:
        clone = tmp_path / name / "checkout"
        shutil.copytree(ws.root, clone, ignore=shutil.ignore_patterns(".mbuild", "mbuild-out", "ci-events-*"))
        return clone

    main = fresh_clone("main")
    events, proc = ci_build(main, "upload", "//p:c")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ran(events) == {"//p:a", "//p:b", "//p:c"}
    assert events[-1]["summary"]["uploads"] == 3
    after_main = objects()
    assert sum("/ac/" in o for o in after_main) == 3 and any("/cas/" in o for o in after_main)

    pr = fresh_clone("pull-request")  # a fresh runner: empty local cache
    events, proc = ci_build(pr, "read-only", "//p:c")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ran(events) == set()
    assert {e["source"] for e in events[:-1]} == {"remote"}
    summary = events[-1]["summary"]
    assert summary["remote_hits"] == 3 and summary["uploads"] == 0 and summary["bytes_up"] == 0
    assert (pr / "mbuild-out/p/c/out.txt").read_text() == "C+B+A"
    assert objects() == after_main  # not one object written: no record, blob, lease or lock

    fork = fresh_clone("fork")  # no credentials: builds without the remote, and touches nothing
    events, proc = ci_build(fork, "local", "//p:c")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ran(events) == {"//p:a", "//p:b", "//p:c"} and events[-1]["summary"]["remote_hits"] == 0
    assert objects() == after_main

    set_salt(pr, "2027-01")  # rotated: every earlier entry is disowned
    events, proc = ci_build(pr, "read-only", "//p:c")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ran(events) == {"//p:a", "//p:b", "//p:c"}
    assert events[-1]["summary"]["remote_hits"] == 0 and events[-1]["summary"]["uploads"] == 0
    assert objects() == after_main


def test_a_bad_mode_or_no_pattern_is_one_error_line(tmp_path):
    for args, says in ((["deploy", "//..."], "must be upload, read-only or local"), (["upload"], "name what to build")):
        proc = subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_the_workflow_and_the_docs_call_the_same_script():
    yaml = pytest.importorskip("yaml")  # PyYAML arrives with the locked dependencies; not added for this
    workflow = yaml.safe_load((REPO / "docs/ci/github-actions.yml").read_text())
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert set(on) == {"push", "pull_request"} and on["push"]["branches"] == ["main"]
    steps = workflow["jobs"]["build"]["steps"]
    runs = {step["run"].split()[1]: step["if"] for step in steps if step.get("run", "").startswith("docs/ci/build.sh")}
    assert runs == {"upload": "env.IS_MAIN == 'true'", "read-only": "env.IS_MAIN != 'true' && env.IS_FORK != 'true'", "local": "env.IS_FORK == 'true'"}
    assert any(step.get("uses", "").startswith("google-github-actions/auth@") for step in steps)
    doc = (REPO / "docs/ci.md").read_text()
    for mode in runs:
        assert f"docs/ci/build.sh {mode} " in doc
    lifecycle = json.loads((REPO / "docs/ci/lifecycle.json").read_text())
    prefixes = [p for rule in lifecycle["lifecycle"]["rule"] for p in rule["condition"]["matchesPrefix"]]
    assert all(p.startswith("mbuild-cache/") for p in prefixes) and "gs://team-bucket/mbuild-cache" in doc
