"""Settings and inputs that used to hang, crash or destroy data: each is one clear error line, a
non-zero exit, no traceback, and every byte of the user's files is still there.

All through the real CLI (`ws.mbuild`), on real directories, links and (where the test may mount
one) a real full file system.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import statuses


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a refused command (asserting there is exactly one, and no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _user_files(ws) -> dict[str, bytes]:
    """A directory `data/` and a file `notes.txt` of the user's, to check they survive byte for byte."""
    ws.write("data/train.csv", "a,b\n1,2\n")
    ws.write("notes.txt", "my notes\n")
    return _snapshot(ws)


def _snapshot(ws) -> dict[str, bytes]:
    found = {}
    for path in (ws.root / "data", ws.root / "notes.txt"):
        assert not path.is_symlink(), f"{path} was replaced by a link"
    for path in sorted((ws.root / "data").rglob("*")):
        found[path.relative_to(ws.root).as_posix()] = path.read_bytes()
    found["notes.txt"] = (ws.root / "notes.txt").read_bytes()
    return found


# --- item 7: directories mbuild must not delete or replace things in ------------------------------


def test_outputs_dir_at_the_root_is_refused_and_no_user_file_is_touched(ws):
    before = _user_files(ws)
    ws.write("WORKSPACE.toml", '[build]\noutputs_dir = "."\n')
    ws.build_file("", 'step(name="data", text="x")\nstep(name="notes.txt", text="y")\n')
    proc = ws.mbuild("//:data", "//:notes.txt")
    assert proc.returncode == 2
    assert "[build].outputs_dir = '.' is the workspace root" in _error_line(proc)
    assert _snapshot(ws) == before
    assert not (ws.root / ".gitignore").exists()  # not even a marker is written there


@pytest.mark.parametrize(
    "settings, message",
    [
        ('outputs_dir = ".."', "[build].outputs_dir = '..' is the workspace root or holds it"),
        ('outputs_dir = "/"', "[build].outputs_dir = '/' is the workspace root or holds it"),
        ('cache_dir = "."', "[build].cache_dir = '.' is the workspace root or holds it"),
        ('outputs_dir = "data"', "/data, which holds files mbuild did not create"),  # a directory of sources
        ('cache_dir = "data"', "/data, which holds files mbuild did not create"),
        ('outputs_dir = ".mbuild/cache/out"', "must be separate directories, neither inside the other"),
        ('cache_dir = "mbuild-out/cache"', "must be separate directories, neither inside the other"),
        ('outputs_dir = ""', "[build].outputs_dir must not be empty"),
        ('cache_dir = ""', "[build].cache_dir must not be empty"),
    ],
)
def test_directories_that_hold_or_are_the_users_files_are_refused(ws, settings, message):
    before = _user_files(ws)
    ws.write("WORKSPACE.toml", f"[build]\n{settings}\n")
    ws.build_file("", 'step(name="data", text="x")\n')
    for command in (("//:data",), ("clean",), ("query", "//:all")):
        proc = ws.mbuild(*command)
        assert proc.returncode == 2, (command, proc.stderr)
        assert message in _error_line(proc)
    assert _snapshot(ws) == before
    assert not (ws.root / "mbuild-out").exists() and not (ws.root / ".gitignore").exists()


def test_new_and_empty_directories_are_fine_and_get_the_marker(ws):
    (ws.root / "out").mkdir()  # empty: the user made it for mbuild
    ws.write("WORKSPACE.toml", '[build]\noutputs_dir = "out"\ncache_dir = "../cache-elsewhere"\n')
    ws.build_file("p", 'step(name="x", text="hi")\n')
    ws.mbuild("//p:x", check=True)
    assert (ws.root / "out/p/x/out.txt").read_text() == "hi"
    assert (ws.root / "out/.gitignore").read_text().startswith("# written by mbuild")
    assert (ws.root.parent / "cache-elsewhere/.gitignore").read_text().startswith("# written by mbuild")


