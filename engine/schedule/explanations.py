"""The per-label records a build keeps to explain itself (keys/explain.py), read and written here.

A label's record is rewritten only when its key changed since the last one recorded (so a build
where nothing changed writes none): the parts of its new key, its output digest, whether it ran or
was a hit, when, and the record it replaces (`previous`, without its own). The sources of its rule
code go into the CAS by digest (once each), so a later edit can be named by line.
"""

from __future__ import annotations

import time
from pathlib import Path

from mbuild.digests import digest_bytes
from mbuild.errors import BlobUnavailableError
from mbuild.keys.action_key import KeyParts
from mbuild.keys.codeprint import CodePrinter
from mbuild.keys.codediff import CodeDiffer
from mbuild.keys.explain import explain_miss
from mbuild.keys.records import parts_record
from mbuild.model.targets import Target
from mbuild.stores.cas import LocalCAS
from mbuild.stores.localdb import LocalDB


class LabelRecords:
    """Explains misses against the recorded parts and records the new ones at the end of a build."""

    def __init__(self, root: Path, db: LocalDB, cas: LocalCAS, codeprinter: CodePrinter):
        self.db = db
        self.cas = cas
        self.codeprinter = codeprinter
        self.code = CodeDiffer(root, codeprinter.source_path, self._stored)

    def _stored(self, digest: str) -> bytes | None:
        try:
            return self.cas.read_verified(digest)
        except BlobUnavailableError:
            return None

    def why(self, node: Target, parts: KeyParts) -> str:
        """Why `node`, with key parts `parts`, is not a hit: what differs from its record."""
        previous = self.db.get_label(str(node.label))
        return "never built" if previous is None else explain_miss(previous, parts_record(node.config, parts), self.code)

    def save(self, resolved: list[tuple[Target, KeyParts, str, str, str]]) -> None:
        """Record (target, parts, key, output digest, "ran" | "hit") for each target whose key changed."""
        if self.db.read_only or not resolved:
            return
        by_label = {str(entry[0].label): entry for entry in resolved}
        changed = self.db.changed_labels({label: entry[2] for label, entry in by_label.items()})
        if not changed:
            return
        now = time.time()
        records = {}
        modules: dict[str, str] = {}
        for label in changed:
            node, parts, key, output, how = by_label[label]
            previous = self.db.get_label(label)
            if previous is not None:
                previous.pop("previous", None)
            records[label] = parts_record(node.config, parts) | {"key": key, "output": output, "how": how, "at": now, "previous": previous}
            modules.update(parts.code.modules)
        self._keep_sources(modules)
        self.db.put_labels(records)

    def _keep_sources(self, modules: dict[str, str]) -> None:
        """Put each module's source into the CAS if it is still the version that was keyed (a
        failure only costs a later explanation its line numbers)."""
        for name, digest in modules.items():
            path = self.codeprinter.source_path(name)
            if path is None or self.cas.has(digest):
                continue
            try:
                data = path.read_bytes()
                if digest_bytes(data) == digest:
                    self.cas.put_bytes(data)
            except OSError:
                continue
