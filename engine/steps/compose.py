"""How a StepSpec's function is called: `disk_cached(distributed_lock(fn))` at the output path,
and `remote(...)` around that when the step asks for resources. The runner calls the result and
nothing else: no instance checks, no re-wrapping (Marin's final design)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from mbuild.steps import marin
from mbuild.steps.artifact import Artifact, return_type
from mbuild.steps.output_slot import OutputSlot
from mbuild.steps.primitives import disk_cached, distributed_lock
from mbuild.steps.remote import remote
from mbuild.steps.spec import StepRun, StepSpec, current_run


@dataclass(frozen=True)
class WithPaths:
    """fn with the output paths it may read, set again where it runs (a fray job's process too)."""

    fn: Any
    run: StepRun

    def __call__(self, output_path: str) -> Any:
        token = current_run.set(self.run)
        try:
            return self.fn(output_path)
        finally:
            current_run.reset(token)


def composed(step: StepSpec, run: StepRun, backend: str = "local", controller: str | None = None):
    """The callable of `step`: `fn(output_path)` single-flight and cached at the output path."""
    ttl = {} if run.lease is None else {"ttl": run.lease[0], "renew": run.lease[1]}
    typed = return_type(step.fn)
    kept = {"save": Artifact.save, "load": functools.partial(Artifact.load, cls=typed)} if Artifact.typed(typed) else {}
    inner = disk_cached(distributed_lock(WithPaths(step.fn, run if step.resources is None else run.snapshot()), **ttl), **kept)
    if step.resources is None:
        return inner
    return remote(
        inner, resources=step.resources, env_vars=dict(step.env_vars), pip_dependency_groups=list(step.pip_dependency_groups),
        backend=backend, controller=controller, name=step.name,
    )


def call_step(step: StepSpec, run: StepRun, backend: str = "local", controller: str | None = None) -> Any:
    """Run `step` at `run.path` and return its JSON value (a remote job's, from the success marker)."""
    if run.adopt_marin and marin.adopt(run.path):
        print(f"mbuild: adopted {run.path} (Marin finished it: {marin.STATUS} says SUCCESS)", flush=True)
    value = composed(step, run, backend, controller)(run.path)
    if Artifact.typed(return_type(step.fn)):
        return Artifact.load(run.path)  # its JSON form: what the step's result keeps
    if step.resources is not None:
        record = OutputSlot(run.path).success() or {}
        value = record.get("value")
    return value
