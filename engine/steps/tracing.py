"""Tracing a pipeline written as Python calls: `deferred`, `@step`, `output()`.

    tokenize = deferred(mllib_tokenize)              # library function, no mbuild imports

    @step(name="tokenize/{name}")
    def tokenized(name: str, corpus: StepRef) -> ...:
        return tokenize(TokenizeConfig(corpus=corpus / "train.txt", output_path=output()))

    ref = tokenized("shakespeare", corpus_ref)       # a StepRef; nothing has run

Calling a `@step` function runs its body now, in a trace: each call of a `deferred` function is
recorded (not made), `output()` stands for the step's own output directory, and `StepRef`s in the
recorded arguments (found in dataclasses, dicts, lists and tuples) are its dependencies. The
result is a StepSpec whose `hash_attrs` are the recorded calls and whose `fn` makes them at run
time with every reference replaced by its path. A step function that records no call groups the
steps it made and returned (the entry point of a pipeline). The same step with the same arguments
is the same StepSpec (equal trace ids), so it runs once.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mbuild.errors import MbuildError
from mbuild.steps import walk
from mbuild.steps.spec import StepDefinitionError, StepRef, StepSpec, code_ref, current_run


class OutsideStep(MbuildError):
    """`output()` was called outside a @step function."""


@dataclass(frozen=True)
class OutputPath:
    """`output()`: the current step's output directory (or a path inside it), filled in at run time."""

    subpath: str = ""

    def __truediv__(self, sub: str) -> OutputPath:
        sub = str(sub).strip("/")
        return OutputPath(f"{self.subpath}/{sub}" if self.subpath else sub)

    def __mbuild_key__(self) -> list:
        return ["output", self.subpath]

    def __mbuild_shown__(self) -> str:
        return f"output()/{self.subpath}" if self.subpath else "output()"


@dataclass(frozen=True)
class DeferredCall:
    """One recorded call of a deferred function."""

    fn: Callable[..., Any]
    args: tuple
    kwargs: dict

    def __mbuild_key__(self) -> list:
        from mbuild.steps.spec import key_attrs

        return ["call", code_ref(self.fn), key_attrs(list(self.args)), key_attrs(self.kwargs)]

    def __mbuild_shown__(self) -> dict:
        """The call's arguments by parameter name (what explanations show)."""
        try:
            return dict(inspect.signature(self.fn).bind(*self.args, **self.kwargs).arguments)
        except (TypeError, ValueError):
            return {"args": list(self.args), **self.kwargs}


@dataclass
class _Frame:
    calls: list[DeferredCall] = field(default_factory=list)
    made: list[StepRef] = field(default_factory=list)  # steps created while this body ran


GROUP_CODE = "mbuild.steps.tracing:group"

_TRACE: contextvars.ContextVar[_Frame | None] = contextvars.ContextVar("mbuild_step_trace", default=None)


class Deferred:
    """`deferred(fn)`: inside a @step body a call is recorded; anywhere else it calls fn."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        frame = _TRACE.get()
        if frame is None:
            return self.fn(*args, **kwargs)
        call = DeferredCall(self.fn, args, kwargs)
        frame.calls.append(call)
        return call


def deferred(fn: Callable[..., Any]) -> Deferred:
    return Deferred(fn)


def output() -> OutputPath:
    """The current step's output directory (a placeholder, filled in when the step runs)."""
    if _TRACE.get() is None:
        raise OutsideStep("output() is the output directory of the step being traced: call it inside a @step function")
    return OutputPath()


@dataclass(frozen=True)
class TracedFn:
    """A traced step's `fn(output_path)`: make the recorded calls with every reference resolved;
    the last call's value is the step's value."""

    calls: tuple[DeferredCall, ...]
    code: str

    @property
    def __mbuild_code__(self) -> str:
        return self.code

    def __call__(self, output_path: str) -> Any:
        def leaf(value: Any) -> Any:
            if isinstance(value, OutputPath):
                return f"{output_path.rstrip('/')}/{value.subpath}" if value.subpath else output_path
            if isinstance(value, StepRef):
                return value.path
            return None

        value = None
        for call in self.calls:
            value = call.fn(*walk.replace(list(call.args), leaf), **walk.replace(call.kwargs, leaf))
        return value


def step(
    name: str | None = None, *, resources: Any = None, pip_dependency_groups: tuple[str, ...] = (),
    env_vars: dict[str, str] | None = None, override_output_path: str | None = None, env: tuple[str, ...] = (),
):
    """Make a function a step: calling it traces its body and returns a StepRef (see the module
    docstring). `name` may use the call's arguments: `"tokenize/{name}"`."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., StepRef]:
        signature = inspect.signature(fn)
        wiring = code_ref(fn)

        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> StepRef:
            if current_run.get() is not None and _TRACE.get() is None:
                raise MbuildError(f"@step {fn.__qualname__} called while a step runs: build the pipeline before running it")
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            try:
                step_name = (name or fn.__name__).format(**{k: _shown(v) for k, v in bound.arguments.items()})
            except (KeyError, IndexError, ValueError) as exc:
                raise StepDefinitionError(
                    f"@step {fn.__qualname__}: name {name!r} names {exc} but the function's parameters are "
                    f"{', '.join(signature.parameters) or 'none'}"
                ) from None
            frame = _Frame()
            token = _TRACE.set(frame)
            try:
                returned = fn(*args, **kwargs)
            finally:
                _TRACE.reset(token)
            spec = _spec(step_name, frame, returned, wiring, resources, pip_dependency_groups, env_vars, override_output_path, env)
            ref = StepRef(spec)
            parent = _TRACE.get()
            if parent is not None:
                parent.made.append(ref)
            return ref

        traced.__mbuild_step__ = True  # type: ignore[attr-defined]
        return traced

    return decorate


def _spec(name, frame: _Frame, returned, wiring, resources, pip_groups, env_vars, override, env) -> StepSpec:
    refs = list(walk.find([frame.calls and [list(c.args) + [c.kwargs] for c in frame.calls], returned], StepRef))
    refs = [*refs, *(r for r in frame.made if r not in refs)] if not frame.calls else refs
    blocking = list(dict.fromkeys(r.step for r in refs if r.blocking))
    later = [s for s in dict.fromkeys(r.step for r in refs if not r.blocking) if s not in blocking]
    if frame.calls:
        code = (wiring, *dict.fromkeys(code_ref(c.fn) for c in frame.calls))
        hash_attrs = {"calls": frame.calls}
        fn: Callable[[str], Any] = TracedFn(tuple(frame.calls), wiring)
    else:  # a group runs no code of its own: only its steps' outputs decide it (not the module that made them)
        code = (GROUP_CODE,)
        hash_attrs = {"group": [StepRef(s) for s in blocking]}
        fn = TracedFn((), GROUP_CODE)
    return StepSpec(
        name=name, fn=fn, deps=blocking, nonblocking=later, hash_attrs=hash_attrs, resources=resources,
        override_output_path=override, env=env, env_vars=dict(env_vars or {}), pip_dependency_groups=pip_groups, code=code,
    )


def _shown(value: Any) -> Any:
    """A call's argument as `{name}` in a step name shows it: a StepRef by its step's name."""
    if isinstance(value, StepRef):
        return value.step.name
    return value
