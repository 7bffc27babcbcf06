"""End-to-end builds through the real CLI: what runs, what is cached, and what is never served."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lmdb

from conftest import ran, statuses


def chain(ws, log=""):
    ws.build_file(
        "p",
        f"""
        step(name="a", text="A", log={log!r})
        step(name="b", text="B", deps=[":a"], log={log!r})
        step(name="c", text="C", deps=[":b"], log={log!r})
        step(name="other", text="O", log={log!r})
        """,
    )


def test_second_build_runs_nothing(ws):
    chain(ws)
    first = ws.build("//p:c")
    assert ran(first) == {"//p:a", "//p:b", "//p:c"}
    second = ws.build("//p:c")
    assert ran(second) == set()
    assert set(statuses(second).values()) == {"cache_hit"}
    summary = second[-1]["summary"]
    assert summary["ran"] == 0 and summary["cache_hits"] == 3 and summary["exit_code"] == 0


def test_outputs_of_requested_targets_are_materialised(ws):
    chain(ws)
    ws.build("//p:c")
    out = ws.root / "mbuild-out" / "p" / "c" / "out.txt"
    assert out.read_text() == "C+B+A"
    assert "//p:c -> mbuild-out/p/c/" in ws.last.stdout


def test_config_change_reruns_only_what_depends_on_it(ws):
    chain(ws)
    ws.build("//p:all")
    ws.build_file("p", 'step(name="a", text="A")\nstep(name="b", text="B2", deps=[":a"])\nstep(name="c", text="C", deps=[":b"])\nstep(name="other", text="O")\n')
    assert ran(ws.build("//p:all")) == {"//p:b", "//p:c"}


def test_early_cutoff_when_a_rebuilt_dependency_is_unchanged(ws):
    ws.write("p/src.txt", "same")
    ws.build_file("p", 'genrule(name="gen", srcs=["src.txt"], outs=["g.txt"], cmd="cat $< > $@")\nstep(name="use", deps=[":gen"])\n')
    ws.build("//p:use")
    # A different command that produces the same bytes: gen reruns, use does not.
    ws.build_file("p", 'genrule(name="gen", srcs=["src.txt"], outs=["g.txt"], cmd="cat $< | cat > $@")\nstep(name="use", deps=[":gen"])\n')
    events = ws.build("//p:use")
    assert statuses(events) == {"//p:gen": "ran", "//p:use": "cache_hit"}


def test_source_file_change_reruns_dependents(ws):
    ws.write("p/src.txt", "one")
    ws.build_file("p", 'genrule(name="gen", srcs=["src.txt"], outs=["g.txt"], cmd="cat $< > $@")\n')
    ws.build("//p:gen")
    ws.write("p/src.txt", "two")
    assert ran(ws.build("//p:gen")) == {"//p:gen"}
    assert (ws.root / "mbuild-out/p/gen/g.txt").read_text() == "two"


def test_failure_is_reported_not_cached_and_dependents_are_skipped(ws):
    ws.build_file("p", 'fail(name="bad", msg="kaboom")\nstep(name="after", deps=[":bad"])\nstep(name="ok")\n')
    events = ws.build("//p:after", "//p:ok", extra=("--keep-going",), ok=False)
    st = statuses(events)
    assert st == {"//p:bad": "failed", "//p:after": "skipped", "//p:ok": "ran"}
    assert ws.last.returncode == 1
    assert "RuntimeError: kaboom" in ws.last.stderr
    bad = next(e for e in events if e["label"] == "//p:bad")
    assert "kaboom" in Path(bad["log"]).read_text()
    skipped = next(e for e in events if e["label"] == "//p:after")
    assert skipped["because"] == "//p:bad"
    # not cached: the next build runs it again
    again = ws.build("//p:bad", ok=False)
    assert statuses(again) == {"//p:bad": "failed"}


def test_without_keep_going_nothing_new_starts_after_a_failure(ws):
    ws.build_file("p", 'fail(name="bad")\n' + "".join(f'step(name="s{i}", text="{i}", deps=[":bad"] if {i} == 0 else [])\n' for i in range(6)))
    events = ws.build("//p:all", extra=("--jobs", "1"), ok=False)
    summary = events[-1]["summary"]
    assert ws.last.returncode == 1
    assert summary["failed"] == 1
    assert summary["ran"] + summary["not_started"] + summary["skipped"] == 6
    assert summary["not_started"] > 0


def test_missing_declared_output_is_a_failure(ws):
    ws.build_file("p", 'forgets_output(name="f")\n')
    events = ws.build("//p:f", ok=False)
    assert statuses(events) == {"//p:f": "failed"}
    assert "declared outputs were not created: declared.txt" in ws.last.stderr


def test_events_file_has_one_line_per_action_and_a_summary(ws):
    chain(ws)
    events = ws.build("//p:c")
    assert [e["label"] for e in events[:-1]] == ["//p:a", "//p:b", "//p:c"]
    for e in events[:-1]:
        assert set(e) >= {"label", "key", "status", "seconds"} and len(e["key"]) == 32
    assert events[-1]["summary"]["actions"] == 3


def test_dry_run_says_what_would_run_and_why(ws):
    chain(ws)
    ws.build("//p:c")
    ws.build_file("p", 'step(name="a", text="A")\nstep(name="b", text="B", deps=[":a"])\nstep(name="c", text="C!", deps=[":b"])\nstep(name="other", text="O")\n')
    proc = ws.mbuild("build", "--dry-run", "//p:c", check=True)
    assert "hit        //p:a" in proc.stdout
    assert "would run  //p:c  (text: 'C' → 'C!')" in proc.stdout
    assert ran(ws.build("//p:c")) == {"//p:c"}  # the dry run ran nothing


def test_dry_run_before_any_build(ws):
    chain(ws)
    proc = ws.mbuild("build", "-n", "//p:c", check=True)
    assert "would run  //p:a  (never built)" in proc.stdout
    assert "would run  //p:b  (never built)" in proc.stdout
    ws.build("//p:c")
    ws.build_file("p", 'step(name="a", text="A!")\nstep(name="b", text="B", deps=[":a"])\nstep(name="c", text="C", deps=[":b"])\n')
    proc = ws.mbuild("build", "-n", "//p:c", check=True)
    assert "would run  //p:b  (dependency //p:a will run, so its output may change)" in proc.stdout


def test_rule_code_change_reruns_and_is_explained(ws):
    chain(ws)
    ws.build("//p:c")
    rules = ws.root / f"{ws.rules}.py"
    rules.write_text(rules.read_text() + "\n# a comment changes the code fingerprint\n")
    proc = ws.mbuild("build", "-n", "//p:c", check=True)
    assert f"code {ws.rules}.py changed (lines " in proc.stdout
    # every step reruns, and produces the same bytes
    assert ran(ws.build("//p:c")) == {"//p:a", "//p:b", "//p:c"}


def _corrupt_one_blob(cache: Path, content: str):
    for blob in (cache / "cas").rglob("*"):
        if blob.is_file() and blob.read_text() == content:
            os.chmod(blob, 0o644)
            blob.write_text("CORRUPTED")  # same inode: the tree sees it too
            return blob
    raise AssertionError("blob not found")


def test_corrupt_blob_is_never_served_the_action_reruns(ws):
    chain(ws)
    ws.build("//p:b")
    _corrupt_one_blob(ws.root / ".mbuild" / "cache", "A")
    # //p:c must read //p:a's output through //p:b... b's tree is fine; corrupt a's and ask for b to rerun:
    ws.build_file("p", 'step(name="a", text="A")\nstep(name="b", text="B", deps=[":a"])\nstep(name="c", text="C", deps=[":b"])\nstep(name="b2", text="X", deps=[":a"])\n')
    events = ws.build("//p:b2")
    assert statuses(events)["//p:b2"] == "ran"
    assert "//p:a" in ran(events)  # its stored bytes were wrong, so it was rebuilt, not used
    assert (ws.root / "mbuild-out/p/b2/out.txt").read_text() == "X+A"
    assert "unusable" in ws.last.stderr


def test_corrupt_requested_output_is_rebuilt(ws):
    chain(ws)
    ws.build("//p:a")
    os.unlink(ws.root / "mbuild-out/p/a")
    _corrupt_one_blob(ws.root / ".mbuild" / "cache", "A")
    events = ws.build("//p:a")
    assert statuses(events) == {"//p:a": "ran"}
    assert (ws.root / "mbuild-out/p/a/out.txt").read_text() == "A"


def test_truncated_action_cache_record_is_a_miss(ws):
    chain(ws)
    ws.build("//p:a")
    env = lmdb.open(str(ws.root / ".mbuild/cache/db"), max_dbs=8, map_size=1 << 30)
    ac = env.open_db(b"ac")
    with env.begin(db=ac, write=True) as txn:
        for key, value in list(txn.cursor()):
            txn.put(key, value[: len(value) // 2])
    env.close()
    events = ws.build("//p:a")
    assert statuses(events) == {"//p:a": "ran"}
    assert "dropping corrupt cache entry" in ws.last.stderr


def test_keys_do_not_depend_on_location_home_or_user(ws, tmp_path):
    chain(ws)
    first = ws.build("//p:c")
    other = tmp_path / "elsewhere" / "clone"
    shutil.copytree(ws.root, other, ignore=shutil.ignore_patterns(".mbuild", "mbuild-out", ".events-*"))
    events = other / "ev.jsonl"
    env = {**os.environ, "HOME": str(tmp_path / "home2"), "USER": "someone-else", "PYTHONHASHSEED": "77"}
    subprocess.run([sys.executable, "-m", "mbuild.front.cli", "build", "--events", str(events), "//p:c"], cwd=other, env=env, check=True, capture_output=True)
    second = [json.loads(line) for line in events.read_text().splitlines()]
    assert {e["label"]: e["key"] for e in first[:-1]} == {e["label"]: e["key"] for e in second[:-1]}


def test_two_builders_share_one_cache_at_once(ws):
    ws.build_file("p", "".join(f'step(name="s{i}", text="{i}", deps=[":s{i - 1}"] if {i} else [])\n' for i in range(12)))
    procs = [
        subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "build", "-q", "//p:all"], cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert (ws.root / "mbuild-out/p/s11/out.txt").read_text().startswith("11+10+9")
    assert ran(ws.build("//p:all")) == set()


def test_declared_env_is_in_the_key(ws):
    ws.write(f"{ws.rules}_env.py", '''
from mbuild import attr, rule

@rule(attrs={}, outputs=["v.txt"], env=["MBUILD_TEST_VAR"])
def envrule(ctx):
    (ctx.out / "v.txt").write_text(str(ctx.env["MBUILD_TEST_VAR"]))
''')
    ws.build_file("p", f'from {ws.rules}_env import envrule\nenvrule(name="e")\n')
    ws.mbuild("build", "//p:e", check=True, env={"MBUILD_TEST_VAR": "one"})
    assert (ws.root / "mbuild-out/p/e/v.txt").read_text() == "one"
    ws.mbuild("build", "//p:e", check=True, env={"MBUILD_TEST_VAR": "two"})
    assert (ws.root / "mbuild-out/p/e/v.txt").read_text() == "two"
    events = ws.build("//p:e")  # MBUILD_TEST_VAR unset now: a third key
    assert ran(events) == {"//p:e"}


def test_no_retry_failed_fails_fast_naming_the_earlier_failure(ws):
    log = ws.root / "runs.txt"
    ws.write(f"{ws.rules}_flaky.py", f'''
from mbuild import attr, rule

@rule(attrs={{}}, outputs=["x"])
def flaky(ctx):
    with open({str(log)!r}, "a") as f:
        f.write("run\\n")
    raise ValueError("first line\\nsecond line\\nthird line\\nfourth line")
''')
    ws.build_file("p", f'from {ws.rules}_flaky import flaky\nflaky(name="f")\n')
    ws.build("//p:f", ok=False)
    assert "FAILED //p:f: ValueError: first line" in ws.last.stderr and "third line ..." in ws.last.stderr
    ws.build("//p:f", extra=("--no-retry-failed",), ok=False)
    assert "failed before with the same key" in ws.last.stderr and "first line" in ws.last.stderr
    assert log.read_text().count("run") == 1  # it did not run again
    ws.build("//p:f", ok=False)  # the default retries
    assert log.read_text().count("run") == 2


def test_ctrl_c_stops_running_actions_promptly_and_caches_nothing(ws):
    import signal
    import time

    marker = ws.root / "started"
    pidfile = ws.root / "child.pid"
    ws.build_file("p", f'genrule(name="slow", outs=["x"], cmd="echo $$ > {pidfile} && touch {marker} && sleep 60 && echo done > $@")\n')
    proc = subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "build", "//p:slow"], cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline, "the action never started"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)  # polling for the action to start, with a deadline
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 130
    assert "Interrupted" in err
    child = int(pidfile.read_text())
    try:
        os.kill(child, 0)
        alive = Path(f"/proc/{child}").exists() and "zombie" not in Path(f"/proc/{child}/status").read_text().lower()
    except ProcessLookupError:
        alive = False
    assert not alive, "the action's process survived Ctrl-C"
    env = lmdb.open(str(ws.root / ".mbuild/cache/db"), max_dbs=8, map_size=1 << 30)
    with env.begin(db=env.open_db(b"ac")) as txn:
        assert txn.stat(env.open_db(b"ac"))["entries"] == 0
    env.close()
