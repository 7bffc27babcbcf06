"""A rule's attribute schema (`attr.label(...)`, `attr.int(...)`, ...) and the resources an action
may ask for (which send it to fray)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mbuild.errors import RuleDefinitionError


_REQUIRED = object()


DEP_KINDS = frozenset({"label", "label_list", "label_dict"})


@dataclass(frozen=True)
class Attr:
    """One attribute of a rule's schema. Build these with the `attr` helpers."""

    kind: str
    default: Any = _REQUIRED
    doc: str = ""
    values: tuple | None = None  # allowed values (string attributes)
    type: type | None = None  # required class (value attributes)

    @property
    def is_dep(self) -> bool:
        return self.kind in DEP_KINDS

    @property
    def mandatory(self) -> bool:
        return self.default is _REQUIRED


class attr:  # noqa: N801 — a namespace, spelled like Bazel's `attr` module
    """Attribute schema constructors, named as in Bazel (`attr.label`, `attr.int`, ...)."""

    @staticmethod
    def label(*, default: str | None | object = _REQUIRED, doc: str = "") -> Attr:
        """One dependency: a target (its output directory) or a source file (its path)."""
        return Attr("label", default, doc)

    @staticmethod
    def label_list(*, default: Sequence[str] | object = _REQUIRED, doc: str = "") -> Attr:
        """A list of dependencies; a filegroup or list of files arrives as a list of paths."""
        return Attr("label_list", tuple(default) if isinstance(default, (list, tuple)) else default, doc)

    @staticmethod
    def label_dict(*, default: Mapping[str, Any] | object = _REQUIRED, doc: str = "") -> Attr:
        """Named dependencies: a dict of names to a label or a list of labels."""
        return Attr("label_dict", default, doc)

    @staticmethod
    def string(*, default: str | object = _REQUIRED, values: Sequence[str] | None = None, doc: str = "") -> Attr:
        return Attr("string", default, doc, tuple(values) if values else None)

    @staticmethod
    def int(*, default: int | object = _REQUIRED, doc: str = "") -> Attr:
        return Attr("int", default, doc)

    @staticmethod
    def float(*, default: float | object = _REQUIRED, doc: str = "") -> Attr:
        return Attr("float", default, doc)

    @staticmethod
    def bool(*, default: bool | object = _REQUIRED, doc: str = "") -> Attr:
        return Attr("bool", default, doc)

    @staticmethod
    def string_list(*, default: Sequence[str] | object = _REQUIRED, doc: str = "") -> Attr:
        return Attr("string_list", tuple(default) if isinstance(default, (list, tuple)) else default, doc)

    @staticmethod
    def string_dict(*, default: Mapping[str, str] | object = _REQUIRED, doc: str = "") -> Attr:
        return Attr("string_dict", default, doc)

    @staticmethod
    def value(*, type: type | None = None, default: Any = _REQUIRED, doc: str = "") -> Attr:  # noqa: A002
        """Any deterministically encodable value (dict, list, dataclass, enum...), optionally of one class."""
        return Attr("value", default, doc, None, type)

    @staticmethod
    def code(*, default: str | object = _REQUIRED, doc: str = "") -> Attr:
        """A function named 'module:qualname'. Its module's source goes into the key."""
        return Attr("code", default, doc)


@dataclass(frozen=True)
class Resources:
    """What an action asks of the machine that runs it. Asking makes the action remote-tagged."""

    cpu: float = 1
    ram: str = "1g"
    disk: str = "1g"
    accelerator: str | None = None

    @classmethod
    def of(cls, value: Resources | Mapping[str, Any] | None, where: str) -> Resources | None:
        if value is None or isinstance(value, Resources):
            return value
        if isinstance(value, Mapping):
            try:
                return cls(**value)
            except TypeError as exc:
                raise RuleDefinitionError(f"{where}: bad resources {dict(value)!r}: {exc}") from None
        raise RuleDefinitionError(f"{where}: resources must be a dict or Resources, got {type(value).__name__}")
