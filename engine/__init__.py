"""mbuild: a Bazel-style, content-addressed build and cache engine for ML pipelines.

The public API: what BUILD files, rule modules and pipeline code import (`from mbuild import ...`).
Everything else is internal; the layers are described in docs/architecture.md.
"""

from mbuild.action.context import ActionContext, resolve_rule
from mbuild.errors import BuildFileError, EncodingError, LabelError, MbuildError, WorkspaceError
from mbuild.front.build import build
from mbuild.labels import Label, parse_label, parse_pattern
from mbuild.model.attrs import Resources, attr
from mbuild.model.loader import glob
from mbuild.model.targets import Rule, rule
from mbuild.steps.primitives import StepAlreadyDone, current_lease, disk_cached, distributed_lock
from mbuild.steps.remote import RemoteCallable, remote

# The Python step front loads on first use, so BUILD files and the CLI do not pay for it.
_STEP_FRONT = {
    "Artifact": "mbuild.steps.artifact", "executor_main": "mbuild.steps.cli", "PreviousTaskFailedError": "mbuild.steps.runner",
    "RunResult": "mbuild.steps.runner", "StepRunner": "mbuild.steps.runner", "StepsFailed": "mbuild.steps.runner",
    "StepRef": "mbuild.steps.spec", "StepSpec": "mbuild.steps.spec", "deferred": "mbuild.steps.tracing",
    "output": "mbuild.steps.tracing", "step": "mbuild.steps.tracing",
}


def __getattr__(name: str):
    module = _STEP_FRONT.get(name)
    if module is None:
        raise AttributeError(f"module 'mbuild' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__version__ = "0.1.0"

__all__ = [
    "ActionContext", "Artifact", "BuildFileError", "EncodingError", "Label", "LabelError", "MbuildError", "PreviousTaskFailedError",
    "RemoteCallable", "Resources", "Rule", "RunResult", "StepAlreadyDone", "StepRef", "StepRunner", "StepSpec", "StepsFailed",
    "WorkspaceError", "attr", "build", "current_lease", "deferred", "disk_cached", "distributed_lock", "executor_main", "glob",
    "output", "parse_label", "parse_pattern", "remote", "resolve_rule", "rule", "step",
]
