"""Labels and target patterns: parsing, printing, and the errors users see."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mbuild.errors import LabelError
from mbuild.labels import Label, PatternKind, parse_label, parse_pattern

segment = st.from_regex(r"[A-Za-z0-9_\-+=,@~][A-Za-z0-9_\-.+=,@~]{0,7}", fullmatch=True).filter(lambda s: s not in (".", ".."))
path = st.lists(segment, min_size=1, max_size=4).map("/".join)
labels = st.builds(Label, st.one_of(st.just(""), path), path)


@given(labels)
def test_printing_then_parsing_is_the_identity(label):
    assert parse_label(str(label)) == label


@given(labels)
def test_relative_spellings_resolve_in_their_package(label):
    assert parse_label(f":{label.name}", label.package) == label
    assert parse_label(label.name, label.package) == label
    assert parse_label(label.relative_to(label.package), label.package) == label


@given(path)
def test_package_shorthand_names_the_target_named_like_the_last_segment(pkg):
    assert parse_label(f"//{pkg}") == Label(pkg, pkg.rsplit("/", 1)[-1])


@pytest.mark.parametrize(
    "text, reason",
    [
        ("//a/../b:c", "'..'"),
        ("//a:b:c", "more than one ':'"),
        ("//a//b:c", "empty segment"),
        ("//a:", "empty target name"),
        ("//", "names no target"),
        ("@repo//a:b", "external repositories"),
        ("/a:b", "start with '//'"),
        ("//a b:c", "whitespace"),
        ("//a:b$", "not allowed"),
        ("//a/:b", "must not start or end with '/'"),
        (":x", "needs a package"),
    ],
)
def test_bad_labels_name_the_label_and_the_problem(text, reason):
    with pytest.raises(LabelError) as info:
        parse_label(text)
    assert repr(text) in str(info.value)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "text, kind, package",
    [
        ("//experiments:all", PatternKind.ALL, "experiments"),
        ("//experiments:*", PatternKind.ALL, "experiments"),
        ("//experiments/...", PatternKind.RECURSIVE, "experiments"),
        ("//experiments/...:all", PatternKind.RECURSIVE, "experiments"),
        ("//...", PatternKind.RECURSIVE, ""),
        ("//:all", PatternKind.ALL, ""),
        ("//a/b:c", PatternKind.LABEL, "a/b"),
    ],
)
def test_patterns(text, kind, package):
    pattern = parse_pattern(text)
    assert (pattern.kind, pattern.package) == (kind, package)
    assert parse_pattern(str(pattern)) == pattern


def test_relative_all_pattern_uses_the_package():
    assert parse_pattern(":all", "pkg").package == "pkg"


def test_recursive_pattern_only_takes_all():
    with pytest.raises(LabelError, match="can only be followed by ':all'"):
        parse_pattern("//a/...:b")
