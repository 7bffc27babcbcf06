"""Canonical encoding: injective, order-insensitive where it should be, and strict about what it refuses."""

import dataclasses
import enum
import math
import os
import subprocess
import sys
from pathlib import PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbuild.encoding import encode
from mbuild.errors import EncodingError


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Opt:
    lr: float
    name: str


@dataclasses.dataclass(frozen=True)
class OtherOpt:  # same fields as Opt: must still encode differently
    lr: float
    name: str


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8), st.binary(max_size=8),
    st.sampled_from(list(Color)),
)
keys = st.one_of(st.text(max_size=6), st.integers(-5, 5))
values = st.recursive(
    st.one_of(scalars, st.builds(Opt, st.floats(allow_nan=False), st.text(max_size=4)), st.builds(OtherOpt, st.floats(allow_nan=False), st.text(max_size=4))),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
        st.frozensets(st.text(max_size=4), max_size=4),
        st.frozensets(st.integers(), max_size=4),
    ),
    max_leaves=12,
)


def typed(v):
    """An independent normal form: equal exactly when mbuild promises equal encodings."""
    t = type(v)
    if v is None or t is bool or t is int or t is str or t is bytes:
        return (t.__name__, v)
    if t is float:
        return ("float", "nan" if math.isnan(v) else v.hex())
    if t in (list, tuple):
        return ("list", tuple(typed(x) for x in v))
    if t is dict:
        return ("dict", frozenset((typed(k), typed(x)) for k, x in v.items()))
    if t in (set, frozenset):
        return ("set", frozenset(typed(x) for x in v))
    if isinstance(v, enum.Enum):
        return ("enum", t.__qualname__, v.name)
    if dataclasses.is_dataclass(v):
        return ("dc", t.__qualname__, typed(dataclasses.asdict(v)))
    raise TypeError(t)


@given(values, values)
@settings(max_examples=400)
def test_encodings_are_equal_exactly_when_values_are(a, b):
    assert (encode(a) == encode(b)) == (typed(a) == typed(b))


@given(values)
def test_encoding_is_deterministic(v):
    assert encode(v) == encode(v)


@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=6))
def test_dict_order_does_not_matter(d):
    assert encode(d) == encode(dict(reversed(list(d.items()))))


def test_concatenation_cannot_collide():
    assert encode(["ab", "c"]) != encode(["a", "bc"])
    assert encode([1, 23]) != encode([12, 3])


def test_types_are_part_of_the_value():
    assert len({encode(1), encode(1.0), encode(True), encode("1"), encode(b"1")}) == 5
    assert encode(0.0) != encode(-0.0)
    assert encode(Opt(1.0, "a")) != encode(OtherOpt(1.0, "a"))
    assert encode(Opt(1.0, "a")) != encode({"lr": 1.0, "name": "a"})


def test_list_and_tuple_are_the_same_spelling():
    assert encode([1, (2, 3)]) == encode((1, [2, 3]))


def test_same_encoding_in_other_processes_whatever_the_hash_seed():
    code = "from mbuild.encoding import encode; import sys; sys.stdout.write(encode({'s': frozenset({'a','b','c','d','e','f'}), 'x': [1.5, None]}).hex())"
    outs = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True).stdout
        for seed in ("0", "1", "12345")
    }
    assert len(outs) == 1


@pytest.mark.parametrize(
    "value, where, reason",
    [
        ({"fn": lambda x: x}, "config.fn", "cannot be encoded deterministically"),
        ({"a": [1, object()]}, "config.a[1]", "no deterministic encoding"),
        ({"s": {1, "a"}}, "config.s", "mixed types"),
        ({"p": PurePosixPath("/etc/passwd")}, "config.p", "absolute path"),
        ({"d": {(1, 2): 3}}, "config.d", "dict key"),
        ({"c": Opt}, "config.c", "not a value"),
    ],
)
def test_refusals_name_the_attribute(value, where, reason):
    with pytest.raises(EncodingError) as info:
        encode(value, "config")
    assert info.value.path == where
    assert reason in str(info.value)


def test_relative_paths_are_fine():
    assert encode(PurePosixPath("data/x.txt")) != encode("data/x.txt")
