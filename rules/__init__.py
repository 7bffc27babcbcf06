"""mbuild's standard rule library. BUILD files import rules from here like any Python module."""

from .core import filegroup, genrule, py_function

__all__ = ["filegroup", "genrule", "py_function"]