@pytest.mark.parametrize("kind", ["directory", "file", "link"])
def test_a_path_in_the_outputs_dir_that_mbuild_did_not_make_is_never_replaced(ws, kind):
    ws.build_file("p", 'step(name="x", text="one")\n')
    ws.mbuild("//p:x", check=True)
    dest = ws.root / "mbuild-out/p/x"
    dest.unlink()  # mbuild's link; the user puts something of theirs there
    if kind == "directory":
        ws.write("mbuild-out/p/x/mine.txt", "precious\n")
    elif kind == "file":
        ws.write("mbuild-out/p/x", "precious\n")
    else:
        ws.write("elsewhere.txt", "precious\n")
        dest.symlink_to(ws.root / "elsewhere.txt")
    ws.build_file("p", 'step(name="x", text="two")\n')
    events = ws.build("//p:x", ok=False)
    assert ws.last.returncode == 1
    assert statuses(events) == {"//p:x": "failed"}  # it ran and is cached; only placing it failed
    line = next(line for line in ws.last.stderr.splitlines() if line.startswith("  FAILED //p:x"))
    assert f"cannot materialise //p:x at mbuild-out/p/x: a {kind} mbuild did not create is there" in line
    if kind == "directory":
        assert (dest / "mine.txt").read_text() == "precious\n" and not dest.is_symlink()
    elif kind == "file":
        assert dest.read_text() == "precious\n" and not dest.is_symlink()
    else:
        assert os.readlink(dest) == str(ws.root / "elsewhere.txt")
    assert "Traceback" not in ws.last.stderr
    if kind == "directory":
        (dest / "mine.txt").unlink()
        dest.rmdir()
    else:
        dest.unlink()
    ws.mbuild("//p:x", check=True)  # once it is out of the way, the output is placed as usual
    assert (dest / "out.txt").read_text() == "two"


def test_mbuilds_own_output_link_is_replaced_when_the_output_changes(ws):
    ws.build_file("p", 'step(name="x", text="one")\n')
    ws.mbuild("//p:x", check=True)
    first = os.readlink(ws.root / "mbuild-out/p/x")
    ws.build_file("p", 'step(name="x", text="two")\n')
    ws.mbuild("//p:x", check=True)
    assert os.readlink(ws.root / "mbuild-out/p/x") != first
    assert (ws.root / "mbuild-out/p/x/out.txt").read_text() == "two"


def test_clean_removes_only_directories_mbuild_made(ws):
    ws.build_file("p", 'step(name="x")\n')
    ws.mbuild("//p:x", check=True)
    shutil.rmtree(ws.root / "mbuild-out")
    (ws.root / "mbuild-out").mkdir()  # an empty directory the user made: not mbuild's to remove
    proc = ws.mbuild("clean")
    assert proc.returncode == 0, proc.stderr
    assert "left mbuild-out alone: mbuild did not create it" in proc.stderr
    assert (ws.root / "mbuild-out").is_dir()
    assert "removed .mbuild/cache" in proc.stdout and not (ws.root / ".mbuild/cache").exists()


# --- item 8: numbers that hung or crashed ----------------------------------------------------------


