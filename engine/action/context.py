"""What a rule implementation receives (ActionContext), and calling it: resolve the rule by name,
turn its dependencies into paths and values, and check the value it returns."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from mbuild.action.spec import ActionSpec
from mbuild.labels import Label
from mbuild.model.targets import Rule, map_labels
from mbuild.stores.results import json_value

if TYPE_CHECKING:  # `import mbuild` (which exports ActionContext) need not load it
    from mbuild.action.progress import Reporter


class ActionContext:
    """What a rule implementation receives.

    - `attr`: configuration attributes (`ctx.attr.vocab_size`)
    - `inputs`: dependency attributes as paths: a source file's path, or a target's output
      directory; lists and dicts of labels arrive as lists and dicts of paths
    - `values`: the same structure holding each dependency target's returned value (None for files)
    - `labels`: the same structure holding each dependency's label, as a string
    - `out`: the output directory (everything written here is an output); `tmp`: scratch space
    - `work`: a resumable action's working directory, kept from a failed attempt to the next
      (None unless the rule or target is `resumable`); never an output itself
    - `env`: declared environment variables (the only ones in the key)
    - `out_url`: an in-place target's output location (gs://..., s3://..., or an absolute local
      directory), which the action writes itself; `out_fs`: an fsspec filesystem for it (with the
      workspace's [outputs].options). Both None unless the rule or target is `in_place`.
    - `fs(url)`: an fsspec filesystem for a dependency's in-place output (`ctx.inputs.x` is its URL).
    - `progress(step, total, **metrics)`: how far the action is, shown live by the build and
      written to its events file (action/progress.py)
    """

    def __init__(
        self, attr: dict, inputs: dict, values: dict, labels: dict, out: Path, tmp: Path, env: dict, resources,
        work: Path | None = None, out_url: str | None = None, places: Any = None, reporter: Reporter | None = None,
    ):
        self.attr = SimpleNamespace(**attr)
        self.inputs = SimpleNamespace(**inputs)
        self.values = SimpleNamespace(**values)
        self.labels = SimpleNamespace(**labels)
        self.out = out
        self.tmp = tmp
        self.env = env
        self.resources = resources
        self.work = work
        self.out_url = out_url
        self._places = places
        self.out_fs = places.filesystem(out_url) if places is not None and out_url is not None else None
        self._reporter = reporter

    def fs(self, url: str | Path) -> Any:
        """An fsspec filesystem for an in-place output's URL (or local directory), with the
        workspace's [outputs].options."""
        if self._places is None:
            import fsspec

            return fsspec.filesystem(str(url).split("://", 1)[0] if "://" in str(url) else "file")
        return self._places.filesystem(str(url))

    def log(self, message: str) -> None:
        print(message, flush=True)

    def progress(self, step: int | float, total: int | float | None = None, **metrics) -> None:
        """Report `step` of `total` (None: unknown) and metrics (`loss=2.31, tokens_per_s=4100`).
        Cheap enough to call every step: reports are rate-limited before they leave the process."""
        if self._reporter is not None:
            self._reporter.progress(step, total, **metrics)


def invoke(
    spec: ActionSpec, paths: dict[str, Path | str], out: Path, tmp: Path, work: Path | None = None, out_url: str | None = None,
    places: Any = None, reporter: Reporter | None = None,
) -> Any:
    impl = resolve_rule(spec.rule)
    inputs = {k: map_labels(as_labels(v), lambda lab: paths[str(lab)]) for k, v in spec.deps.items()}
    values = {
        k: map_labels(as_labels(v), lambda lab: r.value if (r := spec.inputs[str(lab)].result) else None)
        for k, v in spec.deps.items()
    }
    ctx = ActionContext(spec.config, inputs, values, dict(spec.deps), out, tmp, dict(spec.env), spec.resources, work, out_url, places, reporter)
    return json_value(impl(ctx), spec.label)


def resolve_rule(identity: str):
    """The implementation function named by a rule identity 'module:qualname'."""
    module_name, _, qualname = identity.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj.impl if isinstance(obj, Rule) else obj


def as_labels(value: Any) -> Any:
    """Dependency structures travel as strings; turn them back into Labels for map_labels."""
    if isinstance(value, str):
        return Label(*value[2:].split(":", 1))
    if isinstance(value, list):
        return [as_labels(v) for v in value]
    if isinstance(value, dict):
        return {k: as_labels(v) for k, v in value.items()}
    return value
