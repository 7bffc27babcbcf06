"""BUILD files: lazy loading, and errors that name the file, line and label at fault."""

import pytest

from mbuild.errors import BuildFileError, CycleError, NoSuchPackageError, NoSuchTargetError
from mbuild.model.graph import build_graph
from mbuild.labels import parse_label
from mbuild.model.loader import Loader
from mbuild.model.targets import SourceFile
from mbuild.model.workspace import load_workspace


def loader(ws):
    return Loader(load_workspace(ws.root))


def test_only_packages_a_request_reaches_are_loaded(ws):
    ws.build_file("a", 'step(name="x", deps=["//b:y"])\n')
    ws.build_file("b", 'step(name="y")\n')
    ws.build_file("broken", "raise RuntimeError('never evaluated')\n")
    ld = loader(ws)
    graph = build_graph(ld, [parse_label("//a:x")])
    assert [str(n.label) for n in graph.order] == ["//b:y", "//a:x"]
    assert sorted(p.name for p in ld.loaded_packages()) == ["a", "b"]


def test_an_error_in_a_build_file_names_file_and_line(ws):
    ws.build_file("a", 'step(name="x")\n\nx = {}["missing"]\n')
    with pytest.raises(BuildFileError) as info:
        loader(ws).package("a")
    assert info.value.file == "a/BUILD.py" and info.value.line == 5  # 2 header lines + 3
    assert "KeyError" in str(info.value)


def test_syntax_error_names_file_and_line(ws):
    ws.build_file("a", 'step(name="x"\n')
    with pytest.raises(BuildFileError) as info:
        loader(ws).package("a")
    assert info.value.file == "a/BUILD.py" and info.value.line == 3
    assert "syntax error" in str(info.value)


def test_unknown_attribute_with_suggestion(ws):
    ws.build_file("a", 'step(name="x", txt="hi")\n')
    with pytest.raises(BuildFileError) as info:
        loader(ws).package("a")
    assert info.value.line == 3
    assert "unknown attribute 'txt' (did you mean 'text'?)" in str(info.value)
    assert "//a:x" in str(info.value)


def test_wrong_attribute_type(ws):
    ws.build_file("a", 'step(name="x", text=3)\n')
    with pytest.raises(BuildFileError, match="attribute 'text' must be a string, got int 3"):
        loader(ws).package("a")


def test_duplicate_target_names(ws):
    ws.build_file("a", 'step(name="x")\nstep(name="x")\n')
    with pytest.raises(BuildFileError) as info:
        loader(ws).package("a")
    assert info.value.line == 4
    assert "duplicate target name 'x' (first declared at a/BUILD.py:3)" in str(info.value)


def test_missing_target_suggests_close_names(ws):
    ws.build_file("a", 'step(name="tokenizer")\nstep(name="x", deps=[":tokeniser"])\n')
    with pytest.raises(NoSuchTargetError) as info:
        build_graph(loader(ws), [parse_label("//a:x")])
    msg = str(info.value)
    assert "//a:x (a/BUILD.py:4) depends on //a:tokeniser" in msg and "did you mean 'tokenizer'" in msg


def test_missing_package(ws):
    ws.build_file("experiments", 'step(name="x")\n')
    with pytest.raises(NoSuchPackageError, match="did you mean 'experiments'"):
        loader(ws).package("experiment")


def test_cycles_are_printed(ws):
    ws.build_file("a", 'step(name="x", deps=[":y"])\nstep(name="y", deps=["//b:z"])\n')
    ws.build_file("b", 'step(name="z", deps=["//a:x"])\n')
    with pytest.raises(CycleError) as info:
        build_graph(loader(ws), [parse_label("//a:x")])
    assert str(info.value) == "dependency cycle: //a:x -> //a:y -> //b:z -> //a:x"


def test_source_files_are_targets(ws):
    ws.write("a/data/x.txt", "hello")
    ws.build_file("a", 'step(name="x", deps=["data/x.txt"])\n')
    graph = build_graph(loader(ws), [parse_label("//a:x")])
    assert isinstance(graph.node(parse_label("//a:data/x.txt")), SourceFile)


def test_glob_finds_files_but_not_subpackages(ws):
    ws.write("a/d/one.txt", "1")
    ws.write("a/d/two.md", "2")
    ws.write("a/d/sub/three.txt", "3")
    ws.build_file("a/d/sub", 'step(name="s")\n')
    ws.build_file("a", 'from mbuild import glob\nstep(name="x", deps=glob(["d/**/*.txt"]))\n')
    target = loader(ws).target(parse_label("//a:x"))
    assert [str(d) for d in target.deps["deps"]] == ["//a:d/one.txt"]


def test_rule_outside_build_file_is_an_error(ws):
    import importlib
    import sys

    sys.path.insert(0, str(ws.root))
    mod = importlib.import_module(ws.rules)
    with pytest.raises(Exception, match="outside a BUILD file"):
        mod.step(name="x")
