"""`mbuild query` where users type Bazel: `--output location` and `--output build`, the flags
Bazel users pass (`--keep_going`, `--noimplicit_deps`, `--order_output`), and `some`, `visible`,
`loadfiles`, `rbuildfiles` on a workspace whose BUILD files import modules that import others."""

from __future__ import annotations

import pytest

from mbuild.front.query.attributes import attributes
from mbuild.front.query.evaluate import evaluate
from mbuild.model.loader import Loader
from mbuild.model.workspace import load_workspace


@pytest.fixture
def pipeline(ws):
    ws.write("data/raw.txt", "raw\n")
    ws.build_file("data", """
        step(name="download", deps=["raw.txt"])

        if True:
            step(
                name="corpus", deps=[":download"], text='say "hi"', tags=["big"], resources={"cpu": 4}, env=["HOME"])
    """)
    ws.build_file("exp", """
        import lib.presets
        step(name="train", deps=["//data:corpus"], text=lib.presets.TEXT)
    """)
    ws.write("lib/__init__.py", "")
    ws.write("lib/presets.py", "from . import sizes\nfrom .deep.values import V\nTEXT = 'p' + sizes.S + V\n")
    ws.write("lib/sizes.py", "S = 's'\n")
    ws.write("lib/deep/__init__.py", "")
    ws.write("lib/deep/values.py", "V = 'v'\n")
    ws.write("lib/unused.py", "")
    return ws


def query(ws, *args, cwd=None) -> list[str]:
    proc = ws.mbuild("query", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_output_location_is_bazels_file_line_column(pipeline):
    root = pipeline.root.resolve()
    assert query(pipeline, "deps(//data:corpus)", "--output", "location") == [
        f"{root}/data/BUILD.py:6:5: remote step rule //data:corpus",  # the call starts there, inside the `if`
        f"{root}/data/BUILD.py:3:1: step rule //data:download",
        f"{root}/data/raw.txt:1:1: source file //data:raw.txt",
    ]


def test_output_build_reads_back_as_the_same_target(pipeline):
    lines = query(pipeline, "//data:corpus", "--output", "build")
    root = pipeline.root.resolve()
    assert lines[:3] == [f"# {root}/data/BUILD.py:6:5", "step(", '  name = "corpus",']
    assert '  text = "say \\"hi\\"",' in lines and '  deps = ["//data:download"],' in lines
    assert '  resources = {"cpu": 4},' in lines and '  tags = ["big"],' in lines and '  env = ["HOME"],' in lines
    assert "log" not in "\n".join(lines)  # attributes left at their defaults are not given
    pipeline.build_file("copy", "\n".join(lines))  # pasted into another BUILD file: the same target
    loader = Loader(load_workspace(pipeline.root))
    original, copy = (loader.target(evaluate(f"//{p}:corpus", loader).graph.nodes[0].label) for p in ("data", "copy"))
    assert attributes(copy) == attributes(original)


def test_output_build_of_a_source_file_says_so(pipeline):
    assert query(pipeline, "//data:raw.txt", "--output", "build")[1] == "# //data:raw.txt: a source file (data/raw.txt)"


def test_bazel_flags_are_accepted(pipeline):
    expected = query(pipeline, "deps(//exp:train)")
    assert expected[0] == "//exp:train"
    assert query(pipeline, "deps(//exp:train)", "--keep_going", "--noimplicit_deps", "--order_output=full") == expected
    assert query(pipeline, "deps(//exp:train)", "-k", "--order_output", "deps") == expected
    assert query(pipeline, "deps(//exp:train)", "--order_output=no") == sorted(expected)
    proc = pipeline.mbuild("query", "//exp:train", "--order_output=sometimes")
    assert proc.returncode == 2 and "'sometimes' is not one of 'no', 'deps', 'auto', 'full'" in proc.stderr


def test_some_and_visible(pipeline):
    assert query(pipeline, "some(//data:all)") == ["//data:corpus"]
    assert query(pipeline, "some(deps(//exp:train), 2)") == ["//data:corpus", "//data:download"]
    assert query(pipeline, "visible(//exp:train, //data:all)") == ["//data:corpus", "//data:download"]
    proc = pipeline.mbuild("query", "some(//data:all except //data:all)")
    assert proc.returncode == 2 and proc.stderr == "error: some(): argument set is empty\n"


def test_loadfiles_follows_imports_through_workspace_modules(pipeline):
    # exp/BUILD.py imports lib.presets, which imports .sizes and .deep.values; the test rules
    # module (at the root) imports only mbuild. lib/unused.py is imported by nothing.
    modules = ["//:" + pipeline.rules + ".py", "//lib:__init__.py", "//lib:presets.py", "//lib:sizes.py",
               "//lib/deep:__init__.py", "//lib/deep:values.py"]
    assert sorted(query(pipeline, "loadfiles(//exp:train)")) == sorted(modules)
    assert sorted(query(pipeline, "buildfiles(//exp:train)")) == sorted(["//exp:BUILD.py", *modules])
    assert query(pipeline, "loadfiles(//data:download)") == ["//:" + pipeline.rules + ".py"]


def test_rbuildfiles_names_the_build_files_a_change_would_reload(pipeline):
    assert query(pipeline, "rbuildfiles(lib/deep/values.py)") == ["//exp:BUILD.py"]
    assert sorted(query(pipeline, f"rbuildfiles({pipeline.rules}.py)")) == ["//data:BUILD.py", "//exp:BUILD.py"]
    assert query(pipeline, "rbuildfiles(data/BUILD.py, lib/unused.py)") == ["//data:BUILD.py"]
    proc = pipeline.mbuild("query", "rbuildfiles()")
    assert proc.returncode == 2 and "rbuildfiles(path, ...) takes 1 or more arguments, got 0" in proc.stderr


def test_rbuildfiles_names_a_build_file_that_does_not_parse(pipeline):
    pipeline.write("broken/BUILD.py", "step(name=\n")
    proc = pipeline.mbuild("query", "rbuildfiles(lib/sizes.py)")
    assert proc.returncode == 2 and proc.stderr.startswith("error: rbuildfiles(): broken/BUILD.py:1: ")
