"""Checking a dataclass value's fields against their annotations, when the BUILD file is loaded.

`learning_rate: float` given `"fast"` is an error at the rule call's line instead of 12 s into
training. Checks follow what Python users expect of annotations: an int is a float (not a bool),
`X | None` and `Optional[X]` admit None, `list[X]`, `tuple[X, ...]`, `dict[K, V]`, `set[X]`
check their items, `Literal[...]` its values, a nested dataclass its own fields. Annotations
this does not understand (Callable, a TypeVar, a string it cannot resolve, a Protocol) pass.

Each class's annotations are turned into checker functions once per process, so a load pays a
few function calls per field.
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

# A checker returns None when the value fits, else (path below the value, expected, the offender).
Problem = tuple[str, str, Any]
Checker = Callable[[Any], Problem | None]

_CLASS_CHECKERS: dict[type, list[tuple[str, frozenset[type], Checker]]] = {}


class FieldTypeError(Exception):
    """A field holding a value its annotation does not admit; `path` is dotted from the value."""

    def __init__(self, path: str, expected: str, value: Any):
        self.path, self.expected, self.value = path, expected, value
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        super().__init__(f"{path}: expected {expected}, got {type(value).__name__} {shown}")


def check_value(value: Any, name: str) -> None:
    """Raise FieldTypeError if a dataclass in `value` (itself, or inside lists, tuples and dicts)
    has a field whose value its annotation does not admit; the path starts with `name`."""
    problem = _walk(value)
    if problem is not None:
        raise FieldTypeError(name + problem[0], problem[1], problem[2])


_PLAIN = frozenset({str, int, float, bool, type(None), bytes})  # hold no dataclass: not walked into


def _walk(value: Any) -> Problem | None:
    if value.__class__ in _PLAIN:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _check_instance(value)
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if item.__class__ not in _PLAIN and (p := _walk(item)) is not None:
                return (f"[{i}]{p[0]}", p[1], p[2])
    elif isinstance(value, dict):
        for key, item in value.items():
            if (p := _walk(item)) is not None:
                return (f"[{key!r}]{p[0]}", p[1], p[2])
    return None


_MISSING = object()


def _check_instance(value: Any) -> Problem | None:
    cls = value.__class__
    for name, fast, checker in _CLASS_CHECKERS.get(cls) or _checkers_of(cls):
        field_value = getattr(value, name, _MISSING)  # missing: an init=False field __post_init__ did not set
        if field_value.__class__ in fast or field_value is _MISSING:
            continue  # the common case, without a call: an int for `int`, a float for `float`
        if (p := checker(field_value)) is not None:
            return (f".{name}{p[0]}", p[1], p[2])
    return None


def _checkers_of(cls: type) -> list[tuple[str, frozenset[type], Checker]]:
    checkers = _CLASS_CHECKERS.get(cls)
    if checkers is None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # an annotation naming something not importable here: check what resolves
            hints = {f.name: _resolve(f.type, cls) for f in dataclasses.fields(cls)}
        checkers = []
        for f in dataclasses.fields(cls):
            annotation = hints.get(f.name, Any)
            if (checker := checker_for(annotation)) is not None:
                checkers.append((f.name, fast_types(annotation), checker))
        _CLASS_CHECKERS[cls] = checkers
    return checkers


_NUMBERS = {int: frozenset({int}), float: frozenset({int, float}), complex: frozenset({int, float, complex})}


def fast_types(annotation: Any) -> frozenset[type]:
    """Classes whose exact instances `annotation` always admits, so they need no checker call."""
    if isinstance(annotation, type) and annotation in _NUMBERS:
        return _NUMBERS[annotation]
    if annotation is None or annotation is type(None):
        return frozenset({type(None)})
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return fast_types(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return frozenset().union(*map(fast_types, args))
    if origin is None and isinstance(annotation, type) and not dataclasses.is_dataclass(annotation) and not getattr(annotation, "_is_protocol", False):
        return frozenset({annotation})
    return frozenset()


def _resolve(annotation: Any, cls: type) -> Any:
    """One field's annotation, evaluated if it is a string (`from __future__ import annotations`); Any if it cannot be."""
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules.get(cls.__module__)
    try:
        return eval(annotation, dict(vars(module)) if module else {}, {cls.__name__: cls})  # noqa: S307 — the class's own annotation
    except Exception:
        return Any


