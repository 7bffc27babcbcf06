"""Steps as mbuild targets: one rule (`run_step`) whose actions call a step's function, and the
target kind (`StepTarget`) whose code print is the step's code. The scheduler, the action cache,
leases, events and the summary then treat steps like any other action."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mbuild.action.context import ActionContext
from mbuild.errors import MbuildError
from mbuild.model.attrs import attr
from mbuild.model.targets import Target, rule
from mbuild.steps import explain, paths
from mbuild.steps.compose import call_step
from mbuild.steps.output_slot import json_value
from mbuild.steps.spec import current_run

MANIFEST = "step.json"


@rule(
    attrs={
        "step": attr.string(doc="The step's name."),
        "code": attr.string_list(doc="'module:function' references whose source is in the key."),
        "hash_attrs": attr.value(default=None, doc="What decides the step's output (StepRefs by trace id)."),
        "deps": attr.label_list(default=[], doc="The steps it waits for."),
        "nonblocking": attr.string_list(default=[], doc="Trace ids of steps it reads without waiting."),
    },
    outputs=[MANIFEST],
    version="1",
)
def run_step(ctx: ActionContext):
    """Call the step (the StepRunner gave this thread its StepRun), then describe its outputs."""
    run = current_run.get()
    if run is None:
        raise MbuildError(f"step {ctx.attr.step!r} can only run through a StepRunner (it runs on the runner's threads)")
    backend, controller = run.remote
    try:
        value = call_step(run.step, run, backend, controller)
    except BaseException as exc:
        run.error = exc
        raise
    explain.save(run.path, explain.shown(run.step.hash_attrs))
    manifest = paths.describe_outputs(run.path)
    (ctx.out / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, separators=(",", ":")))
    return json_value(value)[1]


@dataclass(frozen=True, eq=False, slots=True)
class StepTarget(Target):
    """A step as a target: its code print covers the step's own code references."""

    modules: tuple[str, ...] = ()

    def code_modules(self) -> list[str]:
        return [self.rule.module, *self.modules]
