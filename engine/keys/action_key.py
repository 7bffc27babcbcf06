"""Action keys: xxh3-128 over the canonical encoding of everything that decides an action's output.

In a key: the key format, the workspace salt, the rule's identity and version, the fingerprint of
its code, the versions of the third-party distributions its code imports and the Python minor
version, its configuration attributes, its declared outputs, its inputs (source files by
workspace-relative path and content digest, dependency targets by label and the digest of their
outputs), and the values of its declared environment variables (and whether its output is in place). Never: absolute paths, the
workspace location, host, user, time, resources, the platform or the CPU count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mbuild.keys.codeprint import CodePrint, CodePrinter
from mbuild.labels import Label
from mbuild.model.targets import Target, map_labels
from mbuild.digests import digest_bytes
from mbuild.encoding import encode

KEY_FORMAT = "mbuild-action/2"


@dataclass(frozen=True)
class KeyParts:
    rule: str  # "module:qualname@version"
    code: CodePrint  # the code's sources, the third-party versions it imports, the Python minor version
    config: bytes  # canonical encoding of the configuration attributes
    outputs: tuple[str, ...]
    inputs: dict[str, Any]  # attribute -> structure of ["file", relpath, digest] / ["tree", label, digest]
    env: dict[str, str | None]
    salt: str
    in_place: bool = False  # the output is written in place: a result of another form, so another key

    def key(self) -> str:
        parts = [KEY_FORMAT, self.salt, self.rule, self.code.key, self.config, list(self.outputs), self.inputs, self.env]
        if self.in_place:
            parts.append("in-place")
        return digest_bytes(encode(parts))


def file_input(relpath: str, digest: str) -> list:
    return ["file", relpath, digest]


def tree_input(label: str, digest: str) -> list:
    return ["tree", label, digest]


def key_parts(node: Target, describe: Callable[[Label], list], codeprinter: CodePrinter, environ: Mapping[str, str], salt: str) -> KeyParts:
    """The parts of `node`'s key, the one place a key is assembled: `describe(label)` gives each
    dependency as file_input(...) or tree_input(...), `environ` the values of declared variables."""
    return KeyParts(
        rule=f"{node.rule.identity}@{node.rule.version}",
        code=codeprinter.fingerprint(node.code_modules()),
        config=node.config_bytes,
        outputs=node.outputs,
        inputs={k: map_labels(v, describe) for k, v in node.deps.items()},
        env={name: environ.get(name) for name in node.env},
        salt=salt,
        in_place=node.in_place,
    )