@pytest.mark.parametrize(
    "settings, flags, message",
    [
        ("[build]\njobs = -1", (), "WORKSPACE.toml: [build].jobs must be between 0 and 256 (0 = the number of cores), got -1"),
        ("[build]\njobs = 100000", (), "WORKSPACE.toml: [build].jobs must be between 0 and 256 (0 = the number of cores), got 100000"),
        ("", ("-j", "-1"), "--jobs must be between 0 and 256"),
        ("", ("-j", "100000"), "--jobs must be between 0 and 256"),
        ("[fray]\nremote_jobs = 0", (), "WORKSPACE.toml: [fray].remote_jobs must be between 1 and 256, got 0"),
        ("", ("--remote-jobs", "0"), "--remote-jobs must be between 1 and 256, got 0"),
        ("[fray]\nretries = -1", (), "WORKSPACE.toml: [fray].retries must be between 0 and 100, got -1"),
        ("[lease]\nttl = inf", (), "WORKSPACE.toml: [lease].ttl must be a finite, positive number of seconds, got inf"),
        ("[lease]\nttl = -5.0", (), "WORKSPACE.toml: [lease].ttl must be a finite, positive number of seconds"),
        ("[lease]\nrenew = nan", (), "WORKSPACE.toml: [lease].renew (nan) must be positive"),
    ],
)
def test_job_counts_and_lease_times_out_of_range_are_refused(ws, settings, flags, message):
    ws.write("WORKSPACE.toml", settings + "\n")
    ws.build_file("p", 'step(name="x")\n')
    proc = ws.mbuild("build", *flags, "//p:x")  # before: -1 hung forever, 100000 crashed starting threads
    assert proc.returncode == 2
    line = _error_line(proc)
    assert message in line
    if "jobs" in message:
        assert "exhaust threads and memory" in line  # the error explains the limit
    assert not (ws.root / "mbuild-out").exists()


def test_zero_jobs_means_the_number_of_cores(ws):
    ws.write("WORKSPACE.toml", "[build]\njobs = 0\n")
    ws.build_file("p", 'step(name="x")\n')
    ws.mbuild("//p:x", check=True)
    ws.mbuild("-j", "0", "//p:x", check=True)


# --- item 9: tracebacks that are now one line ---------------------------------------------------


def test_workspace_file_that_is_not_utf8(ws):
    (ws.root / "WORKSPACE.toml").write_bytes(b'[workspace]\nname = "caf\xe9"\n')
    ws.build_file("p", 'step(name="x")\n')
    proc = ws.mbuild("//p:x")
    assert proc.returncode == 2
    assert "WORKSPACE.toml: not UTF-8 text (byte 0xe9 at offset 23)" in _error_line(proc)


def test_cache_dir_that_is_a_file(ws):
    ws.write("WORKSPACE.toml", '[build]\ncache_dir = "notes.txt"\n')
    before = _user_files(ws)
    ws.build_file("p", 'step(name="x")\n')
    proc = ws.mbuild("//p:x")
    assert proc.returncode == 2
    assert "[build].cache_dir = 'notes.txt' is " in _error_line(proc) and "which is a file, not a directory" in proc.stderr
    assert _snapshot(ws) == before


def test_a_5000_character_target_name_is_refused_at_load_time(ws):
    ws.build_file("p", f'step(name="x")\nstep(name="{"a" * 5000}")\n')
    proc = ws.mbuild("//p:all")
    assert proc.returncode == 2
    line = _error_line(proc)
    assert line.startswith("error: p/BUILD.py:4: target name 'aaaa")  # two header lines, then x, then this
    assert "(5000 characters) is too long" in line and "at most 255" in line
    assert len(line) < 400  # the name is shortened, not printed whole
    assert not (ws.root / "mbuild-out").exists()


def test_the_longest_allowed_name_builds_and_is_materialised(ws):
    name = "b" * 255
    ws.build_file("p", f'step(name="{name}", text="long")\n')
    ws.mbuild(f"//p:{name}", check=True)
    assert (ws.root / "mbuild-out/p" / name / "out.txt").read_text() == "long"
    ws.build_file("q", f'step(name="{"c" * 200}/{"d" * 255}")\n')
    ws.mbuild("//q:all", check=True)


def test_a_source_file_whose_path_is_longer_than_a_database_key(ws):
    deep = "/".join(c * 200 for c in "def") + ".txt"  # 600+ characters: more than LMDB's 511-byte keys
    path = ws.write(f"p/{deep}", "deep\n")
    old = time.time() - 60
    os.utime(path, (old, old))  # old enough for the stat cache to record it
    ws.build_file("p", f'step(name="x", deps=["{deep}"])\n')
    assert statuses(ws.build("//p:x")) == {"//p:x": "ran"}
    assert (ws.root / "mbuild-out/p/x/out.txt").read_text() == "+deep\n"
    assert statuses(ws.build("//p:x")) == {"//p:x": "cache_hit"}


