"""The `mbuild` command line: the bare-label form, help everywhere, exit codes and error messages."""

import pytest

from conftest import ran


def test_bare_label_builds(ws):
    ws.build_file("p", 'step(name="x", text="hi")\n')
    proc = ws.mbuild("//p:x", check=True)
    assert "Build succeeded: 1 action, 1 ran" in proc.stderr
    proc = ws.mbuild("-q", "//p:x", check=True)
    assert "1 cache hits" in proc.stderr and "running" not in proc.stderr


def test_patterns_on_the_command_line(ws):
    ws.build_file("p", 'step(name="x", text="1")\n')
    ws.build_file("p/q", 'step(name="y", text="2")\n')
    assert ran(ws.build("//p/...")) == {"//p:x", "//p/q:y"}
    assert ran(ws.build("//...")) == set()


def test_works_from_a_subdirectory(ws):
    ws.build_file("p", 'step(name="x", text="1")\n')
    ws.mbuild("//p:x", check=True, cwd=ws.root / "p")
    assert (ws.root / "mbuild-out/p/x/out.txt").exists()


@pytest.mark.parametrize("command", [[], ["build"], ["clean"], ["status"], ["query"]])
def test_help_on_every_command(ws, command):
    proc = ws.mbuild(*command, "--help", check=True)
    assert "Usage:" in proc.stdout


def test_bad_label_is_a_usage_error(ws):
    ws.build_file("p", 'step(name="x")\n')
    proc = ws.mbuild("//p:x:y")
    assert proc.returncode == 2
    assert "invalid label '//p:x:y': more than one ':'" in proc.stderr


def test_unknown_target_is_a_usage_error_with_a_suggestion(ws):
    ws.build_file("p", 'step(name="tokenizer")\n')
    proc = ws.mbuild("//p:tokeniser")
    assert proc.returncode == 2
    assert "did you mean 'tokenizer'" in proc.stderr


def test_build_file_error_names_file_and_line(ws):
    ws.build_file("p", 'step(name="x")\nstep(name="y", bogus=1)\n')
    proc = ws.mbuild("//p:x")
    assert proc.returncode == 2
    assert "error: p/BUILD.py:4: " in proc.stderr and "unknown attribute 'bogus'" in proc.stderr


def test_outside_a_workspace(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mbuild.front.cli", "//a:b"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "no WORKSPACE.toml found" in proc.stderr


def test_clean_removes_outputs_and_cache(ws):
    ws.build_file("p", 'step(name="x")\n')
    ws.mbuild("//p:x", check=True)
    ws.mbuild("clean", check=True)
    assert not (ws.root / "mbuild-out").exists() and not (ws.root / ".mbuild" / "cache").exists()
    assert ran(ws.build("//p:x")) == {"//p:x"}


def test_clean_outputs_only_keeps_the_cache(ws):
    ws.build_file("p", 'step(name="x")\n')
    ws.mbuild("//p:x", check=True)
    ws.mbuild("clean", "--outputs-only", check=True)
    assert ran(ws.build("//p:x")) == set()
    assert (ws.root / "mbuild-out/p/x/out.txt").exists()


def test_clean_refuses_to_remove_the_workspace(ws):
    ws.write("WORKSPACE.toml", '[build]\ncache_dir = "."\n')
    proc = ws.mbuild("clean")
    assert proc.returncode == 2 and "[build].cache_dir = '.' is the workspace root" in proc.stderr
    assert (ws.root / "WORKSPACE.toml").exists()