def describe(annotation: Any) -> str:
    """`float`, `int | None`, `list[str]`, `Literal['adam', 'sgd']`: as a user wrote it."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return str(annotation).replace("typing.", "").replace("collections.abc.", "")


def checker_for(annotation: Any) -> Checker | None:
    """The checker for values of `annotation`, or None when anything passes (or it is not understood)."""
    if annotation is Any or annotation is object or isinstance(annotation, (str, typing.ForwardRef, typing.TypeVar)):
        return None
    expected = describe(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is None or annotation is type(None):
        return lambda v: None if v is None else ("", "None", v)
    if origin is typing.Annotated:
        return checker_for(args[0])
    if origin is typing.Union or origin is types.UnionType:
        options = [checker_for(a) for a in args]
        if any(c is None for c in options):
            return None

        def union(v: Any) -> Problem | None:
            problems = []
            for option in options:
                if (p := option(v)) is None:
                    return None
                problems.append(p)
            # one option failed deeper inside the value (a dataclass field): that says more
            deep = [p for p in problems if p[0]]
            return deep[0] if len(deep) == 1 else ("", expected, v)

        return union
    if origin is typing.Literal:
        allowed = frozenset((a, type(a)) for a in args)  # Literal values are hashable; 1 is not True

        def literal(v: Any) -> Problem | None:
            try:
                return None if (v, v.__class__) in allowed else ("", expected, v)
            except TypeError:  # an unhashable value is no literal
                return ("", expected, v)

        return literal
    if annotation is float:
        return lambda v: None if isinstance(v, (int, float)) and not isinstance(v, bool) else ("", expected, v)
    if annotation is complex:
        return lambda v: None if isinstance(v, (int, float, complex)) and not isinstance(v, bool) else ("", expected, v)
    if annotation is int:
        return lambda v: None if isinstance(v, int) and not isinstance(v, bool) else ("", expected, v)
    if origin is not None:
        return _container(origin, args, expected)
    if isinstance(annotation, typing.NewType):
        return checker_for(annotation.__supertype__)
    if not isinstance(annotation, type) or getattr(annotation, "_is_protocol", False):
        return None  # Callable, TypeAlias, a Protocol...: not checked
    if dataclasses.is_dataclass(annotation):
        def nested(v: Any) -> Problem | None:
            return _check_instance(v) if isinstance(v, annotation) else ("", expected, v)

        return nested
    return lambda v: None if isinstance(v, annotation) else ("", expected, v)


def _container(origin: Any, args: tuple, expected: str) -> Checker | None:
    """list[X], tuple[X, ...], tuple[X, Y], dict[K, V], set[X] and their collections.abc forms."""
    if not isinstance(origin, type):
        return None
    if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[X, Y]: fixed length
        items = [checker_for(a) for a in args]
        fasts = [fast_types(a) for a in args]

        def fixed(v: Any) -> Problem | None:
            if not isinstance(v, tuple) or len(v) != len(items):
                return ("", expected, v)
            for x, f in zip(v, fasts):
                if x.__class__ not in f:
                    break
            else:
                return None
            return _first(((f"[{i}]", c, x) for i, (c, x) in enumerate(zip(items, v))))

        return fixed
    if issubclass(origin, abc.Mapping):
        key_check = checker_for(args[0]) if args else None
        value_check = checker_for(args[1]) if len(args) > 1 else None
        key_fast, value_fast = (fast_types(args[0]), fast_types(args[1])) if len(args) > 1 else (frozenset(), frozenset())

        def mapping(v: Any) -> Problem | None:
            if not isinstance(v, origin):
                return ("", expected, v)
            if all(k.__class__ in key_fast and x.__class__ in value_fast for k, x in v.items()):
                return None
            for k, x in v.items():
                if key_check is not None and (p := key_check(k)) is not None:
                    return (f"[{k!r}] (key)", p[1], p[2])
                if value_check is not None and (p := value_check(x)) is not None:
                    return (f"[{k!r}]{p[0]}", p[1], p[2])
            return None

        return mapping
    item_check = checker_for(args[0]) if args and issubclass(origin, abc.Iterable) else None
    fast = fast_types(args[0]) if args else frozenset()
    sized = issubclass(origin, abc.Sequence)

    def collection(v: Any) -> Problem | None:
        if not isinstance(v, origin) or (origin is abc.Sequence and isinstance(v, str)):
            return ("", expected, v)
        if item_check is None or all(x.__class__ in fast for x in v):
            return None
        if sized:
            return _first(((f"[{i}]", item_check, x) for i, x in enumerate(v)))
        return _first((("[...]", item_check, x) for x in v))

    return collection


def _first(checks) -> Problem | None:
    for where, check, value in checks:
        if check is not None and (p := check(value)) is not None:
            return (f"{where}{p[0]}", p[1], p[2])
    return None
