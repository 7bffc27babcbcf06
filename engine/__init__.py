"""mbuild: a Bazel-style, content-addressed build and cache engine for ML pipelines.

The pieces a BUILD file or rule module uses are importable from here.
"""

from .build import build
from .errors import ActionError, BuildFileError, EncodingError, LabelError, MbuildError, WorkspaceError
from .execute import ActionContext
from .labels import Label, parse_label, parse_pattern
from .loader import glob
from .model import Resources, Rule, attr, rule

__version__ = "0.1.0"

__all__ = [
    "ActionContext", "ActionError", "BuildFileError", "EncodingError", "Label", "LabelError", "MbuildError",
    "Resources", "Rule", "WorkspaceError", "attr", "build", "glob", "parse_label", "parse_pattern", "rule",
]
