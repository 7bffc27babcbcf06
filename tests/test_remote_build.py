"""Builds sharing a remote cache: hermetic hits across clones, build without the bytes, read-only
clients, outages, corruption, and many builders publishing to one bucket (real servers)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import ran, statuses

REPO = Path(__file__).resolve().parents[1]


def remote_toml(url: str, options: dict, **extra) -> str:
    lines = ["[remote]", f"url = {json.dumps(url)}"] + [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    if options:
        lines.append("[remote.options]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def mbuild(root: Path, *args: str, env: dict | None = None, ok: bool = True) -> tuple[list[dict], subprocess.CompletedProcess]:
    events = root / f"events-{len(list(root.glob('events-*')))}.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "mbuild.front.cli", "build", "--events", str(events), *args],
        cwd=root, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []
    return records, proc


@pytest.fixture(params=["gcs", "s3", "file"])
def remote(request, tmp_path):
    """(url, storage options, a function listing every object under the url) for each backend."""
    import fsspec

    if request.param == "file":
        url = (tmp_path / "shared-cache").as_uri()
        fs = fsspec.filesystem("file")
        yield url, {}, lambda: sorted(fs.find(url[len("file://"):]))
        return
    server = request.getfixturevalue(f"{request.param}_server")
    bucket = f"mbuild-{request.node.name.split('[')[0][-20:].replace('_', '-')}-{os.getpid() % 10000}-{len(os.listdir(tmp_path))}".lower()
    root = server.make_bucket(bucket)
    fs = fsspec.filesystem(server.kind, **server.storage_options)
    yield f"{root}/cache", server.storage_options, lambda: sorted(fs.find(f"{root}/cache", refresh=True))


def two_clones(ws, tmp_path, url, options, build_text, **remote_extra):
    ws.build_file("p", build_text)
    ws.write("WORKSPACE.toml", remote_toml(url, options, **remote_extra))
    other = tmp_path / "other" / "place" / "clone"
    shutil.copytree(ws.root, other, ignore=shutil.ignore_patterns(".mbuild", "mbuild-out", ".events-*", "events-*"))
    return ws.root, other


CHAIN = 'step(name="a", text="A")\nstep(name="b", text="B", deps=[":a"])\nstep(name="c", text="C", deps=[":b"])\n'


def test_a_second_clone_gets_every_action_from_the_remote(ws, tmp_path, remote):
    url, options, objects = remote
    first, second = two_clones(ws, tmp_path, url, options, CHAIN)
    events, _ = mbuild(first, "//p:c")
    assert ran(events) == {"//p:a", "//p:b", "//p:c"}
    assert events[-1]["summary"]["uploads"] == 3 and events[-1]["summary"]["bytes_up"] > 0
    assert any("/ac/" in o for o in objects()) and any("/cas/" in o for o in objects())
    events, proc = mbuild(second, "//p:c")
    assert ran(events) == set()
    assert {e["source"] for e in events[:-1]} == {"remote"}
    assert events[-1]["summary"]["remote_hits"] == 3
    assert (second / "mbuild-out/p/c/out.txt").read_text() == "C+B+A"
    # build without the bytes: only the requested target's outputs were downloaded
    down = {e["label"]: e.get("bytes_down", 0) for e in events[:-1]}
    assert down["//p:c"] > 0 and down["//p:a"] == down["//p:b"] == 0
    # a third build there is all local
    events, _ = mbuild(second, "//p:c")
    assert {e["source"] for e in events[:-1]} == {"local"}


def test_an_action_that_must_run_fetches_its_inputs(ws, tmp_path, remote):
    url, options, _ = remote
    first, second = two_clones(ws, tmp_path, url, options, CHAIN)
    mbuild(first, "//p:c")
    (second / "p/BUILD.py").write_text((second / "p/BUILD.py").read_text().replace('text="C"', 'text="C2"'))
    events, _ = mbuild(second, "//p:c")
    assert statuses(events) == {"//p:a": "cache_hit", "//p:b": "cache_hit", "//p:c": "ran"}
    assert next(e for e in events if e["label"] == "//p:c")["bytes_down"] > 0  # b's output, fetched to run c
    assert (second / "mbuild-out/p/c/out.txt").read_text() == "C2+B+A"


def test_a_read_only_client_writes_nothing(ws, tmp_path, remote):
    url, options, objects = remote
    first, second = two_clones(ws, tmp_path, url, options, CHAIN, upload=False)
    before = objects()
    events, _ = mbuild(first, "//p:c")
    assert ran(events) == {"//p:a", "//p:b", "//p:c"}
    assert objects() == before
    events, _ = mbuild(second, "//p:c", "--remote-upload")  # the flag overrides the file
    assert events[-1]["summary"]["uploads"] == 3
    assert objects() != before


def test_a_corrupt_remote_blob_is_reported_and_never_used(ws, tmp_path, remote):
    import fsspec

    url, options, objects = remote
    first, second = two_clones(ws, tmp_path, url, options, 'step(name="a", text="AAAA")\n')
    mbuild(first, "//p:a")
    fs, _, _ = fsspec.get_fs_token_paths(url, storage_options=options)
    [blob] = [o for o in objects() if "/cas/" in o]
    fs.pipe(blob, b"BBBB")  # same size, other bytes
    events, proc = mbuild(second, "//p:a")
    assert statuses(events) == {"//p:a": "ran"}  # the hit was not believed: the action reran
    assert (second / "mbuild-out/p/a/out.txt").read_text() == "AAAA"


def test_a_new_salt_disowns_every_entry(ws, tmp_path, remote):
    url, options, _ = remote
    first, second = two_clones(ws, tmp_path, url, options, CHAIN)
    mbuild(first, "//p:c")
    (second / "WORKSPACE.toml").write_text('[workspace]\nsalt = "poisoned-cache-escape"\n' + (second / "WORKSPACE.toml").read_text())
    events, _ = mbuild(second, "//p:c")
    assert ran(events) == {"//p:a", "//p:b", "//p:c"}


def test_an_unreachable_remote_does_not_fail_the_build(ws, tmp_path):
    from servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    ws.build_file("p", CHAIN)
    ws.write("WORKSPACE.toml", remote_toml("gs://nowhere/cache", {"endpoint_url": dead, "token": "anon"}, timeout=1.0, max_failures=2))
    events, proc = mbuild(ws.root, "//p:c")
    assert ran(events) == {"//p:a", "//p:b", "//p:c"} and proc.returncode == 0
    assert proc.stderr.count("remote cache unreachable") == 1 or proc.stderr.count("warning:") >= 1
    assert (ws.root / "mbuild-out/p/c/out.txt").read_text() == "C+B+A"


def test_the_emulator_stopping_mid_build_falls_back_to_local(ws, tmp_path):
    from servers import gcs_emulator

    marker = ws.root / "go"
    with gcs_emulator() as server:
        root = server.make_bucket("midbuild")
        ws.write(f"{ws.rules}_gate.py", textwrap.dedent(f'''
            import os, time
            from mbuild import attr, rule

            @rule(attrs={{"deps": attr.label_list(default=[]), "text": attr.string()}}, outputs=["out.txt"])
            def gated(ctx):
                if ctx.attr.text == "B":
                    open({str(marker)!r} + ".waiting", "w").close()
                    deadline = time.monotonic() + 60
                    while not os.path.exists({str(marker)!r}) and time.monotonic() < deadline:
                        time.sleep(0.02)  # waiting for the test to stop the emulator
                parts = [ctx.attr.text] + [(d / "out.txt").read_text() for d in ctx.inputs.deps]
                (ctx.out / "out.txt").write_text("+".join(parts))
        '''))
        ws.build_file("p", f'from {ws.rules}_gate import gated\ngated(name="a", text="A")\ngated(name="b", text="B", deps=[":a"])\ngated(name="c", text="C", deps=[":b"])\n')
        ws.write("WORKSPACE.toml", remote_toml(f"{root}/cache", server.storage_options, timeout=1.0, max_failures=2))
        proc = subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "build", "//p:c"], cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        waiting = Path(str(marker) + ".waiting")
        import time

        deadline = time.monotonic() + 120
        while not waiting.exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)  # polling for the build to reach //p:b
    marker.touch()  # the emulator is gone now
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "warning:" in err
    assert (ws.root / "mbuild-out/p/c/out.txt").read_text() == "C+B+A"


def test_the_example_pipeline_is_hermetic_across_clones(tmp_path, gcs_server):
    """Two clones of this repository's example workspace, at different paths, with different HOME
    and USER, share one bucket: the second build runs nothing and every action is a remote hit."""
    pytest.importorskip("jax")
    bucket = gcs_server.make_bucket("hermetic")
    clones = []
    for name in ("alice/work/mbuild", "ci/builds/1234/checkout"):
        root = tmp_path / name
        root.mkdir(parents=True)
        for part in ("rules", "mllib", "experiments"):
            shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        (root / "WORKSPACE.toml").write_text(remote_toml(f"{bucket}/cache", gcs_server.storage_options))
        clones.append(root)
    homes = [{"HOME": str(tmp_path / "home-alice"), "USER": "alice"}, {"HOME": str(tmp_path / "home-ci"), "USER": "ci-runner"}]
    first, _ = mbuild(clones[0], "//experiments/tiny:report", env=homes[0])
    assert len(ran(first)) == 6
    second, _ = mbuild(clones[1], "//experiments/tiny:report", env=homes[1])
    assert ran(second) == set()
    assert [e["source"] for e in second[:-1]] == ["remote"] * 6
    assert {e["label"]: e["key"] for e in first[:-1]} == {e["label"]: e["key"] for e in second[:-1]}
    report = clones[1] / "mbuild-out/experiments/tiny/report/report.md"
    assert report.read_text() == (clones[0] / "mbuild-out/experiments/tiny/report/report.md").read_text()


def test_four_builders_share_one_bucket_every_action_runs_once(tmp_path, gcs_server):
    """Four builders with their own local caches publish to one GCS bucket, leases included."""
    import random

    bucket = gcs_server.make_bucket("fourbuilders")
    runs = tmp_path / "runs.txt"
    rng = random.Random(4)
    lines = ["from slowrules import work"]
    for i in range(50):
        deps = sorted(set(rng.sample(range(i), min(i, 2)))) if i else []
        lines.append(f'work(name="a{i}", n={i}, runs={str(runs)!r}, seconds=0.05, deps={[f":a{d}" for d in deps]!r})')
    from test_concurrency import SLOW_RULES

    roots = []
    for b in range(4):
        root = tmp_path / f"builder{b}"
        (root / "g").mkdir(parents=True)
        (root / "slowrules.py").write_text(SLOW_RULES)
        (root / "g/BUILD.py").write_text("\n".join(lines) + "\n")
        (root / "WORKSPACE.toml").write_text(remote_toml(f"{bucket}/cache", gcs_server.storage_options) + "[lease]\nttl = 20.0\nrenew = 2.0\n")
        roots.append(root)
    procs = [subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "build", "-q", "//g:all"], cwd=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in roots]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    counts = Counter(line.split()[0] for line in runs.read_text().splitlines())
    assert len(counts) == 50 and max(counts.values()) == 1, {k: v for k, v in counts.items() if v > 1}
    values = [{p.name: (p / "out.txt").read_text() for p in (r / "mbuild-out/g").iterdir()} for r in roots]
    assert all(v == values[0] for v in values)


# --- records that cannot be read, outages that must cost seconds, corruption healed, settings ---------


def ac_path(url: str, key: str) -> Path:
    return Path(url[len("file://"):]) / "ac" / key


def key_of(events: list[dict], label: str) -> str:
    return next(e["key"] for e in events if e.get("label") == label)


def test_a_fifo_record_never_keeps_a_build_from_exiting_and_is_replaced(ws, tmp_path):
    """A FIFO where a remote record should be: the build reads it as corrupt (it never waits for a
    writer), runs the action, exits, and replaces the record; the next clone gets a hit."""
    url = (tmp_path / "shared").as_uri()
    first, second = two_clones(ws, tmp_path, url, {}, 'step(name="a", text="A")\n')
    events, _ = mbuild(first, "//p:a")
    record = ac_path(url, key_of(events, "//p:a"))
    record.unlink()
    os.mkfifo(record)
    proc = subprocess.run([sys.executable, "-m", "mbuild.front.cli", "build", "//p:a"], cwd=second, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "is a FIFO" in proc.stderr and "Traceback" not in proc.stderr
    assert record.is_file() and (second / "mbuild-out/p/a/out.txt").read_text() == "A"
    third = tmp_path / "third"
    shutil.copytree(second, third, ignore=shutil.ignore_patterns(".mbuild", "mbuild-out", "events-*"))
    events, _ = mbuild(third, "//p:a")
    assert statuses(events) == {"//p:a": "cache_hit"} and events[0]["source"] == "remote"


def long_chain(n: int) -> str:
    return "".join(f'step(name="s{i}", text="S{i}"' + (f', deps=[":s{i - 1}"])\n' if i else ")\n") for i in range(n))


@pytest.mark.parametrize("upload", ["--remote-upload", "--no-remote-upload"])
def test_an_outage_costs_seconds_not_minutes(ws, tmp_path, gcs_server, upload):
    """A remote at an address that accepts connections and never answers: the build (two actions in
    a chain, two workers) takes at most max_failures deadlines more than the same build against a
    healthy remote, and says so once, in both modes. (With a breaker per process, each action paid
    several deadlines, and without uploads no process saw enough failures to say anything.)"""
    from servers import black_hole

    timeout = 2.0
    ws.build_file("p", long_chain(2))
    baseline_clone = tmp_path / "baseline"
    shutil.copytree(ws.root, baseline_clone)
    bucket = gcs_server.make_bucket(f"outage-{upload[2:4]}-{os.getpid() % 10000}")
    (baseline_clone / "WORKSPACE.toml").write_text(remote_toml(f"{bucket}/c", gcs_server.storage_options, timeout=timeout))
    started = time.monotonic()
    mbuild(baseline_clone, "-j", "2", upload, "//p:s1")
    baseline = time.monotonic() - started  # the same processes and client imports, with a remote that answers
    hole = black_hole()
    try:
        ws.write("WORKSPACE.toml", remote_toml("gs://some-bucket/c", {"endpoint_url": hole.endpoint, "token": "anon"}, timeout=timeout))
        started = time.monotonic()
        events, proc = mbuild(ws.root, "-j", "2", upload, "//p:s1")
        elapsed = time.monotonic() - started
    finally:
        hole.close()
    assert ran(events) == {"//p:s0", "//p:s1"}
    assert proc.stderr.count("warning: remote cache unreachable") == 1, proc.stderr
    assert elapsed < baseline + 3 * timeout + 8, (elapsed, baseline, proc.stderr)


def test_the_emulator_stopping_mid_setup_costs_one_round_of_deadlines_for_all_workers(ws, tmp_path):
    """Three actions run at once in three workers when the emulator stops. Their failures add up in
    one breaker for the build (not one per worker), so the rest of the build costs about one
    deadline, and the dependent action runs without touching the remote."""
    from servers import gcs_emulator

    timeout = 3.0
    gate = ws.root / "go"
    ws.write(f"{ws.rules}_gate.py", textwrap.dedent(f'''
        import os, time
        from mbuild import attr, rule

        @rule(attrs={{"deps": attr.label_list(default=[]), "text": attr.string()}}, outputs=["out.txt"])
        def gated(ctx):
            if not ctx.inputs.deps:
                open({str(gate)!r} + "." + ctx.attr.text, "w").close()
                deadline = time.monotonic() + 120
                while not os.path.exists({str(gate)!r}) and time.monotonic() < deadline:
                    time.sleep(0.02)  # waiting for the test to stop the emulator
            parts = [ctx.attr.text] + [(d / "out.txt").read_text() for d in ctx.inputs.deps]
            (ctx.out / "out.txt").write_text("+".join(parts))
    '''))
    ws.build_file("p", f'from {ws.rules}_gate import gated\n' + "".join(f'gated(name="{x}", text="{x}")\n' for x in "xyz")
                  + 'gated(name="top", text="T", deps=[":x", ":y", ":z"])\n')
    with gcs_emulator() as server:
        root = server.make_bucket("midsetup")
        ws.write("WORKSPACE.toml", remote_toml(f"{root}/cache", server.storage_options, timeout=timeout))
        proc = subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "build", "-j", "3", "//p:top"], cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not all(Path(f"{gate}.{x}").exists() for x in "xyz"):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)  # polling for the three actions to be running
    stopped = time.monotonic()
    gate.touch()
    out, err = proc.communicate(timeout=300)
    after_stop = time.monotonic() - stopped
    assert proc.returncode == 0, err
    assert err.count("warning: remote cache unreachable") == 1, err
    assert (ws.root / "mbuild-out/p/top/out.txt").read_text() == "T+x+y+z"
    assert after_stop < 2 * timeout + 8, (after_stop, err)


NONDETERMINISTIC = '''
import os
from mbuild import attr, rule

@rule(attrs={}, outputs=["out.bin"])
def noisy(ctx):
    (ctx.out / "out.bin").write_bytes(os.urandom(64))
'''


@pytest.mark.parametrize("backend", ["gcs", "file"])
@pytest.mark.parametrize("damage", ["blob", "blob-of-a-nondeterministic-action", "record"])
def test_a_corrupt_remote_object_costs_one_rerun_not_one_per_client(ws, tmp_path, request, backend, damage):
    """Clone 1 publishes; the remote copy is damaged; clone 2 reruns the action once and, since it
    may upload, replaces what was bad (the blob with the verified bytes it rebuilt, or the record
    with its own result); a fresh clone 3 gets a remote hit and runs nothing."""
    import fsspec

    if backend == "file":
        url, options = (tmp_path / "shared").as_uri(), {}
    else:
        server = request.getfixturevalue("gcs_server")
        url, options = server.make_bucket(f"heal-{damage[:6]}-{os.getpid() % 10000}-{len(os.listdir(tmp_path))}") + "/cache", server.storage_options
    nondeterministic = damage == "blob-of-a-nondeterministic-action"
    if nondeterministic:
        ws.write(f"{ws.rules}_noisy.py", NONDETERMINISTIC)
        text, output = f"from {ws.rules}_noisy import noisy\nnoisy(name=\"a\")\n", "out.bin"
    else:
        text, output = 'step(name="a", text="AAAA")\n', "out.txt"
    first, second = two_clones(ws, tmp_path, url, options, text)
    events, _ = mbuild(first, "//p:a")
    key = key_of(events, "//p:a")
    fs, root = fsspec.core.url_to_fs(url, **options, skip_instance_cache=True, use_listings_cache=False)
    if damage == "record":
        fs.pipe_file(f"{root}/ac/{key}", b"not a record")
    else:
        [blob] = [o for o in fs.find(f"{root}/cas") if not o.rsplit("/", 1)[-1].startswith(".")]
        fs.pipe_file(blob, b"B" * fs.size(blob))  # same size, other bytes
    events, proc = mbuild(second, "//p:a")
    assert statuses(events) == {"//p:a": "ran"} and "corrupt" in proc.stderr
    third = tmp_path / "third"
    shutil.copytree(second, third, ignore=shutil.ignore_patterns(".mbuild", "mbuild-out", "events-*"))
    events, proc = mbuild(third, "//p:a")
    assert statuses(events) == {"//p:a": "cache_hit"} and events[0]["source"] == "remote", proc.stderr
    assert (third / f"mbuild-out/p/a/{output}").read_bytes() == (second / f"mbuild-out/p/a/{output}").read_bytes()
    assert "corrupt" not in proc.stderr


FRAY_RULES = '''
from mbuild import attr, rule

@rule(attrs={"deps": attr.label_list(default=[]), "n": attr.int()}, outputs=["out.txt"], resources={"cpu": 1, "ram": "1g", "disk": "1g"})
def heavy(ctx):
    parts = [str(ctx.attr.n)] + [(d / "out.txt").read_text() for d in ctx.inputs.deps]
    (ctx.out / "out.txt").write_text("+".join(parts))
'''


def test_uploads_made_by_fray_jobs_are_counted(ws, tmp_path):
    """Remote-tagged actions run as fray jobs (here fray's in-process LocalClient) and publish from
    inside the job: the build's events and summary count their uploads all the same."""
    pytest.importorskip("fray")
    url = (tmp_path / "shared").as_uri()
    ws.write(f"{ws.rules}_heavy.py", FRAY_RULES)
    ws.build_file("p", f'from {ws.rules}_heavy import heavy\nheavy(name="h1", n=1)\nheavy(name="h2", n=2, deps=[":h1"])\nstep(name="top", text="T", deps=[":h2"])\n')
    ws.write("WORKSPACE.toml", remote_toml(url, {}))
    events, _ = mbuild(ws.root, "//p:top")
    by_label = {e["label"]: e for e in events[:-1]}
    assert by_label["//p:h1"]["source"].startswith("fray:local/")
    assert all(by_label[label]["bytes_up"] > 0 for label in ("//p:h1", "//p:h2", "//p:top"))
    summary = events[-1]["summary"]
    assert summary["uploads"] == 3 and summary["bytes_up"] == sum(e["bytes_up"] for e in by_label.values())
    assert not list((ws.root / ".mbuild/cache/logs").glob("*.ran.json"))  # read and removed


@pytest.mark.parametrize("settings,args,expected", [
    ('[remote]\nurl = "ftp://host/cache"\n', (), "WORKSPACE.toml: [remote].url must be a gs://, s3:// or file:// URL, got 'ftp://host/cache'"),
    ('[remote]\nurl = "/shared/cache"\n', (), "(for a directory: file:///shared/cache)"),
    ('[remote]\nurl = "shared/cache"\n', (), "[remote].url must be a gs://, s3:// or file:// URL"),
    ('[remote]\nurl = "gs://"\n', (), "[remote].url: 'gs://' names no bucket"),
    ('[remote]\nurl = "file://relative/dir"\n', (), "a file:// URL needs an absolute path"),
    ('[remote]\nurl = "gs://b/c"\ntimeout = -1\n', (), "WORKSPACE.toml: [remote].timeout must be a positive number of seconds, got -1.0"),
    ('[remote]\nurl = "gs://b/c"\nmax_failures = 0\n', (), "WORKSPACE.toml: [remote].max_failures must be at least 1, got 0"),
    ('[fray]\nbackend = "iris"\n', (), 'WORKSPACE.toml: [fray].backend = "iris" needs [fray].controller'),
    ("", ("--fray", "iris"), "--fray iris needs [fray].controller in WORKSPACE.toml"),
    ("", ("--remote-cache", "ftp://host/cache"), "--remote-cache must be a gs://, s3:// or file:// URL, got 'ftp://host/cache'"),
], ids=["ftp", "absolute-path", "relative-path", "no-bucket", "relative-file-url", "timeout", "max-failures", "iris-setting", "iris-flag", "flag-url"])
def test_bad_remote_and_fray_settings_are_one_error_line(ws, settings, args, expected):
    ws.build_file("p", 'step(name="a", text="A")\n')
    ws.write("WORKSPACE.toml", settings)
    proc = ws.mbuild("build", *args, "//p:a")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (ws.root / "mbuild-out").exists()  # nothing ran


def test_uploading_to_a_read_only_remote_warns_once_why(ws, tmp_path):
    """--remote-upload onto a remote this client may not write (a read-only mount): one warning
    saying uploads fail and why, the build succeeds, reads still hit, nothing is written."""
    from servers import read_only

    url = (tmp_path / "shared").as_uri()
    first, second = two_clones(ws, tmp_path, url, {}, CHAIN)
    mbuild(first, "//p:a")
    (second / "p/BUILD.py").write_text((second / "p/BUILD.py").read_text().replace('text="B"', 'text="B2"'))
    shared = Path(url[len("file://"):])
    before = sorted((str(p), p.stat().st_mtime_ns) for p in shared.rglob("*"))
    with read_only(shared):
        events, proc = mbuild(second, "--remote-upload", "-j", "2", "//p:c")
    assert statuses(events) == {"//p:a": "cache_hit", "//p:b": "ran", "//p:c": "ran"}
    assert next(e for e in events if e["label"] == "//p:a")["source"] == "remote"
    assert proc.stderr.count("warning: remote cache uploads refused") == 1, proc.stderr
    assert "Read-only file system" in proc.stderr or "Permission denied" in proc.stderr
    assert sorted((str(p), p.stat().st_mtime_ns) for p in shared.rglob("*")) == before
    assert events[-1]["summary"]["uploads"] == 0
