"""Action keys: xxh3-128 over the canonical encoding of everything that decides an action's output.

In a key: the key format, the workspace salt, the rule's identity and version, the fingerprint of
its code, the versions of the third-party distributions its code imports and the Python minor
version, its configuration attributes, its declared outputs, its inputs (source files by
workspace-relative path and content digest, dependency targets by label and the digest of their
outputs), and the values of its declared environment variables. Never: absolute paths, the
workspace location, host, user, time, resources, the platform or the CPU count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mbuild.keys.codeprint import CodePrint
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

    def key(self) -> str:
        return digest_bytes(
            encode(
                [KEY_FORMAT, self.salt, self.rule, self.code.key, self.config, list(self.outputs), self.inputs, self.env]
            )
        )


def file_input(relpath: str, digest: str) -> list:
    return ["file", relpath, digest]


def tree_input(label: str, digest: str) -> list:
    return ["tree", label, digest]
