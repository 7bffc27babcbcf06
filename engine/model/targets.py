"""The build model: rules, targets and source files (attribute schemas: model/attrs.py).

A rule pairs an implementation function with an attribute schema. Calling a rule inside a BUILD
file declares a target in that file's package. Attributes are dependencies (labels) or
configuration values; both go into the action key (dependencies by their output digests).
A rule or target declared `resumable=True` gets a working directory that survives a failed attempt
(action/resume.py); like resources, that is how it runs, not what it makes, so it is not in the key.
"""

from __future__ import annotations

import bisect
import contextvars
import sys
from types import CodeType
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mbuild.encoding import encode
from mbuild.errors import EncodingError, LabelError, RuleDefinitionError, did_you_mean
from mbuild.labels import Label, parse_label
from mbuild.model.attrs import Attr, Resources
from mbuild.model.checks import check_config, check_deps, check_outputs, check_str_list


class Location:
    """Where a target was declared: workspace-relative BUILD file and line.

    The line is found only when asked (an error, a query's location output): a rule call records
    the BUILD file's code object and instruction offset, which costs nothing, where reading a
    frame's line number walks the code's line table from its start, so a BUILD file of n rule
    calls would load in O(n²)."""

    __slots__ = ("file", "_code", "_offset", "_line", "_column")

    def __init__(self, file: str, line: int = 0, code: CodeType | None = None, offset: int = -1):
        self.file, self._line, self._code, self._offset, self._column = file, line, code, offset, 0

    @property
    def line(self) -> int:
        if not self._line and self._code is not None:
            self._line = next((n for start, end, n in self._code.co_lines() if start <= self._offset < end and n), 0)
            positions = list(self._code.co_positions())  # one per 2-byte code unit
            if 0 <= self._offset // 2 < len(positions):
                self._column = (positions[self._offset // 2][2] or 0) + 1
            self._code = None
        return self._line

    @property
    def column(self) -> int:
        """The 1-based column where the rule call starts (1 when not known), as Bazel's locations give it."""
        _ = self.line
        return self._column or 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def __repr__(self) -> str:
        return f"Location({self.file!r}, {self.line})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.file, self.line) == (other.file, other.line)

    def __hash__(self) -> int:
        return hash((self.file, self.line))


def resolve_lines(locations: Iterable[Location]) -> None:
    """Find the lines of many locations at once: one pass over each code object's line table
    (Location.line alone would walk the table once per call)."""
    pending: dict[int, tuple[CodeType, list[Location]]] = {}  # by id: a code object's hash reads all of it
    for loc in locations:
        if not loc._line and loc._code is not None:
            pending.setdefault(id(loc._code), (loc._code, []))[1].append(loc)
    for code, locs in pending.values():
        spans = [(start, end, n) for start, end, n in code.co_lines() if n]
        starts = [s for s, _, _ in spans]
        for loc in locs:
            k = bisect.bisect_right(starts, loc._offset) - 1
            loc._line = spans[k][2] if k >= 0 and loc._offset < spans[k][1] else 0
            loc._code = None


COMMON_ATTRS = ("name", "tags", "resources", "env", "resumable", "in_place")


class Rule:
    """An implementation function plus its attribute schema and declared outputs.

    `outputs` is a sequence of relative paths (a trailing '/' declares a directory) or a function
    from the target's configuration to such a sequence. `resumable`: its actions get `ctx.work`, a
    working directory kept from one failed attempt to the next (a target may say otherwise).
    `in_place`: its actions write their output themselves under the workspace's [outputs].prefix
    (`ctx.out_url`), and mbuild records the store's listing of it instead of copying it.
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
        resumable: bool = False,
        in_place: bool = False,
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
        if not isinstance(resumable, bool):
            raise RuleDefinitionError(f"rule {impl.__qualname__!r}: resumable must be True or False, got {resumable!r}")
        self.resumable = resumable
        if not isinstance(in_place, bool):
            raise RuleDefinitionError(f"rule {impl.__qualname__!r}: in_place must be True or False, got {in_place!r}")
        self.in_place = in_place
        self.doc = doc if doc is not None else (impl.__doc__ or "").strip()
        self.module = module
        self.identity = f"{module}:{impl.__qualname__}"

    def __repr__(self) -> str:
        return f"<rule {self.kind} ({self.identity})>"

    def checked_outputs(self, where: str) -> tuple[str, ...]:
        """The rule's fixed outputs, validated once."""
        checked = self.__dict__.get("_checked_outputs")
        if checked is None:
            checked = self.__dict__["_checked_outputs"] = check_outputs(self.outputs, where)
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
    resumable: bool = False,
    in_place: bool = False,
):
    """Decorator making a rule from `impl(ctx) -> JSON-able value | None`."""

    def wrap(fn: Callable) -> Rule:
        return Rule(
            fn, attrs=attrs or {}, outputs=outputs, version=version, resources=resources, env=env, doc=doc, kind=kind,
            resumable=resumable, in_place=in_place,
        )

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
    resumable: bool = False  # gets a working directory kept across failed attempts (not in the key)
    in_place: bool = False  # writes its output under [outputs].prefix itself (in the key: its result's form)

    @property
    def runs_on_fray(self) -> bool:
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
    env = rule.env + tuple(check_str_list(kwargs.pop("env", ()), where, "env"))
    resumable = kwargs.pop("resumable", rule.resumable)
    if not isinstance(resumable, bool):
        raise RuleDefinitionError(f"{where}: attribute 'resumable' must be True or False, got {resumable!r}")
    in_place = kwargs.pop("in_place", rule.in_place)
    if not isinstance(in_place, bool):
        raise RuleDefinitionError(f"{where}: attribute 'in_place' must be True or False, got {in_place!r}")

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
            deps[key] = check_deps(value, schema, package, where, key)
        else:
            config[key] = check_config(value, schema, where, key)
    try:
        config_bytes = encode(config, "config")
    except EncodingError as exc:
        raise RuleDefinitionError(f"{where}: {exc}") from None
    outputs = check_outputs(rule.outputs(config), where) if callable(rule.outputs) else rule.checked_outputs(where)
    return Target(
        label=label,
        rule=rule,
        config=config,
        deps=deps,
        outputs=outputs,
        env=tuple(dict.fromkeys(env)),
        resources=resources,
        tags=tuple(check_str_list(tags, where, "tags")),
        location=location,
        config_bytes=config_bytes,
        resumable=resumable,
        in_place=in_place,
    )


def caller_location(build_file: str, build_file_rel: str) -> Location:
    """The rule call inside `build_file` that is running now (the innermost frame executing it)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == build_file:
            return Location(build_file_rel, code=frame.f_code, offset=frame.f_lasti)
        frame = frame.f_back
    return Location(build_file_rel)
