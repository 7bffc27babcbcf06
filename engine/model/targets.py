"""The build model: attributes, rules, targets and source files.

A rule pairs an implementation function with an attribute schema. Calling a rule inside a BUILD
file declares a target in that file's package. Attributes are dependencies (labels) or
configuration values; both go into the action key (dependencies by their output digests).
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from mbuild.encoding import encode
from mbuild.errors import EncodingError, LabelError, RuleDefinitionError, did_you_mean
from mbuild.labels import Label, parse_label

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


@dataclass(frozen=True)
class Location:
    """Where a target was declared: workspace-relative BUILD file and line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


COMMON_ATTRS = ("name", "tags", "resources", "env")


class Rule:
    """An implementation function plus its attribute schema and declared outputs.

    `outputs` is a sequence of relative paths (a trailing '/' declares a directory) or a function
    from the target's configuration to such a sequence.
    """

    def __init__(
        self,
        impl: Callable,
        *,
        attrs: Mapping[str, Attr],
        outputs: Sequence[str] | Callable[[Mapping[str, Any]], Sequence[str]] = (),
        version: str = "1",
        resources: Resources | Mapping[str, Any] | None = None,
        env: Sequence[str] = (),
        doc: str | None = None,
        kind: str | None = None,
    ):
        module = getattr(impl, "__module__", None) or ""
        if module.startswith("BUILD:") or module == "__main__":
            raise RuleDefinitionError(
                f"rule {impl.__qualname__!r} is defined in {module!r}; define rules in an importable "
                "Python module (e.g. rules/my_rules.py) and import it from BUILD files"
            )
        if "<locals>" in impl.__qualname__ or "<lambda>" in impl.__qualname__:
            raise RuleDefinitionError(f"rule implementation {impl.__qualname__!r} must be a module-level function")
        for name, a in attrs.items():
            if name in COMMON_ATTRS:
                raise RuleDefinitionError(f"rule {impl.__qualname__!r}: attribute {name!r} is reserved")
            if not isinstance(a, Attr):
                raise RuleDefinitionError(f"rule {impl.__qualname__!r}: attribute {name!r} must be made with attr.*")
        self.impl = impl
        self.kind = kind or impl.__name__
        self.attrs = dict(attrs)
        self.outputs = outputs if callable(outputs) else tuple(outputs)
        self.version = str(version)
        self.resources = Resources.of(resources, f"rule {self.kind}")
        self.env = tuple(env)
        self.doc = doc if doc is not None else (impl.__doc__ or "").strip()
        self.module = module
        self.identity = f"{module}:{impl.__qualname__}"

    def __repr__(self) -> str:
        return f"<rule {self.kind} ({self.identity})>"

    def checked_outputs(self, where: str) -> tuple[str, ...]:
        """The rule's fixed outputs, validated once."""
        checked = self.__dict__.get("_checked_outputs")
        if checked is None:
            checked = self.__dict__["_checked_outputs"] = _check_outputs(self.outputs, where)
        return checked

    def __call__(self, name: str, **kwargs: Any) -> str:
        """Declare a target in the BUILD file being loaded; returns ':name' for convenience."""
        package = _CURRENT_PACKAGE.get()
        if package is None:
            raise RuleDefinitionError(f"rule {self.kind!r} called outside a BUILD file (name={name!r})")
        location = package.caller_location()
        target = make_target(self, package.name, name, kwargs, location)
        package.add(target)
        return f":{name}"


def rule(
    impl: Callable | None = None,
    *,
    attrs: Mapping[str, Attr] | None = None,
    outputs: Sequence[str] | Callable[[Mapping[str, Any]], Sequence[str]] = (),
    version: str = "1",
    resources: Resources | Mapping[str, Any] | None = None,
    env: Sequence[str] = (),
    doc: str | None = None,
    kind: str | None = None,
):
    """Decorator making a rule from `impl(ctx) -> JSON-able value | None`."""

    def wrap(fn: Callable) -> Rule:
        return Rule(fn, attrs=attrs or {}, outputs=outputs, version=version, resources=resources, env=env, doc=doc, kind=kind)

    return wrap(impl) if impl is not None else wrap


