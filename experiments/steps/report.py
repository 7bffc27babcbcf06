"""Stage: a markdown report with the loss curve and the eval numbers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mbuild import StepRef, deferred, output, step


@dataclass(frozen=True)
class ReportConfig:
    metrics: object
    eval_json: object
    title: str
    output_path: object


def write(config: ReportConfig) -> dict:
    from mllib.report import write_report

    eval_result = json.loads(Path(config.eval_json).read_text())
    return write_report(Path(config.metrics), eval_result, Path(config.output_path), config.title)


write_step = deferred(write)
METRICS_NAME = "metrics.jsonl"  # as mllib.train names it (not imported here: that loads JAX while tracing)


@step(name="report")
def report(train: StepRef, eval: StepRef, title: str):  # noqa: A002 — the stage's name
    return write_step(ReportConfig(train / METRICS_NAME, eval / "eval.json", title, output()))