RAISING_RULES = '''
import sys
from mbuild import attr, rule

class Odd(BaseException):
    pass

@rule(attrs={"what": attr.string()}, outputs=["o.txt"])
def raises(ctx):
    if ctx.attr.what == "interrupt":
        raise KeyboardInterrupt
    if ctx.attr.what.startswith("exit"):
        sys.exit(int(ctx.attr.what[4:]))
    raise Odd("an odd one")
'''


@pytest.mark.parametrize(
    "what, message",
    [
        ("interrupt", "the rule raised KeyboardInterrupt (a Ctrl-C at the terminal stops the whole build instead)"),
        ("exit0", "the rule called sys.exit(0); a rule returns to succeed and raises an exception to fail"),
        ("exit3", "the rule called sys.exit(3)"),
        ("odd", "Odd: an odd one"),
    ],
)
@pytest.mark.parametrize("where", ["worker", "fray-local"])
def test_a_base_exception_raised_by_a_rule_is_an_action_failure(ws, what, message, where):
    ws.write(f"{ws.rules}_raising.py", RAISING_RULES)
    resources = ', resources={"cpu": 1}' if where == "fray-local" else ""  # fray's local backend: a thread of the driver
    ws.build_file("p", f'from {ws.rules}_raising import raises\nraises(name="r", what="{what}"{resources})\nstep(name="ok")\n')
    events = ws.build("//p:r", "//p:ok", extra=("-k",), ok=False)
    assert ws.last.returncode == 1
    assert statuses(events) == {"//p:r": "failed", "//p:ok": "ran"}
    assert f"  FAILED //p:r: {message}" in ws.last.stderr
    # The rule's own traceback is in its log (and its tail is shown); mbuild's machinery is not.
    assert "internal error" not in ws.last.stderr and "worker.py" not in ws.last.stderr
    failure = next(e for e in events if e.get("label") == "//p:r")
    assert Path(failure["log"]).exists()


def test_ctrl_c_while_loading_is_exit_130_without_a_traceback(ws):
    started = ws.root / "loading"
    ws.build_file("p", f'import pathlib, time\npathlib.Path("{started}").touch()\ntime.sleep(60)\nstep(name="x")\n')
    proc = subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "//p:x"], cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the BUILD file never started loading"
        time.sleep(0.02)  # polling for the BUILD file's own marker, with a deadline
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Interrupted" in err and "Traceback" not in err


@contextlib.contextmanager
def _small_disk(path: Path, size: str = "1m"):
    """A real file system of `size` at `path` (tmpfs); skips the test when this process may not mount."""
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _fill(disk: Path) -> None:
    """Fill the file system until a write fails with ENOSPC."""
    with open(disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)


BIG_RULE = '''
from mbuild import attr, rule

@rule(attrs={"mib": attr.int()}, outputs=["big.bin"])
def big(ctx):
    with open(ctx.out / "big.bin", "wb") as f:
        for _ in range(ctx.attr.mib):
            f.write(b"x" * (1 << 20))
'''


def test_a_full_disk_is_one_line_naming_the_directory(ws, tmp_path):
    with _small_disk(tmp_path / "disk") as disk:
        cache = disk / "cache"
        ws.write("WORKSPACE.toml", f'[build]\ncache_dir = "{cache}"\n')
        ws.write(f"{ws.rules}_big.py", BIG_RULE)
        ws.build_file("p", f'from {ws.rules}_big import big\nbig(name="small", mib=0)\nbig(name="huge", mib=4)\n')
        ws.mbuild("//p:small", check=True)
        # An action that fills the disk fails with one line naming where it was writing.
        proc = ws.mbuild("//p:huge")
        assert proc.returncode == 1, proc.stderr
        line = next(line for line in proc.stderr.splitlines() if line.startswith("  FAILED //p:huge"))
        assert f"no space left on device writing in {cache}" in line
        assert "internal error" not in proc.stderr and "worker.py" not in proc.stderr
        # A disk already full when the build starts: one error line, exit 2.
        for entry in cache.iterdir():
            if entry.name != ".gitignore":
                subprocess.run(["rm", "-rf", str(entry)], check=True)
        _fill(disk)
        ws.build_file("p", f'from {ws.rules}_big import big\nbig(name="small", mib=0)\nbig(name="other", mib=0)\n')
        proc = ws.mbuild("//p:other")
        assert proc.returncode in (1, 2), proc.stderr
        assert "Traceback" not in proc.stderr
        assert f"no space left on device writing in {disk}" in proc.stderr
        (disk / "filler").unlink()
        ws.mbuild("//p:other", check=True)  # space again: the same workspace builds