@dataclass(frozen=True, eq=False, slots=True)
class Target:
    """A rule applied to attribute values: one node of the graph, one action."""

    label: Label
    rule: Rule
    config: dict[str, Any]  # configuration attributes, defaults applied
    deps: dict[str, DepValue]  # dependency attributes: a Label, None, or lists/dicts of Labels
    outputs: tuple[str, ...]
    env: tuple[str, ...]  # declared environment variables (their values go into the key)
    resources: Resources | None
    tags: tuple[str, ...]
    location: Location
    config_bytes: bytes = field(repr=False)  # canonical encoding of `config`

    @property
    def remote(self) -> bool:
        """Remote-tagged: it asks for resources, so it runs as a fray job when that is configured."""
        return self.resources is not None

    def code_modules(self) -> list[str]:
        """The modules whose source goes into the key: the rule's, and those that attr.code() values name."""
        named = [v.partition(":")[0] for k, v in self.config.items() if v and self.rule.attrs[k].kind == "code"]
        return [self.rule.module, *named]

    def all_deps(self) -> list[Label]:
        """Direct dependencies, each once, in attribute order."""
        seen: dict[Label, None] = {}
        for value in self.deps.values():
            for label in iter_labels(value):
                seen.setdefault(label)
        return list(seen)


DepValue = Any  # Label | None | list[Label] | dict[str, Label | list[Label]]


def iter_labels(value: DepValue):
    """Every Label in a dependency attribute value."""
    if isinstance(value, Label):
        yield value
    elif isinstance(value, list):
        yield from value
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_labels(v)


