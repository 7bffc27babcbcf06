"""`StepSpec` and `StepRef`: a step of a Python pipeline, and a reference to its output.

A StepSpec is a frozen description: its name, `fn(output_path)`, the steps it depends on, the
values that decide its output (`hash_attrs`), and how it runs (resources, where its output goes).
Its *identity* as a cache entry is an mbuild action key, computed by the StepRunner once its
dependencies have run (the key holds their output digests: early cutoff). Before that, a step is
known by its `trace_id`: a digest of what it was declared with (name, code reference, hash_attrs,
the trace_ids of its deps), used to de-duplicate identical steps and to label them.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mbuild.digests import digest_bytes
from mbuild.encoding import encode
from mbuild.errors import EncodingError, MbuildError
from mbuild.steps import walk


class StepDefinitionError(MbuildError):
    """A step was declared wrongly (a value that cannot go into a key, a bad name, a cycle)."""


class StepPathUnknown(MbuildError):
    """A step's output path was asked for before its key is known (before its dependencies ran)."""


@dataclass(frozen=True, eq=False)
class StepSpec:
    """One step: `fn(output_path)` fills `output_path`; see the module docstring.

    - `deps`: StepSpecs that must finish first (their output digests go into this step's key)
    - `hash_attrs`: any deterministically encodable value (dataclasses, dicts, lists, scalars;
      StepRefs inside are encoded by the step they name)
    - `resources`: run as a fray job (`remote`); `env_vars`, `pip_dependency_groups` go with it
    - `override_output_path`: write here instead of `{prefix}/{name}_{key16}`
    - `output_path_prefix`: this step's prefix (default: the runner's)
    - `env`: environment variable names whose values go into the key
    - `code`: 'module:function' references whose source goes into the key (default: fn's own)
    """

    name: str
    fn: Callable[[str], Any]
    deps: Sequence[StepSpec] = ()
    hash_attrs: Any = None
    resources: Any = None
    override_output_path: str | None = None
    output_path_prefix: str | None = None
    env: Sequence[str] = ()
    env_vars: Mapping[str, str] = field(default_factory=dict)
    pip_dependency_groups: Sequence[str] = ()
    code: Sequence[str] = ()
    nonblocking: Sequence[StepSpec] = ()  # in the key by trace_id, not waited for

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip("/"):
            raise StepDefinitionError(f"a step's name must be a non-empty string, got {self.name!r}")
        if not callable(self.fn):
            raise StepDefinitionError(f"step {self.name!r}: fn must be callable, got {self.fn!r}")
        for dep in self.deps:
            if not isinstance(dep, StepSpec):
                raise StepDefinitionError(f"step {self.name!r}: deps must be StepSpecs, got {dep!r}")
        object.__setattr__(self, "deps", tuple(self.deps))
        object.__setattr__(self, "nonblocking", tuple(self.nonblocking))
        object.__setattr__(self, "env", tuple(self.env))
        object.__setattr__(self, "pip_dependency_groups", tuple(self.pip_dependency_groups))
        object.__setattr__(self, "code", tuple(self.code) or (code_ref(self.fn),))

    @functools.cached_property
    def lowered_attrs(self) -> Any:
        """`hash_attrs` as they go into keys (`key_attrs`), computed once."""
        return key_attrs(self.hash_attrs)

    @functools.cached_property
    def trace_id(self) -> str:
        """The digest of what this step was declared with (see the module docstring)."""
        try:
            attrs = encode(self.lowered_attrs, f"step {self.name!r}: hash_attrs")
        except EncodingError as exc:
            raise StepDefinitionError(str(exc)) from None
        return digest_bytes(encode([
            "mbuild-step/1", self.name, list(self.code), attrs, sorted(d.trace_id for d in self.deps),
            sorted(d.trace_id for d in self.nonblocking), list(self.env), self.override_output_path,
        ]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepSpec) and (self is other or self.trace_id == other.trace_id)

    def __hash__(self) -> int:
        return hash(self.trace_id)

    def __repr__(self) -> str:
        return f"StepSpec({self.name!r})"

    @property
    def output_path(self) -> str:
        """This step's output directory: known inside a running step for itself and its
        dependencies, and after a run from `StepRunner.output_path`."""
        run = current_run.get()
        if run is not None:
            found = run.path_of(self)
            if found is not None:
                return found
        if self.override_output_path is not None:
            return self.override_output_path
        raise StepPathUnknown(
            f"the output path of step {self.name!r} is known once its dependencies have run (its key holds "
            "their outputs): read it inside a step that depends on it, or from StepRunner.output_path() after a run"
        )

    def __truediv__(self, sub: str) -> StepRef:
        return StepRef(self) / sub


@dataclass(frozen=True)
class StepRef:
    """A step's output (or a path inside it, `ref / "sub"`) as a value in another step's config.
    `.nonblocking()`: in the key, not waited for; `.with_output_path(p)`: the step writes to `p`."""

    step: StepSpec
    subpath: str = ""
    blocking: bool = True

    def __truediv__(self, sub: str) -> StepRef:
        sub = str(sub).strip("/")
        return dataclasses.replace(self, subpath=f"{self.subpath}/{sub}" if self.subpath else sub)

    def nonblocking(self) -> StepRef:
        return dataclasses.replace(self, blocking=False)

    def with_output_path(self, path: str) -> StepRef:
        return dataclasses.replace(self, step=dataclasses.replace(self.step, override_output_path=str(path)))

    @property
    def path(self) -> str:
        """The path this reference stands for (inside a running step)."""
        base = self.step.output_path
        return f"{base.rstrip('/')}/{self.subpath}" if self.subpath else base

    def __mbuild_shown__(self) -> str:
        return f"{self.step.name}/{self.subpath}" if self.subpath else self.step.name

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path


def key_attrs(value: Any) -> Any:
    """`value` as it goes into keys: each StepRef as ["step", trace_id, subpath, blocking]."""
    return walk.lower(value, _ref_leaf)


def _ref_leaf(value: Any) -> Any:
    if isinstance(value, StepRef):
        return ["step", value.step.trace_id, value.subpath, value.blocking]
    if isinstance(value, StepSpec):
        return ["step", value.trace_id, "", True]
    if isinstance(value, type):
        return None
    return getattr(value, "__mbuild_key__", lambda: None)()


def code_ref(fn: Any) -> str:
    """'module:qualname' of the function behind `fn` (through partials and mbuild's wrappers)."""
    seen = 0
    while seen < 16:
        seen += 1
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif hasattr(fn, "__mbuild_code__"):
            return fn.__mbuild_code__
        elif hasattr(fn, "fn") and callable(fn.fn) and not hasattr(fn, "__code__"):
            fn = fn.fn  # Cached, Locked, RemoteCallable
        elif hasattr(fn, "__func__"):
            fn = fn.__func__
        else:
            break
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    clean = ".".join(p if p.isidentifier() else "_" + "".join(c for c in p if c.isalnum() or c == "_") for p in qualname.split("."))
    return f"{module}:{clean}"


# --------------------------------------------------------------------------------------------
# the running step


@dataclass
class StepRun:
    """What a running step knows: its output path and its dependencies' (by trace_id)."""

    step: StepSpec
    key: str
    path: str
    paths: dict[str, str]  # trace_id -> output path of the steps it may read
    error: BaseException | None = None  # the step's own exception, for the runner's report
    remote: tuple[str, str | None] = ("local", None)  # fray backend and controller for steps with resources
    lease: tuple[float, float] | None = None  # [lease] ttl and renew of the workspace (None: the primitives' defaults)
    adopt_marin: bool = False  # take a directory Marin finished (.executor_status SUCCESS) as done
    resolve: Callable[[StepSpec], str | None] | None = None  # a step keyed later in the run (nonblocking refs)

    def path_of(self, step: StepSpec) -> str | None:
        if step.trace_id == self.step.trace_id:
            return self.path
        found = self.paths.get(step.trace_id)
        if found is None and self.resolve is not None:
            found = self.resolve(step)
        return found

    def snapshot(self) -> StepRun:
        """This run without its resolver (what travels to a fray job)."""
        return StepRun(self.step, self.key, self.path, dict(self.paths), None, self.remote, self.lease, self.adopt_marin)


current_run: contextvars.ContextVar[StepRun | None] = contextvars.ContextVar("mbuild_step_run", default=None)