# --- item 10: exits and builds that did nothing, silently ---------------------------------------


def test_sys_exit_in_a_build_file_is_an_error_naming_the_line(ws):
    ws.build_file("p", 'step(name="x")\nimport sys\nsys.exit(0)\nstep(name="y")\n')
    proc = ws.mbuild("//p:y")
    assert proc.returncode == 2
    assert _error_line(proc) == (
        "error: p/BUILD.py:5: sys.exit(0) called while loading; a BUILD file must not exit (the targets after this line would be missing)"
    )


def test_building_a_source_file_says_there_is_nothing_to_build(ws):
    ws.write("p/data.txt", "hello\n")
    ws.build_file("p", 'step(name="x", deps=["data.txt"])\n')
    events = ws.build("//p:data.txt")
    assert ws.last.returncode == 0
    assert "//p:data.txt is a source file (p/data.txt), not a rule target: nothing to build for it" in ws.last.stderr
    assert events[-1]["summary"]["actions"] == 0


# --- item 12: links in srcs that lead outside the workspace --------------------------------------


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("from outside\n")
    return outside


@pytest.mark.parametrize("link", ["file", "directory"])
def test_a_source_link_leading_outside_the_workspace_is_refused_by_default(ws, tmp_path, link):
    outside = _outside(tmp_path)
    if link == "file":
        (ws.root / "p").mkdir()
        (ws.root / "p/secret.txt").symlink_to(outside / "secret.txt")
        src, named, points = "secret.txt", "p/secret.txt", outside / "secret.txt"
    else:
        (ws.root / "p").mkdir()
        (ws.root / "p/ext").symlink_to(outside)
        src, named, points = "ext/secret.txt", "p/ext", outside
    ws.build_file("p", f'genrule(name="g", srcs=["{src}"], outs=["o.txt"], cmd="cat $(SRCS) > $@")\n')
    proc = ws.mbuild("//p:g")
    assert proc.returncode == 2
    assert _error_line(proc) == (
        f"error: //p:g (p/BUILD.py:3) depends on //p:{src}, but {named} is a symbolic link to {points}, outside the workspace; "
        "set [build] allow_external_symlinks = true in WORKSPACE.toml to follow such links (the file is keyed by its content)"
    )
    ws.write("WORKSPACE.toml", "[build]\nallow_external_symlinks = true\n")
    ws.mbuild("//p:g", check=True)
    assert (ws.root / "mbuild-out/p/g/o.txt").read_text() == "from outside\n"
    (outside / "secret.txt").write_text("changed outside\n")  # keyed by content: a change reruns it
    ws.mbuild("//p:g", check=True)
    assert (ws.root / "mbuild-out/p/g/o.txt").read_text() == "changed outside\n"


def test_a_source_link_inside_the_workspace_is_followed(ws):
    ws.write("shared/words.txt", "inside\n")
    (ws.root / "p").mkdir()
    (ws.root / "p/words.txt").symlink_to("../shared/words.txt")
    ws.build_file("p", 'genrule(name="g", srcs=["words.txt"], outs=["o.txt"], cmd="cat $(SRCS) > $@")\n')
    ws.mbuild("//p:g", check=True)
    assert (ws.root / "mbuild-out/p/g/o.txt").read_text() == "inside\n"
