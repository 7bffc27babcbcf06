"""Bazel habits on the `mbuild` command line: relative labels and patterns typed inside a package
(in `build` and `status`, read the way `mbuild query` reads them), and a mistyped command named as
such, with the closest commands, rather than read as a target pattern."""

from __future__ import annotations

import itertools
import json

import pytest

from conftest import ran

_n = itertools.count()


@pytest.fixture
def two_packages(ws):
    ws.build_file("p", 'step(name="x", text="1")\nstep(name="report", text="r", deps=[":x"])\n')
    ws.build_file("p/q", 'step(name="y", text="2")\n')
    ws.build_file("other", 'step(name="report", text="o")\n')
    return ws


def build_in(ws, directory: str, *words: str) -> set[str]:
    """The labels that ran when `mbuild build WORDS` was typed in `directory`."""
    events = ws.root / f"ev-{next(_n)}.jsonl"
    ws.mbuild("build", "--events", str(events), *words, cwd=ws.root / directory, check=True)
    return ran([json.loads(line) for line in events.read_text().splitlines()])


@pytest.mark.parametrize(
    "words, expected",
    [
        ((":report",), {"//p:x", "//p:report"}),
        (("report",), {"//p:x", "//p:report"}),
        ((":all",), {"//p:x", "//p:report"}),
        (("...",), {"//p:x", "//p:report", "//p/q:y"}),
        (("q/...",), {"//p/q:y"}),
        (("q:y", "//other:report"), {"//p/q:y", "//other:report"}),
    ],
)
def test_build_takes_relative_labels_and_patterns_inside_a_package(two_packages, words, expected):
    assert build_in(two_packages, "p", *words) == expected


def test_a_relative_request_is_the_absolute_one(two_packages):
    ws = two_packages
    assert build_in(ws, "p", ":report") == {"//p:x", "//p:report"}
    assert ran(ws.build("//p:report")) == set()  # the same request, typed absolutely: a no-op
    assert build_in(ws, "other", ":report") == {"//other:report"}  # not the no-op record of p's
    proc = ws.mbuild("-C", "p", ":report", check=True)  # the bare form, and -C
    assert "2 cache hits" in proc.stderr


def test_status_takes_relative_patterns(two_packages):
    ws = two_packages
    build_in(ws, "p", ":x")
    proc = ws.mbuild("status", ":all", cwd=ws.root / "p", check=True)
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert lines["//p:x"] == "cached" and lines["//p:report"].startswith("would run")
    assert set(lines) == {"//p:x", "//p:report"}


def test_a_relative_pattern_at_the_root_names_the_root_package(two_packages):
    proc = two_packages.mbuild("build", ":report")
    assert proc.returncode == 2 and proc.stderr == "error: no package '//': BUILD.py does not exist\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["bulid", "//p:x"], "mbuild: no such command 'bulid' (did you mean build?)"),
        (["statsu"], "mbuild: no such command 'statsu' (did you mean status?)"),
        (["qurey", "deps(//p:x)"], "mbuild: no such command 'qurey' (did you mean query or aquery?)"),
        (["frobnicate"], "mbuild: no such command 'frobnicate' (commands: aquery, build, clean, explain, gc, info, log, query, status"),
    ],
)
def test_a_mistyped_command_is_named_with_the_closest_commands(two_packages, args, message):
    proc = two_packages.mbuild(*args)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr and "invalid label" not in proc.stderr
    assert not (two_packages.root / "mbuild-out").exists()


@pytest.mark.parametrize("args", [["//p:x"], [":x"], ["-q", "//p:x"], ["q:y"], ["-j", "1", "..."]])
def test_label_looking_first_words_still_build(two_packages, args):
    proc = two_packages.mbuild(*args, cwd=two_packages.root / "p")
    assert proc.returncode == 0, proc.stderr
    assert "Build succeeded" in proc.stderr
