"""Config dataclasses checked against their annotations when the BUILD file loads: random
annotations (nested dataclasses, Optional, unions, list/tuple/dict, Literal) with a value built to
fit (it passes) and the same value with one leaf broken (it fails, naming that leaf's path); and
the error a user sees, at the BUILD file's line, before anything runs."""

from __future__ import annotations

import dataclasses
import itertools
import typing
from typing import Any, Literal, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbuild.model.fieldtypes import FieldTypeError, check_value

_names = itertools.count()


@dataclasses.dataclass(frozen=True)
class Shape:
    """An annotation, a way to draw a value that fits it, and a way to draw one broken leaf."""

    annotation: Any
    good: st.SearchStrategy  # values that fit
    bad: st.SearchStrategy  # (value that does not fit, path of the broken leaf)


def leaf(annotation, good, wrong) -> Shape:
    return Shape(annotation, good, st.tuples(wrong, st.just("")))


LEAVES = [
    leaf(int, st.integers(), st.sampled_from(["1", 1.5, True, None])),
    leaf(float, st.floats(allow_nan=False) | st.integers(), st.sampled_from(["fast", True, None, [1.0]])),  # an int is a float
    leaf(str, st.text(max_size=5), st.sampled_from([1, b"x", None])),
    leaf(bool, st.booleans(), st.sampled_from([1, 0, "True"])),
    leaf(Literal["adam", "sgd"], st.sampled_from(["adam", "sgd"]), st.sampled_from(["Adam", 1, None])),
    leaf(int | str, st.integers() | st.text(max_size=3), st.sampled_from([1.5, None, [1]])),
]


def list_of(s: Shape) -> Shape:
    good = st.lists(s.good, max_size=3)

    @st.composite
    def bad(draw):
        if draw(st.booleans()):
            return draw(st.sampled_from([(1, ""), ("abc", ""), ((), "")]))  # not a list at all
        items, (wrong, path) = draw(good), draw(s.bad)
        i = draw(st.integers(0, len(items)))
        return [*items[:i], wrong, *items[i:]], f"[{i}]{path}"

    return Shape(list[s.annotation], good, bad())


def tuple_of(s: Shape) -> Shape:
    inner = list_of(s)
    return Shape(tuple[s.annotation, ...], inner.good.map(tuple),
                 inner.bad.map(lambda b: (tuple(b[0]), b[1]) if isinstance(b[0], list) else ([], "")))


def dict_of(s: Shape) -> Shape:
    good = st.dictionaries(st.sampled_from("abc"), s.good, max_size=3)

    @st.composite
    def bad(draw):
        if draw(st.booleans()):
            return draw(st.sampled_from([([], ""), ("a", "")]))
        items, (wrong, path), key = draw(good), draw(s.bad), draw(st.sampled_from("xyz"))
        return {**items, key: wrong}, f"[{key!r}]{path}"

    return Shape(dict[str, s.annotation], good, bad())


def optional(s: Shape) -> Shape:
    # Broken inside (a field, an item) the path is the leaf's; broken at the top it is the Optional's.
    return Shape(Optional[s.annotation], st.none() | s.good, s.bad.filter(lambda b: b[0] is not None))


def record(fields: list[Shape]) -> Shape:
    cls = dataclasses.make_dataclass(f"Config{next(_names)}", [(f"f{i}", s.annotation) for i, s in enumerate(fields)], frozen=True)
    good = st.tuples(*(s.good for s in fields)).map(lambda values: cls(*values))

    @st.composite
    def bad(draw):
        values = list(draw(st.tuples(*(s.good for s in fields))))
        i = draw(st.integers(0, len(fields) - 1))
        values[i], path = draw(fields[i].bad)
        return cls(*values), f".f{i}{path}"

    return Shape(cls, good, bad())


