"""`mbuild query` as users run it: a fresh process per call, exit codes, messages, shorthands,
relative patterns, and that a query builds nothing and leaves the cache alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mbuild.front.query.command import command_line_query
from mbuild.front.query.syntax import unparse

# Registers the command if engine/cli.py does not yet, so these tests run before and after it does.
RUNNER = """
import sys
from mbuild.front.cli import main
from mbuild.front.query.command import query
if "query" not in main.commands:
    main.add_command(query)
sys.argv[0] = "mbuild"
main()
"""


def mbuild(ws, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=cwd or ws.root, capture_output=True, text=True, timeout=120)


@pytest.fixture
def pipeline(ws):
    ws.write("data/raw.txt", "raw\n")
    ws.build_file("data", """
        step(name="download", deps=["raw.txt"])
        step(name="corpus", deps=[":download"])
    """)
    ws.build_file("experiments", """
        step(name="train_llama", deps=["//data:corpus"], resources={"accelerator": "v5p-8"})
        step(name="eval", deps=[":train_llama", "//data:download"])
    """)
    return ws


def test_deps_prints_labels_in_dependency_order(pipeline):
    proc = mbuild(pipeline, "query", "deps(//experiments:train_llama)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["//experiments:train_llama", "//data:corpus", "//data:download", "//data:raw.txt"]


@pytest.mark.parametrize(
    "words, expected",
    [
        (("deps", "//a:x"), "deps(//a:x)"),
        (("rdeps", "//a:x"), "rdeps(//..., //a:x)"),
        (("path", "//a:x", "//b:y"), "somepath(//a:x, //b:y)"),
        (("rdeps", "kind(step, //a/...)"), "rdeps(//..., kind(step, //a/...))"),  # arguments are expressions
        (("deps(//a:x)", "+", "//b:y"), "deps(//a:x) + //b:y"),  # otherwise the words are the query
        (("path", "//a:x"), "path //a:x"),
    ],
)
def test_shorthands_expand_to_expressions(words, expected):
    query = command_line_query(words)
    assert (query if isinstance(query, str) else unparse(query)) == expected


def test_shorthands_on_the_command_line(pipeline):
    rdeps = mbuild(pipeline, "query", "rdeps", "//data:corpus", "--output", "label_kind")
    assert rdeps.stdout.splitlines() == [
        "step rule //experiments:eval", "remote step rule //experiments:train_llama", "step rule //data:corpus"]
    path = mbuild(pipeline, "query", "path", "//experiments:eval", "//data:raw.txt")
    assert path.stdout.splitlines() == ["//experiments:eval", "//data:download", "//data:raw.txt"]
    tree = mbuild(pipeline, "query", "deps", "//experiments:eval", "--output", "tree")
    assert tree.stdout.splitlines()[:3] == ["//experiments:eval", "├── //experiments:train_llama", "│   └── //data:corpus"]


def test_json_output(pipeline):
    proc = mbuild(pipeline, "query", "//experiments:all", "--output", "json")
    items = json.loads(proc.stdout)
    assert [i["label"] for i in items] == ["//experiments:eval", "//experiments:train_llama"]
    assert items[1]["attributes"]["resources"]["accelerator"] == "v5p-8" and items[1]["deps"] == ["//data:corpus"]


def test_relative_patterns_from_a_subdirectory_and_dash_C(pipeline):
    proc = mbuild(pipeline, "query", ":all - :eval", cwd=pipeline.root / "experiments")
    assert proc.stdout.splitlines() == ["//experiments:train_llama"]
    proc = mbuild(pipeline, "-C", "data", "query", "...", "--output", "package")
    assert proc.stdout == "data\n"


def test_a_query_builds_nothing_and_leaves_the_cache_alone(pipeline):
    mbuild(pipeline, "query", "deps(//...)")
    assert not (pipeline.root / "mbuild-out").exists()
    cache = pipeline.root / ".mbuild" / "cache"
    assert not cache.exists() or sorted(p.name for p in cache.iterdir()) == [".gitignore", "buildc"]  # only compiled BUILD files (and the marker)


@pytest.mark.parametrize(
    "query, message",
    [
        ("deps(//data:corpus", "error: query syntax error at column 19: expected ')', found the end of the query\n"
                               "  deps(//data:corpus\n"
                               "                    ^\n"),
        ("dep(//data:corpus)", "unknown function 'dep' (did you mean 'deps'"),
        ("somepath(//data:corpus)", "somepath(from, to) takes 2 arguments, got 1"),
        ("deps(//data:corpse)", "no target named 'corpse' in package '//data' (data/BUILD.py) and no such source file (did you mean 'corpus'?)"),
        ("//nowhere/...", "directory 'nowhere' does not exist"),
        ("let x = //data:all in $y", "undefined variable $y"),
    ],
)
def test_errors_are_usage_errors_that_say_what_is_wrong(pipeline, query, message):
    proc = mbuild(pipeline, "query", query)
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr


def test_an_unloadable_package_names_its_build_file_and_why(pipeline):
    pipeline.build_file("broken", 'step(name="x", deps=undefined_name)\n')
    proc = mbuild(pipeline, "query", "//...")
    assert proc.returncode == 2
    assert "error: broken/BUILD.py:3: NameError: name 'undefined_name' is not defined" in proc.stderr


def test_empty_results_and_help(pipeline):
    proc = mbuild(pipeline, "query", "//data:all ^ //experiments:all")
    assert proc.returncode == 0 and proc.stdout == "" and "Empty results" in proc.stderr
    helped = mbuild(pipeline, "query", "--help")
    assert "Usage: mbuild query" in helped.stdout and "minrank" in helped.stdout