def map_labels(value: DepValue, fn: Callable[[Label], Any]) -> Any:
    """The same structure with every Label replaced by fn(label)."""
    if isinstance(value, Label):
        return fn(value)
    if isinstance(value, list):
        return [fn(v) for v in value]
    if isinstance(value, dict):
        return {k: map_labels(v, fn) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file of the workspace used as an input; its label is its package and path in it."""

    label: Label

    @property
    def relpath(self) -> str:
        return f"{self.label.package}/{self.label.name}" if self.label.package else self.label.name


Node = Target | SourceFile


# --- declaring targets -------------------------------------------------------------------------

_CURRENT_PACKAGE: contextvars.ContextVar[Any] = contextvars.ContextVar("mbuild_current_package", default=None)


def current_package():
    """The package whose BUILD file is being evaluated (or None)."""
    return _CURRENT_PACKAGE.get()


def make_target(rule: Rule, package: str, name: Any, kwargs: dict[str, Any], location: Location) -> Target:
    """Validate a rule call's attributes and build the Target."""
    if not isinstance(name, str):
        raise RuleDefinitionError(f"{rule.kind}(): name must be a string, got {name!r}")
    try:
        label = parse_label(f":{name}", package)
    except LabelError as exc:
        raise RuleDefinitionError(f"{rule.kind}(name={name!r}): {exc.reason}") from None
    where = f"{rule.kind} {label}"
    tags = kwargs.pop("tags", ())
    resources = Resources.of(kwargs.pop("resources", None), where) or rule.resources
    env = rule.env + tuple(_check_str_list(kwargs.pop("env", ()), where, "env"))

    config: dict[str, Any] = {}
    deps: dict[str, DepValue] = {}
    for key in kwargs:
        if key not in rule.attrs:
            raise RuleDefinitionError(
                f"{where}: unknown attribute {key!r}{did_you_mean(key, [*rule.attrs, *COMMON_ATTRS])}; "
                f"{rule.kind} takes: {', '.join(sorted(rule.attrs)) or 'no attributes'}"
            )
    for key, schema in rule.attrs.items():
        if key in kwargs:
            value = kwargs[key]
        elif schema.mandatory:
            raise RuleDefinitionError(f"{where}: missing mandatory attribute {key!r}")
        else:
            value = schema.default
        if schema.is_dep:
            deps[key] = _check_deps(value, schema, package, where, key)
        else:
            config[key] = _check_config(value, schema, where, key)
    try:
        config_bytes = encode(config, "config")
    except EncodingError as exc:
        raise RuleDefinitionError(f"{where}: {exc}") from None
    outputs = _check_outputs(rule.outputs(config), where) if callable(rule.outputs) else rule.checked_outputs(where)
    return Target(
        label=label,
        rule=rule,
        config=config,
        deps=deps,
        outputs=outputs,
        env=tuple(dict.fromkeys(env)),
        resources=resources,
        tags=tuple(_check_str_list(tags, where, "tags")),
        location=location,
        config_bytes=config_bytes,
    )


def _check_str_list(value: Any, where: str, key: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise RuleDefinitionError(f"{where}: attribute {key!r} must be a list of strings, got {value!r}")
    return list(value)


def _check_deps(value: Any, schema: Attr, package: str, where: str, key: str) -> DepValue:
    def one(v: Any, sub: str) -> Label:
        if isinstance(v, Label):
            return v
        try:
            return parse_label(v, package)
        except LabelError as exc:
            raise RuleDefinitionError(f"{where}: attribute {sub!r}: {exc}") from None

    def many(v: Any, sub: str) -> list[Label]:
        if isinstance(v, (str, Label)) or not isinstance(v, (list, tuple)):
            raise RuleDefinitionError(f"{where}: attribute {sub!r} must be a list of labels, got {v!r}")
        return [one(x, sub) for x in v]

    if schema.kind == "label":
        return None if value is None else one(value, key)
    if schema.kind == "label_list":
        return many(value, key)
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise RuleDefinitionError(f"{where}: attribute {key!r} must be a dict of names to labels, got {value!r}")
    return {k: one(v, f"{key}[{k!r}]") if isinstance(v, (str, Label)) else many(v, f"{key}[{k!r}]") for k, v in value.items()}


_SCALARS: dict[str, tuple[type, ...]] = {"string": (str,), "int": (int,), "float": (float, int), "bool": (bool,), "code": (str,)}


def _check_config(value: Any, schema: Attr, where: str, key: str) -> Any:
    kind = schema.kind

    def fail(expected: str):
        raise RuleDefinitionError(f"{where}: attribute {key!r} must be {expected}, got {type(value).__name__} {value!r}")

    if kind in _SCALARS:
        if value is None and schema.default is None:
            return None
        types_ = _SCALARS[kind]
        if not isinstance(value, types_) or (kind != "bool" and isinstance(value, bool)):
            fail({"string": "a string", "int": "an int", "float": "a number", "bool": "True or False", "code": "a 'module:function' string"}[kind])
        if kind == "float":
            return float(value)
        if kind == "string" and schema.values and value not in schema.values:
            raise RuleDefinitionError(
                f"{where}: attribute {key!r} must be one of {list(schema.values)}, got {value!r}{did_you_mean(value, schema.values)}"
            )
        if kind == "code":
            _check_code_ref(value, where, key)
        return value
    if kind == "string_list":
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            fail("a list of strings")
        return list(value)
    if kind == "string_dict":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            fail("a dict of strings to strings")
        return dict(value)
    if kind == "value":
        if schema.type is not None and not (value is None and schema.default is None) and not isinstance(value, schema.type):
            fail(f"a {schema.type.__qualname__}")
        return _freeze_check(value)
    raise RuleDefinitionError(f"{where}: attribute {key!r} has unknown kind {kind!r}")


def _freeze_check(value: Any) -> Any:
    """Config values are stored as given; dataclass/enum instances must be importable to reach workers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type) or isinstance(value, enum.Enum):
        module = type(value).__module__
        if module.startswith("BUILD:"):
            raise RuleDefinitionError(
                f"{type(value).__qualname__} is defined in a BUILD file; define config classes in an importable module"
            )
    return value


def _check_code_ref(value: str, where: str, key: str) -> None:
    module, sep, qualname = value.partition(":")
    if not sep or not module or not qualname or not all(p.isidentifier() for p in module.split(".") + qualname.split(".")):
        raise RuleDefinitionError(f"{where}: attribute {key!r} must name a function as 'package.module:function', got {value!r}")


def _check_outputs(outputs: Sequence[str], where: str) -> tuple[str, ...]:
    if isinstance(outputs, str):
        outputs = [outputs]
    seen = set()
    for out in outputs:
        parts = out.rstrip("/").split("/") if isinstance(out, str) else [""]
        if any(p in ("", ".", "..") for p in parts) or out.startswith("/"):
            raise RuleDefinitionError(f"{where}: declared output {out!r} must be a relative path inside the output directory")
        path = PurePosixPath(*parts)
        if path.as_posix() in seen:
            raise RuleDefinitionError(f"{where}: output {out!r} declared twice")
        seen.add(path.as_posix())
    return tuple(outputs)


def caller_line(build_file: str) -> int:
    """Line of the innermost frame executing `build_file` (the rule call inside the BUILD file)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == build_file:
            return frame.f_lineno
        frame = frame.f_back
    return 0
