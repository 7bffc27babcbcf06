"""mbuild: a Bazel-style, content-addressed build and cache engine for ML pipelines.

The pieces a BUILD file or rule module uses are importable from here.
"""

from mbuild.front.build import build
from mbuild.errors import BuildFileError, EncodingError, LabelError, MbuildError, WorkspaceError
from mbuild.action.context import ActionContext, resolve_rule
from mbuild.labels import Label, parse_label, parse_pattern
from mbuild.model.loader import glob
from mbuild.model.attrs import Resources, attr
from mbuild.model.targets import Rule, rule

__version__ = "0.1.0"

__all__ = [
    "ActionContext", "BuildFileError", "EncodingError", "Label", "LabelError", "MbuildError",
    "Resources", "Rule", "WorkspaceError", "attr", "build", "glob", "parse_label", "parse_pattern", "resolve_rule", "rule",
]