shapes = st.recursive(
    st.sampled_from(LEAVES),
    lambda inner: st.one_of(
        inner.map(list_of), inner.map(tuple_of), inner.map(dict_of), inner.map(optional),
        st.lists(inner, min_size=1, max_size=3).map(record),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(shapes.map(lambda s: record([s])), st.data())
def test_a_value_that_fits_passes_and_one_broken_leaf_is_named(shape, data):
    check_value(data.draw(shape.good), "config")
    wrong, path = data.draw(shape.bad)
    with pytest.raises(FieldTypeError) as exc:
        check_value(wrong, "config")
    assert exc.value.path == "config" + path, (typing.get_type_hints(type(wrong)), wrong)


@dataclasses.dataclass
class Loose:
    fn: typing.Callable[[int], int]
    anything: Any
    unresolved: NoSuchClass  # noqa: F821 — not importable: not checked
    also: "list[NoSuchClass] | None"  # noqa: F821
    lr: float  # resolves, so it is checked although its neighbours do not


def test_what_passes_unchecked():
    check_value(Loose(fn=print, anything=object(), unresolved=3, also="x", lr=1), "c")
    check_value({"a": [1, "x", None]}, "c")  # only dataclasses (here or inside containers) are checked
    with pytest.raises(FieldTypeError, match=r"^c\[0\]\.lr: expected float, got str 'x'$"):
        check_value([Loose(print, 1, 2, 3, "x")], "c")


@dataclasses.dataclass
class Inner:
    lr: float


@dataclasses.dataclass
class Outer:
    inner: Inner
    layers: list[int]
    opt: Optional[Literal["adam", "sgd"]] = None


def test_messages_say_what_was_expected_and_what_was_given():
    with pytest.raises(FieldTypeError, match=r"^train\.inner\.lr: expected float, got str 'fast'$"):
        check_value(Outer(Inner("fast"), []), "train")
    with pytest.raises(FieldTypeError, match=r"^t\.layers\[1\]: expected int, got float 2\.5$"):
        check_value(Outer(Inner(1), [1, 2.5]), "t")
    with pytest.raises(FieldTypeError, match=r"^t\.opt: expected Optional\[Literal\['adam', 'sgd'\]\], got str 'Adam'$"):
        check_value(Outer(Inner(1), [], "Adam"), "t")
    with pytest.raises(FieldTypeError, match=r"^t\[0\]\.inner: expected Inner, got dict \{'lr': 1\}$"):
        check_value([Outer({"lr": 1}, [])], "t")


CONFIG_MODULE = '''
from dataclasses import dataclass, field
from typing import Literal, Optional

@dataclass(frozen=True)
class Optim:
    name: Literal["adam", "sgd"] = "adam"
    betas: tuple[float, float] = (0.9, 0.95)

@dataclass(frozen=True)
class TrainConfig:
    steps: int
    learning_rate: float
    optim: Optim = Optim()
    schedule: Optional[dict[str, float]] = None
'''


@pytest.fixture
def configured(ws):
    ws.write(f"{ws.rules}_config.py", CONFIG_MODULE)
    return ws


def declare(ws, train: str):
    ws.build_file("exp", f"""
        from {ws.rules}_config import Optim, TrainConfig
        step(name="prep", text="p")
        py_function(name="train", fn="{ws.rules}_config:__name__", config={train})
    """)


@pytest.mark.parametrize(
    "train, message",
    [
        ('TrainConfig(steps=10, learning_rate="fast")', "config.learning_rate: expected float, got str 'fast'"),
        ("TrainConfig(steps=1.0, learning_rate=1)", "config.steps: expected int, got float 1.0"),
        ('TrainConfig(steps=1, learning_rate=1e-3, optim=Optim(name="adamw"))', "config.optim.name: expected Literal['adam', 'sgd'], got str 'adamw'"),
        ("TrainConfig(steps=1, learning_rate=1e-3, optim=Optim(betas=(0.9,)))", "config.optim.betas: expected tuple[float, float], got tuple (0.9,)"),
        ('TrainConfig(steps=1, learning_rate=1e-3, schedule={"warmup": "10"})', "config.schedule['warmup']: expected float, got str '10'"),
    ],
)
def test_a_wrong_field_type_is_an_error_at_the_build_files_line(configured, train, message):
    declare(configured, train)
    proc = configured.mbuild("build", "//exp:prep")  # even building something else: the file is loaded
    assert proc.returncode == 2
    assert proc.stderr == f"error: exp/BUILD.py:5: py_function //exp:train: {message}\n"
    assert not (configured.root / "mbuild-out").exists()


def test_right_types_load_and_ints_are_floats(configured):
    declare(configured, 'TrainConfig(steps=1, learning_rate=1, schedule={"warmup": 10, "decay": 0.5})')
    proc = configured.mbuild("query", "//exp:all")
    assert proc.returncode == 0, proc.stderr
